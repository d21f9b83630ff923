/**
 * Group commit and durable acknowledgements: the drainer's batches, the per-event fallback, the accounting
 * invariant whatever the sink does, and `submitAndWait`, first against in-memory sinks, then end to end
 * through `AuditLedger.layerSqlite`.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import type { Array as Arr, Context } from "effect"
import { DateTime, Effect, Exit, FastCheck as fc, Fiber, Logger, Option, Ref, Schedule, Scope, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { Custom, DeferredAuditEvent, Refuse, ToolCall } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import type { AppendOutcome } from "../src/audit/AuditSink.js"
import { Appended, AuditSink, AuditSinkError, DlqLanded } from "../src/audit/AuditSink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { uuidV7 } from "../src/internal/uuid.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import type * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { SqlAuditSink } from "../src/ledger/SqlAuditSink.js"
import { eventLoopTurn, waitUntil } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-group-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (): string => join(tempRoot, `ledger-${++fileCounter}.db`)

const silent = Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))

const eventsOf = (n: number, prefix = "agent") => Array.from({ length: n }, (_, i) => refusalEvent(`${prefix}-${i}`, i))

type BatchBehaviour = "append" | "fail" | "die" | "wrongCount"

interface BatchSinkOptions {
  /** What `appendBatch` does with a batch (default: append all). */
  readonly batch?: (events: ReadonlyArray<DeferredAuditEvent>) => BatchBehaviour
  /** What `append` does with an event alone (default: append). */
  readonly single?: (event: DeferredAuditEvent) => "append" | "die" | "throw" | "error"
  /** Omit `appendBatch`: a sink that only implements `append`. */
  readonly noBatch?: boolean
}

/** An in-memory sink with group commit that records every call. */
const makeBatchSink = (options: BatchSinkOptions = {}) =>
  Effect.gen(function*() {
    const rows = yield* Ref.make<ReadonlyArray<DeferredAuditEvent>>([])
    const deadLetters = yield* Ref.make<ReadonlyArray<{ event: DeferredAuditEvent; reason: string }>>([])
    const batchSizes = yield* Ref.make<ReadonlyArray<number>>([])
    const singles = yield* Ref.make(0)
    const appendRows = (events: ReadonlyArray<DeferredAuditEvent>) =>
      Ref.modify(rows, (all): [ReadonlyArray<AppendOutcome>, ReadonlyArray<DeferredAuditEvent>] => [
        events.map((_, i) =>
          new Appended({
            uniqueRaceRetries: 0,
            position: { sequence: all.length + i, entryHash: `h${all.length + i}` }
          })
        ),
        [...all, ...events]
      ])
    const append = (event: DeferredAuditEvent): Effect.Effect<AppendOutcome, AuditSinkError> => {
      switch (options.single?.(event) ?? "append") {
        case "append":
          return Effect.zipRight(Ref.update(singles, (n) => n + 1), Effect.map(appendRows([event]), (o) => o[0]!))
        case "die":
          return Effect.dieMessage(`poison ${event.agentId}`)
        case "error":
          return Effect.fail(new AuditSinkError({ eventId: event.id, reason: "configured error" }))
        case "throw":
          throw new Error(`row builder threw for ${event.agentId}`)
      }
    }
    const appendBatch = (events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>) =>
      Effect.zipRight(
        Ref.update(batchSizes, (sizes) => [...sizes, events.length]),
        Effect.suspend((): Effect.Effect<ReadonlyArray<AppendOutcome>, AuditSinkError> => {
          switch (options.batch?.(events) ?? "append") {
            case "append":
              return appendRows(events)
            case "fail":
              return Effect.fail(new AuditSinkError({ eventId: events[0].id, reason: "batch refused" }))
            case "die":
              return Effect.dieMessage("batch died")
            case "wrongCount":
              return Effect.succeed([])
          }
        })
      )
    const sink = AuditSink.of({
      append,
      ...(options.noBatch === true ? {} : { appendBatch }),
      deadLetter: (event, reason) => Ref.update(deadLetters, (all) => [...all, { event, reason }])
    })
    return {
      sink,
      rows: Ref.get(rows),
      deadLetters: Ref.get(deadLetters),
      batchSizes: Ref.get(batchSizes),
      singles: Ref.get(singles)
    }
  })

