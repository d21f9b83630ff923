/**
 * MCP over Streamable HTTP through `agent-ledger serve`, in front of the official filesystem server (over
 * stdio), driven by the SDK's `StreamableHTTPClientTransport` + `Client` over real loopback HTTP: the
 * upstream's tools are listed, an allowed call reaches the server, a refused call never does and is a
 * ledger row under the bearer token's agent (not the client's self-declared name), the MCP session id is
 * the journal's session, a request without a token is 401, another agent cannot use the session (403),
 * and shutdown seals the open session.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import Database from "better-sqlite3"
import { Context, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import { join } from "node:path"
import * as AuditLedger from "../src/AuditLedger.js"
import { loadConfig, mcpSdk } from "../src/cli/serve.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as McpEndpoints from "../src/serve/McpEndpoints.js"
import * as Serve from "../src/serve/Serve.js"
import { repoRoot } from "./fixtures/cliBundle.js"

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [{
    kind: "blockTools",
    id: "no-env-files",
    tools: ["read_file", "read_text_file"],
    when: [{ path: "path", match: { pathGlob: ["**/.env"] } }],
    reason: "{tool} of a .env file is not allowed"
  }]
}))

const alice = BearerTokens.generate("alice")
const bob = BearerTokens.generate("bob")
const tokens = Effect.runSync(BearerTokens.parse(`${alice.line}\n${bob.line}\n`, "tokens"))

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

const connect = (url: URL, token: string) =>
  Effect.promise(async () => {
    const client = new Client({ name: "mallory-claims-this", version: "1.0.0" })
    const transport = new StreamableHTTPClientTransport(url, {
      requestInit: { headers: { authorization: `Bearer ${token}` } }
    })
    await client.connect(transport)
    return { client, transport }
  })

const textOf = (result: unknown): string =>
  (result as { content: Array<{ text: string }> }).content.map((c) => c.text).join("")

