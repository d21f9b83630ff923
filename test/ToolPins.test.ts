/**
 * ToolPins and annotation rules in the guard, in memory: digests cover exactly the pinned fields; pins and
 * recorded changes from the ledger are honoured (no second row for a known change); a definition too deep
 * to pin is refused; annotation rules read the pinned definition only (a caller's claimed annotations and a
 * changed definition's are ignored, MCP's defaults apply); `approvalOf` refuses a recorded definition that
 * does not hash to its digest.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as ToolPins from "../src/guard/ToolPins.js"
import * as SessionJournals from "../src/journal/SessionJournals.js"
import { recordingQueue } from "./fixtures/recordingQueue.js"

const tool = (description: string, annotations?: Record<string, unknown>) => ({
  name: "write_file",
  description,
  inputSchema: { type: "object", properties: { path: { type: "string" } } },
  ...(annotations === undefined ? {} : { annotations })
})

const setup = (rules: ReadonlyArray<unknown>, initial: ReadonlyArray<ToolPins.PinRecord> = []) =>
  Effect.gen(function*() {
    const { queue, recorded } = yield* recordingQueue
    const pins = yield* ToolPins.make({ initial }).pipe(Effect.provideService(AuditQueue.AuditQueue, queue))
    const policy = Effect.runSync(GuardPolicy.decode({ version: 1, rules }))
    const guard = yield* McpGuard.make({ policy: GuardPolicy.engine(policy, { salt: "s" }), tools: pins }).pipe(
      Effect.provideService(AuditQueue.AuditQueue, queue),
      Effect.provideServiceEffect(SessionJournals.SessionJournals, SessionJournals.make)
    )
    const rows = recorded
    return { pins, guard, rows }
  })

const call = (extra: Partial<McpGuard.GuardCall> = {}): McpGuard.GuardCall => ({
  sessionId: "s",
  agentId: "a",
  serverId: "fs",
  toolName: "write_file",
  arguments: {},
  ...extra
})

describe("ToolPins", () => {
  it("digests the name, description, schemas and annotations only", () => {
    const a = ToolPins.digestOf(tool("Writes."))
    expect(ToolPins.digestOf({ ...tool("Writes."), title: "ignored", _meta: { x: 1 } })).toBe(a)
    expect(ToolPins.digestOf(tool("Writes!"))).not.toBe(a)
    expect(ToolPins.digestOf(tool("Writes.", { readOnlyHint: true }))).not.toBe(a)
    expect(ToolPins.digestOf({ ...tool("Writes."), outputSchema: { type: "object" } })).not.toBe(a)
    expect(ToolPins.digestOf({ ...tool("Writes."), inputSchema: { type: "object" } })).not.toBe(a)
  })

  it.scoped("honours the ledger's pins and recorded changes, and refuses a definition too deep to pin", () =>
    Effect.gen(function*() {
      const pinned = ToolPins.digestOf(tool("Writes."))!
      const changed = ToolPins.digestOf(tool("Writes. And exfiltrates."))!
      const { guard, pins, rows } = yield* setup([], [
        { kind: "pinned", serverId: "fs", toolName: "write_file", digest: pinned },
        { kind: "changed", serverId: "fs", toolName: "write_file", digest: changed }
      ])
      yield* pins.observe("fs", "a", [tool("Writes.")])
      expect((yield* guard.check(call()))._tag).toBe("Allowed")
      yield* pins.observe("fs", "a", [tool("Writes. And exfiltrates.")])
      expect(yield* guard.check(call())).toMatchObject({ _tag: "Refused", ruleId: "tool-changed" })
      // A look-alike name is the same tool.
      expect(yield* guard.check(call({ toolName: "WRITE_FILE" }))).toMatchObject({ ruleId: "tool-changed" })
      // The change was already in the ledger: no second row; only the refusals.
      expect((yield* rows).map(AuditEvent.eventTypeOf)).toEqual(["governance.refusal", "governance.refusal"])
      let deep: Record<string, unknown> = {}
      const root = deep
      for (let i = 0; i < 100; i++) deep = (deep.x = {}) as Record<string, unknown>
      yield* pins.observe("fs", "a", [{ name: "deep", description: "d", inputSchema: root }])
      expect(yield* guard.check(call({ toolName: "deep" }))).toMatchObject({ ruleId: "tool-changed" })
    }))

  it.scoped("annotation rules believe only the pinned definition's annotations", () =>
    Effect.gen(function*() {
      const { guard, pins } = yield* setup([{ id: "writes", kind: "annotations", readOnlyHint: false }])
      // Never listed: MCP's defaults (not read-only); a caller's claim is ignored.
      expect(yield* guard.check(call({ annotations: { readOnlyHint: true } }))).toMatchObject({ ruleId: "writes" })
      yield* pins.observe("fs", "a", [tool("Reads.", { readOnlyHint: true })])
      expect((yield* guard.check(call()))._tag).toBe("Allowed")
      // The server now claims otherwise in a changed definition: refused as changed, not on its claim.
      yield* pins.observe("fs", "a", [tool("Reads. Honest.", { readOnlyHint: true, openWorldHint: false })])
      expect(yield* guard.check(call())).toMatchObject({ ruleId: "tool-changed" })
    }))

  it("destructiveHint: a read-only tool is not destructive; an undeclared one is", () => {
    const policy = Effect.runSync(GuardPolicy.decode({
      version: 1,
      rules: [{ id: "no-destructive", kind: "annotations", destructiveHint: true }]
    }))
    const snapshot = { allowed: [], allowedRead: 0, allowedWritten: 0, nowMillis: 0 }
    const decide = (annotations?: McpGuard.ToolAnnotations) =>
      (GuardPolicy.evaluate(
        policy,
        call(annotations === undefined ? {} : { annotations }),
        snapshot
      ) as McpGuard.Verdict)
        .decision._tag
    expect(decide()).toBe("Refuse")
    expect(decide({})).toBe("Refuse")
    expect(decide({ readOnlyHint: true })).toBe("Allow")
    expect(decide({ destructiveHint: false })).toBe("Allow")
  })

  it("a policy with pinTools false cannot have annotation rules; a rule must name a hint", () => {
    const rule = { id: "r", kind: "annotations", readOnlyHint: false }
    expect(Effect.runSync(Effect.either(GuardPolicy.decode({ version: 1, pinTools: false, rules: [rule] }))))
      .toMatchObject({ _tag: "Left", left: { path: "rules.0" } })
    expect(Effect.runSync(Effect.either(GuardPolicy.decode({ version: 1, rules: [{ id: "r", kind: "annotations" }] }))))
      .toMatchObject({ _tag: "Left" })
  })

  it("approvalOf pins a recorded definition only if it hashes to the change's digest", () => {
    const definition = ToolPins.definitionOf(tool("New."))
    const digest = ToolPins.digestOf(tool("New."))!
    const ledgerTool = (d: unknown): ToolPins.LedgerTool => ({
      serverId: "fs",
      toolName: "write_file",
      pinned: { digest: "a".repeat(64), sequence: 1, timestamp: "t" },
      changes: [{ digest, sequence: 2, timestamp: "t", definition: d as never }]
    })
    expect(ToolPins.approvalOf(ledgerTool(definition))).toMatchObject({ payload: { digest } })
    expect(ToolPins.approvalOf(ledgerTool({ ...definition, description: "Edited." }))).toHaveProperty("problem")
    expect(ToolPins.approvalOf({ ...ledgerTool(definition), changes: [] })).toHaveProperty("problem")
  })
})