/** Submits every event before the drainer gets a turn, so it finds them all waiting. */
const submitAll = (queue: Context.Tag.Service<AuditQueue.AuditQueue>, events: ReadonlyArray<DeferredAuditEvent>) =>
  Effect.forEach(events, (event) => queue.submit(event), { discard: true })

describe("group commit in the drainer", () => {
  it.scoped("1,000 waiting events go to the sink in batches of at most maxBatch, in submit order", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink, maxBatch: 128 })
      const events = eventsOf(1000)
      yield* submitAll(queue, events)
      expect(yield* queue.drainPending("10 seconds")).toBe(true)
      expect(yield* test.rows).toEqual(events)
      const sizes = yield* test.batchSizes
      expect(Math.max(...sizes)).toBe(128)
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(1000)
      expect(sizes.length).toBeLessThanOrEqual(Math.ceil(1000 / 128) + 1)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1000, appended: 1000 })
    }))

  it.scoped("maxBatch: 1 appends every event alone, never through appendBatch", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink, maxBatch: 1 })
      const events = eventsOf(50)
      yield* submitAll(queue, events)
      expect(yield* queue.drainPending("10 seconds")).toBe(true)
      expect(yield* test.rows).toEqual(events)
      expect(yield* test.batchSizes).toEqual([])
      expect(yield* test.singles).toBe(50)
    }))

  it.scoped("under light load a batch is one event: nothing waits to fill a batch", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of eventsOf(5)) {
        yield* queue.submit(event)
        yield* waitUntil(Effect.map(queue.metrics, AuditMetrics.isDrained), "the event is appended")
      }
      expect(yield* test.batchSizes).toEqual([])
      expect(yield* test.singles).toBe(5)
    }))

  it.scoped("a sink that only implements append keeps working, one event at a time", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink({ noBatch: true })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = eventsOf(300)
      yield* submitAll(queue, events)
      expect(yield* queue.drainPending("10 seconds")).toBe(true)
      expect(yield* test.rows).toEqual(events)
      expect(yield* test.singles).toBe(300)
    }))

  for (const behaviour of ["fail", "die", "wrongCount"] as const) {
    it.scoped(`a batch that ends with "${behaviour}" is appended one by one, every event once, in order`, () =>
      Effect.gen(function*() {
        const test = yield* makeBatchSink({ batch: () => behaviour })
        const queue = yield* AuditQueue.make({ sink: test.sink })
        const events = eventsOf(200)
        yield* submitAll(queue, events)
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        expect(yield* test.rows).toEqual(events)
        expect(yield* test.singles).toBe(200)
        // A failed batch is not a poison event: nothing is counted as a defect or a failure.
        expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 200, appended: 200 })
        expect(yield* queue.status).toBe("Running")
      }).pipe(silent))
  }

  it.scoped("one poison event among 512: it alone goes to the DLQ, the other 511 are appended, the drainer restarts", () =>
    Effect.gen(function*() {
      const events = eventsOf(512)
      const poison = events[300]!
      const test = yield* makeBatchSink({
        batch: (batch) => batch.includes(poison) ? "die" : "append",
        single: (event) => event === poison ? "die" : "append"
      })
      const queue = yield* AuditQueue.make({ sink: test.sink, maxBatch: 512 })
      yield* submitAll(queue, events)
      // The restart waits on the Clock: move it until everything is accounted.
      const drained = yield* Effect.fork(queue.drainPending("1 minute"))
      for (let i = 0; i < 200 && Option.isNone(yield* Fiber.poll(drained)); i++) {
        yield* TestClock.adjust("10 millis")
        yield* eventLoopTurn
      }
      expect(yield* Fiber.join(drained)).toBe(true)
      expect(yield* test.rows).toEqual(events.filter((event) => event !== poison))
      expect((yield* test.deadLetters).map((d) => d.event)).toEqual([poison])
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 512,
        appended: 511,
        appendFailures: 1,
        dlqLanded: 1,
        drainerDefects: 1
      })
      expect(yield* queue.status).toBe("Running")
    }).pipe(silent))

  it.scoped("a sink whose append throws while building its effect: the event is a poison event, still accounted", () =>
    Effect.gen(function*() {
      const events = eventsOf(3)
      const test = yield* makeBatchSink({ noBatch: true, single: (event) => event === events[1] ? "throw" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink, restartSchedule: AuditQueue.defaultRestartSchedule })
      yield* submitAll(queue, events)
      const drained = yield* Effect.fork(queue.drainPending("1 minute"))
      for (let i = 0; i < 100 && Option.isNone(yield* Fiber.poll(drained)); i++) {
        yield* TestClock.adjust("10 millis")
        yield* eventLoopTurn
      }
      expect(yield* Fiber.join(drained)).toBe(true)
      expect(yield* test.rows).toEqual([events[0], events[2]])
      expect((yield* test.deadLetters).map((d) => d.event)).toEqual([events[1]])
      expect((yield* test.deadLetters)[0]?.reason).toContain("row builder threw")
      expect(yield* queue.metrics).toMatchObject({ appended: 2, appendFailures: 1, dlqLanded: 1, drainerDefects: 1 })
    }).pipe(silent))
})

