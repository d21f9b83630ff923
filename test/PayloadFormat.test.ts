/**
 * Refusal payload v2 (the optional `journal` member) and the session seal row: the test vectors of
 * docs/FORMAT.md, reproduced by the code, and both kinds of row written and verified end to end.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { docBlock } from "./fixtures/formatDoc.js"

const decodeEvent = Schema.decodeUnknownSync(AuditEvent.DeferredAuditEvent)

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-payload-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

describe("refusal payload v2", () => {
  it("the v2 vector: canonical JSON with journal, its hash, a governance.refusal row", () => {
    const event = decodeEvent(JSON.parse(docBlock("payload-v2-event")))
    expect(AuditEvent.canonicalJson(event)).toBe(docBlock("payload-v2-canonical"))
    expect(AuditEvent.payloadHash(event)).toBe(docBlock("payload-v2-hash"))
    expect(AuditEvent.eventTypeOf(event)).toBe(AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE)
  })

  it("without journal, a v2 payload is the v1 payload byte for byte", () => {
    const v1 = decodeEvent(JSON.parse(docBlock("payload-event")))
    expect(v1.journal).toBeUndefined()
    expect(AuditEvent.canonicalJson(v1)).toBe(docBlock("payload-canonical"))
  })

  it.effect("fromRefusal carries the journal reference, with lone surrogates in the session id repaired", () =>
    Effect.gen(function*() {
      const event = yield* AuditEvent.DeferredAuditEvent.fromRefusal(
        "agent",
        new AuditEvent.ToolCall({ toolName: "t", serverId: "s" }),
        new AuditEvent.Refuse({ ruleId: "r", reason: "no" }),
        new AuditEvent.JournalRef({ sessionId: "sess-\uD800", sequence: 9 })
      )
      const journal = Option.getOrThrow(event).journal
      expect(journal).toEqual(new AuditEvent.JournalRef({ sessionId: "sess-\uFFFD", sequence: 9 }))
      expect(JSON.parse(AuditEvent.canonicalJson(Option.getOrThrow(event))).journal).toEqual({
        session_id: "sess-\uFFFD",
        sequence: 9
      })
    }))
})

describe("session seal", () => {
  it("the seal vector: canonical JSON, hash, and a session.sealed row", () => {
    const canonical = JSON.parse(docBlock("seal-canonical"))
    const event = decodeEvent({
      id: canonical.event_id,
      agentId: canonical.agent_id,
      action: canonical.action,
      decision: canonical.decision,
      timestamp: canonical.timestamp
    })
    expect(AuditEvent.canonicalJson(event)).toBe(docBlock("seal-canonical"))
    expect(AuditEvent.payloadHash(event)).toBe(docBlock("seal-hash"))
    expect(AuditEvent.eventTypeOf(event)).toBe(AuditEvent.SESSION_SEALED_EVENT_TYPE)
    expect(AuditEvent.sealOf(event)).toEqual(Option.some({
      sessionId: "sess-7",
      length: 4,
      headHash: "9f2c1e0d3b4a5968778695a4b3c2d1e0f9e8d7c6b5a4938271605f4e3d2c1b0a"
    }))
  })

  it("a Custom action with the seal's kind under a Refuse decision is a refusal, not a seal", () => {
    const canonical = JSON.parse(docBlock("seal-canonical"))
    const event = decodeEvent({
      id: canonical.event_id,
      agentId: canonical.agent_id,
      action: canonical.action,
      decision: { _tag: "Refuse", ruleId: "r", reason: "x" },
      timestamp: canonical.timestamp
    })
    expect(AuditEvent.eventTypeOf(event)).toBe(AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE)
    expect(AuditEvent.sealOf(event)).toEqual(Option.none())
  })

  it.live("refusals with journal references and a seal land in one chain that verifies", () =>
    Effect.gen(function*() {
      const filename = join(tempRoot, "seal.db")
      yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        yield* queue.submitRefusalAndWait(
          "agent",
          new AuditEvent.ToolCall({ toolName: "write_file", serverId: "fs" }),
          new AuditEvent.Refuse({ ruleId: "r", reason: "no" }),
          new AuditEvent.JournalRef({ sessionId: "sess-1", sequence: 0 })
        )
        const seal = yield* AuditEvent.DeferredAuditEvent.sessionSeal("agent", {
          sessionId: "sess-1",
          length: 1,
          headHash: "a".repeat(64)
        })
        const receipt = yield* queue.submitAndWait(seal)
        expect(receipt.sequence).toBe(1)
        const stats = yield* LedgerStats.stats()
        expect(stats.byEventType).toEqual({ "governance.refusal": 1, "session.sealed": 1 })
        const report = yield* verifyLedger()
        expect(report.ok).toBe(true)
        const { client } = yield* LedgerSql.LedgerSql
        const rows = yield* client<{ event_type: string; payload: string }>`
          SELECT event_type, payload FROM signed_events ORDER BY sequence`
        expect(rows.map((row) => row.event_type)).toEqual(["governance.refusal", "session.sealed"])
        expect(JSON.parse(rows[0]!.payload).journal).toEqual({ session_id: "sess-1", sequence: 0 })
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })))
    }))
})
