/**
 * `agent-ledger serve` over real HTTP on loopback: Claude Code's recorded hook payloads
 * (test/fixtures/claude-code-hooks) answered by the guard, the denial of `Read ./.env` then of `WebFetch`
 * (a sequence rule) as ledger rows under the token's agent, byte accounting from tool results, bearer
 * tokens (401 counted), body and rate limits, session ownership between agents, health, readiness and
 * metrics, and the seal of open sessions on shutdown.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Fiber, Layer, TestClock } from "effect"
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

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [
    {
      kind: "blockTools",
      id: "no-env-files",
      tools: ["Read", "Edit", "Write"],
      when: [{ path: "file_path", match: { pathGlob: ["**/.env", "**/.env.*"] } }],
      reason: "{tool} of a .env file is not allowed"
    },
    {
      kind: "blockTools",
      id: "no-curl",
      tools: ["Bash"],
      when: [{ path: "command", match: { regex: "\\b(curl|wget)\\b" } }]
    },
    { kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 10 }
  ]
}))

const alice = BearerTokens.generate("alice")
const bob = BearerTokens.generate("bob")
const tokens = Effect.runSync(BearerTokens.parse(`# test tokens\n${alice.line}\n${bob.line}\n`, "tokens"))

const scratch = () => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-test-"))
  return join(dir, "ledger.db")
}

const serveOn = (filename: string, extra: Partial<Serve.Options> = {}) =>
  Serve.layer({ policy, tokens, ...extra }, NodeHttpServer.layerTest).pipe(
    Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
  )

const post = (body: unknown, token: string | null = alice.token) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    let request = HttpClientRequest.post("/v1/hooks/claude-code").pipe(HttpClientRequest.bodyUnsafeJson(body))
    if (token !== null) request = HttpClientRequest.bearerToken(request, token)
    const response = yield* client.execute(request)
    return { status: response.status, body: (yield* response.json) as Record<string, any> }
  })

const get = (path: string) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.get(path)
    return { status: response.status, text: yield* response.text }
  })

const rowsOf = (filename: string) => {
  const db = new Database(filename, { readonly: true })
  try {
    return db.prepare("SELECT agent_id, event_type, payload FROM signed_events ORDER BY sequence").all() as Array<
      { agent_id: string; event_type: string; payload: string }
    >
  } finally {
    db.close()
  }
}