describe("drainer faults", () => {
  it.live("a sink dying at random on ~5 % of 10,000 events: none vanishes, the drainer runs on, metrics add up", () =>
    Effect.gen(function*() {
      // A seeded choice of poison events (deterministic runs), about 1 in 20.
      let seed = 20261124
      const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
      const events = eventsOf(10_000, "fault")
      const poison = new Set(events.filter(() => random() < 0.05))
      const test = yield* makeBatchSink({
        batch: (batch) => batch.some((event) => poison.has(event)) ? "die" : "append",
        single: (event) => poison.has(event) ? "die" : "append"
      })
      const queue = yield* AuditQueue.make({ sink: test.sink, restartSchedule: Schedule.spaced("0 millis") })
      for (const event of events) yield* queue.submit(event)
      expect(yield* queue.drainPending("2 minutes")).toBe(true)
      const metrics = yield* queue.metrics
      expect(metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 10_000,
        appended: 10_000 - poison.size,
        appendFailures: poison.size,
        dlqLanded: poison.size,
        drainerDefects: poison.size
      })
      expect(yield* test.rows).toEqual(events.filter((event) => !poison.has(event)))
      expect((yield* test.deadLetters).map((d) => d.event)).toEqual(events.filter((event) => poison.has(event)))
      expect(yield* queue.status).toBe("Running")
      expect(poison.size).toBeGreaterThan(400)
    }).pipe(Effect.scoped, silent))
})

