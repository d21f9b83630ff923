/**
 * An unwritable sink (disk full, read-only file, I/O error, a lock held too long) is a condition of the
 * environment, not a poison event: the queue holds every event in order, says once that it is stalled,
 * retries on its stall schedule, and resumes by itself. Nothing is dead-lettered for it.
 */
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Exit, Fiber, Logger, Metric, Ref, Schedule, Scope, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import type { DeferredAuditEvent } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { Appended, AuditSink, AuditSinkError } from "../src/audit/AuditSink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { captureLogs, eventLoopTurn } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-stall-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (): string => join(tempRoot, `ledger-${++fileCounter}.db`)

describe("a sink that cannot write: the queue stalls and resumes", () => {
  it.scoped("events are held in order while unavailable, said once, and all appended when it recovers", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const available = yield* Ref.make(false)
      const rows = yield* Ref.make<ReadonlyArray<DeferredAuditEvent>>([])
      const attempts = yield* Ref.make(0)
      const unavailable = (event: DeferredAuditEvent) =>
        new AuditSinkError({ eventId: event.id, reason: "SQLITE_FULL: database or disk is full", unavailable: true })
      const sink = AuditSink.of({
        append: (event) =>
          Effect.zipRight(
            Ref.update(attempts, (n) => n + 1),
            Effect.flatMap(Ref.get(available), (ok) =>
              ok
                ? Effect.as(Ref.update(rows, (all) => [...all, event]), new Appended({ uniqueRaceRetries: 0 }))
                : Effect.fail(unavailable(event)))
          ),
        appendBatch: (events) =>
          Effect.zipRight(
            Ref.update(attempts, (n) => n + 1),
            Effect.flatMap(Ref.get(available), (ok) =>
              ok
                ? Effect.as(
                  Ref.update(rows, (all) => [...all, ...events]),
                  events.map(() => new Appended({ uniqueRaceRetries: 0 }))
                )
                : Effect.fail(unavailable(events[0])))
          ),
        deadLetter: () => Effect.dieMessage("nothing may be dead-lettered for an unavailable sink")
      })
      const queue = yield* AuditQueue.make({ sink, queueId: "stall-test" })
      const events = Array.from({ length: 300 }, (_, i) => refusalEvent(`a-${i}`, i))
      for (const event of events) yield* queue.submit(event)
      for (let i = 0; i < 50 && (yield* queue.status) !== "Stalled"; i++) yield* eventLoopTurn
      expect(yield* queue.status).toBe("Stalled")
      const gauge = AuditMetrics.stalledGauge("stall-test")
      expect((yield* Metric.value(gauge)).value).toBe(1)
      // Backing off on the Clock: several more attempts, still one log line, nothing settled.
      for (let i = 0; i < 20; i++) {
        yield* TestClock.adjust("1 second")
        yield* eventLoopTurn
      }
      expect(yield* Ref.get(attempts)).toBeGreaterThan(5)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 300 })
      const stalledLines = logs.lines.filter((l) => l.message.includes("audit sink unavailable"))
      expect(stalledLines).toHaveLength(1)
      expect(stalledLines[0]?.level).toBe("ERROR")
      expect(stalledLines[0]?.message).toContain("300 events held in order")

      yield* Ref.set(available, true)
      for (let i = 0; i < 50 && !AuditMetrics.isDrained(yield* queue.metrics); i++) {
        yield* TestClock.adjust("5 seconds")
        yield* eventLoopTurn
      }
      expect(yield* Ref.get(rows)).toEqual(events)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 300, appended: 300 })
      expect(yield* queue.status).toBe("Running")
      expect((yield* Metric.value(gauge)).value).toBe(0)
      expect(logs.lines.filter((l) => l.message.includes("available again"))).toHaveLength(1)
    }).pipe(Effect.provide(logs.layer))
  })
})

describe("a stall schedule that ends", () => {
  it.effect("starts over instead of spinning: attempts stay paced by the Clock", () =>
    Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const sink = AuditSink.of({
        append: (event) =>
          Effect.zipRight(
            Ref.update(attempts, (n) => n + 1),
            Effect.fail(new AuditSinkError({ eventId: event.id, reason: "SQLITE_READONLY", unavailable: true }))
          ),
        deadLetter: () => Effect.void
      })
      const scope = yield* Scope.make()
      const queue = yield* AuditQueue.make({
        sink,
        stallSchedule: Schedule.recurs(0),
        shutdownDrainTimeout: "1 second"
      })
        .pipe(Scope.extend(scope))
      yield* queue.submit(refusalEvent("held", 0))
      for (let i = 0; i < 200; i++) yield* eventLoopTurn
      // Without the Clock moving, a spinning drainer would have made hundreds of attempts by now.
      expect(yield* Ref.get(attempts)).toBeLessThanOrEqual(2)
      for (let i = 0; i < 10; i++) {
        yield* TestClock.adjust("100 millis")
        yield* eventLoopTurn
      }
      expect(yield* Ref.get(attempts)).toBeGreaterThan(2)
      expect(yield* queue.status).toBe("Stalled")
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("1 second")
        yield* eventLoopTurn
      }
      yield* Fiber.join(closing)
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))))
})

