/**
 * `"action": "ask"` through `agent-ledger mcp-proxy` in front of the filesystem server, with the SDK client:
 * a client that declared the elicitation capability is asked (the question names the tool, the server, the
 * rule and the path) and its answers accept (the file is written), decline and cancel (not written) and
 * never (refused after the rule's timeout) decide the calls; a client without the capability gets the
 * fallback (refused, saying approval was needed). Every question is a `governance.approval` row naming
 * its call's journal entry, and the ledger verifies.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-ask-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let counter = 0

type Reply = "accept" | "decline" | "cancel" | "never"

const run = async (elicitation: boolean, replies: ReadonlyArray<Reply>) => {
  const dir = join(tempRoot, `case-${++counter}`)
  const root = join(dir, "files")
  mkdirSync(root, { recursive: true })
  const policyFile = join(dir, "policy.json")
  writeFileSync(
    policyFile,
    JSON.stringify({
      version: 1,
      rules: [{
        id: "ask-write",
        kind: "blockTools",
        tools: ["write_file"],
        action: "ask",
        timeout: 1,
        showArguments: ["path"]
      }]
    })
  )
  const db = join(dir, "ledger.db")
  const client = new Client({ name: "ide", version: "1.0.0" }, { capabilities: elicitation ? { elicitation: {} } : {} })
  const questions: Array<string> = []
  const pending = [...replies]
  if (elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async (request) => {
      questions.push(String(request.params.message))
      const reply = pending.shift()
      if (reply === "never") return new Promise<never>(() => {})
      return reply === "accept" ? { action: "accept", content: { approve: true } } : { action: reply! }
    })
  }
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
        "--server-id",
        "filesystem",
        "--",
        process.execPath,
        fsServer,
        root
      ],
      stderr: "ignore"
    })
  )
  const results = []
  for (const [i] of replies.entries()) {
    const result = await client.callTool({
      name: "write_file",
      arguments: { path: join(root, `note-${i}.txt`), content: "the content is not shown" }
    })
    results.push({ isError: result.isError === true, written: existsSync(join(root, `note-${i}.txt`)), result })
  }
  await client.close()
  const sqlite = new Database(db, { readonly: true })
  const rows = (sqlite.prepare("SELECT event_type, payload FROM signed_events ORDER BY sequence").all() as Array<
    { event_type: string; payload: string }
  >).filter((r) => r.event_type !== "session.sealed" && !r.event_type.startsWith("tool."))
    .map((r) => ({ type: r.event_type, payload: JSON.parse(r.payload) }))
  sqlite.close()
  const report = await Effect.runPromise(verifyLedger().pipe(Effect.provide(LedgerSql.layerSqlite({ filename: db }))))
  return { root, questions, results, rows, verified: report.ok }
}

describe("mcp-proxy ask rules through MCP elicitation", () => {
  it("a client with elicitation: accept writes; decline, cancel and no answer refuse; all on the record", async () => {
    const r = await run(true, ["accept", "decline", "cancel", "never"])
    expect(r.questions).toHaveLength(4)
    expect(r.questions[0]).toContain("Allow write_file on server filesystem?")
    expect(r.questions[0]).toContain("Rule ask-write")
    expect(r.questions[0]).toContain(join(r.root, "note-0.txt"))
    expect(r.questions[0]).not.toContain("the content is not shown")
    expect(r.results.map((x) => [x.isError, x.written])).toEqual([[false, true], [true, false], [true, false], [
      true,
      false
    ]])
    expect(readFileSync(join(r.root, "note-0.txt"), "utf8")).toBe("the content is not shown")
    expect(JSON.stringify(r.results[3]!.result)).toContain("no answer within 1 s")
    const approvals = r.rows.filter((row) => row.type === "governance.approval").map((row) => row.payload)
    expect(approvals.map((p) => [p.action.payload.answer, p.action.payload.outcome, p.action.payload.approver]))
      .toEqual([
        ["accept", "allowed", "client ide"],
        ["decline", "refused", "client ide"],
        ["cancel", "refused", "client ide"],
        ["timeout", "refused", null]
      ])
    expect(approvals.every((p) => p.agent_id === "ide" && p.journal.session_id !== undefined)).toBe(true)
    // Each refused call's refusal row and approval row name the same journal entry.
    const refusals = r.rows.filter((row) => row.type === "governance.refusal").map((row) => row.payload)
    expect(refusals.map((p) => p.journal.sequence)).toEqual(approvals.slice(1).map((p) => p.journal.sequence))
    expect(r.verified).toBe(true)
  }, 60_000)

  it("a client without elicitation gets the fallback: refused, saying approval was needed", async () => {
    const r = await run(false, ["accept"])
    expect(r.results[0]).toMatchObject({ isError: true, written: false })
    expect(JSON.stringify(r.results[0]!.result)).toContain("approval was needed")
    expect(JSON.stringify(r.results[0]!.result)).toContain("did not declare the elicitation capability")
    expect(r.rows.map((row) => row.type)).toEqual(["governance.refusal", "governance.approval"])
    expect(r.rows[1]!.payload.action.payload).toMatchObject({ answer: "unavailable", outcome: "refused" })
  }, 60_000)
})
