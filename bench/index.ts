/**
 * Benchmarks (`npm run bench`). This machine is shared and noisy, so every result is printed as a ratio
 * of two measurements taken side by side in this one run, never as an absolute target.
 *
 * 1. Journal append is O(1) amortized: time per record at 40k entries vs at 10k (≈1 when constant).
 * 2. The guard's hot path: `submit` vs a direct durable SQLite append (how much the queue saves the caller).
 * 3. Durability cost: SQLite appends with synchronous=FULL vs NORMAL.
 * 4. Verification throughput vs append throughput (rows/s).
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Console, Effect, Layer } from "effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import * as AuditLedger from "../src/AuditLedger.js"
import * as AuditQueue from "../src/AuditQueue.js"
import * as LedgerVerifier from "../src/LedgerVerifier.js"
import * as SessionJournal from "../src/SessionJournal.js"
import * as SqlAuditSink from "../src/SqlAuditSink.js"
import { refusalEvent } from "../test/fixtures/events.js"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-bench-"))

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    const value = yield* effect
    return { value, ms: performance.now() - start }
  })

const recordCalls = (n: number) =>
  Effect.gen(function*() {
    const journal = yield* SessionJournal.make("bench")
    for (let i = 0; i < n; i++) {
      yield* journal.record({
        toolName: `tool-${i % 7}`,
        serverId: "server",
        agentId: "agent",
        bytesRead: i,
        bytesWritten: 0,
        delegationDepth: 1,
        allowed: true
      })
    }
  })

const sinkAppends = (file: string, n: number, synchronous: "FULL" | "NORMAL") =>
  Effect.gen(function*() {
    const sink = yield* SqlAuditSink.SqlAuditSink
    for (let i = 0; i < n; i++) yield* sink.append(refusalEvent("bench", i))
  }).pipe(
    Effect.provide(
      SqlAuditSink.layer({ synchronous }).pipe(
        Layer.provideMerge(AuditLedger.layerSqliteClient({ filename: file, synchronous }))
      )
    )
  )

const submits = (file: string, n: number) =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue.AuditQueue
    const events = Array.from({ length: n }, (_, i) => refusalEvent("bench", i))
    const { ms } = yield* timed(Effect.forEach(events, queue.submit, { discard: true }))
    yield* queue.closeAndFlush
    return ms
  }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename: file })))

const ratio = (label: string, a: number, b: number, meaning: string) =>
  Console.log(`${label}: ${(a / b).toFixed(2)}x  (${meaning})`)

const main = Effect.gen(function*() {
  yield* recordCalls(2_000) // warm-up
  const small = yield* timed(recordCalls(10_000))
  const large = yield* timed(recordCalls(40_000))
  yield* ratio(
    "journal: per-record time at 40k vs 10k entries",
    large.ms / 40_000,
    small.ms / 10_000,
    "≈1 means O(1) appends"
  )

  const n = 300
  const full = yield* timed(sinkAppends(join(dir, "full.db"), n, "FULL"))
  const normal = yield* timed(sinkAppends(join(dir, "normal.db"), n, "NORMAL"))
  yield* ratio("sqlite append: FULL vs NORMAL time", full.ms, normal.ms, "the price of durability per event")

  const submitMs = yield* submits(join(dir, "queue.db"), n)
  yield* ratio("hot path: direct durable append vs submit", full.ms, submitMs, "how much less the guard waits")

  const verify = yield* timed(
    LedgerVerifier.verifyLedger().pipe(Effect.provide(SqliteClient.layer({ filename: join(dir, "full.db") })))
  )
  yield* ratio(
    "verify vs append throughput (rows/s)",
    verify.value.rowsChecked / verify.ms,
    n / full.ms,
    "rows verified per row appended in the same time"
  )
}).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
