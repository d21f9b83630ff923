/**
 * Server-to-client messages through `agent-ledger serve`'s MCP endpoints, with the SDK's
 * `StreamableHTTPClientTransport` + `Client` over real loopback HTTP, in front of an SDK `McpServer` whose
 * tool list changes: an `ask` rule's question reaches a client that declared elicitation, on the response
 * stream of the `tools/call` it is about (not the standalone stream); accept forwards the call, decline
 * refuses it; a client without the capability gets the rule's fallback; the upstream's
 * `notifications/tools/list_changed` reaches the client on its standalone GET stream; every question is a
 * `governance.approval` row under the token's agent. Shutdown with a GET stream open and a question
 * unanswered is prompt: the stream is closed, the question withdrawn (the call refused by the fallback).
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import Database from "better-sqlite3"
import { Context, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import { join } from "node:path"
import * as AuditLedger from "../src/AuditLedger.js"
import { mcpSdk } from "../src/cli/serve.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as McpElicitation from "../src/serve/McpElicitation.js"
import * as Serve from "../src/serve/Serve.js"

const changingServer = join(import.meta.dirname, "fixtures/changingMcpServer.js")

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [{
    id: "ask-write",
    kind: "blockTools",
    tools: ["write_note"],
    action: "ask",
    // Far longer than the test: a question that ends did not end by timing out.
    timeout: 120,
    showArguments: ["text"]
  }]
}))

const alice = BearerTokens.generate("alice")
const bob = BearerTokens.generate("bob")
const tokens = Effect.runSync(BearerTokens.parse(`${alice.line}\n${bob.line}\n`, "tokens"))

/** An SSE response the client received: which request it answered, and its text so far. */
interface Seen {
  readonly method: string
  readonly request: string
  text: string
}

type Reply = "accept" | "decline" | "never"

/**
 * An SDK client on `url` with `token`; with `replies`, it declares elicitation and answers each question
 * with the next reply. Every SSE response it receives is recorded as it arrives.
 */
const connect = async (url: URL, token: string, replies?: Array<Reply>) => {
  const seen: Array<Seen> = []
  const questions: Array<string> = []
  const recording = async (input: string | URL | Request, init?: RequestInit) => {
    const response = await fetch(input, init)
    if (response.body === null || !(response.headers.get("content-type") ?? "").includes("text/event-stream")) {
      return response
    }
    const [mine, theirs] = response.body.tee()
    const entry: Seen = {
      method: init?.method ?? "GET",
      request: typeof init?.body === "string" ? init.body : "",
      text: ""
    }
    seen.push(entry)
    void (async () => {
      const decoder = new TextDecoder()
      try {
        for await (const chunk of mine) entry.text += decoder.decode(chunk, { stream: true })
      } catch {
        // The stream was cut; what arrived is recorded.
      }
    })()
    return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers })
  }
  const client = new Client(
    { name: "mallory-claims-this", version: "1.0.0" },
    { capabilities: replies === undefined ? {} : { elicitation: {} } }
  )
  if (replies !== undefined) {
    client.setRequestHandler(ElicitRequestSchema, async (request) => {
      questions.push(String(request.params.message))
      const reply = replies.shift() ?? "never"
      if (reply === "never") return new Promise<never>(() => {})
      return reply === "accept" ? { action: "accept", content: { approve: true } } : { action: "decline" }
    })
  }
  let listChanged = 0
  client.setNotificationHandler(ToolListChangedNotificationSchema, async () => void listChanged++)
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
    fetch: recording
  })
  await client.connect(transport)
  return { client, transport, seen, questions, listChanged: () => listChanged }
}

const textOf = (result: unknown): string =>
  (result as { content: Array<{ text: string }> }).content.map((c) => c.text).join("")

const approvalsOf = (filename: string) => {
  const db = new Database(filename, { readonly: true })
  try {
    return (db.prepare("SELECT agent_id, payload FROM signed_events WHERE event_type = ? ORDER BY sequence")
      .all("governance.approval") as Array<{ agent_id: string; payload: string }>)
      .map((row) => ({ agent: row.agent_id, ...JSON.parse(row.payload).action.payload }))
  } finally {
    db.close()
  }
}

const waitFor = (check: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 250 && !check(); i++) yield* Effect.sleep("20 millis")
    if (!check()) throw new Error(`timed out waiting for ${what}`)
  })

