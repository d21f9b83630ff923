/**
 * Hostile arguments at the guard: no step of the guard path (policy matching, argument storage, canonical
 * JSON, byte counting, journaling, the ledger) recurses on the client's nesting depth. Arguments deeper or
 * larger than the policy's limits are refused by rule before anything reads them, under the shipped
 * examples/policy.json on a real SQLite ledger that still verifies, and the session goes on.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as SessionJournals from "../src/journal/SessionJournals.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-args-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

/** `{"a": {"a": ... leaf}}`, `depth` objects deep, built without recursion. */
const nested = (depth: number, leaf: unknown = "/data/x"): unknown => {
  let value = leaf
  for (let i = 0; i < depth; i++) value = { a: value }
  return value
}

const limits = { maxDepth: McpGuard.DEFAULT_MAX_ARGUMENT_DEPTH, maxBytes: McpGuard.DEFAULT_MAX_ARGUMENT_BYTES }

describe("measureArguments", () => {
  it("walks any depth without recursion and stops at the first limit", () => {
    expect(McpGuard.measureArguments(nested(10_000), limits)).toEqual({ _tag: "TooDeep", depth: 65 })
    expect(McpGuard.measureArguments(nested(64), limits)._tag).toBe("Within")
    expect(McpGuard.measureArguments(nested(65), limits)._tag).toBe("TooDeep")
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(McpGuard.measureArguments(cyclic, limits)._tag).toBe("TooDeep")
    const huge = { content: "x".repeat(5 * 1024 * 1024) }
    expect(McpGuard.measureArguments(huge, limits)._tag).toBe("TooLarge")
    const wide = Array.from({ length: 3_000_000 }, () => 0)
    expect(McpGuard.measureArguments(wide, limits)._tag).toBe("TooLarge")
    // Within the limits, the count is the JSON size (no escapes in this value).
    const plain = { path: "/data/x", n: [1, 2.5, true, null], "é": "ü" }
    expect(McpGuard.measureArguments(plain, limits)).toEqual({
      _tag: "Within",
      bytes: Buffer.byteLength(JSON.stringify(plain))
    })
  })
})

describe("AuditEvent.normalizeJson on deep input", () => {
  it("fails with InvalidJson naming where, instead of overflowing the stack", () => {
    const result = AuditEvent.normalizeJson(nested(10_000), "arguments")
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left.reason).toBe("tooDeep")
      expect(result.left.path.startsWith("arguments.a.a.a")).toBe(true)
    }
  })
})

describe("McpGuard under examples/policy.json on a SQLite ledger", () => {
  for (const depth of [2_000, 10_000]) {
    it.effect(
      `a ${depth}-deep argument is refused as arguments-too-deep; the session goes on; verify OK`,
      () =>
        Effect.gen(function*() {
          const filename = join(tempRoot, `deep-${depth}.db`)
          yield* Effect.gen(function*() {
            const policy = yield* GuardPolicy.load(join(repoRoot, "examples/policy.json"))
            const salt = yield* LedgerSql.argumentSalt
            const guard = yield* McpGuard.make({ policy: GuardPolicy.engine(policy, { salt }), sealEvery: 0 }).pipe(
              Effect.provideServiceEffect(SessionJournals.SessionJournals, SessionJournals.make)
            )
            const call = (toolName: string, args: unknown): McpGuard.GuardCall => ({
              sessionId: "sess-deep",
              agentId: "agent",
              serverId: "fs",
              toolName,
              arguments: args
            })
            // The case of issue 19: a stored argument (`read_*` stores `path`), and one under no storage rule.
            const refused = yield* guard.check(call("read_text_file", { path: nested(depth) }))
            expect(refused).toMatchObject({ _tag: "Refused", ruleId: McpGuard.ARGUMENTS_TOO_DEEP_RULE })
            const other = yield* guard.check(call("search_files", { pattern: nested(depth) }))
            expect(other).toMatchObject({ _tag: "Refused", ruleId: McpGuard.ARGUMENTS_TOO_DEEP_RULE })
            // A transport-level refusal of the same call is safe too.
            const byTransport = yield* guard.refuse(
              call("read_text_file", nested(depth)),
              "duplicate-request-id",
              "dup"
            )
            expect(byTransport.ruleId).toBe("duplicate-request-id")
            // Later calls are still decided.
            const later = yield* guard.check(call("read_text_file", { path: "/data/notes.txt" }))
            expect(later._tag).toBe("Allowed")
            if (later._tag === "Allowed") yield* guard.complete(later.ticket, { _tag: "Result", bytesRead: 10 })
            expect(yield* guard.check(call("read_text_file", { path: "/home/u/.ssh/id" }))).toMatchObject({
              ruleId: "no-dotfiles"
            })
            const ended = Option.getOrThrow(yield* guard.endSession("sess-deep"))
            yield* SessionJournal.verifyExport(JSON.parse(JSON.stringify(ended)))
            expect(ended.entries.map((e) => [e.toolName, e.outcome])).toEqual([
              ["read_text_file", "refused"],
              ["search_files", "refused"],
              ["read_text_file", "refused"],
              ["read_text_file", "pending"],
              ["read_text_file", "result"],
              ["read_text_file", "refused"]
            ])
            const queue = yield* AuditQueue.AuditQueue
            expect(yield* queue.drainPending("10 seconds")).toBe(true)
            const { client } = yield* LedgerSql.LedgerSql
            const rows = yield* client<{ payload: string }>`
            SELECT payload FROM signed_events WHERE event_type = ${AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE}
            ORDER BY sequence`
            const payloads = rows.map((row) => JSON.parse(row.payload))
            expect(payloads.map((p) => p.decision.ruleId)).toEqual([
              McpGuard.ARGUMENTS_TOO_DEEP_RULE,
              McpGuard.ARGUMENTS_TOO_DEEP_RULE,
              "duplicate-request-id",
              "no-dotfiles"
            ])
            // The ledger stores what was measured, never the deep value.
            expect(payloads[0].action.arguments).toEqual({
              unread: McpGuard.ARGUMENTS_TOO_DEEP_RULE,
              depthOver: McpGuard.DEFAULT_MAX_ARGUMENT_DEPTH
            })
            expect((yield* verifyLedger()).ok).toBe(true)
          }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })))
        }),
      60_000
    )
  }

  it.effect("the limits are the policy's: a smaller depth or size refuses earlier, by rule", () =>
    Effect.gen(function*() {
      const policy = yield* GuardPolicy.decode({
        version: 1,
        rules: [],
        limits: { maxArgumentDepth: 3, maxArgumentBytes: 100 }
      })
      const engine = GuardPolicy.engine(policy, { salt: "s" })
      expect(engine.argumentLimits).toEqual({ maxDepth: 3, maxBytes: 100 })
      const filename = join(tempRoot, "limits.db")
      yield* Effect.gen(function*() {
        const guard = yield* McpGuard.make({ policy: engine, sealEvery: 0 }).pipe(
          Effect.provideServiceEffect(SessionJournals.SessionJournals, SessionJournals.make)
        )
        const call = (args: unknown): McpGuard.GuardCall => ({
          sessionId: "s",
          agentId: "a",
          serverId: "fs",
          toolName: "t",
          arguments: args
        })
        expect((yield* guard.check(call({ a: { b: 1 } })))._tag).toBe("Allowed")
        expect((yield* guard.check(call({ a: { b: { c: 1 } } })))._tag).toBe("Allowed") // depth 3
        expect(yield* guard.check(call({ a: { b: { c: { d: 1 } } } }))).toMatchObject({
          ruleId: McpGuard.ARGUMENTS_TOO_DEEP_RULE
        })
        expect(yield* guard.check(call({ a: "x".repeat(200) }))).toMatchObject({
          ruleId: McpGuard.ARGUMENTS_TOO_LARGE_RULE
        })
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })))
      expect(() => Effect.runSync(GuardPolicy.decode({ version: 1, rules: [], limits: { maxArgumentDepth: 0 } })))
        .toThrow(/limits\.maxArgumentDepth/)
    }))
})

