import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { readFileSync } from "node:fs"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AuditSinkError } from "../src/audit/AuditSink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { decodeEntryBody } from "../src/internal/journalEntryFormat.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as JournalRow from "../src/ledger/JournalRow.js"
import * as JournalStore from "../src/ledger/JournalStore.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"

const formatDoc = readFileSync(new URL("../docs/FORMAT.md", import.meta.url), "utf8")
const vector = (name: string): string => {
  const match = new RegExp("```[a-z]* test-vector:" + name + "\\n([\\s\\S]*?)\\n```").exec(formatDoc)
  if (match === null) throw new Error(`docs/FORMAT.md has no test-vector:${name} block`)
  return match[1]!
}

const scratch = () => join(mkdtempSync(join(tmpdir(), "journal-store-")), "ledger.db")

/** A ledger file with its journal store; the generic `SqlClient` is the ledger's client, for tampering. */
const ledger = (filename: string, writerThread = false) =>
  Layer.effect(SqlClient.SqlClient, Effect.map(LedgerSql.LedgerSql, (l) => l.client.withoutTransforms())).pipe(
    Layer.provideMerge(AuditLedger.layerSqlite({ filename, writerThread }))
  )

const call = (toolName: string, extra: Partial<SessionJournal.RecordParams> = {}): SessionJournal.RecordParams => ({
  toolName,
  serverId: "srv-1",
  agentId: "agent-1",
  bytesRead: 0,
  bytesWritten: 50,
  delegationDepth: 0,
  allowed: true,
  kind: "call",
  outcome: "pending",
  ...extra
})

const durableJournal = (sessionId: string) =>
  Effect.flatMap(JournalStore.JournalStore, (store) => SessionJournal.make(sessionId, { store }))

const flushed = Effect.flatMap(JournalStore.JournalStore, (store) => store.flush("10 seconds"))