describe("serve: server-to-client messages over Streamable HTTP", () => {
  it.live(
    "asks through elicitation on the call's stream, relays list_changed, and shuts down promptly",
    () =>
      Effect.gen(function*() {
        const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-ask-"))
        const filename = join(dir, "ledger.db")
        const layer = Serve.layer(
          {
            policy,
            tokens,
            mcp: {
              upstreams: { notes: { command: process.execPath, args: [changingServer], env: {} } },
              sdk: yield* mcpSdk
            }
          },
          // A short keep-alive, as `serve` sets when it stops: the answer that ends the question at shutdown leaves
          // its connection idle after the server's close began, and Node keeps such a one for the timeout.
          NodeHttpServer.layer(() => http.createServer({ keepAliveTimeout: 300 }), { host: "127.0.0.1", port: 0 })
        ).pipe(Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false })))

        const { late, started } = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(layer)
          const address = Context.get(context, HttpServer.HttpServer).address
          if (address._tag !== "TcpAddress") throw new Error("not TCP")
          const url = new URL(`http://127.0.0.1:${address.port}/mcp/notes`)

          const a = yield* Effect.promise(() => connect(url, alice.token, ["accept", "decline", "never"]))
          // Accepted: forwarded, the upstream answers.
          const accepted = yield* Effect.promise(() =>
            a.client.callTool({ name: "write_note", arguments: { text: "hi" } })
          )
          expect(accepted.isError).not.toBe(true)
          expect(textOf(accepted)).toBe("wrote hi")
          expect(a.questions[0]).toContain("Allow write_note on server notes?")
          expect(a.questions[0]).toContain("Rule ask-write")
          expect(a.questions[0]).toContain("text: hi")
          // The question travelled on the tools/call's own response stream, not on the standalone stream.
          const callStream = a.seen.find((s) => s.method === "POST" && s.request.includes("\"hi\""))
          expect(callStream?.text).toContain("elicitation/create")
          // The SDK opens the standalone stream after `initialized`, on its own time.
          yield* waitFor(() => a.seen.some((s) => s.method === "GET"), "the GET stream")
          const standalone = a.seen.find((s) => s.method === "GET")
          expect(standalone!.text).not.toContain("elicitation/create")

          // Declined: refused, the upstream never sees it.
          const declined = yield* Effect.promise(() =>
            a.client.callTool({ name: "write_note", arguments: { text: "no" } })
          )
          expect(declined.isError).toBe(true)
          expect(textOf(declined)).toContain("rule ask-write")
          expect(textOf(declined)).toContain("declined by client alice")

          // The upstream's list_changed (no request of the client's) comes on the standalone stream.
          yield* Effect.promise(() => a.client.callTool({ name: "poison", arguments: { notify: true } }))
          yield* waitFor(() => a.listChanged() > 0, "list_changed")
          expect(standalone!.text).toContain("notifications/tools/list_changed")

          // A client that did not declare elicitation is not asked: the rule's fallback (refuse).
          const b = yield* Effect.promise(() => connect(url, bob.token))
          const fallback = yield* Effect.promise(() =>
            b.client.callTool({ name: "write_note", arguments: { text: "bob" } })
          )
          expect(fallback.isError).toBe(true)
          expect(textOf(fallback)).toContain("approval was needed")
          expect(textOf(fallback)).toContain("did not declare the elicitation capability")

          // A question alice never answers, open at shutdown, with her GET stream open.
          const late = a.client.callTool({ name: "write_note", arguments: { text: "late" } }).then(
            (result) => ({ ok: true as const, result }),
            (error: unknown) => ({ ok: false as const, error })
          )
          yield* waitFor(() => a.questions.length === 3, "the third question")
          return { late, started: Date.now() }
        }))
        const elapsed = Date.now() - started
        // The open question (its rule waits 120 s) and the GET stream did not hold the shutdown up.
        expect(elapsed).toBeLessThan(5_000)
        const outcome = yield* Effect.promise(() => late)
        expect(outcome.ok).toBe(true)
        if (outcome.ok) {
          expect(outcome.result.isError).toBe(true)
          expect(textOf(outcome.result)).toContain("serve is shutting down")
        }

        const approvals = approvalsOf(filename)
        expect(approvals.map((p) => [p.agent, p.answer, p.outcome, p.approver, p.asked])).toEqual([
          ["alice", "accept", "allowed", "client alice", McpElicitation.APPROVER_NAME],
          ["alice", "decline", "refused", "client alice", McpElicitation.APPROVER_NAME],
          ["bob", "unavailable", "refused", null, McpElicitation.APPROVER_NAME],
          ["alice", "unavailable", "refused", null, McpElicitation.APPROVER_NAME]
        ])
        expect(approvals.every((p) => p.rule_id === "ask-write" && p.server_id === "notes")).toBe(true)
      }),
    60_000
  )
})