describe("serve: MCP over Streamable HTTP", () => {
  it.live("fronts the filesystem server with the token's identity in the ledger", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-mcp-"))
      const root = join(dir, "files")
      fs.mkdirSync(root)
      fs.writeFileSync(join(root, "notes.txt"), "hello from notes")
      fs.writeFileSync(join(root, ".env"), "SECRET=hunter2")
      const configFile = join(dir, "serve.json")
      fs.writeFileSync(
        configFile,
        JSON.stringify({ mcp: { files: { command: process.execPath, args: [fsServer, root] } } })
      )
      const config = yield* loadConfig(configFile)
      const filename = join(dir, "ledger.db")
      const layer = Serve.layer(
        { policy, tokens, mcp: { upstreams: config.mcp, sdk: yield* mcpSdk } },
        NodeHttpServer.layer(() => http.createServer(), { host: "127.0.0.1", port: 0 })
      ).pipe(Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false })))

      const { bobSession, id: sessionId } = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(layer)
        const address = Context.get(context, HttpServer.HttpServer).address
        if (address._tag !== "TcpAddress") throw new Error("not TCP")
        const base = `http://127.0.0.1:${address.port}`
        const url = new URL(`${base}/mcp/files`)

        // No token: 401, before any session or upstream exists.
        const anonymous = yield* Effect.promise(() =>
          fetch(url, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 1,
              method: "initialize",
              params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } }
            })
          })
        )
        expect(anonymous.status).toBe(401)
        expect(anonymous.headers.get("www-authenticate")).toBe("Bearer")
        // An unknown upstream: 404.
        const unknown = yield* Effect.promise(() =>
          fetch(`${base}/mcp/nope`, { method: "POST", headers: { authorization: `Bearer ${alice.token}` }, body: "{}" })
        )
        expect(unknown.status).toBe(404)

        const { client, transport } = yield* connect(url, alice.token)
        const tools = (yield* Effect.promise(() => client.listTools())).tools.map((t) => t.name)
        expect(tools).toContain("read_text_file")

        const allowed = yield* Effect.promise(() =>
          client.callTool({ name: "read_text_file", arguments: { path: join(root, "notes.txt") } })
        )
        expect(allowed.isError).not.toBe(true)
        expect(textOf(allowed)).toContain("hello from notes")

        const refused = yield* Effect.promise(() =>
          client.callTool({ name: "read_text_file", arguments: { path: join(root, ".env") } })
        )
        expect(refused.isError).toBe(true)
        expect(textOf(refused)).toContain("rule no-env-files")
        expect(textOf(refused)).not.toContain("hunter2")

        // Bob's token cannot drive alice's session.
        const id = transport.sessionId!
        expect(id).toMatch(/^[0-9a-f-]{36}$/)
        const stolen = yield* Effect.promise(() =>
          fetch(url, {
            method: "POST",
            headers: {
              authorization: `Bearer ${bob.token}`,
              "mcp-session-id": id,
              "mcp-protocol-version": "2025-06-18",
              "content-type": "application/json",
              accept: "application/json, text/event-stream"
            },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 9,
              method: "tools/call",
              params: { name: "read_text_file", arguments: { path: join(root, "notes.txt") } }
            })
          })
        )
        expect(stolen.status).toBe(403)
        // A JSON answer is sent whole, with its length (one write), not as a chunked stream.
        const direct = yield* Effect.promise(() =>
          fetch(url, {
            method: "POST",
            headers: {
              authorization: `Bearer ${alice.token}`,
              "mcp-session-id": id,
              "mcp-protocol-version": "2025-06-18",
              "content-type": "application/json",
              accept: "application/json, text/event-stream"
            },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 10,
              method: "tools/call",
              params: { name: "read_text_file", arguments: { path: join(root, "notes.txt") } }
            })
          })
        )
        expect(direct.status).toBe(200)
        expect(direct.headers.get("content-type")).toMatch(/^application\/json/)
        expect(direct.headers.get("mcp-session-id")).toBe(id)
        expect(direct.headers.get("transfer-encoding")).toBeNull()
        const directBody = Buffer.from(yield* Effect.promise(() => direct.arrayBuffer()))
        expect(Number(direct.headers.get("content-length"))).toBe(directBody.length)
        const answer = JSON.parse(directBody.toString("utf8")) as { id: number; result: unknown }
        expect(answer.id).toBe(10)
        expect(textOf(answer.result)).toContain("hello from notes")
        // No standalone SSE stream: GET is 405 (the spec's answer for a server without one).
        const get = yield* Effect.promise(() =>
          fetch(url, {
            headers: { authorization: `Bearer ${alice.token}`, "mcp-session-id": id, accept: "text/event-stream" }
          })
        )
        expect(get.status).toBe(405)

        // Bob's own session, ended by the client (DELETE): sealed now, under bob; its id is then unknown (404).
        const second = yield* connect(url, bob.token)
        const bobSession = second.transport.sessionId!
        expect(bobSession).not.toBe(id)
        const listed = yield* Effect.promise(() =>
          second.client.callTool({ name: "list_directory", arguments: { path: root } })
        )
        expect(textOf(listed)).toContain("notes.txt")
        yield* Effect.promise(() => second.transport.terminateSession())
        const endpoints = Context.get(context, McpEndpoints.McpEndpoints)
        for (let i = 0; i < 100 && (yield* endpoints.openSessions) > 1; i++) yield* Effect.sleep("20 millis")
        expect(yield* endpoints.openSessions).toBe(1)
        const gone = yield* Effect.promise(() =>
          fetch(url, {
            method: "DELETE",
            headers: { authorization: `Bearer ${bob.token}`, "mcp-session-id": bobSession }
          })
        )
        expect(gone.status).toBe(404)
        yield* Effect.promise(() => second.client.close())
        // Alice's session stays open: shutdown (closing the scope) seals it.
        return { id, bobSession }
      }))

      const rows = rowsOf(filename)
      const refusals = rows.filter((r) => r.event_type.includes("refusal"))
      expect(refusals).toHaveLength(1)
      expect(refusals[0]!.agent_id).toBe("alice")
      expect(refusals[0]!.payload).toContain("no-env-files")
      expect(refusals[0]!.payload).toContain(sessionId)
      expect(rows.every((r) => r.agent_id !== "mallory-claims-this")).toBe(true)
      // The session's journal was sealed on shutdown: a seal row covering both calls, under alice.
      const seals = rows.filter((r) => r.event_type.includes("seal"))
      expect(seals.length).toBeGreaterThan(0)
      const aliceSeal = seals.find((r) => r.payload.includes(sessionId))
      expect(aliceSeal?.agent_id).toBe("alice")
      const bobSeal = seals.find((r) => r.payload.includes(bobSession))
      expect(bobSeal?.agent_id).toBe("bob")
      // Bob's session was sealed when he ended it, before the shutdown sealed alice's.
      expect(seals.indexOf(bobSeal!)).toBeLessThan(seals.indexOf(aliceSeal!))
    }), 20_000)
})