describe("submitAndWait", () => {
  it.scoped("resolves with the row's position once the sink has appended it", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      yield* submitAll(queue, eventsOf(3, "before"))
      const event = refusalEvent("acked", 99)
      const receipt = yield* queue.submitAndWait(event)
      expect(receipt).toEqual(new AuditQueue.AuditReceipt({ eventId: event.id, sequence: 3, entryHash: "h3" }))
      expect((yield* test.rows)[3]).toBe(event)
    }))

  it.scoped("64 waiting fibers ride shared batches and each gets its own receipt", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = eventsOf(64 * 20)
      const receipts = yield* Effect.forEach(
        Array.from({ length: 64 }, (_, f) => f),
        (f) =>
          Effect.forEach(
            events.filter((_, i) => i % 64 === f),
            (event) => Effect.map(queue.submitAndWait(event), (receipt) => [event, receipt] as const)
          ),
        { concurrency: "unbounded" }
      )
      const rows = yield* test.rows
      for (const [event, receipt] of receipts.flat()) {
        expect(receipt.eventId).toBe(event.id)
        expect(rows[receipt.sequence!]).toBe(event)
      }
      // Many waiters, fewer commits.
      expect((yield* test.batchSizes).length).toBeLessThan(events.length)
    }))

  it.scoped("fails with deadLettered, carrying the sink's reason, when the event lands in the DLQ", () =>
    Effect.gen(function*() {
      const sink = AuditSink.of({
        append: () => Effect.succeed(new DlqLanded({ reason: "sequence race budget", uniqueRaceRetries: 5 })),
        deadLetter: () => Effect.void
      })
      const queue = yield* AuditQueue.make({ sink })
      const event = refusalEvent("dlq", 1)
      const error = yield* Effect.flip(queue.submitAndWait(event))
      expect(error).toEqual(
        new AuditQueue.AuditAckError({ eventId: event.id, reason: "deadLettered", detail: "sequence race budget" })
      )
    }).pipe(silent))

  it.scoped("fails with notAppended when the event reached neither the ledger nor the DLQ", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink({ single: () => "error" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const error = yield* Effect.flip(queue.submitAndWait(refusalEvent("lost", 1)))
      expect(error.reason).toBe("notAppended")
      expect(error.detail).toContain("configured error")
    }).pipe(silent))

  it.scoped("fails with queueClosed after close, and the event is a send failure", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      yield* queue.closeAndFlush
      const event = refusalEvent("late", 1)
      const error = yield* Effect.flip(queue.submitAndWait(event))
      expect(error).toMatchObject({ _tag: "AuditAckError", eventId: event.id, reason: "queueClosed" })
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1, sendFailures: 1 })
    }).pipe(silent))

  it.scoped("submitRefusalAndWait acknowledges a Refuse and submits nothing for Allow", () =>
    Effect.gen(function*() {
      const test = yield* makeBatchSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const action = new ToolCall({ toolName: "t", serverId: "s" })
      const receipt = yield* queue.submitRefusalAndWait("a", action, new Refuse({ ruleId: "R", reason: "r" }))
      expect(Option.map(receipt, (r) => r.sequence)).toEqual(Option.some(0))
      expect(yield* queue.submitRefusalAndWait("a", action, { _tag: "Allow" } as never)).toEqual(Option.none())
      expect((yield* queue.metrics).submitted).toBe(1)
    }))

  it.effect("a waiter whose event is dead-lettered at a shutdown timeout is told so", () =>
    Effect.gen(function*() {
      const dead = yield* Ref.make<ReadonlyArray<string>>([])
      const sink = AuditSink.of({
        append: () => Effect.never,
        deadLetter: (event) => Ref.update(dead, (ids) => [...ids, event.id])
      })
      const event = refusalEvent("wedged", 1)
      const scope = yield* Scope.make()
      const queue = yield* AuditQueue.make({ sink, shutdownDrainTimeout: "1 second" }).pipe(Scope.extend(scope))
      const waiter = yield* Effect.fork(queue.submitAndWait(event))
      yield* Effect.yieldNow()
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
      const error = yield* Effect.flip(Fiber.join(waiter))
      expect(error).toMatchObject({ _tag: "AuditAckError", eventId: event.id, reason: "deadLettered" })
      expect(yield* Ref.get(dead)).toEqual([event.id])
    }).pipe(silent))
})

// ---------------------------------------------------------------------------------------------------------
// End to end on SQLite
// ---------------------------------------------------------------------------------------------------------

const inspect = <A, E>(filename: string, effect: Effect.Effect<A, E, SqlClient.SqlClient | LedgerSql.LedgerSql>) =>
  Effect.provide(effect, sqliteWithClient({ filename }))

