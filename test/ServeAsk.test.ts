/**
 * `"action": "ask"` rules over Claude Code's hooks, with the recorded hook payloads
 * (test/fixtures/claude-code-hooks): a `PreToolUse` an ask rule holds is answered `permissionDecision:
 * "ask"` naming the rule (Claude Code's own prompt asks its user), not `deny`; the call is counted in flight
 * while the user decides (a call limit sees it); a `PostToolUseFailure` (or `PostToolUse`) for the
 * `tool_use_id` records a `governance.approval` row with answer `accept` and the session's Claude Code user
 * as approver; a call with no such event by `SessionEnd` or `callTimeout` is recorded as answer `unknown`,
 * outcome `not-run`; a call Claude Code was told no about (decision timeout) gets no approval row.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Layer, TestClock } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as Serve from "../src/serve/Serve.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const fixture = (name: string): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(join(fixtures, `${name}.json`), "utf8")) as Record<string, unknown>
const SESSION = fixture("SessionStart").session_id as string
/** The recorded Bash call under another `tool_use_id` (a second call of the session). */
const bashAgain = (n: number) => ({ ...fixture("PreToolUse-Bash"), tool_use_id: `toolu_01ABCxBash0000000000010${n}` })

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [
    { kind: "blockTools", id: "ask-bash", tools: ["Bash"], action: "ask", showArguments: ["command"] },
    { kind: "callLimit", id: "two-bash", tools: ["Bash"], max: 2 }
  ]
}))

const alice = BearerTokens.generate("alice")
const tokens = Effect.runSync(BearerTokens.parse(`${alice.line}\n`, "tokens"))

const post = (body: unknown) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const request = HttpClientRequest.post("/v1/hooks/claude-code").pipe(
      HttpClientRequest.bodyUnsafeJson(body),
      HttpClientRequest.bearerToken(alice.token)
    )
    const response = yield* client.execute(request)
    return { status: response.status, body: (yield* response.json) as Record<string, any> }
  })

const approvalsIn = (filename: string) => {
  const db = new Database(filename, { readonly: true })
  try {
    return (db.prepare("SELECT agent_id, event_type, payload FROM signed_events ORDER BY sequence").all() as Array<
      { agent_id: string; event_type: string; payload: string }
    >).filter((r) => r.event_type === "governance.approval").map((r) => ({
      agentId: r.agent_id,
      ...JSON.parse(r.payload).action.payload,
      journal: JSON.parse(r.payload).journal
    }))
  } finally {
    db.close()
  }
}

describe("serve: ask rules through Claude Code's permission prompt", () => {
  it.live("answers ask, counts the held call, and records accept on PostToolUse and unknown at SessionEnd", () =>
    Effect.gen(function*() {
      const filename = join(fs.mkdtempSync(join(os.tmpdir(), "serve-ask-")), "ledger.db")
      const journal = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          Serve.layer({ policy, tokens }, NodeHttpServer.layerTest).pipe(
            Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
          )
        )
        return yield* Effect.gen(function*() {
          expect((yield* post(fixture("SessionStart"))).status).toBe(200)
          const asked = yield* post(fixture("PreToolUse-Bash"))
          expect(asked).toEqual({
            status: 200,
            body: {
              hookSpecificOutput: {
                hookEventName: "PreToolUse",
                permissionDecision: "ask",
                permissionDecisionReason: "agent-ledger asks (rule ask-bash): tool Bash is blocked by the policy"
              }
            }
          })
          // Held by Claude Code's prompt, the first call counts: a second is asked about, a third is over the
          // call limit and refused outright, while neither of the first two has ended.
          expect((yield* post(bashAgain(1))).body.hookSpecificOutput.permissionDecision).toBe("ask")
          const third = yield* post(bashAgain(2))
          expect(third.body.hookSpecificOutput.permissionDecision).toBe("deny")
          expect(third.body.hookSpecificOutput.permissionDecisionReason).toMatch(/rule two-bash/)
          // The user allowed the first: Claude Code ran it (it failed) and says so.
          expect((yield* post(fixture("PostToolUseFailure-Bash"))).status).toBe(200)
          const guard = yield* McpGuard.McpGuard
          const entries = yield* (yield* guard.journal(SESSION)).entries
          // The second never ran (the user said no, or Claude Code ended): the session ends.
          expect((yield* post(fixture("SessionEnd"))).status).toBe(200)
          return entries
        }).pipe(Effect.provide(context))
      }))
      expect(journal.map((e) => [e.toolName, e.kind, e.outcome])).toEqual([
        ["Bash", "call", "pending"],
        ["Bash", "call", "pending"],
        ["Bash", "call", "refused"],
        ["Bash", "outcome", "errorAnswer"]
      ])
      const approvals = approvalsIn(filename)
      expect(approvals.map((a) => [a.rule_id, a.answer, a.outcome, a.approver, a.journal.sequence])).toEqual([
        ["ask-bash", "accept", "allowed", `the Claude Code user of session ${SESSION} (agent alice)`, 0],
        ["ask-bash", "unknown", "not-run", null, 1]
      ])
      expect(approvals.every((a) => a.agentId === "alice" && a.session_id === SESSION)).toBe(true)
      expect(approvals[0].asked).toMatch(/permission prompt/)
      expect(approvals[0].arguments).toEqual({ shown: { command: "npm test" }, hiddenBytes: { description: 16 } })
    }))

  it.effect("a held call with no PostToolUse by callTimeout (TestClock) is recorded as unknown, not-run", () =>
    Effect.gen(function*() {
      const filename = join(fs.mkdtempSync(join(os.tmpdir(), "serve-ask-")), "ledger.db")
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          Serve.layer({ policy, tokens, hooks: { callTimeout: "1 minute" } }, NodeHttpServer.layerTest).pipe(
            Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
          )
        )
        yield* Effect.gen(function*() {
          expect((yield* post(fixture("PreToolUse-Bash"))).body.hookSpecificOutput.permissionDecision).toBe("ask")
          yield* TestClock.adjust("61 seconds")
          const guard = yield* McpGuard.McpGuard
          const journal = yield* guard.journal(SESSION)
          expect((yield* journal.entries).map((e) => e.outcome)).toEqual(["pending", "timedOut"])
          // A PostToolUse after the call was given up on records nothing more.
          expect((yield* post(fixture("PostToolUseFailure-Bash"))).status).toBe(200)
        }).pipe(Effect.provide(context))
      }))
      expect(approvalsIn(filename).map((a) => [a.answer, a.outcome, a.approver, a.latency_ms])).toEqual([
        ["unknown", "not-run", null, 60_000]
      ])
    }))
})