describe("serve: MCP sessions are bounded", () => {
  it.live(
    "refuses an agent's initialize past maxSessionsPerAgent (403) and an upstream that cannot start (502)",
    () =>
      Effect.gen(function*() {
        const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-mcp-"))
        const root = join(dir, "files")
        fs.mkdirSync(root)
        const layer = Serve.layer(
          {
            policy,
            tokens,
            mcp: {
              upstreams: {
                files: { command: process.execPath, args: [fsServer, root], env: {} },
                broken: { command: join(dir, "no-such-command"), args: [], env: {} }
              },
              sdk: yield* mcpSdk,
              maxSessionsPerAgent: 1
            }
          },
          NodeHttpServer.layer(() => http.createServer(), { host: "127.0.0.1", port: 0 })
        ).pipe(Layer.provide(AuditLedger.layerSqlite({ filename: join(dir, "ledger.db"), writerThread: false })))
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(layer)
          const address = Context.get(context, HttpServer.HttpServer).address
          if (address._tag !== "TcpAddress") throw new Error("not TCP")
          const url = (name: string) => new URL(`http://127.0.0.1:${address.port}/mcp/${name}`)
          const first = yield* connect(url("files"), alice.token)
          const second = yield* Effect.exit(connect(url("files"), alice.token))
          expect(second._tag).toBe("Failure")
          expect(String(second)).toMatch(/"code": 403/)
          // An upstream that cannot start: 502, and the session is not kept (it takes no place).
          const broken = yield* Effect.exit(connect(url("broken"), bob.token))
          expect(String(broken)).toMatch(/"code": 502/)
          // Another agent has its own allowance.
          const bobs = yield* connect(url("files"), bob.token)
          const endpoints = Context.get(context, McpEndpoints.McpEndpoints)
          expect(yield* endpoints.openSessions).toBe(2)
          yield* Effect.promise(() => Promise.all([first.client.close(), bobs.client.close()]))
        }))
      }),
    20_000
  )
})

describe("serve: idle MCP sessions", () => {
  it.live(
    "ends and seals a session with no request for idleTimeoutMillis (a client gone without DELETE)",
    () =>
      Effect.gen(function*() {
        const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-mcp-"))
        const root = join(dir, "files")
        fs.mkdirSync(root)
        const filename = join(dir, "ledger.db")
        const layer = Serve.layer(
          {
            policy,
            tokens,
            mcp: {
              upstreams: { files: { command: process.execPath, args: [fsServer, root], env: {} } },
              sdk: yield* mcpSdk,
              idleTimeoutMillis: 300
            }
          },
          NodeHttpServer.layer(() => http.createServer(), { host: "127.0.0.1", port: 0 })
        ).pipe(Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false })))
        const sessionId = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(layer)
          const address = Context.get(context, HttpServer.HttpServer).address
          if (address._tag !== "TcpAddress") throw new Error("not TCP")
          const { client, transport } = yield* connect(
            new URL(`http://127.0.0.1:${address.port}/mcp/files`),
            alice.token
          )
          fs.writeFileSync(join(root, "a.txt"), "a")
          yield* Effect.promise(() =>
            client.callTool({ name: "read_text_file", arguments: { path: join(root, "a.txt") } })
          )
          const endpoints = Context.get(context, McpEndpoints.McpEndpoints)
          expect(yield* endpoints.openSessions).toBe(1)
          for (let i = 0; i < 250 && (yield* endpoints.openSessions) > 0; i++) yield* Effect.sleep("20 millis")
          expect(yield* endpoints.openSessions).toBe(0)
          // Sealed before the shutdown: the seal row is in the ledger while serve still runs.
          const id = transport.sessionId!
          for (let i = 0; i < 100 && !rowsOf(filename).some((r) => r.payload.includes(id)); i++) {
            yield* Effect.sleep("20 millis")
          }
          expect(rowsOf(filename).filter((r) => r.payload.includes(id)).map((r) => r.agent_id)).toEqual(["alice"])
          yield* Effect.promise(() => client.close())
          return id
        }))
        expect(sessionId).toMatch(/^[0-9a-f-]{36}$/)
      }),
    20_000
  )
})

describe("serve --config", () => {
  it.effect("refuses a config with an unknown key, a bad endpoint name or an upstream without a command", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-config-"))
      const write = (name: string, body: unknown) => {
        const file = join(dir, name)
        fs.writeFileSync(file, typeof body === "string" ? body : JSON.stringify(body))
        return file
      }
      for (
        const body of [
          "{not json",
          { mcp: { files: { command: "x" } }, extra: 1 },
          { mcp: { "a/b": { command: "x" } } },
          { mcp: { files: { args: ["x"] } } },
          { mcp: { files: { command: "" } } }
        ]
      ) {
        const error = yield* Effect.flip(loadConfig(write("c.json", body)))
        expect(error._tag).toBe("InputError")
      }
      const ok = yield* loadConfig(write("ok.json", { mcp: { files: { command: "node" } } }))
      expect(ok.mcp).toEqual({ files: { command: "node", args: [], env: {} } })
    }))
})
