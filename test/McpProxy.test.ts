/**
 * `agent-ledger mcp-proxy` in front of the official filesystem MCP server, driven by the official SDK's
 * `Client` over stdio, as an MCP client would: the tool list is the upstream's (minus hidden tools),
 * allowed calls return the upstream's results, a blocked tool, an exhausted read budget (real file bytes)
 * and a read-then-write sequence are refused with the rule named, the refusals are ledger rows that verify,
 * and the session seal matches the exported journal, also when the client goes away or the proxy is
 * signalled mid-session.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import { afterAll } from "vitest"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-mcp-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let counter = 0

const policy = {
  version: 1,
  hideRefusedTools: true,
  rules: [
    { id: "no-move", kind: "blockTools", tools: ["move_file"] },
    { id: "read-budget", kind: "budget", read: 2000 },
    { id: "no-read-then-write", kind: "sequence", after: ["read_*"], then: ["write_file", "edit_file"], within: 2 }
  ],
  argumentStorage: { "read_*": { store: ["path"] } }
}

/** A fresh directory for the filesystem server, a policy file, and paths for the ledger and the journal. */
const setup = () => {
  const dir = join(tempRoot, `case-${++counter}`)
  const root = join(dir, "files")
  mkdirSync(root, { recursive: true })
  writeFileSync(join(root, "small.txt"), "s".repeat(100))
  writeFileSync(join(root, "big.txt"), "b".repeat(3000))
  const policyFile = join(dir, "policy.json")
  writeFileSync(policyFile, JSON.stringify(policy))
  return { dir, root, policyFile, db: join(dir, "ledger.db"), journal: join(dir, "session.json") }
}

const connect = async (transport: StdioClientTransport) => {
  const client = new Client({ name: "test-agent", version: "1.0.0" })
  await client.connect(transport)
  return client
}

const proxied = (paths: ReturnType<typeof setup>, extra: ReadonlyArray<string> = []) =>
  new StdioClientTransport({
    command: process.execPath,
    args: [
      cliBundle,
      "mcp-proxy",
      "--db",
      paths.db,
      "--policy",
      paths.policyFile,
      "--export-session",
      paths.journal,
      "--session",
      "sess-test",
      ...extra,
      "--",
      process.execPath,
      fsServer,
      paths.root
    ],
    stderr: "ignore"
  })

const textOf = (result: unknown): string =>
  ((result as { content?: ReadonlyArray<{ type: string; text?: string }> }).content ?? [])
    .map((part) => part.text ?? "").join("")

/** The ledger's rows (event type and payload) and its verification report. */
const ledgerOf = (db: string) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const { client } = yield* LedgerSql.LedgerSql
      const rows = yield* client<{ event_type: string; payload: string; agent_id: string }>`
        SELECT event_type, payload, agent_id FROM signed_events ORDER BY sequence`
      return { rows, report: yield* verifyLedger() }
    }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename: db })))
  )

/** The seal rows' commitments, and whether the exported journal verifies and matches the last one. */
const checkSeal = async (paths: ReturnType<typeof setup>) => {
  const { report, rows } = await ledgerOf(paths.db)
  expect(report.ok).toBe(true)
  const seals = rows.filter((row) => row.event_type === AuditEvent.SESSION_SEALED_EVENT_TYPE)
    .map((row) => JSON.parse(row.payload).action.payload)
  expect(seals.length).toBeGreaterThanOrEqual(1)
  const exported = await Effect.runPromise(
    SessionJournal.verifyExport(JSON.parse(readFileSync(paths.journal, "utf8")))
  )
  const last = seals[seals.length - 1]
  expect(last).toEqual({
    session_id: "sess-test",
    journal_format: SessionJournal.EXPORT_FORMAT,
    length: exported.entries.length,
    head_hash: exported.headHash
  })
  return { rows, exported }
}

