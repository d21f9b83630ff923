/**
 * Crash evidence for the real proxy: `agent-ledger mcp-proxy` (the bundled CLI) in front of the official
 * filesystem MCP server, the official SDK client sending calls from 16 workers at once, SIGKILLed
 * mid-session. What an operator then runs (`sessions`, `log`, `verify`) is what is checked:
 * - `--fail-closed` (write-ahead): every call the client got an answer for — a result, or a refusal — is in
 *   `log` with its decision and its outcome, or `pending` (unfinished: the kill came before its outcome was
 *   stored); `sessions` counts it; `verify` exits 0, its journal summary counts the session and reports
 *   the unfinished calls as unfinished, not as failures.
 * - fail-open (no write-ahead): the same run loses at most the entries not yet committed; the answered
 *   calls missing from the ledger are counted, printed, and held to the documented bound (docs/FORMAT.md,
 *   "Journal entry row", Durability: the batch being written and what queued behind it). Each worker has
 *   one call in flight, so what queued is at most a few calls per worker: the test holds it to the
 *   journal store's `maxBatch` (512, what `mcp-proxy` uses).
 * Calls are told apart by their path, which the policy's `argumentStorage` keeps in the entry's `intent`
 * (the one column read directly: no command prints it).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import Database from "better-sqlite3"
import { execFile, execFileSync } from "node:child_process"
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-proxy-crash-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

/** The journal store's `maxBatch` as `mcp-proxy` opens the ledger (AuditLedger's default). */
const MAX_BATCH = 512
const WORKERS = 16
const FILES = 1500
const SESSION = "crash-sess"

const policy = {
  version: 1,
  rules: [{ id: "no-move", kind: "blockTools", tools: ["move_file"] }],
  argumentStorage: { "read_text_file": { store: ["path"] }, "move_file": { store: ["source"] } }
}

interface Answered {
  readonly path: string
  readonly decision: "allow" | "refuse"
}

let counter = 0

/** Runs the proxy, calls until `killAfter` calls are answered, SIGKILLs it; the calls answered before and after. */
const killedProxy = async (failClosed: boolean, killAfter: number) => {
  const dir = join(tempRoot, `case-${++counter}`)
  const root = join(dir, "files")
  mkdirSync(root, { recursive: true })
  for (let i = 0; i < FILES; i++) writeFileSync(join(root, `f${i}.txt`), `file ${i}\n`)
  const policyFile = join(dir, "policy.json")
  writeFileSync(policyFile, JSON.stringify(policy))
  const db = join(dir, "ledger.db")
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [
      cliBundle,
      "mcp-proxy",
      "--db",
      db,
      "--policy",
      policyFile,
      "--session",
      SESSION,
      "--agent",
      "crash-agent",
      ...(failClosed ? ["--fail-closed"] : []),
      "--",
      process.execPath,
      fsServer,
      root
    ],
    stderr: "pipe"
  })
  let stderr = ""
  transport.stderr?.on("data", (chunk) => (stderr += String(chunk)))
  const client = new Client({ name: "crash-client", version: "1.0.0" })
  await client.connect(transport)
  const pid = transport.pid
  if (pid === null) throw new Error("the proxy has no pid")
  // A call that is forwarded and never ends: the server blocks reading a FIFO no one writes. At the kill it
  // is in flight, so its `call` entry (durable before it was forwarded, when fail-closed) has no outcome.
  const fifo = join(root, "hangs.fifo")
  execFileSync("mkfifo", [fifo])
  let hangAnswered = false
  const hanging = client.callTool({ name: "read_text_file", arguments: { path: fifo } }, undefined, {
    timeout: 600_000
  }).then(() => (hangAnswered = true), () => {})

  const answered: Array<Answered> = []
  /** Calls a fail-closed proxy refused as `audit-unavailable`: not run, so the write-ahead owes them no entry. */
  let unrecorded = 0
  let killed = false
  let next = 0
  const kill = () => {
    if (killed) return
    killed = true
    process.kill(pid, "SIGKILL")
    // Ends the orphaned server's read (it then exits, its stdin gone): until it does, it holds the proxy's
    // stderr and the client would not see the proxy go.
    try {
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK))
    } catch {
      // ENXIO: nothing is reading it.
    }
  }
  const worker = async () => {
    while (!killed && next < FILES) {
      const n = next++
      const path = join(root, `f${n}.txt`)
      const refused = n % 7 === 3
      let result: Awaited<ReturnType<typeof client.callTool>>
      try {
        result = refused
          ? await client.callTool({ name: "move_file", arguments: { source: path, destination: `${path}.moved` } })
          : await client.callTool({ name: "read_text_file", arguments: { path } })
      } catch {
        // The connection went with the proxy: no answer for this call.
        return
      }
      const text = JSON.stringify(result.content)
      if (text.includes("audit-unavailable")) {
        // Fail-closed: refused because its entry was not durable in time (the call never ran).
        unrecorded++
      } else if (refused) {
        // The proxy's refusal, naming the rule (never the server's answer: it never sees the call).
        expect(result.isError).toBe(true)
        expect(text).toContain("no-move")
        answered.push({ path, decision: "refuse" })
      } else {
        expect(result.isError, text).not.toBe(true)
        expect((result.content as Array<{ text?: string }>)[0]?.text).toBe(`file ${n}\n`)
        answered.push({ path, decision: "allow" })
      }
      if (answered.length >= killAfter) kill()
    }
  }
  const workers = Array.from({ length: WORKERS }, worker)
  await Promise.all(workers)
  if (!killed) throw new Error(`ran out of files before ${killAfter} answers; stderr ${stderr}`)
  await hanging
  await client.close().catch(() => {})
  return { db, answered, unrecorded, fifo, hangAnswered, stderr }
}