describe("serve: Claude Code hooks", () => {
  it.live("denies Read ./.env, then WebFetch after a Read, with rows in the ledger under the token's agent", () =>
    Effect.gen(function*() {
      const filename = scratch()
      const journal = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveOn(filename))
        return yield* Effect.gen(function*() {
          expect(yield* post(fixture("SessionStart"))).toEqual({ status: 200, body: {} })
          // An allowed call is left to Claude Code's own permissions: no decision.
          expect(yield* post(fixture("PreToolUse-Read"))).toEqual({ status: 200, body: {} })
          expect((yield* post(fixture("PostToolUse-Read"))).status).toBe(200)

          const env = yield* post({ ...fixture("PreToolUse-Read-env"), agent_id: "mallory" })
          expect(env.status).toBe(200)
          expect(env.body.hookSpecificOutput).toEqual({
            hookEventName: "PreToolUse",
            permissionDecision: "deny",
            permissionDecisionReason:
              "agent-ledger refused this call (rule no-env-files): Read of a .env file is not allowed"
          })
          const fetch = yield* post(fixture("PreToolUse-WebFetch"))
          expect(fetch.body.hookSpecificOutput.permissionDecision).toBe("deny")
          expect(fetch.body.hookSpecificOutput.permissionDecisionReason).toMatch(/rule read-then-fetch/)

          expect(yield* post(fixture("PreToolUse-Bash"))).toEqual({ status: 200, body: {} })
          expect((yield* post(fixture("PostToolUseFailure-Bash"))).status).toBe(200)
          expect(yield* post(fixture("Stop"))).toEqual({ status: 200, body: {} })

          const guard = yield* McpGuard.McpGuard
          const entries = yield* (yield* guard.journal(SESSION)).entries
          expect((yield* post(fixture("SessionEnd"))).status).toBe(200)
          return entries
        }).pipe(Effect.provide(context))
      }))

      expect(journal.map((e) => [e.toolName, e.kind, e.outcome, e.agentId])).toEqual([
        ["Read", "call", "pending", "alice"],
        ["Read", "outcome", "result", "alice"],
        ["Read", "call", "refused", "alice"],
        ["WebFetch", "call", "refused", "alice"],
        ["Bash", "call", "pending", "alice"],
        ["Bash", "outcome", "errorAnswer", "alice"]
      ])
      // Bytes read come from the tool's result (and the error text), bytes written from its input.
      expect(journal[1]!.bytesRead).toBe(McpGuard.jsonBytes(fixture("PostToolUse-Read").tool_response))
      expect(journal[5]!.bytesRead).toBe(Buffer.byteLength("Command exited with non-zero status code 1"))
      expect(journal[0]!.bytesWritten).toBe(McpGuard.jsonBytes(fixture("PreToolUse-Read").tool_input))

      const rows = rowsOf(filename)
      expect(rows.map((r) => r.agent_id)).toEqual(["alice", "alice", "alice"])
      const refusals = rows.filter((r) => r.event_type !== "session.sealed").map((r) => JSON.parse(r.payload))
      expect(refusals.map((p) => [p.action.toolName, p.action.serverId, p.decision.ruleId])).toEqual([
        ["Read", "claude-code", "no-env-files"],
        ["WebFetch", "claude-code", "read-then-fetch"]
      ])
      // The path of the refused read is not in the ledger in clear (salted hash and size by default).
      expect(Object.keys(refusals[0].action.arguments).sort()).toEqual(["bytes", "sha256"])
      expect(rows.some((r) => r.payload.includes("file_path") || r.payload.includes("./.env"))).toBe(false)
      const seal = JSON.parse(rows.find((r) => r.event_type === "session.sealed")!.payload)
      expect(JSON.stringify(seal)).toContain(SESSION)
      expect(JSON.stringify(seal)).toMatch(/"length":6/)
    }))

  it.live("refuses requests without a valid bearer token (401, counted), over the body limit (413) or the rate (429)", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          serveOn(filename, { maxBodyBytes: 4096, rateLimit: { perSecond: 0.001, burst: 3 } })
        )
        yield* Effect.gen(function*() {
          expect((yield* post(fixture("PreToolUse-Read-env"), null)).status).toBe(401)
          expect((yield* post(fixture("PreToolUse-Read-env"), "al_not-a-token")).status).toBe(401)
          const client = yield* HttpClient.HttpClient
          const basic = yield* client.execute(
            HttpClientRequest.post("/v1/hooks/claude-code").pipe(
              HttpClientRequest.setHeader("authorization", `Basic ${alice.token}`),
              HttpClientRequest.bodyUnsafeJson(fixture("PreToolUse-Read-env"))
            )
          )
          expect(basic.status).toBe(401)
          // The token's digest is not a token.
          expect((yield* post(fixture("PreToolUse-Read-env"), alice.line.split("sha256:")[1]!)).status).toBe(401)

          const big = { ...fixture("PreToolUse-Bash"), tool_input: { command: "x".repeat(8192) } }
          expect((yield* post(big, bob.token)).status).toBe(413)
          expect((yield* post(fixture("Stop"), bob.token)).status).toBe(200)
          expect((yield* post(fixture("Stop"), bob.token)).status).toBe(200)
          expect((yield* post(fixture("Stop"), bob.token)).status).toBe(429)
          // Alice's bucket is her own.
          expect((yield* post(fixture("Stop"))).status).toBe(200)

          const metrics = (yield* get("/metrics")).text
          expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="unauthenticated"\} [1-9]\d*/)
          expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="rate_limited"\} [1-9]/)
          expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="too_large"\} [1-9]/)
          expect(metrics).toMatch(/# TYPE agent_ledger_serve_hook_duration_ms histogram/)
        }).pipe(Effect.provide(context))
      }))
      // Nothing unauthenticated reached the guard.
      expect(rowsOf(filename)).toEqual([])
    }))

  it.live("keeps a session to the agent that opened it: another token cannot steer or seal it", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveOn(filename))
        yield* Effect.gen(function*() {
          expect((yield* post(fixture("SessionStart"))).status).toBe(200)
          expect((yield* post(fixture("PreToolUse-Read"))).status).toBe(200)
          // Bob completes, decides in and ends Alice's session: refused, nothing journaled.
          expect((yield* post(fixture("PostToolUse-Read"), bob.token)).status).toBe(403)
          expect((yield* post(fixture("PreToolUse-WebFetch"), bob.token)).status).toBe(403)
          expect((yield* post(fixture("SessionEnd"), bob.token)).status).toBe(403)
          const guard = yield* McpGuard.McpGuard
          const entries = yield* (yield* guard.journal(SESSION)).entries
          expect(entries.map((e) => [e.toolName, e.outcome])).toEqual([["Read", "pending"]])
        }).pipe(Effect.provide(context))
      }))
    }))

  it.live("bounds the sessions one agent has open; an ended session frees its place", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveOn(filename, { hooks: { maxSessionsPerAgent: 2 } }))
        yield* Effect.gen(function*() {
          const start = (session: string, token = alice.token) =>
            Effect.map(post({ ...fixture("SessionStart"), session_id: session }, token), (r) => r.status)
          expect(yield* start("s1")).toBe(200)
          expect(yield* start("s2")).toBe(200)
          const third = yield* post({ ...fixture("PreToolUse-Read"), session_id: "s3" })
          expect(third.status).toBe(403)
          expect(third.body.error).toMatch(/2 sessions open/)
          expect(yield* start("s3", bob.token)).toBe(200)
          expect((yield* post({ ...fixture("SessionEnd"), session_id: "s1" })).status).toBe(200)
          expect(yield* start("s3")).toBe(403) // Bob's
          // A late PostToolUse of the ended session does not open it again (nor take a place).
          expect(yield* post({ ...fixture("PostToolUse-Read"), session_id: "s1" })).toEqual({ status: 200, body: {} })
          expect(yield* start("s4")).toBe(200)
          expect(yield* start("s5")).toBe(403)
        }).pipe(Effect.provide(context))
      }))
    }))

  it.live("answers bad input with 400 and a duplicate tool_use_id with a denial", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveOn(filename))
        yield* Effect.gen(function*() {
          const { tool_use_id: _, ...noId } = fixture("PreToolUse-Read")
          const missing = yield* post(noId)
          expect(missing.status).toBe(400)
          expect(missing.body.error).toMatch(/tool_use_id/)
          expect((yield* post({ ...fixture("PreToolUse-Read"), session_id: "" })).status).toBe(400)
          expect((yield* post({ ...fixture("PreToolUse-Read"), session_id: "a\nb" })).status).toBe(400)
          expect((yield* post([1, 2, 3])).status).toBe(400)
          const client = yield* HttpClient.HttpClient
          const notJson = yield* client.execute(
            HttpClientRequest.post("/v1/hooks/claude-code").pipe(
              HttpClientRequest.bearerToken(alice.token),
              HttpClientRequest.bodyText("{not json", "application/json")
            )
          )
          expect(notJson.status).toBe(400)

          expect(yield* post(fixture("PreToolUse-Read"))).toEqual({ status: 200, body: {} })
          const again = yield* post(fixture("PreToolUse-Read"))
          expect(again.body.hookSpecificOutput.permissionDecisionReason).toMatch(/rule duplicate-tool-use-id/)
        }).pipe(Effect.provide(context))
      }))
    }))

  it.live("answers allow and ask when configured so, and reports health, readiness and metrics", () =>
    Effect.gen(function*() {
      const filename = scratch()
      const warnPolicy = Effect.runSync(GuardPolicy.decode({
        version: 1,
        rules: [{ kind: "blockTools", id: "bash-warn", action: "warn", tools: ["Bash"] }]
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          serveOn(filename, { policy: warnPolicy, hooks: { allowedDecision: "allow", askOnWarn: true } })
        )
        yield* Effect.gen(function*() {
          const read = yield* post(fixture("PreToolUse-Read"))
          expect(read.body.hookSpecificOutput.permissionDecision).toBe("allow")
          const bash = yield* post(fixture("PreToolUse-Bash"))
          expect(bash.body.hookSpecificOutput.permissionDecision).toBe("ask")
          expect(bash.body.hookSpecificOutput.permissionDecisionReason).toMatch(/rule bash-warn/)
          expect(yield* get("/healthz")).toEqual({ status: 200, text: "ok\n" })
          const ready = yield* get("/readyz")
          expect(ready.status).toBe(200)
          expect(JSON.parse(ready.text)).toEqual({ ready: true, audit: "Running" })
          expect((yield* get("/nope")).status).toBe(404)
        }).pipe(Effect.provide(context))
      }))
    }))

  it.live("seals every open session when it shuts down, ending calls in flight as interrupted", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveOn(filename))
        yield* Effect.gen(function*() {
          expect((yield* post(fixture("SessionStart"))).status).toBe(200)
          expect((yield* post(fixture("PreToolUse-Read"))).status).toBe(200)
          expect((yield* post({ ...fixture("PreToolUse-Bash"), session_id: "second" }, bob.token)).status).toBe(200)
        }).pipe(Effect.provide(context))
      }))
      const seals = rowsOf(filename).filter((r) => r.event_type === "session.sealed")
      expect(seals.map((r) => r.agent_id).sort()).toEqual(["alice", "bob"])
      // Each journal: the call, and its interrupted outcome.
      for (const seal of seals) expect(seal.payload).toMatch(/"length":2/)
    }))
})