describe("a full disk under AuditLedger.layerSqlite", () => {
  it.live("refusals wait while the database is full, none is dead-lettered, and all land in order when it is not", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = Array.from({ length: 200 }, (_, i) => refusalEvent("agent", i, "x".repeat(2000)))
      yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const sql = (yield* LedgerSql.LedgerSql).client
        const [{ page_count }] = (yield* sql.unsafe("PRAGMA page_count")) as unknown as [{ page_count: number }]
        // Room for a few rows at most: the database is "full" from the first batches on.
        yield* sql.unsafe(`PRAGMA max_page_count = ${page_count + 4}`)
        for (const event of events) expect(yield* queue.submit(event)).toBe(true)
        for (let i = 0; i < 2000 && (yield* queue.status) !== "Stalled"; i++) yield* eventLoopTurn
        expect(yield* queue.status).toBe("Stalled")
        yield* Effect.sleep("300 millis")
        const held = yield* queue.metrics
        expect(held.appendFailures).toBe(0)
        expect(held.dlqLanded).toBe(0)
        expect(held.appended).toBeLessThan(200)
        // The condition clears (space freed): the drainer resumes by itself.
        yield* sql.unsafe("PRAGMA max_page_count = 1073741823")
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 200, appended: 200 })
        expect(yield* queue.status).toBe("Running")
      }).pipe(
        // The condition is set on the connection that writes: the caller's thread's here.
        Effect.provide(AuditLedger.layerSqlite({
          filename,
          stallSchedule: AuditQueue.defaultStallSchedule,
          writerThread: false
        })),
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))
      )
      const check = Effect.gen(function*() {
        const sql = (yield* LedgerSql.LedgerSql).client
        const ids = yield* sql<{ id: string }>`SELECT id FROM signed_events ORDER BY sequence`
        expect(ids.map((row) => row.id)).toEqual(events.map((event) => event.id))
        expect(yield* DeadLetters.list()).toEqual([])
        const report = yield* verifyLedger()
        expect(report.ok).toBe(true)
        expect(report.rowsChecked).toBe(200)
      })
      yield* Effect.provide(check, sqliteWithClient({ filename }))
    }))
})

describe("other conditions of the environment under AuditLedger.layerSqlite", () => {
  const submitAll = (count: number, prefix: string) =>
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      const events = Array.from({ length: count }, (_, i) => refusalEvent(`${prefix}-${i}`, i))
      for (const event of events) expect(yield* queue.submit(event)).toBe(true)
      return events
    })

  const waitForStatus = (status: AuditQueue.QueueStatus) =>
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      for (let i = 0; i < 5000 && (yield* queue.status) !== status; i++) yield* eventLoopTurn
      expect(yield* queue.status).toBe(status)
    })

  const waitForStatusFor = (status: AuditQueue.QueueStatus) =>
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      yield* Effect.repeat(queue.status, {
        schedule: Schedule.spaced("10 millis"),
        until: (now) => now === status
      }).pipe(Effect.timeout("30 seconds"), Effect.ignore)
      expect(yield* queue.status).toBe(status)
    })

  const expectAllInOrder = (filename: string, events: ReadonlyArray<DeferredAuditEvent>) =>
    Effect.provide(
      Effect.gen(function*() {
        const sql = (yield* LedgerSql.LedgerSql).client
        const ids = yield* sql<{ id: string }>`SELECT id FROM signed_events ORDER BY sequence`
        expect(ids.map((row) => row.id)).toEqual(events.map((event) => event.id))
        expect(yield* DeadLetters.list()).toEqual([])
        expect((yield* verifyLedger()).ok).toBe(true)
      }),
      sqliteWithClient({ filename })
    )

  it.live("a database that turns read-only mid-run: the refusals wait, then land in order", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const sql = (yield* LedgerSql.LedgerSql).client
        const before = yield* submitAll(20, "before")
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        // SQLite refuses every write from here on (SQLITE_READONLY), as with a read-only file.
        yield* sql.unsafe("PRAGMA query_only = ON")
        const during = yield* submitAll(50, "during")
        yield* waitForStatus("Stalled")
        expect((yield* queue.metrics).appendFailures).toBe(0)
        yield* sql.unsafe("PRAGMA query_only = OFF")
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 70, appended: 70 })
        return [...before, ...during]
      }).pipe(
        // `query_only` is a setting of the connection that writes: the caller's thread's here.
        Effect.provide(AuditLedger.layerSqlite({ filename, writerThread: false })),
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))
      )
      yield* expectAllInOrder(filename, events)
    }))

  const lockedOut = (writerThread: boolean) =>
    Effect.gen(function*() {
      const filename = freshFile()
      // Create the schema, then hold the write lock from another connection.
      yield* Effect.provide(Effect.void, sqliteWithClient({ filename }))
      const other = new Database(filename)
      other.exec("BEGIN IMMEDIATE")
      const events = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const events = yield* submitAll(30, "locked")
        // The writer thread's attempts take real time: wait on the clock, not on event-loop turns.
        yield* writerThread ? waitForStatusFor("Stalled") : waitForStatus("Stalled")
        expect((yield* queue.metrics).appendFailures).toBe(0)
        other.exec("COMMIT")
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        expect(yield* queue.metrics).toMatchObject({ submitted: 30, appended: 30, appendFailures: 0 })
        return events
      }).pipe(
        Effect.ensuring(Effect.sync(() => other.close())),
        Effect.provide(AuditLedger.layerSqlite({
          filename,
          busyTimeout: "5 millis",
          retrySchedule: Schedule.recurs(1),
          stallSchedule: Schedule.spaced("20 millis"),
          writerThread
        })),
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))
      )
      yield* expectAllInOrder(filename, events)
    })

  it.live("another process holding the write lock past busy_timeout and the retries: a stall, not dead letters", () =>
    lockedOut(false))

  it.live("the same lock against the writer thread: a stall, then every refusal in order", () => lockedOut(true))
})