const cli = async (...args: ReadonlyArray<string>) => {
  const run = await promisify(execFile)(process.execPath, [cliBundle, ...args]).then(
    ({ stdout }) => ({ code: 0, stdout }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout })
  )
  return { code: run.code, lines: run.stdout.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l)) }
}

/** Each stored entry's sequence by the path its intent keeps (the argument that tells the calls apart). */
const sequenceByPath = (db: string): Map<string, number> => {
  const sqlite = new Database(db, { readonly: true })
  try {
    const rows = sqlite.prepare("SELECT seq, intent FROM journal_entries WHERE session_id = ? AND kind = 'call'")
      .all(SESSION) as Array<{ seq: number; intent: string | null }>
    const out = new Map<string, number>()
    for (const row of rows) {
      // `{"arguments": {"sha256", "bytes", "fields": {the stored fields}}}` (docs/FORMAT.md, "Argument digests")
      const fields = row.intent === null ? {} : JSON.parse(row.intent).arguments?.fields ?? {}
      const path = fields.path ?? fields.source
      if (typeof path === "string") out.set(path, row.seq)
    }
    return out
  } finally {
    sqlite.close()
  }
}

describe("crash: the real mcp-proxy SIGKILLed mid-session under 16 parallel SDK calls", () => {
  it(
    "--fail-closed: every answered call is in `log` and `sessions` with its decision and outcome or pending; `verify` passes",
    async () => {
      const { answered, db, fifo, hangAnswered, unrecorded } = await killedProxy(true, 150)
      expect(answered.length).toBeGreaterThanOrEqual(150)
      expect(hangAnswered).toBe(false)

      // What an operator runs after the crash (at once: each is a process start).
      const [log, sessions, verify] = await Promise.all([
        cli("log", db, "--session", SESSION, "--json"),
        cli("sessions", db, "--json"),
        cli("verify", db, "--json")
      ])
      expect(log.code).toBe(0)
      const bySeq = new Map<number, Record<string, any>>()
      for (const entry of log.lines) {
        if (entry.kind === "call" || entry.kind === "refusal") bySeq.set(entry.journalSequence, entry)
      }
      const seqOf = sequenceByPath(db)
      let unfinishedAnswered = 0
      for (const call of answered) {
        const seq = seqOf.get(call.path)
        expect(seq, `no journal entry for answered ${call.decision} ${call.path}`).toBeDefined()
        const entry = bySeq.get(seq!)
        expect(entry, `not in log: ${call.path} (entry ${seq})`).toBeDefined()
        if (call.decision === "refuse") {
          expect(entry).toMatchObject({ kind: "refusal", decision: "refuse", ruleId: "no-move", toolName: "move_file" })
        } else {
          expect(entry).toMatchObject({ kind: "call", decision: "allow", toolName: "read_text_file" })
          // Answered, so it ended: its outcome, unless the kill came before the outcome entry was stored.
          expect(["result", "pending"]).toContain(entry!.outcome)
          if (entry!.outcome === "pending") unfinishedAnswered++
        }
      }
      const pending = log.lines.filter((e) => e.kind === "call" && e.outcome === "pending").length
      // The call in flight at the kill: forwarded, so on the record, and unfinished.
      expect(bySeq.get(seqOf.get(fifo)!)).toMatchObject({ kind: "call", decision: "allow", outcome: "pending" })
      expect(pending).toBeGreaterThanOrEqual(1)

      expect(sessions.code).toBe(0)
      const session = sessions.lines.find((s) => s.sessionId === SESSION)
      // Sealed every 100 entries (the default): the chain is checked against seals, not only linked.
      expect(session).toMatchObject({ agentId: "crash-agent", sealed: true })
      expect(session.calls).toBeGreaterThanOrEqual(answered.length)
      expect(session.refusals).toBeGreaterThanOrEqual(answered.filter((a) => a.decision === "refuse").length)

      expect(verify.lines[0]).toMatchObject({ kind: "ledger", ok: true, report: { failureCount: 0, failures: [] } })
      expect(verify.code).toBe(0)
      // Unfinished calls are reported as such (the ones `log` shows pending), not as failures.
      expect(verify.lines[0].report.journals).toMatchObject({ sessions: 1, unfinishedCalls: pending })
      console.log(
        `proxy crash (fail-closed): ${
          JSON.stringify({
            answered: answered.length,
            logged: log.lines.filter((e) => e.kind !== "seal").length,
            pendingInLog: pending,
            unfinishedAnswered,
            auditUnavailable: unrecorded
          })
        }`
      )
    },
    60_000
  )

  it(
    "fail-open: the answered calls a kill loses are at most the entries not yet committed (≤ maxBatch), and the ledger verifies",
    async () => {
      const { answered, db } = await killedProxy(false, 150)
      const [log, verify] = await Promise.all([
        cli("log", db, "--session", SESSION, "--json"),
        cli("verify", db, "--json")
      ])
      expect(log.code).toBe(0)
      const logged = new Set(
        log.lines.filter((e) => e.kind === "call" || e.kind === "refusal").map((e) => e.journalSequence)
      )
      const seqOf = sequenceByPath(db)
      const missing = answered.filter((call) => {
        const seq = seqOf.get(call.path)
        return seq === undefined || !logged.has(seq)
      })
      console.log(
        `proxy crash (fail-open): ${
          JSON.stringify({
            answered: answered.length,
            answeredMissing: missing.length,
            answeredUnfinished: answered.filter((call) =>
              log.lines.some((e) => e.journalSequence === seqOf.get(call.path) && e.outcome === "pending")
            ).length,
            bound: MAX_BATCH
          })
        }`
      )
      expect(missing.length).toBeLessThanOrEqual(MAX_BATCH)
      expect(verify.lines[0]).toMatchObject({ kind: "ledger", ok: true, report: { failureCount: 0 } })
      expect(verify.lines[0].report.journals).toMatchObject({ sessions: 1 })
      expect(verify.code).toBe(0)
    },
    60_000
  )
})