describe("group commit through AuditLedger.layerSqlite", () => {
  it.live("2,000 events in batches: a dense chain that verifies, receipts that name the stored rows", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = eventsOf(2000, "e2e")
      const receipts = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        yield* submitAll(queue, events.slice(0, 1936))
        const acked = yield* Effect.forEach(events.slice(1936), queue.submitAndWait, { concurrency: "unbounded" })
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 2000, appended: 2000 })
        return acked
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(2000)
      const rows = yield* inspect(
        filename,
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ id: string; sequence: number; entry_hash: string }>`
            SELECT id, sequence, entry_hash FROM signed_events ORDER BY sequence`)
      )
      // The chain order is the submit order.
      expect(rows.map((row) => row.id)).toEqual(events.map((event) => event.id))
      for (const receipt of receipts) {
        const row = rows[receipt.sequence!]!
        expect({ id: row.id, entryHash: row.entry_hash }).toEqual({ id: receipt.eventId, entryHash: receipt.entryHash })
      }
    }))

  it.live("the hostile-string case through submitRefusal: ok-1, a lone surrogate, ok-2 are all in the ledger", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const action = new ToolCall({ toolName: "shell.exec", serverId: "local", arguments: { "k\uDC00": "\uD800v" } })
      const decision = new Refuse({ ruleId: "no-shell", reason: "r\uDBFF" })
      const metrics = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        for (const agentId of ["ok-1", "\uD800lone", "ok-2"]) {
          expect(yield* queue.submitRefusal(agentId, action, decision)).toBe(true)
        }
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        return yield* queue.metrics
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })), silent)
      expect(metrics).toEqual({ ...AuditMetrics.empty, submitted: 3, appended: 3 })
      const rows = yield* inspect(
        filename,
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) =>
            sql<{ agent_id: string; payload: string }>`SELECT agent_id, payload FROM signed_events ORDER BY sequence`
        )
      )
      // The documented rule: each lone surrogate is stored as U+FFFD.
      expect(rows.map((row) => row.agent_id)).toEqual(["ok-1", "\uFFFDlone", "ok-2"])
      const payload = JSON.parse(rows[1]!.payload)
      expect(payload.action.arguments).toEqual({ "k\uFFFD": "\uFFFDv" })
      expect(payload.decision.reason).toBe("r\uFFFD")
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(3)
    }))

  it.live("an event built directly with a lone surrogate: the others appended, it dead-lettered, all accounted", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const hostile = new DeferredAuditEvent({
        id: uuidV7(2),
        agentId: "\uD800lone",
        action: new ToolCall({ toolName: "shell.exec", serverId: "local" }),
        decision: new Refuse({ ruleId: "no-shell", reason: "r" }),
        timestamp: DateTime.unsafeMake(2)
      })
      const metrics = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        for (const event of [refusalEvent("ok-1", 1), hostile, refusalEvent("ok-2", 3)]) {
          expect(yield* queue.submit(event)).toBe(true)
        }
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
        return yield* queue.metrics
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })), silent)
      expect(metrics).toEqual({ ...AuditMetrics.empty, submitted: 3, appended: 2, appendFailures: 1, dlqLanded: 1 })
      const letters = yield* inspect(filename, DeadLetters.list())
      // The column holds valid UTF-8; the payload keeps the exact string (JSON escapes the surrogate).
      expect(letters.map((l) => l.agent_id)).toEqual(["\uFFFDlone"])
      expect(JSON.parse(letters[0]!.payload).agent_id).toBe("\uD800lone")
      expect(letters[0]!.failure_reason).toContain("cannot be built")
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(2)
    }))

  it.live("maxBatch: 1 through the one-Layer setup appends one transaction per event, same chain", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        yield* submitAll(queue, eventsOf(40, "single"))
        expect(yield* queue.drainPending("30 seconds")).toBe(true)
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, maxBatch: 1, queueId: "q-single" })))
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(40)
    }))

  it.live("a batch holding an event already in the chain appends the others and reports the existing row", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = eventsOf(10, "dup")
      yield* Effect.gen(function*() {
        const sink = yield* SqlAuditSink
        const first = yield* sink.appendBatch([events[3]!])
        const outcomes = yield* sink.appendBatch(events as unknown as Arr.NonEmptyReadonlyArray<DeferredAuditEvent>)
        expect(outcomes).toHaveLength(10)
        expect(outcomes[3]).toEqual(first[0])
        expect(outcomes.map((o) => o._tag === "Appended" ? o.position?.sequence : -1)).toEqual(
          [1, 2, 3, 0, 4, 5, 6, 7, 8, 9]
        )
        expect(outcomes.reduce((sum, o) => sum + o.uniqueRaceRetries, 0)).toBe(0)
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(10)
    }))

  it.live("a batch with an event whose row cannot be built fails as a whole and writes nothing", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const bad = new DeferredAuditEvent({
        id: uuidV7(1),
        agentId: "a",
        action: new Custom({ customKind: "k", payload: { text: "\uDC00" } }),
        decision: new Refuse({ ruleId: "R", reason: "r" }),
        timestamp: DateTime.unsafeMake(1)
      })
      yield* Effect.gen(function*() {
        const sink = yield* SqlAuditSink
        const error = yield* Effect.flip(sink.appendBatch([refusalEvent("a", 0), bad, refusalEvent("a", 2)]))
        expect(error).toMatchObject({ _tag: "AuditSinkError", eventId: bad.id })
        expect(yield* sink.head).toEqual(Option.none())
        // Alone, it is dead-lettered with its data kept as plain JSON.
        expect(yield* sink.append(bad)).toMatchObject({ _tag: "DlqLanded" })
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })), silent)
      const letters = yield* inspect(filename, DeadLetters.list())
      expect(letters).toHaveLength(1)
      expect(JSON.parse(letters[0]!.payload).action.payload.text).toBe("\uDC00")
    }))

  it.live("a tiny maxTransactionBytes splits a batch into several transactions, still one dense chain", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      yield* Effect.gen(function*() {
        const sink = yield* SqlAuditSink
        const events = eventsOf(25, "split") as unknown as Arr.NonEmptyReadonlyArray<DeferredAuditEvent>
        const outcomes = yield* sink.appendBatch(events)
        expect(outcomes.map((o) => o._tag === "Appended" ? o.position?.sequence : -1)).toEqual(
          events.map((_, i) => i)
        )
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, maxTransactionBytes: 600 })))
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(25)
    }))

  it.live("deadLetterBatch lands every event in one write", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = eventsOf(5, "dl") as unknown as Arr.NonEmptyReadonlyArray<DeferredAuditEvent>
      yield* Effect.gen(function*() {
        const sink = yield* SqlAuditSink
        yield* sink.deadLetterBatch(events, "shutdown")
        expect(yield* sink.dlqSize).toBe(5)
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
      const letters = yield* inspect(filename, DeadLetters.list())
      expect(letters.map((l) => l.id)).toEqual(events.map((e) => e.id))
      expect(new Set(letters.map((l) => l.failure_reason))).toEqual(new Set(["shutdown"]))
    }))
})

