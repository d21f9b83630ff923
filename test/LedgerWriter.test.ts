/**
 * The ledger writer thread: the sink's write transactions run in a worker thread with its own SQLite
 * connection. The same chain as the in-thread sink, and a thread that dies mid-batch (before or after its
 * commit, or terminated outright) loses no event: every submitted event ends in the ledger or the
 * dead-letter table, every acknowledged one in the ledger, and the thread is started again.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Logger, Metric, Option, Schedule, TestClock } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import type { DeferredAuditEvent } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { AuditSink } from "../src/audit/AuditSink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import type { ClassifiedFailure } from "../src/internal/sqlDialect.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import * as LedgerWriter from "../src/ledger/LedgerWriter.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-writer-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (): string => join(tempRoot, `ledger-${++fileCounter}.db`)

const silent = Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))

/** The ledger on `filename` with the sink in the writer thread, and a queue draining into it. */
const threadLedger = (filename: string, options: Partial<LedgerWriter.Options> & { maxBatch?: number } = {}) => {
  const sink = LedgerWriter.layerSink({ filename, synchronous: "NORMAL", ...options }).pipe(
    Layer.provideMerge(LedgerSql.layerSqlite({ filename, synchronous: "NORMAL" }))
  )
  const queue = Layer.scoped(
    AuditQueue.AuditQueue,
    Effect.flatMap(AuditSink, (sink) => AuditQueue.make({ sink, maxBatch: options.maxBatch ?? 64 }))
  )
  return queue.pipe(Layer.provideMerge(sink))
}

const inspect = <A, E>(filename: string, effect: Effect.Effect<A, E, SqlClient.SqlClient | LedgerSql.LedgerSql>) =>
  Effect.provide(effect, sqliteWithClient({ filename }))

const storedIds = (filename: string) =>
  inspect(
    filename,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ id: string }>`SELECT id FROM signed_events ORDER BY sequence`
      const letters = yield* DeadLetters.list()
      return { chain: rows.map((row) => row.id), dlq: letters.map((letter) => letter.id) }
    })
  )

