/**
 * A guard's records in the log (issue 25: "the approval row in `agent-ledger log`"): shadow refusals,
 * approvals, tool pins and changes are entries of their own kind with their rule, tool, answer and digest,
 * filtered by `kind`, `rule` and `tool` in SQL and matched exactly, so a refusal whose action payload spells
 * an approval's fields (`"rule_id":"ask-write"`) is not reported as one; a row of a type this version does
 * not know is `other`. On SQLite and on PostgreSQL (skipped, visibly, without `AGENT_LEDGER_PG_URL`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Chunk, DateTime, Effect, Layer, ManagedRuntime, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  Allow,
  APPROVAL_EVENT_TYPE,
  Custom,
  DeferredAuditEvent,
  JournalRef,
  type JsonValue,
  Refuse,
  TOOL_CHANGED_EVENT_TYPE,
  TOOL_PINNED_EVENT_TYPE,
  ToolCall
} from "../src/audit/AuditEvent.js"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { logLine } from "../src/cli/query.js"
import * as Approvals from "../src/guard/Approvals.js"
import type { GuardCall } from "../src/guard/McpGuard.js"
import { uuidV7 } from "../src/internal/uuid.js"
import * as LedgerRow from "../src/ledger/LedgerRow.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerQuery from "../src/query/LedgerQuery.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"
import { T0 } from "./fixtures/queryLedger.js"

const scratch = mkdtempSync(join(tmpdir(), "agent-ledger-query-records-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const PIN = "a".repeat(64)
const CHANGED = "b".repeat(64)

const timed = (minute: number) => ({
  id: uuidV7(T0 + minute * 60_000),
  timestamp: DateTime.unsafeMake(T0 + minute * 60_000)
})

const call = (toolName: string): GuardCall => ({ sessionId: "s1", serverId: "fs", toolName, agentId: "agent-a" })

const approval = (minute: number, answer: Approvals.Answer, allowed: boolean, sequence: number) =>
  new DeferredAuditEvent({
    ...timed(minute),
    agentId: "agent-a",
    action: new Custom({
      customKind: APPROVAL_EVENT_TYPE,
      payload: Approvals.approvalPayload({
        call: call("write_file"),
        ruleId: "ask-write",
        reason: "writes need a person",
        askedBy: "client ide via elicitation",
        approver: answer === "timeout" ? null : "client ide via elicitation",
        answer,
        allowed,
        latencyMillis: 1234,
        argumentSummary: { shown: { path: "/tmp/a" }, hiddenBytes: {} }
      })
    }),
    decision: new Allow(),
    journal: new JournalRef({ sessionId: "s1", sequence })
  })

const record = (minute: number, kind: string, payload: { readonly [key: string]: JsonValue }) =>
  new DeferredAuditEvent({
    ...timed(minute),
    agentId: "agent-a",
    action: new Custom({ customKind: kind, payload }),
    decision: new Allow()
  })

const refusal = (minute: number, mode?: "shadow") =>
  new DeferredAuditEvent({
    ...timed(minute),
    agentId: "agent-a",
    action: new ToolCall({ toolName: "write_file", serverId: "fs" }),
    decision: new Refuse({ ruleId: "no-write", reason: "no writes" }),
    journal: new JournalRef({ sessionId: "s1", sequence: minute }),
    ...(mode === undefined ? {} : { mode })
  })

/** The rows in ledger order; sequence n is `ROWS[n]`. */
const ROWS = (): ReadonlyArray<DeferredAuditEvent> => [
  record(0, TOOL_PINNED_EVENT_TYPE, { server_id: "fs", tool_name: "write_file", digest: PIN, definition: null }), // 0
  refusal(1), // 1
  refusal(2, "shadow"), // 2
  approval(3, "accept", true, 3), // 3
  approval(4, "decline", false, 4), // 4
  record(5, TOOL_CHANGED_EVENT_TYPE, {
    server_id: "fs",
    tool_name: "write_file",
    pinned_digest: PIN,
    digest: CHANGED,
    definition: null
  }), // 5
  // 6: a refusal of a Custom action whose payload spells an approval's and a pin's fields
  new DeferredAuditEvent({
    ...timed(6),
    agentId: "agent-b",
    action: new Custom({
      customKind: "note",
      payload: { rule_id: "ask-write", tool_name: "write_file", answer: "accept", digest: PIN }
    }),
    decision: new Refuse({ ruleId: "no-notes", reason: "no" })
  })
]