describe("the accounting invariant, whatever the strings", () => {
  // Any UTF-16 code unit, lone surrogates included.
  const codeUnits = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) })

  it.live("every submitted event ends appended or dead-lettered; the chain verifies", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ agentId: codeUnits, tool: codeUnits, reason: codeUnits }), {
            minLength: 1,
            maxLength: 12
          }),
          (specs) =>
            Effect.runPromise(Effect.gen(function*() {
              const filename = freshFile()
              const metrics = yield* Effect.gen(function*() {
                const queue = yield* AuditQueue.AuditQueue
                for (const spec of specs) {
                  yield* queue.submitRefusal(
                    spec.agentId,
                    new ToolCall({ toolName: spec.tool, serverId: "s", arguments: { text: spec.reason } }),
                    new Refuse({ ruleId: "R", reason: spec.reason })
                  )
                }
                expect(yield* queue.drainPending("30 seconds")).toBe(true)
                return yield* queue.metrics
              }).pipe(
                // The rows are built (or refused) on the caller's thread either way; 40 writer threads
                // would only add their start-up.
                Effect.provide(AuditLedger.layerSqlite({ filename, writerThread: false })),
                silent
              )
              expect(metrics.appended + metrics.dlqLanded).toBe(specs.length)
              expect(metrics.appendFailures).toBe(metrics.dlqLanded)
              const report = yield* inspect(filename, verifyLedger())
              const letters = yield* inspect(filename, DeadLetters.list())
              expect(report.ok).toBe(true)
              expect(report.rowsChecked).toBe(metrics.appended)
              expect(letters).toHaveLength(metrics.dlqLanded)
            }))
        ),
        { numRuns: 40 }
      )
    ))
})