describe("the writer thread", () => {
  it.live("2,000 signed events through the thread: a dense chain in submit order that verifies, receipts that name the rows", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const signer = yield* AuditSigner.generate
      const events = Array.from({ length: 2000 }, (_, i) => refusalEvent(`agent-${i % 7}`, i))
      const { receipts, starts } = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        for (const event of events.slice(0, 1900)) yield* queue.submit(event)
        const receipts = yield* Effect.forEach(events.slice(1900), queue.submitAndWait, { concurrency: "unbounded" })
        expect(yield* queue.drainPending("60 seconds")).toBe(true)
        expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 2000, appended: 2000 })
        return { receipts, starts: yield* (yield* LedgerWriter.LedgerWriter).threadStarts }
      }).pipe(Effect.provide(threadLedger(filename, { signer })))
      expect(starts).toBe(1)
      const stored = yield* storedIds(filename)
      expect(stored.chain).toEqual(events.map((event) => event.id))
      const rows = yield* inspect(
        filename,
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) =>
            sql<{ sequence: number; entry_hash: string; key_id: string | null }>`
            SELECT sequence, entry_hash, key_id FROM signed_events ORDER BY sequence`
        )
      )
      for (const receipt of receipts) expect(rows[receipt.sequence!]!.entry_hash).toBe(receipt.entryHash)
      expect(new Set(rows.map((row) => row.key_id))).toEqual(new Set([signer.keyId]))
      const report = yield* inspect(filename, verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([signer]) }))
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(2000)
    }))

  const killedMidBatch = (kill: (writer: LedgerWriter.Service) => Effect.Effect<void>) =>
    Effect.gen(function*() {
      const filename = freshFile()
      const events = Array.from({ length: 3000 }, (_, i) => refusalEvent("agent", i))
      const acked: Array<string> = []
      const { metrics, starts } = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const writer = yield* LedgerWriter.LedgerWriter
        const waiters = yield* Effect.forkAll(
          events.slice(0, 300).map((event) =>
            Effect.tap(Effect.exit(queue.submitAndWait(event)), (exit) =>
              Effect.sync(() => Exit.isSuccess(exit) && acked.push(exit.value.eventId)))
          )
        )
        // Three deaths while batches are in flight, each waited for (a request to a dying thread dies too).
        for (let round = 0; round < 3; round++) {
          const starts = yield* writer.threadStarts
          for (const event of events.slice(300 + round * 900, 300 + (round + 1) * 900)) {
            yield* queue.submit(event)
          }
          yield* Effect.catchAllDefect(kill(writer), () =>
            Effect.void)
          yield* Effect.repeat(writer.threadStarts, {
            schedule: Schedule.spaced("10 millis"),
            until: (now) => now > starts
          }).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => "the writer thread never restarted" }))
        }
        expect(yield* queue.drainPending("60 seconds")).toBe(true)
        yield* waiters.await
        return { metrics: yield* queue.metrics, starts: yield* writer.threadStarts }
      }).pipe(Effect.provide(threadLedger(filename)), silent)
      expect(starts).toBeGreaterThan(1)
      expect(metrics.submitted).toBe(3000)
      expect(metrics.appended + metrics.appendFailures).toBe(3000)
      const stored = yield* storedIds(filename)
      const everywhere = new Set([...stored.chain, ...stored.dlq])
      // Every submitted event is in the ledger or the dead-letter table; every acknowledged one in the ledger.
      expect(events.filter((event: DeferredAuditEvent) => !everywhere.has(event.id))).toEqual([])
      const chain = new Set(stored.chain)
      expect(acked.length).toBeGreaterThan(0)
      expect(acked.filter((id) => !chain.has(id))).toEqual([])
      expect(chain.size).toBe(stored.chain.length)
      // An event is counted appended only if its row is there (one whose thread died twice may be counted
      // as a failure and dead-lettered although its first attempt committed: its receipt was never given).
      expect(stored.chain.length).toBeGreaterThanOrEqual(metrics.appended)
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
    })

  it.live("a thread that exits inside a transaction, before its commit: nothing lost, the thread restarted", () =>
    killedMidBatch((writer) => writer.crashNextAppend("beforeCommit")))

  it.live("a thread that exits after its commit, before its answer: the committed rows are found, not doubled", () =>
    killedMidBatch((writer) => writer.crashNextAppend("afterCommit")))

  it.live("a thread terminated while batches are in flight: nothing lost, the thread restarted", () =>
    killedMidBatch((writer) => Effect.zipRight(Effect.sleep("5 millis"), writer.terminate)))

  it.live("the row thread (PostgreSQL's): the rows the sink would hash and sign here; terminated mid-request, restarted, answered", () =>
    Effect.scoped(Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const hasher = yield* LedgerWriter.makeRowHasher({ signer })
      const batch = Array.from({ length: 300 }, (_, n): SqlAuditSink.PreparedEvent => ({
        id: `0190aaaa-0000-7000-8000-${String(n).padStart(12, "0")}`,
        agentId: `agent-${n % 7}`,
        eventType: "governance.refusal",
        payload: JSON.stringify({ n, text: "é\u{1F600}".repeat(n % 5) }),
        timestamp: "2026-01-01T00:00:00.000Z"
      }))
      const head = { sequence: 41, entryHash: "ab".repeat(32) }
      const here = SqlAuditSink.hashRowsAfter(batch, head, signer)
      expect(yield* hasher.hashRows(batch, head)).toEqual(here)
      expect(yield* hasher.hashRows(batch, undefined)).toEqual(SqlAuditSink.hashRowsAfter(batch, undefined, signer))
      // Every signature covers its own chained entry hash.
      const keyring = AuditSigner.Keyring.fromSigners([signer])
      expect(
        here.map((row) =>
          AuditSigner.verifySignature(keyring, signer.keyId, Buffer.from(row.entryHash, "hex"), row.signature!)
        )
      ).toEqual(here.map(() => "valid"))
      // The thread dies while a request is in flight: the request is sent again to a fresh thread.
      const inFlight = yield* Effect.fork(hasher.hashRows(batch, head))
      yield* hasher.terminate
      expect(yield* inFlight.await.pipe(Effect.flatten)).toEqual(here)
      expect(yield* hasher.threadStarts).toBe(2)
    })))
})