describe("serve: calls that never end", () => {
  it.scoped("completes an allowed call with no PostToolUse as timed out after callTimeout", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(
        Serve.layer({ policy, tokens, hooks: { callTimeout: "1 minute" } }, NodeHttpServer.layerTest).pipe(
          Layer.provide(AuditLedger.layerSqlite({ filename: ":memory:" }))
        )
      )
      yield* Effect.gen(function*() {
        expect((yield* post(fixture("PreToolUse-Read"))).status).toBe(200)
        yield* TestClock.adjust("61 seconds")
        const guard = yield* McpGuard.McpGuard
        const journal = yield* guard.journal(SESSION)
        const entries = yield* journal.entries
        expect(entries.map((e) => e.outcome)).toEqual(["pending", "timedOut"])
        // A late PostToolUse finds nothing to complete.
        expect((yield* post(fixture("PostToolUse-Read"))).status).toBe(200)
        expect((yield* journal.entries).length).toBe(2)
      }).pipe(Effect.provide(context))
    }))

  it.scoped("answers deny when a decision waits past decisionTimeout, and journals the decision it then makes", () =>
    Effect.gen(function*() {
      const budget = Effect.runSync(GuardPolicy.decode({
        version: 1,
        rules: [{ kind: "budget", id: "read-budget", read: 10 }]
      }))
      const context = yield* Layer.build(
        Serve.layer({ policy: budget, tokens, hooks: { decisionTimeout: "10 seconds" } }, NodeHttpServer.layerTest)
          .pipe(
            Layer.provide(AuditLedger.layerSqlite({ filename: ":memory:" }))
          )
      )
      yield* Effect.gen(function*() {
        expect((yield* post(fixture("PreToolUse-Read"))).status).toBe(200)
        // The read budget depends on what the Read in flight returns: the Bash decision waits for it.
        const waiting = yield* Effect.fork(post(fixture("PreToolUse-Bash")))
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
        yield* TestClock.adjust("10 seconds")
        const answer = yield* Fiber.join(waiting)
        expect(answer.body.hookSpecificOutput.permissionDecision).toBe("deny")
        expect(answer.body.hookSpecificOutput.permissionDecisionReason).toMatch(/rule decision-timeout/)
        // The Read ends with 200+ bytes: the waiting decision refuses Bash under the budget, journaled.
        expect((yield* post(fixture("PostToolUse-Read"))).status).toBe(200)
        const guard = yield* McpGuard.McpGuard
        const journal = yield* guard.journal(SESSION)
        for (let i = 0; i < 100 && (yield* journal.entries).length < 3; i++) {
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
        }
        expect((yield* journal.entries).map((e) => [e.toolName, e.outcome])).toEqual([
          ["Read", "pending"],
          ["Read", "result"],
          ["Bash", "refused"]
        ])
      }).pipe(Effect.provide(context))
    }))
})