describe("JournalStore", () => {
  it.scoped(
    "a durable journal stores FORMAT.md's journal-row vector exactly (through the writer thread)",
    () =>
      Effect.gen(function*() {
        const expected = JSON.parse(vector("journal-row"))
        yield* TestClock.setTime(1700000000000)
        const journal = yield* durableJournal("sess-2")
        const sequence = yield* journal.record(call("read_file", { intent: { arguments: { sha256: "x", bytes: 50 } } }))
        yield* journal.awaitDurable(sequence)
        const sql = yield* SqlClient.SqlClient
        const rows = yield* JournalStore.readSession("sess-2")
        expect(rows).toHaveLength(1)
        const { body, intent, written_at, ...columns } = rows[0]!
        expect({ ...columns, body: Buffer.from(body).toString("hex") }).toEqual(expected)
        expect(intent).toBe("{\"arguments\":{\"bytes\":50,\"sha256\":\"x\"}}")
        expect(written_at).toMatch(/^\d{4}-/)
        // The vector itself: its body hashes to its entry_hash and decodes to its columns.
        const decoded = decodeEntryBody(Buffer.from(expected.body, "hex"))
        expect(typeof decoded).toBe("object")
        const check = JournalRow.checkSession("sess-2", rows, [
          { ledgerSequence: 0, length: 1, headHash: expected.entry_hash }
        ])
        expect(check.failures).toEqual([])
        const counted = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM journal_entries`
        expect(counted[0]?.n).toBe(1)
      }).pipe(Effect.provide(ledger(scratch(), true))),
    20_000
  )

  it.scoped(
    "concurrent calls of many sessions share commits; every session's chain verifies from the rows",
    () =>
      Effect.gen(function*() {
        const store = yield* JournalStore.JournalStore
        const journals = yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => `s-${i}`), durableJournal)
        yield* Effect.forEach(Array.from({ length: 400 }, (_, i) => i), (i) =>
          Effect.gen(function*() {
            const journal = journals[i % journals.length]!
            const sequence = yield* journal.record(call(`tool_${i}`))
            yield* journal.awaitDurable(sequence)
            const end = yield* journal.record(
              call(`tool_${i}`, {
                kind: "outcome",
                outcome: "result",
                callSequence: sequence,
                bytesWritten: 0,
                bytesRead: 7
              })
            )
            yield* journal.awaitDurable(end)
          }), { concurrency: "unbounded", discard: true })
        const stats = yield* store.stats
        expect(stats.stored).toBe(800)
        expect(stats.outstanding).toBe(0)
        // Group commit: far fewer transactions than entries.
        expect(stats.batches).toBeLessThan(400)
        for (const journal of journals) {
          const sessionId = yield* journal.sessionId
          const rows = yield* JournalStore.readSession(sessionId)
          expect(rows).toHaveLength(100)
          const check = JournalRow.checkSession(sessionId, rows, [
            { ledgerSequence: 1, length: 100, headHash: yield* journal.headHash }
          ])
          expect(check.failures).toEqual([])
        }
      }).pipe(Effect.provide(ledger(scratch()))),
    20_000
  )

  it.scoped(
    "checkSession names the broken entry of a tampered, truncated or resealed chain",
    () =>
      Effect.gen(function*() {
        const journal = yield* durableJournal("t")
        for (let i = 0; i < 4; i++) yield* journal.record(call(`tool_${i}`, { outcome: "refused", allowed: false }))
        expect(yield* flushed).toBe(true)
        const head = yield* journal.headHash
        const sql = yield* SqlClient.SqlClient
        const rows = yield* JournalStore.readSession("t")
        const seal = [{ ledgerSequence: 3, length: 4, headHash: head }]
        expect(JournalRow.checkSession("t", rows, seal).failures).toEqual([])

        const failureOf = (changed: ReadonlyArray<JournalRow.StoredRow>, seals = seal) =>
          JournalRow.checkSession("t", changed, seals).failures.map((f) => [f.sequence, f.check])
        // A flipped byte of a body (the entry hash no longer matches).
        const flipped = rows.map((r, i) => i === 2 ? { ...r, body: Buffer.from(r.body).fill(0x41, 40, 41) } : r)
        expect(failureOf(flipped)).toContainEqual([2, "entryHash"])
        // A query column that says something else than the body.
        expect(failureOf(rows.map((r, i) => i === 1 ? { ...r, tool_name: "innocent" } : r))).toEqual([[1, "column"]])
        // A body rehashed consistently, but of another session: the chain cannot be transplanted.
        const foreign = rows.map((r, i) => i === 0 ? { ...r, session_id: "t" } : r)
        expect(JournalRow.checkSession("u", foreign, []).failures[0]).toMatchObject({
          sessionId: "u",
          sequence: 0,
          check: "body"
        })
        // A deleted entry.
        expect(failureOf(rows.filter((_, i) => i !== 1))[0]).toEqual([1, "sequence"])
        // A truncated chain against its seal.
        expect(failureOf(rows.slice(0, 3))).toEqual([[3, "seal"]])
        // The same rows stored in the table: a tampered row is found by reading it back.
        yield* sql`UPDATE journal_entries SET outcome = 'result' WHERE session_id = 't' AND seq = 3`
        const reread = yield* JournalStore.readSession("t")
        expect(JournalRow.checkSession("t", reread, seal).failures.map((f) => [f.sequence, f.check])).toEqual([[
          3,
          "column"
        ]])
      }).pipe(Effect.provide(ledger(scratch()))),
    20_000
  )

  it.scoped("a session id used for a second chain is refused, not mixed into the first", () =>
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const first = yield* durableJournal("dup")
      yield* first.record(call("a", { outcome: "refused", allowed: false }))
      yield* first.awaitDurable(0)
      yield* TestClock.adjust("1 second")
      const second = yield* durableJournal("dup")
      yield* second.record(call("b", { outcome: "refused", allowed: false }))
      const failed = yield* Effect.flip(second.awaitDurable(0))
      expect(failed._tag).toBe("EntryNotDurable")
      expect(failed.reason).toContain("another hash")
      expect(yield* flushed).toBe(true)
      expect((yield* store.stats).lost).toBe(1)
      const rows = yield* JournalStore.readSession("dup")
      expect(rows.map((r) => r.entry_hash)).toEqual([yield* first.headHash])
    }).pipe(Effect.provide(ledger(scratch()))), 20_000)
})

describe("JournalStore.makeWith", () => {
  it.scoped("while the database cannot be written, waiters fail at once and the entries are kept and stored later", () =>
    Effect.gen(function*() {
      let down = true
      const stored: Array<string> = []
      const store = yield* JournalStore.makeWith(
        (rows) =>
          Effect.suspend(() => {
            if (down) return Effect.fail(new AuditSinkError({ eventId: "x", reason: "disk full", unavailable: true }))
            rows.forEach((r) => stored.push(`${r.sessionId}:${r.sequence}`))
            return Effect.void
          })
      )
      const journal = yield* SessionJournal.make("down", { store })
      const sequence = yield* journal.record(call("read_file", { outcome: "refused", allowed: false }))
      const failed = yield* Effect.flip(journal.awaitDurable(sequence))
      expect(failed.reason).toContain("disk full")
      expect(yield* store.available).toBe(false)
      down = false
      yield* TestClock.adjust("2 seconds")
      expect(yield* store.flush("1 second")).toBe(true)
      yield* journal.awaitDurable(sequence)
      expect(stored).toEqual(["down:0"])
      expect(yield* store.available).toBe(true)
    }))

  it.effect("an in-memory journal is not durable and never waits", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("mem")
      expect(journal.durable).toBe(false)
      yield* journal.awaitDurable(yield* journal.record(call("x")))
    }))
})
