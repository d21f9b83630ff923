/**
 * `agent-ledger mcp-proxy` in shadow mode in front of the official filesystem server, driven by the SDK
 * client: the blocked tool is listed and runs, a read-then-write runs, every decision enforcing would have
 * refused is a `governance.would-refuse` row (no `governance.refusal`), the ledger verifies, and
 * `agent-ledger stats` reports what enforcing would have refused, by rule. `--mode shadow` and the policy's
 * `"mode": "shadow"` both do it.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-shadow-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let counter = 0

const rules = [
  { id: "no-move", kind: "blockTools", tools: ["move_file"] },
  { id: "no-read-then-write", kind: "sequence", after: ["read_*"], then: ["write_file"], within: 2 }
]

const run = async (policy: Record<string, unknown>, extra: ReadonlyArray<string>) => {
  const dir = join(tempRoot, `case-${++counter}`)
  const root = join(dir, "files")
  mkdirSync(root, { recursive: true })
  writeFileSync(join(root, "small.txt"), "s".repeat(100))
  const policyFile = join(dir, "policy.json")
  writeFileSync(policyFile, JSON.stringify({ version: 1, hideRefusedTools: true, rules, ...policy }))
  const db = join(dir, "ledger.db")
  const client = new Client({ name: "shadow-test", version: "1.0.0" })
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [
        cliBundle,
        "mcp-proxy",
        "--db",
        db,
        "--policy",
        policyFile,
        ...extra,
        "--",
        process.execPath,
        fsServer,
        root
      ],
      stderr: "ignore"
    })
  )
  const tools = (await client.listTools()).tools.map((tool) => tool.name)
  const read = await client.callTool({ name: "read_text_file", arguments: { path: join(root, "small.txt") } })
  const write = await client.callTool({
    name: "write_file",
    arguments: { path: join(root, "out.txt"), content: "written" }
  })
  const move = await client.callTool({
    name: "move_file",
    arguments: { source: join(root, "small.txt"), destination: join(root, "moved.txt") }
  })
  await client.close()
  const sqlite = new Database(db, { readonly: true })
  const rows = sqlite.prepare("SELECT event_type, payload FROM signed_events ORDER BY sequence").all() as Array<
    { event_type: string; payload: string }
  >
  sqlite.close()
  const { report, stats } = await Effect.runPromise(
    Effect.all({ report: verifyLedger(), stats: LedgerStats.stats() }).pipe(
      Effect.provide(LedgerSql.layerSqlite({ filename: db }))
    )
  )
  return { db, root, tools, read, write, move, rows, statsJson: stats, verified: report.ok }
}

describe("mcp-proxy --mode shadow in front of the filesystem server", () => {
  it("blocks and hides nothing, ledgers would-refuse rows, and stats shows what enforcing would refuse", async () => {
    const r = await run({}, ["--mode", "shadow"])
    expect(r.tools).toContain("move_file")
    for (const result of [r.read, r.write, r.move]) expect(result.isError).not.toBe(true)
    // The upstream did write and move.
    expect(readFileSync(join(r.root, "out.txt"), "utf8")).toBe("written")
    expect(existsSync(join(r.root, "moved.txt"))).toBe(true)
    const decisions = r.rows.filter((row) => row.event_type.startsWith("governance."))
    expect(decisions.map((row) => [row.event_type, JSON.parse(row.payload).decision.ruleId])).toEqual([
      ["governance.would-refuse", "no-read-then-write"],
      ["governance.would-refuse", "no-move"]
    ])
    expect(decisions.every((row) => JSON.parse(row.payload).mode === "shadow")).toBe(true)
    expect(r.verified).toBe(true)
    expect(r.statsJson.refusalsByRule).toEqual({})
    expect(r.statsJson.wouldRefuseByRule).toEqual({ "no-move": 1, "no-read-then-write": 1 })
    const text = execFileSync(process.execPath, [cliBundle, "stats", r.db], { encoding: "utf8" })
    expect(text).toMatch(
      /would refuse by rule \(shadow mode, not enforced\):\n\s+no-read-then-write\s+1\n\s+no-move\s+1/
    )
  })

  // The policy's "mode": "shadow" without the option: test/GuardShadow.test.ts.
  it("--mode enforce overrides the policy's \"mode\": \"shadow\", and refuses and hides", async () => {
    const enforced = await run({ mode: "shadow" }, ["--mode", "enforce"])
    expect(enforced.tools).not.toContain("move_file")
    expect(enforced.write.isError).toBe(true)
    expect(enforced.move.isError).toBe(true)
    expect(existsSync(join(enforced.root, "out.txt"))).toBe(false)
    expect(enforced.statsJson.refusalsByRule).toEqual({ "no-move": 1, "no-read-then-write": 1 })
    expect(enforced.statsJson.wouldRefuseByRule).toEqual({})
  })
})
