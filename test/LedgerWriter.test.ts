/**
 * The ledger writer thread: the sink's write transactions run in a worker thread with its own SQLite
 * connection. The same chain as the in-thread sink, and a thread that dies mid-batch (before or after its
 * commit, or terminated outright) loses no event: every submitted event ends in the ledger or the
 * dead-letter table, every acknowledged one in the ledger, and the thread is started again.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Logger, Schedule } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import type { DeferredAuditEvent } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { AuditSink } from "../src/audit/AuditSink.js"
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

  it.live("a thread that cannot open the ledger answers with WriterThreadDied, a defect, never a hang", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.gen(function*() {
        const writer = yield* LedgerWriter.LedgerWriter
        return yield* Effect.exit(writer.store.appendAfterHead([{
          id: "0190aaaa-0000-7000-8000-000000000000",
          agentId: "a",
          eventType: "governance.refusal",
          payload: "{}",
          timestamp: "2026-01-01T00:00:00.000Z"
        }], "2026-01-01T00:00:00.000Z"))
      }).pipe(Effect.provide(LedgerWriter.layer({ filename: join(tempRoot, "no-such-dir", "x.db") })))
      expect(Exit.isFailure(exit)).toBe(true)
      const defect = Exit.isFailure(exit) ? Cause.dieOption(exit.cause) : undefined
      expect(defect?._tag).toBe("Some")
      expect(defect?._tag === "Some" ? defect.value : undefined).toBeInstanceOf(LedgerWriter.WriterThreadDied)
    }))

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