describe("mcp-proxy under examples/policy.json: deep arguments from a hostile client", () => {
  // This checkout's CLI, bundled by test/globalSetup.ts.
  const bundle = cliBundle

  it(
    "2,000- and 10,000-deep arguments are refused by rule, later calls are answered, the ledger verifies",
    async () => {
      const root = join(tempRoot, "proxy-files")
      mkdirSync(root, { recursive: true })
      writeFileSync(join(root, "notes.txt"), "hello")
      const db = join(tempRoot, "proxy.db")
      // A client speaking raw JSON-RPC lines: a JSON encoder (the SDK's included) cannot even write a
      // 10,000-deep value, but a hostile client can send one.
      const proxy = spawn(process.execPath, [
        bundle,
        "mcp-proxy",
        "--db",
        db,
        "--policy",
        join(repoRoot, "examples/policy.json"),
        "--session",
        "sess-deep-proxy",
        "--",
        process.execPath,
        join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"),
        root
      ], { stdio: ["pipe", "pipe", "ignore"] })
      const answers = new Map<number, (message: Record<string, any>) => void>()
      createInterface({ input: proxy.stdout! }).on("line", (line) => {
        const message = JSON.parse(line)
        if (typeof message.id === "number") answers.get(message.id)?.(message)
      })
      let nextId = 0
      const request = (method: string, paramsJson: string) => {
        const id = ++nextId
        const answered = new Promise<Record<string, any>>((resolve) => answers.set(id, resolve))
        proxy.stdin!.write(`{"jsonrpc":"2.0","id":${id},"method":"${method}","params":${paramsJson}}\n`)
        return answered
      }
      await request(
        "initialize",
        JSON.stringify({ protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "deep", version: "1" } })
      )
      proxy.stdin!.write(`{"jsonrpc":"2.0","method":"notifications/initialized"}\n`)
      const textOf = (result: unknown) => JSON.stringify(result)
      for (const depth of [2_000, 10_000]) {
        const deepPath = `${"{\"a\":".repeat(depth)}"x"${"}".repeat(depth)}`
        const deep = await request("tools/call", `{"name":"read_text_file","arguments":{"path":${deepPath}}}`)
        expect(deep.result?.isError).toBe(true)
        expect(textOf(deep)).toContain(McpGuard.ARGUMENTS_TOO_DEEP_RULE)
        const later = await request(
          "tools/call",
          JSON.stringify({ name: "read_text_file", arguments: { path: join(root, "notes.txt") } })
        )
        expect(textOf(later)).toContain("hello")
      }
      const exited = new Promise((resolve) => proxy.on("exit", resolve))
      proxy.stdin!.end()
      await exited
      const report = await Effect.runPromise(
        Effect.gen(function*() {
          const { client: sql } = yield* LedgerSql.LedgerSql
          const rows = yield* sql<{ payload: string }>`
          SELECT payload FROM signed_events WHERE event_type = ${AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE}`
          return { rules: rows.map((row) => JSON.parse(row.payload).decision.ruleId), verified: yield* verifyLedger() }
        }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename: db })))
      )
      expect(report.rules).toEqual([McpGuard.ARGUMENTS_TOO_DEEP_RULE, McpGuard.ARGUMENTS_TOO_DEEP_RULE])
      expect(report.verified.ok).toBe(true)
    },
    120_000
  )
})