// ---------------------------------------------------------------------------------------------------------
// A writer thread that cannot start, or that starts and keeps dying: it fails loudly, never loses silently
// ---------------------------------------------------------------------------------------------------------

/** Runs `effect` with the writer thread's entry set to `entry` (read when a writer starts). */
const withEntry = <A, E, R>(entry: string, effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const before = process.env[LedgerWriter.ENTRY_ENV]
      process.env[LedgerWriter.ENTRY_ENV] = entry
      return before
    }),
    () => effect,
    (before) =>
      Effect.sync(() => {
        if (before === undefined) delete process.env[LedgerWriter.ENTRY_ENV]
        else process.env[LedgerWriter.ENTRY_ENV] = before
      })
  )

/** An entry file with `source` as its code. */
const entryFile = (name: string, source: string): string => {
  const file = join(tempRoot, name)
  writeFileSync(file, source)
  return file
}

/** A thread that says it is ready, then dies on every request (as a crashing native driver would). */
const readyThenDies = () =>
  entryFile(
    "ready-then-dies.mjs",
    `import { parentPort } from "node:worker_threads"
parentPort.postMessage({ ready: true })
parentPort.on("message", () => process.exit(3))
`
  )

/** Moves the TestClock along in small steps while real time passes (for the threads) until `fiber` is done. */
const driveClock = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
  Effect.gen(function*() {
    for (let step = 0; step < 1000; step++) {
      if (Option.isSome(yield* Fiber.poll(fiber))) break
      yield* TestClock.adjust("20 millis")
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
    }
    return yield* Fiber.join(fiber)
  })

/** The build's failure, as the `WriterStartError` it must be. */
const startErrorOf = <A, E>(exit: Exit.Exit<A, E>) => {
  expect(Exit.isFailure(exit)).toBe(true)
  const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  expect(Option.getOrUndefined(error)).toBeInstanceOf(LedgerWriter.WriterStartError)
  return Option.getOrThrow(error) as unknown as LedgerWriter.WriterStartError
}

describe("a writer thread that cannot start fails the layer with WriterStartError (never a guard on a ledger it cannot write)", () => {
  // Under TestClock (`it.effect`): the failures come from the thread itself, not from a timeout.
  it.effect("a missing entry file: the whole ledger layer fails with entryNotFound, nothing half-built", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const exit = yield* withEntry(
        join(tempRoot, "no-such-entry.mjs"),
        Effect.exit(Effect.scoped(Layer.build(AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" }))))
      )
      const error = startErrorOf(exit)
      expect(error.reason).toBe("entryNotFound")
      expect(error.filename).toBe(filename)
      expect(error.message).toContain("no-such-entry.mjs")
    }).pipe(silent))

  it.effect("a ledger path in a missing directory: ledgerUnopenable, naming the file and the cause", () =>
    Effect.gen(function*() {
      const filename = join(tempRoot, "no-such-dir", "x.db")
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(LedgerWriter.layer({ filename }))))
      const error = startErrorOf(exit)
      expect(error.reason).toBe("ledgerUnopenable")
      expect(error.message).toContain(filename)
      expect(error.detail).toContain("directory does not exist")
    }).pipe(silent))

  it.effect("a file that is not SQLite: ledgerUnopenable (the thread's connection cannot be set up on it)", () =>
    Effect.gen(function*() {
      const filename = join(tempRoot, "not-sqlite.db")
      writeFileSync(filename, "this is not a database\n".repeat(300))
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(LedgerWriter.layer({ filename }))))
      const error = startErrorOf(exit)
      expect(error.reason).toBe("ledgerUnopenable")
      expect(error.detail).toMatch(/not a database/)
      // Nothing was written into it.
      expect(readFileSync(filename, "utf8")).toBe("this is not a database\n".repeat(300))
    }).pipe(silent))

  it.effect("a thread that never becomes ready: startTimedOut once startTimeout passes on the Clock, and it is ended", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const hangs = entryFile("never-ready.mjs", "setInterval(() => {}, 1000)\n")
      const build = yield* Effect.fork(
        withEntry(
          hangs,
          Effect.exit(Effect.scoped(Layer.build(LedgerWriter.layer({ filename, startTimeout: "10 seconds" }))))
        )
      )
      // Real time passes (the thread runs), virtual time does not: no timeout yet.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
      expect(Option.isNone(yield* Fiber.poll(build))).toBe(true)
      yield* TestClock.adjust("10 seconds")
      const error = startErrorOf(yield* Fiber.join(build))
      expect(error.reason).toBe("startTimedOut")
    }).pipe(silent))
})