describe("agent-ledger mcp-proxy in front of @modelcontextprotocol/server-filesystem", () => {
  it(
    "passes the upstream through, refuses by rule, and leaves a ledger that verifies with a matching seal",
    async () => {
      const paths = setup()
      const direct = await connect(
        new StdioClientTransport({ command: process.execPath, args: [fsServer, paths.root], stderr: "ignore" })
      )
      const upstreamTools = (await direct.listTools()).tools.map((tool) => tool.name).sort()
      const directRead = await direct.callTool({
        name: "read_text_file",
        arguments: { path: join(paths.root, "small.txt") }
      })
      await direct.close()

      const client = await connect(proxied(paths))
      // tools/list: the upstream's, with the blocked tool hidden.
      const tools = (await client.listTools()).tools.map((tool) => tool.name).sort()
      expect(upstreamTools).toContain("move_file")
      expect(tools).toEqual(upstreamTools.filter((name) => name !== "move_file"))

      // An allowed call returns the upstream's result.
      const read = await client.callTool({ name: "read_text_file", arguments: { path: join(paths.root, "small.txt") } })
      expect(read).toEqual(directRead)
      expect(read.isError).not.toBe(true)

      // Read, then write within 2 calls: refused by the sequence rule; the file is not created.
      const write = await client.callTool({
        name: "write_file",
        arguments: { path: join(paths.root, "out.txt"), content: "exfiltrated" }
      })
      expect(write.isError).toBe(true)
      expect(textOf(write)).toContain("no-read-then-write")
      expect(() => readFileSync(join(paths.root, "out.txt"))).toThrow()

      // A hidden, blocked tool: refused with its rule, and the upstream never moves the file.
      const move = await client.callTool({
        name: "move_file",
        arguments: { source: join(paths.root, "small.txt"), destination: join(paths.root, "moved.txt") }
      })
      expect(move.isError).toBe(true)
      expect(textOf(move)).toContain("no-move")
      expect(readFileSync(join(paths.root, "small.txt"), "utf8")).toHaveLength(100)

      // Real bytes read: the big file passes (budget not yet used), the next read finds the budget spent.
      const big = await client.callTool({ name: "read_text_file", arguments: { path: join(paths.root, "big.txt") } })
      expect(big.isError).not.toBe(true)
      const over = await client.callTool({ name: "read_text_file", arguments: { path: join(paths.root, "small.txt") } })
      expect(over.isError).toBe(true)
      expect(textOf(over)).toContain("read-budget")
      await client.close()

      const { exported, rows } = await checkSeal(paths)
      const refusals = rows.filter((row) => row.event_type === AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE)
        .map((row) => JSON.parse(row.payload))
      expect(refusals.map((payload) => payload.decision.ruleId)).toEqual([
        "no-read-then-write",
        "no-move",
        "read-budget"
      ])
      expect(rows.every((row) => row.agent_id === "test-agent")).toBe(true)
      // Each refusal names its journal entry, which is the refused call.
      for (const payload of refusals) {
        const entry = exported.entries[payload.journal.sequence]!
        expect(payload.journal.session_id).toBe("sess-test")
        expect(entry.allowed).toBe(false)
        expect(entry.toolName).toBe(payload.action.toolName)
      }
      // Arguments: by default only a salted hash and size; read_* stores its path (policy argumentStorage).
      const stored = refusals.find((payload) => payload.action.toolName === "write_file").action.arguments
      expect(Object.keys(stored).sort()).toEqual(["bytes", "sha256"])
      expect(JSON.stringify(stored)).not.toContain("exfiltrated")
      const readArgs = refusals.find((payload) => payload.action.toolName === "read_text_file").action.arguments
      expect(readArgs.fields).toEqual({ path: join(paths.root, "small.txt") })
      // The journal holds every call (format v2: an allowed call's decision, then how it ended), with the
      // bytes the allowed reads returned.
      expect(exported.entries.map((entry) => [entry.toolName, entry.kind, entry.outcome])).toEqual([
        ["read_text_file", "call", "pending"],
        ["read_text_file", "outcome", "result"],
        ["write_file", "call", "refused"],
        ["move_file", "call", "refused"],
        ["read_text_file", "call", "pending"],
        ["read_text_file", "outcome", "result"],
        ["read_text_file", "call", "refused"]
      ])
      expect(exported.entries[5]!.bytesRead).toBeGreaterThan(3000)

      // `verify <journal> --ledger <db>`: the export matches the ledger's seal; a truncated one does not.
      const verify = (journal: string) =>
        promisify(execFile)(process.execPath, [cliBundle, "verify", journal, "--ledger", paths.db, "--json"]).then(
          ({ stdout }) => ({ code: 0, report: JSON.parse(stdout) }),
          (error: { code: number; stdout: string }) => ({ code: error.code, report: JSON.parse(error.stdout) })
        )
      const sealed = await verify(paths.journal)
      expect(sealed.code).toBe(0)
      expect(sealed.report.seal).toMatchObject({ status: "sealed", length: 7 })
      const truncated = JSON.parse(readFileSync(paths.journal, "utf8"))
      truncated.entries = truncated.entries.slice(0, 6)
      truncated.headHash = truncated.entries[5].entryHash
      writeFileSync(join(paths.dir, "truncated.json"), JSON.stringify(truncated))
      const cut = await verify(join(paths.dir, "truncated.json"))
      expect(cut.code).toBe(1)
      expect(cut.report).toMatchObject({ ok: false, seal: { status: "mismatch" } })
    },
    60_000
  )

  for (const how of ["the client's pipe closes", "the proxy gets SIGTERM"] as const) {
    it(`${how} mid-session: the session is sealed and the ledger verifies`, async () => {
      const paths = setup()
      const transport = proxied(paths)
      const client = await connect(transport)
      await client.callTool({ name: "read_text_file", arguments: { path: join(paths.root, "small.txt") } })
      await client.callTool({ name: "move_file", arguments: { source: "a", destination: "b" } })
      const pid = transport.pid!
      const exited = new Promise<void>((resolve) => {
        const poll = setInterval(() => {
          try {
            process.kill(pid, 0)
          } catch {
            clearInterval(poll)
            resolve()
          }
        }, 20)
      })
      if (how === "the proxy gets SIGTERM") process.kill(pid, "SIGTERM")
      else (transport as unknown as { _process: { stdin: { destroy(): void } } })._process.stdin.destroy()
      await exited
      const { exported, rows } = await checkSeal(paths)
      expect(exported.entries).toHaveLength(3) // the read's decision and outcome, the refused move
      expect(rows.map((row) => row.event_type).filter((type) => type !== AuditEvent.TOOL_PINNED_EVENT_TYPE)).toEqual([
        AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE,
        AuditEvent.SESSION_SEALED_EVENT_TYPE
      ])
      await client.close().catch(() => undefined)
    }, 60_000)
  }

  it(
    "demo --mcp drives the proxy with a scripted client: one allowed read, three refusals, a sealed journal",
    async () => {
      const dir = join(tempRoot, `demo-${++counter}`)
      mkdirSync(dir)
      const db = join(dir, "demo.db")
      const { stdout } = await promisify(execFile)(process.execPath, [
        cliBundle,
        "demo",
        "--mcp",
        "--db",
        db,
        "--session-out",
        join(dir, "session.json")
      ])
      expect(stdout.match(/REFUSED/g)).toHaveLength(3)
      expect(stdout).toMatch(/^  read a note +allowed /m)
      expect(stdout).toContain("verify OK")
      expect(stdout).toMatch(/session\.json: sealed/)
      const { report, rows } = await ledgerOf(db)
      expect(report.ok).toBe(true)
      // Tool pinning (on by default) pinned the server's tools on first sight.
      expect(rows.filter((row) => row.event_type === AuditEvent.TOOL_PINNED_EVENT_TYPE).length).toBeGreaterThan(0)
      expect(rows.map((row) => row.event_type).filter((type) => type !== AuditEvent.TOOL_PINNED_EVENT_TYPE)).toEqual([
        ...Array(3).fill(AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE),
        AuditEvent.SESSION_SEALED_EVENT_TYPE
      ])
    },
    60_000
  )

  it("a server command that cannot start is one line on stderr and exit 2", async () => {
    const paths = setup()
    const run = await promisify(execFile)(process.execPath, [
      cliBundle,
      "mcp-proxy",
      "--db",
      paths.db,
      "--policy",
      paths.policyFile,
      "--",
      join(paths.dir, "no-such-server")
    ]).then(() => ({ code: 0, stderr: "" }), (error: { code: number; stderr: string }) => error)
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toMatch(/^agent-ledger: mcp-proxy: the server cannot start: .*ENOENT/)
  })
})
