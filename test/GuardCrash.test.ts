/**
 * Crash evidence for every call on the record: a fail-closed guard process (durable journals, the writer
 * thread, 8 fibers over 4 sessions) is SIGKILLed mid-session; every call it answered before the kill has its
 * journal entry in the database (write-ahead: an allowed call's `call` entry, a refusal's entry and row), its
 * outcome there or the call counted unfinished, and every session verifies against its seals
 * (`verifyLedger`, journals included). Rounds append to the same file.
 */
import Database from "better-sqlite3"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { afterAll, describe, expect, it } from "vitest"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { repoRoot } from "./fixtures/cliBundle.js"
import { sharedSqlite } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-guard-crash-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

interface Answered {
  readonly decision: "allowed" | "refused"
  readonly sessionId: string
  readonly sequence: number
}

const killedGuard = (filename: string, round: number, killAfterMs: number) =>
  new Promise<ReadonlyArray<Answered>>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(repoRoot, "test/fixtures/guardWriter.ts"), filename, String(round)],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] }
    )
    const answered: Array<Answered> = []
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line === "ready") setTimeout(() => child.kill("SIGKILL"), killAfterMs)
      const match = /^answered (allowed|refused) (\S+) (\d+)$/.exec(line)
      if (match !== null) {
        answered.push({ decision: match[1] as Answered["decision"], sessionId: match[2]!, sequence: Number(match[3]) })
      }
    })
    child.once("error", reject)
    child.once("exit", (code, signal) => {
      if (signal !== "SIGKILL") reject(new Error(`the guard exited by itself (code ${code}, signal ${signal})`))
      else resolve(answered)
    })
  })

describe("crash: a fail-closed guard SIGKILLed mid-session under parallel calls", () => {
  it("every answered call is in the database, and every session verifies against its seals", async () => {
    const filename = join(tempRoot, "guard.db")
    let answeredTotal = 0
    let unfinished = 0
    for (let round = 0; round < 2; round++) {
      const answered = await killedGuard(filename, round, 600 + 400 * round)
      expect(answered.length).toBeGreaterThan(0)
      answeredTotal += answered.length
      const conn = new Database(filename, { readonly: true })
      const stored = new Map<string, { kind: string; outcome: string }>()
      const outcomesOf = new Set<string>()
      for (
        const row of conn.prepare("SELECT session_id, seq, kind, outcome, call_seq FROM journal_entries")
          .all() as ReadonlyArray<{ session_id: string; seq: number; kind: string; outcome: string; call_seq: number }>
      ) {
        stored.set(`${row.session_id}:${row.seq}`, row)
        if (row.kind === "outcome") outcomesOf.add(`${row.session_id}:${row.call_seq}`)
      }
      conn.close()
      for (const call of answered) {
        const row = stored.get(`${call.sessionId}:${call.sequence}`)
        // Write-ahead: the decision is durable for every call the client was answered for.
        expect(row, `${call.sessionId}:${call.sequence}`).toMatchObject({
          kind: "call",
          outcome: call.decision === "refused" ? "refused" : "pending"
        })
        if (call.decision === "allowed" && !outcomesOf.has(`${call.sessionId}:${call.sequence}`)) unfinished++
      }
      const report = await Effect.runPromise(Effect.provide(verifyLedger(), sharedSqlite({ filename })))
      expect(report.failures).toEqual([])
      expect(report.ok).toBe(true)
      expect(report.journals!.sessions).toBe(4 * (round + 1))
    }
    console.log(`guard crash evidence: ${JSON.stringify({ answered: answeredTotal, unfinishedAnswered: unfinished })}`)
  }, 120_000)
})