describe("a writer thread that starts and keeps dying: bounded restarts on the Clock, then the writer is down", () => {
  it.effect("restarts wait on restartSchedule (TestClock), and once it ends a write fails as unavailable, not a defect", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      yield* Effect.scoped(Layer.build(LedgerSql.layerSqlite({ filename, synchronous: "NORMAL" })))
      const result = yield* withEntry(
        readyThenDies(),
        Effect.scoped(Effect.gen(function*() {
          const writer = yield* LedgerWriter.make({
            filename,
            restartSchedule: Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(3)))
          })
          expect(yield* writer.threadStarts).toBe(1)
          const append = yield* Effect.fork(Effect.exit(writer.store.appendAfterHead([{
            id: "0190aaaa-0000-7000-8000-000000000000",
            agentId: "a",
            eventType: "governance.refusal",
            payload: "{}",
            timestamp: "2026-01-01T00:00:00.000Z"
          }], "2026-01-01T00:00:00.000Z")))
          // The thread dies on the request; without the Clock moving, it is not started again.
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
          expect(yield* writer.threadStarts).toBe(1)
          expect(Option.isNone(yield* Fiber.poll(append))).toBe(true)
          // 100 ms later (virtual), one restart: its thread dies too, a defect for the caller (the queue's
          // poison path) after one resend.
          yield* TestClock.adjust("100 millis")
          const first = yield* Fiber.join(append)
          expect(yield* writer.threadStarts).toBe(2)
          expect(Exit.isFailure(first) && Cause.isDie(first.cause)).toBe(true)
          // The next writes use up the schedule (200 ms, 400 ms), each a defect, then the writer is down: a
          // typed failure the sink reports as unavailable (the queue holds its events), after one more start.
          const later: Array<Exit.Exit<void, ClassifiedFailure>> = []
          while (later.length < 6) {
            const write = yield* Effect.fork(
              Effect.exit(writer.store.insertDeadLetters([], "x", "2026-01-01T00:00:00.000Z"))
            )
            const exit = yield* driveClock(write)
            later.push(exit)
            if (Exit.isFailure(exit) && Option.isSome(Cause.failureOption(exit.cause))) break
          }
          const startsWhenDown = yield* writer.threadStarts
          // Down: no schedule to wait on; each write tries one start and fails at once.
          const again = yield* Effect.exit(writer.store.insertDeadLetters([], "x", "2026-01-01T00:00:00.000Z"))
          return { later, again, startsWhenDown, startsAfter: yield* writer.threadStarts }
        }))
      )
      // Bounded: 1 start + 3 scheduled restarts + 1 attempt when down; then one more attempt per write.
      expect(result.startsWhenDown).toBe(5)
      expect(result.startsAfter).toBe(6)
      expect(result.later.slice(0, -1).every((exit) => Exit.isFailure(exit) && Cause.isDie(exit.cause))).toBe(true)
      for (const exit of [result.later.at(-1)!, result.again]) {
        expect(Exit.isFailure(exit)).toBe(true)
        const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
        expect(failure?.kind).toBe("unavailable")
        expect(failure?.description).toContain("ledger writer thread is down after")
      }
    }).pipe(silent))

  it.live("through the queue: the first events go to LOST lines or stay held, the queue is Stalled, nothing silently dropped", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const spillFile = join(tempRoot, "lost.jsonl")
      const events = Array.from({ length: 20 }, (_, i) => refusalEvent("agent", i))
      const lostIds = () =>
        existsSync(spillFile)
          ? readFileSync(spillFile, "utf8").trim().split("\n").map((line) => JSON.parse(line).event.id as string)
          : []
      const sink = LedgerWriter.layerSink({
        filename,
        synchronous: "NORMAL",
        restartSchedule: Schedule.exponential("1 millis").pipe(Schedule.intersect(Schedule.recurs(5)))
      }).pipe(Layer.provideMerge(LedgerSql.layerSqlite({ filename, synchronous: "NORMAL" })))
      const queue = Layer.scoped(
        AuditQueue.AuditQueue,
        Effect.flatMap(AuditSink, (sink) =>
          AuditQueue.make({
            sink,
            queueId: "keeps-dying",
            restartSchedule: Schedule.spaced("1 millis"),
            stallSchedule: Schedule.spaced("20 millis"),
            shutdownDrainTimeout: "300 millis",
            lostEvents: { stderr: false, spillFile }
          }))
      )
      const whileOpen = yield* withEntry(
        readyThenDies(),
        Effect.gen(function*() {
          const queue = yield* AuditQueue.AuditQueue
          const writer = yield* LedgerWriter.LedgerWriter
          const acks = yield* Effect.forEach(events.slice(0, 5), (event) => Effect.fork(queue.submitAndWait(event)))
          for (const event of events.slice(5)) yield* queue.submit(event)
          yield* Effect.repeat(queue.status, { schedule: Schedule.spaced("10 millis"), until: (s) => s === "Stalled" })
            .pipe(Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => "the queue never stalled" }))
          const startsAtStall = yield* writer.threadStarts
          // Reported: drainPending says not drained, the stalled gauge is 1, the events are in flight.
          expect(yield* queue.drainPending("200 millis")).toBe(false)
          const gauge = yield* Metric.value(AuditMetrics.stalledGauge("keeps-dying"))
          const metrics = yield* queue.metrics
          // Held events wait for their acknowledgement; none is answered as appended.
          const acked = (yield* Effect.forEach(acks, Fiber.poll)).filter(Option.isSome)
          return {
            gauge: gauge.value,
            metrics,
            acked,
            lost: lostIds(),
            startsAtStall,
            startsLater: yield* Effect.zipRight(Effect.sleep("200 millis"), writer.threadStarts)
          }
        }).pipe(Effect.provide(queue.pipe(Layer.provideMerge(sink))))
      )
      expect(whileOpen.gauge).toBe(1)
      expect(whileOpen.metrics.submitted).toBe(20)
      expect(whileOpen.metrics.appended).toBe(0)
      // Every event is accounted: written out whole as LOST (a poison event whose dead letter could not be
      // written either) or held in order, reported as in flight.
      expect(whileOpen.metrics.appendFailures).toBe(whileOpen.lost.length)
      expect(whileOpen.metrics.appendFailures).toBeLessThanOrEqual(2)
      expect(AuditMetrics.inFlight(whileOpen.metrics)).toBe(20 - whileOpen.lost.length)
      expect(new Set(whileOpen.lost).size).toBe(whileOpen.lost.length)
      expect(whileOpen.lost.every((id) => events.some((event) => event.id === id))).toBe(true)
      for (const ack of whileOpen.acked) {
        expect(Exit.isFailure(ack.value)).toBe(true)
      }
      // Restarts are bounded: at most one start per stall retry once the writer is down.
      expect(whileOpen.startsAtStall).toBeLessThanOrEqual(12)
      expect(whileOpen.startsLater - whileOpen.startsAtStall).toBeLessThanOrEqual(12)
      // Closing: the held events cannot be dead-lettered either, so every one of them is a LOST line.
      expect(lostIds().sort()).toEqual(events.map((event) => event.id).sort())
      const stored = yield* storedIds(filename)
      expect(stored).toEqual({ chain: [], dlq: [] })
    }).pipe(silent))
})
