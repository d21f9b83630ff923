/**
 * Shadow mode in the guard: every decision is made, journaled and ledgered (`governance.would-refuse`
 * rows, payload v3 `mode: "shadow"`), nothing is blocked or hidden, and later decisions are the ones
 * enforcing would make (a call that would have been refused stays out of the policy's history). The v3
 * test vector of docs/FORMAT.md, and a dead letter of a shadow refusal rebuilt byte for byte.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Ref, Schema } from "effect"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { Appended, AuditSink } from "../src/audit/AuditSink.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import { docBlock } from "./fixtures/formatDoc.js"

describe("refusal payload v3 (shadow)", () => {
  it("the v3 vector: canonical JSON with mode, its hash, a governance.would-refuse row", () => {
    const event = Schema.decodeUnknownSync(AuditEvent.DeferredAuditEvent)(JSON.parse(docBlock("payload-v3-event")))
    expect(AuditEvent.canonicalJson(event)).toBe(docBlock("payload-v3-canonical"))
    expect(AuditEvent.payloadHash(event)).toBe(docBlock("payload-v3-hash"))
    expect(AuditEvent.eventTypeOf(event)).toBe(AuditEvent.WOULD_REFUSE_EVENT_TYPE)
    // The same event enforced is a refusal, and its payload has no mode (v2 bytes).
    const { mode: _mode, ...enforced } = JSON.parse(docBlock("payload-v3-event"))
    const v2 = Schema.decodeUnknownSync(AuditEvent.DeferredAuditEvent)(enforced)
    expect(AuditEvent.eventTypeOf(v2)).toBe(AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE)
    expect(AuditEvent.canonicalJson(v2)).not.toContain("mode")
  })

  it("a dead letter of a shadow refusal is rebuilt with its mode (replay appends the same bytes)", () => {
    const payload = docBlock("payload-v3-canonical")
    const rebuilt = DeadLetters.eventOf({ id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c50", payload })
    expect(rebuilt._tag).toBe("Right")
    if (rebuilt._tag === "Right") {
      expect(rebuilt.right.mode).toBe("shadow")
      expect(AuditEvent.eventTypeOf(rebuilt.right)).toBe(AuditEvent.WOULD_REFUSE_EVENT_TYPE)
    }
  })
})

const policyOf = (document: unknown) => Effect.runSync(GuardPolicy.decode(document))

const memorySink = Effect.gen(function*() {
  const appended = yield* Ref.make<ReadonlyArray<AuditEvent.DeferredAuditEvent>>([])
  let sequence = 0
  const sink = AuditSink.of({
    append: (event) =>
      Effect.as(
        Ref.update(appended, (all) => [...all, event]),
        new Appended({ uniqueRaceRetries: 0, position: { sequence: sequence++, entryHash: "0".repeat(64) } })
      ),
    deadLetter: () => Effect.void
  })
  return { sink, appended }
})

const call = (toolName: string): McpGuard.GuardCall => ({
  sessionId: "sess-1",
  agentId: "agent-1",
  serverId: "fs",
  toolName,
  arguments: { path: "/data/x" }
})

const guardWith = (document: unknown, options: Partial<McpGuard.Options> = {}) =>
  Effect.gen(function*() {
    const memory = yield* memorySink
    const queue = yield* AuditQueue.make({ sink: memory.sink })
    const guard = yield* McpGuard.McpGuard.pipe(
      Effect.provide(
        McpGuard.layer({ policy: GuardPolicy.engine(policyOf(document), { salt: "s" }), sealEvery: 0, ...options })
      ),
      Effect.provideService(AuditQueue.AuditQueue, queue)
    )
    return { guard, queue, memory }
  })

const rules = [
  { id: "no-move", kind: "blockTools", tools: ["move_file"] },
  { id: "no-read-after-move", kind: "sequence", after: ["move_file"], then: ["read_*"], within: 5 },
  { id: "two-reads", kind: "callLimit", tools: ["read_*"], max: 2, per: "rule" }
]

describe("McpGuard in shadow mode", () => {
  it.scoped("lets every call run, ledgers would-refuse rows, and decides later calls as enforcing would", () =>
    Effect.gen(function*() {
      const { guard, memory, queue } = yield* guardWith({ version: 1, mode: "shadow", hideRefusedTools: true, rules })
      // Nothing hidden, though the policy hides refused tools.
      expect(guard.isVisible("fs", "move_file")).toBe(true)
      const checks = []
      for (const tool of ["move_file", "read_a", "read_b", "read_c", "read_d"]) {
        const check = yield* guard.check(call(tool))
        checks.push(check)
        if (check._tag === "Allowed") yield* guard.complete(check.ticket, { _tag: "Result", bytesRead: 10 })
      }
      expect(checks.map((c) => c._tag)).toEqual(["Allowed", "Allowed", "Allowed", "Allowed", "Allowed"])
      expect(checks.map((c) => c._tag === "Allowed" ? c.ticket.wouldRefuse?.ruleId ?? null : "refused")).toEqual([
        "no-move",
        // Enforcing, move_file would not have run: read_a is not "a read after a move".
        null,
        null,
        "two-reads",
        "two-reads"
      ])
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      const rows = yield* Ref.get(memory.appended)
      expect(rows.map((e) => [AuditEvent.eventTypeOf(e), Option.getOrNull(AuditEvent.ruleId(e))])).toEqual([
        [AuditEvent.WOULD_REFUSE_EVENT_TYPE, "no-move"],
        [AuditEvent.WOULD_REFUSE_EVENT_TYPE, "two-reads"],
        [AuditEvent.WOULD_REFUSE_EVENT_TYPE, "two-reads"]
      ])
      expect(rows.every((e) => AuditEvent.canonicalObject(e).mode === "shadow")).toBe(true)
      // The journal holds what happened: every call ran; each row names its pending call entry.
      const entries = yield* (yield* guard.journal("sess-1")).entries
      expect(entries.map((e) => [e.toolName, e.kind, e.outcome])).toEqual(
        ["move_file", "read_a", "read_b", "read_c", "read_d"].flatMap((t) => [[t, "call", "pending"], [
          t,
          "outcome",
          "result"
        ]])
      )
      for (const row of rows) {
        const entry = entries[row.journal!.sequence]!
        expect([entry.kind, entry.outcome, entry.toolName]).toEqual([
          "call",
          "pending",
          (row.action as AuditEvent.ToolCall).toolName
        ])
      }
    }))

  it.scoped("the guard's mode option overrides the policy's; enforce refuses and hides", () =>
    Effect.gen(function*() {
      const shadow = yield* guardWith({ version: 1, hideRefusedTools: true, rules }, { mode: "shadow" })
      expect((yield* shadow.guard.check(call("move_file")))._tag).toBe("Allowed")
      const enforce = yield* guardWith({ version: 1, mode: "shadow", hideRefusedTools: true, rules }, {
        mode: "enforce"
      })
      expect(yield* enforce.guard.check(call("move_file"))).toMatchObject({ _tag: "Refused", ruleId: "no-move" })
      expect(enforce.guard.isVisible("fs", "move_file")).toBe(false)
      expect(yield* enforce.queue.drainPending("5 seconds")).toBe(true)
      expect((yield* Ref.get(enforce.memory.appended)).map(AuditEvent.eventTypeOf)).toEqual([
        AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE
      ])
    }))

  it.scoped("a session ended with a shadowed call in flight journals it interrupted", () =>
    Effect.gen(function*() {
      const { guard } = yield* guardWith({ version: 1, mode: "shadow", rules })
      const check = yield* guard.check(call("move_file"))
      expect(check._tag).toBe("Allowed")
      const sealed = yield* guard.endSession("sess-1")
      expect(Option.getOrThrow(sealed).entries.map((e) => [e.kind, e.outcome])).toEqual([
        ["call", "pending"],
        ["outcome", "interrupted"]
      ])
    }))
})