const suite = (name: string, skip: boolean, open: () => { readonly db: string; readonly close: () => void }) =>
  describe.skipIf(skip)(`a guard's records in the log, on ${name}`, () => {
    let close = () => {}
    let runtime: ManagedRuntime.ManagedRuntime<LedgerQuery.LedgerQuery | LedgerSql.LedgerSql, unknown> | undefined
    beforeAll(async () => {
      const opened = open()
      close = opened.close
      await Effect.runPromise(
        Effect.gen(function*() {
          const queue = yield* AuditQueue
          for (const event of ROWS()) yield* queue.submitAndWait(event)
        }).pipe(Effect.provide(AuditLedger.layerFor(opened.db, { writerThread: false })))
      )
      runtime = ManagedRuntime.make(
        LedgerQuery.layer.pipe(Layer.provideMerge(LedgerSql.layerFor(opened.db)))
      )
      // 7: a row of a type this version does not know (a later version's, or a foreign writer's).
      await runtime.runPromise(LedgerSql.use(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const columns = LedgerRow.COLUMNS.filter((c) => c !== "id" && c !== "sequence" && c !== "event_type")
        yield* sql.unsafe(
          `INSERT INTO signed_events (id, sequence, event_type, ${columns.join(", ")})
           SELECT '${uuidV7(T0 + 7 * 60_000)}', 7, 'future.kind', ${columns.join(", ")}
           FROM signed_events WHERE sequence = 0`
        )
      })))
    })
    afterAll(async () => {
      await runtime?.dispose()
      close()
    })

    const logOf = (q: LedgerQuery.LogQuery) =>
      runtime!.runPromise(
        Effect.flatMap(LedgerQuery.LedgerQuery, (service) => Stream.runCollect(service.log(q))).pipe(
          Effect.map(Chunk.toReadonlyArray)
        )
      )
    const sequencesOf = async (q: LedgerQuery.LogQuery) => (await logOf(q)).map((e) => e.ledgerSequence)

    it("every row is an entry of its own kind, with its rule, tool, answer and digest", async () => {
      const all = await logOf({})
      expect(all.map((e) => [e.ledgerSequence, e.kind])).toEqual([
        [0, "tool-pinned"],
        [1, "refusal"],
        [2, "would-refuse"],
        [3, "approval"],
        [4, "approval"],
        [5, "tool-changed"],
        [6, "refusal"],
        [7, "other"]
      ])
      expect(all[0]).toMatchObject({ toolName: "write_file", serverId: "fs", digest: PIN, decision: null })
      expect(all[2]).toMatchObject({ ruleId: "no-write", reason: "no writes", decision: null, outcome: null })
      expect(all[3]).toMatchObject({
        ruleId: "ask-write",
        reason: "writes need a person",
        toolName: "write_file",
        serverId: "fs",
        sessionId: "s1",
        journalSequence: 3,
        answer: "accept",
        approver: "client ide via elicitation",
        outcome: "allowed",
        decision: null
      })
      expect(all[4]).toMatchObject({ answer: "decline", outcome: "refused" })
      expect(all[5]).toMatchObject({ digest: CHANGED, toolName: "write_file" })
      expect(all[6]).toMatchObject({ ruleId: "no-notes", answer: null, digest: null, toolName: null })
      expect(logLine(all[3]!)).toContain(
        "approval  write_file@fs  rule=ask-write  answer=accept  by=client ide via elicitation  call=allowed  session=s1:3"
      )
      expect(logLine(all[5]!)).toContain(`tool-changed  write_file@fs  digest=${CHANGED.slice(0, 16)}`)
    })

    it("kind, rule and tool filters find the records, and only them", async () => {
      expect(await sequencesOf({ kind: "approval" })).toEqual([3, 4])
      expect(await sequencesOf({ kind: "tool-pinned" })).toEqual([0])
      expect(await sequencesOf({ kind: "would-refuse" })).toEqual([2])
      expect(await sequencesOf({ kind: "other" })).toEqual([7])
      expect(await sequencesOf({ kind: "call" })).toEqual([])
      // The refusal at 6 spells rule_id ask-write and tool_name write_file in its action: not matched.
      expect(await sequencesOf({ rule: "ask-write" })).toEqual([3, 4])
      expect(await sequencesOf({ tool: "write_file" })).toEqual([0, 1, 2, 3, 4, 5])
      expect(await sequencesOf({ tool: "write_file", kind: "approval", session: "s1" })).toEqual([3, 4])
      expect(await sequencesOf({ rule: "no-write" })).toEqual([1, 2])
      // A decision is a refusal's (or a journaled call's): records have none.
      expect(await sequencesOf({ decision: "refuse" })).toEqual([1, 6])
      expect(await sequencesOf({ decision: "refuse", kind: "approval" })).toEqual([])
      expect(await sequencesOf({ kind: "other", rule: "no-write" })).toEqual([])
    })
  })

suite("SQLite", false, () => ({ db: join(scratch, "records.db"), close: () => {} }))

suite("PostgreSQL", noPostgres, () => {
  const { drop, url } = freshDatabase()
  return { db: url, close: drop }
})
