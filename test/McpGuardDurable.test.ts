/**
 * McpGuard with durable journals: every call's entries become `journal_entries` rows; in fail-closed mode an
 * allowed call is answered only once its `call` row is committed (write-ahead), and a call whose entry
 * cannot be stored is refused, never allowed; argument values stay out of the rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { AuditSinkError } from "../src/audit/AuditSink.js"
import * as MemorySink from "../src/audit/MemorySink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as JournalSeal from "../src/journal/JournalSeal.js"
import * as JournalRow from "../src/ledger/JournalRow.js"
import * as JournalStore from "../src/ledger/JournalStore.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [{ id: "no-move", kind: "blockTools", tools: ["move_file"] }]
}))

const scratch = () => join(mkdtempSync(join(tmpdir(), "guard-durable-")), "ledger.db")

const ledger = (filename: string) =>
  Layer.effect(SqlClient.SqlClient, Effect.map(LedgerSql.LedgerSql, (l) => l.client.withoutTransforms())).pipe(
    Layer.provideMerge(AuditLedger.layerSqlite({ filename, writerThread: false }))
  )

const call = (sessionId: string, toolName: string, secret: string): McpGuard.GuardCall => ({
  sessionId,
  agentId: "agent-7",
  serverId: "fs",
  toolName,
  arguments: { path: `/data/${secret}`, content: secret }
})

const guardWith = (options: Partial<McpGuard.Options> = {}) =>
  McpGuard.McpGuard.pipe(
    Effect.provide(McpGuard.layer({ policy: GuardPolicy.engine(policy, { salt: "salt" }), sealEvery: 0, ...options }))
  )

describe("McpGuard, durable journals", () => {
  it.scoped(
    "fail-closed: every allowed call's row is committed before check answers; all calls verify with their seal",
    () =>
      Effect.gen(function*() {
        const guard = yield* guardWith({ failClosed: true })
        const sql = yield* SqlClient.SqlClient
        const stored = (sessionId: string, seq: number) =>
          Effect.map(
            sql<
              { n: number }
            >`SELECT COUNT(*) AS n FROM journal_entries WHERE session_id = ${sessionId} AND seq = ${seq}`,
            (rows) => Number(rows[0]?.n)
          )
        const sessions = ["a", "b", "c"]
        const checks = yield* Effect.forEach(Array.from({ length: 60 }, (_, i) => i), (i) =>
          Effect.gen(function*() {
            const sessionId = sessions[i % 3]!
            const checked = yield* guard.check(call(sessionId, i % 10 === 0 ? "move_file" : "read_file", `secret-${i}`))
            if (checked._tag === "Allowed") {
              // Write-ahead: the row exists the moment the guard lets the call go upstream.
              expect(yield* stored(sessionId, checked.ticket.sequence)).toBe(1)
              yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: 10 })
            }
            return checked._tag
          }), { concurrency: "unbounded" })
        expect(checks.filter((c) => c === "Refused")).toHaveLength(6)
        for (const sessionId of sessions) yield* guard.endSession(sessionId)
        const queue = yield* AuditQueue.AuditQueue
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        expect(yield* (yield* JournalStore.JournalStore).flush("10 seconds")).toBe(true)
        for (const sessionId of sessions) {
          const rows = yield* JournalStore.readSession(sessionId)
          expect(rows).toHaveLength(20 + 18) // 20 call entries, 18 outcomes (2 refused)
          const seals = yield* JournalSeal.sealsOf(sessionId)
          expect(seals).toHaveLength(1)
          const check = JournalRow.checkSession(
            sessionId,
            rows,
            seals.map((s) => ({ ledgerSequence: s.sequence, length: s.length, headHash: s.headHash }))
          )
          expect(check.failures).toEqual([])
          expect(rows.filter((r) => r.outcome === "refused").every((r) => r.tool_name === "move_file")).toBe(true)
          // Intent: digest and size of the arguments, never their values.
          const intents = rows.filter((r) => r.kind === "call").map((r) => JSON.parse(r.intent!))
          expect(intents.every((i) => typeof i.arguments.sha256 === "string" && i.arguments.bytes > 0)).toBe(true)
          expect(rows.some((r) => (r.intent ?? "").includes("secret"))).toBe(false)
        }
      }).pipe(Effect.provide(ledger(scratch()))),
    20_000
  )

  it.scopedLive(
    "fail-closed: a call whose entry cannot be stored is refused (audit-unavailable), never allowed",
    () =>
      Effect.gen(function*() {
        let down = true
        const store = yield* JournalStore.makeWith(() =>
          down
            ? Effect.fail(new AuditSinkError({ eventId: "x", reason: "disk full", unavailable: true }))
            : Effect.void
        )
        const memory = yield* MemorySink.make()
        const queue = yield* AuditQueue.make({ sink: memory.sink })
        const guard = yield* guardWith({ failClosed: true, ackTimeout: "1 second" }).pipe(
          Effect.provideService(AuditQueue.AuditQueue, queue),
          Effect.provideService(JournalStore.JournalStore, store)
        )
        const first = yield* guard.check(call("s", "read_file", "x"))
        expect(first).toMatchObject({ _tag: "Refused", ruleId: McpGuard.AUDIT_UNAVAILABLE_RULE })
        // The store is known down now: later calls are refused before they are decided.
        const results = yield* Effect.forEach(
          Array.from({ length: 10 }, () => call("s", "read_file", "y")),
          guard.check,
          { concurrency: "unbounded" }
        )
        expect(results.every((r) => r._tag === "Refused" && r.ruleId === McpGuard.AUDIT_UNAVAILABLE_RULE)).toBe(true)
        // The first call's entry said allowed-then-interrupted, so nothing shows it ran.
        const journal = yield* guard.journal("s")
        const entries = yield* journal.entries
        expect(entries[1]).toMatchObject({ kind: "outcome", outcome: "interrupted", callSequence: 0 })
        down = false
        expect(yield* store.flush("5 seconds")).toBe(true)
        const again = yield* guard.check(call("s", "read_file", "z"))
        expect(again._tag).toBe("Allowed")
      }),
    20_000
  )

  it.scoped("fail-open records every call too, without waiting", () =>
    Effect.gen(function*() {
      const guard = yield* guardWith()
      for (let i = 0; i < 5; i++) {
        const checked = yield* guard.check(call("open", "read_file", "v"))
        if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "TimedOut" })
      }
      expect(yield* (yield* JournalStore.JournalStore).flush("10 seconds")).toBe(true)
      const rows = yield* JournalStore.readSession("open")
      expect(rows.map((r) => r.outcome)).toEqual(Array.from({ length: 5 }, () => ["pending", "timedOut"]).flat())
      expect(JournalRow.checkSession("open", rows, []).failures).toEqual([])
    }).pipe(Effect.provide(ledger(scratch()))), 20_000)

  it.scoped(
    "verifyLedger checks every stored journal against its seals and names a broken entry by session and sequence",
    () =>
      Effect.gen(function*() {
        const guard = yield* guardWith({ sealEvery: 4 })
        for (const sessionId of ["v1", "v2"]) {
          for (let i = 0; i < 5; i++) {
            const checked = yield* guard.check(call(sessionId, i === 2 ? "move_file" : "read_file", "w"))
            if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: 3 })
          }
        }
        yield* guard.endSession("v1")
        // v2 is left open with a call in flight: unfinished, not a failure.
        yield* guard.check(call("v2", "read_file", "w"))
        yield* (yield* AuditQueue.AuditQueue).drainPending("10 seconds")
        yield* (yield* JournalStore.JournalStore).flush("10 seconds")
        const clean = yield* verifyLedger()
        expect(clean.ok).toBe(true)
        expect(clean.journals).toEqual({ sessions: 2, entries: 9 + 10, sealedWithoutEntries: 0, unfinishedCalls: 1 })

        const sql = yield* SqlClient.SqlClient
        // Rewrite an allowed call as refused in the query column: the body still says otherwise.
        yield* sql`UPDATE journal_entries SET outcome = 'refused' WHERE session_id = 'v2' AND seq = 3`
        // Delete v1's last entries: its final seal commits to more than is stored.
        yield* sql`DELETE FROM journal_entries WHERE session_id = 'v1' AND seq >= 7`
        const broken = yield* verifyLedger()
        expect(broken.ok).toBe(false)
        const journalFailures = broken.failures.filter((f) => f.kind === "journal")
        expect(journalFailures.map((f) => [f.sessionId, f.sequence])).toEqual([["v1", 7], ["v1", 8], ["v2", 3]])
        expect(journalFailures[0]!.message).toContain("seal")
      }).pipe(Effect.provide(ledger(scratch()))),
    20_000
  )
})

describe.skipIf(noPostgres)("McpGuard, durable journals on PostgreSQL", () => {
  it.scoped("fail-closed calls are stored as journal_entries rows (BYTEA bodies) that verify with their seals", () => {
    const db = freshDatabase()
    return Effect.gen(function*() {
      const guard = yield* guardWith({ failClosed: true })
      yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          const checked = yield* guard.check(call(`pg-${i % 2}`, i % 5 === 0 ? "move_file" : "read_file", "p"))
          if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "ErrorAnswer", bytesRead: 5 })
        }), { concurrency: "unbounded", discard: true })
      yield* guard.endSession("pg-0")
      yield* guard.endSession("pg-1")
      yield* (yield* AuditQueue.AuditQueue).drainPending("10 seconds")
      yield* (yield* JournalStore.JournalStore).flush("10 seconds")
      const rows = yield* JournalStore.readSession("pg-0")
      expect(rows.length).toBeGreaterThan(10)
      expect(rows[0]!.body).toBeInstanceOf(Uint8Array)
      const report = yield* verifyLedger()
      expect(report.ok).toBe(true)
      expect(report.journals).toMatchObject({ sessions: 2, entries: 20 + 16, unfinishedCalls: 0 })
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE journal_entries SET body = ${
        Buffer.from(rows[4]!.body).fill(7, 50, 51)
      } WHERE session_id = 'pg-0' AND seq = 4`
      const broken = yield* verifyLedger()
      expect(broken.failures.filter((f) => f.kind === "journal").map((f) => [f.sessionId, f.sequence])).toContainEqual([
        "pg-0",
        4
      ])
    }).pipe(
      Effect.provide(
        Layer.effect(SqlClient.SqlClient, Effect.map(LedgerSql.LedgerSql, (l) => l.client.withoutTransforms())).pipe(
          Layer.provideMerge(AuditLedger.layerPg({ url: db.url }))
        )
      ),
      Effect.ensuring(Effect.sync(db.drop))
    )
  }, 30_000)
})
