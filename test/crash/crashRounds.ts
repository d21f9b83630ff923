/**
 * Crash evidence: a writer process acknowledges refusals with `submitAndWait` (synchronous FULL) from
 * several fibers and prints each acknowledged id; it is SIGKILLed at a random moment (the node process
 * itself, no wrapper). After each kill the database is reopened and checked: every acknowledged id is in
 * the ledger exactly once, `PRAGMA integrity_check` is ok, the chain verifies, and the next round appends
 * onto the same chain.
 *
 * Run by test/Crash.test.ts (6 rounds) and by `npm run test:crash -- --rounds 200`.
 */
import Database from "better-sqlite3"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { verifyLedger } from "../../src/ledger/LedgerVerifier.js"
import { repoRoot } from "../fixtures/cliBundle.js"
import { sharedSqlite } from "../fixtures/ledgerSql.js"

export interface CrashTotals {
  readonly rounds: number
  /** Ids the writers printed as acknowledged. */
  readonly acknowledged: number
  /** Of those, the ones found in the ledger afterwards. */
  readonly found: number
  readonly lost: number
  /** Event ids stored more than once. */
  readonly duplicates: number
  /** Rows in the ledger after the last round. */
  readonly rows: number
}

/** One writer, killed `killAfterMs` after it is ready; resolves with the ids it acknowledged. */
const killedWriter = (filename: string, round: number, killAfterMs: number) =>
  new Promise<ReadonlyArray<string>>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(repoRoot, "test/fixtures/ledgerWriter.ts"),
        filename,
        `r${round}`,
        "forever",
        "8",
        "ack"
      ],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] }
    )
    const acked: Array<string> = []
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line === "ready") setTimeout(() => child.kill("SIGKILL"), killAfterMs)
      else if (line.startsWith("ack ")) acked.push(line.slice(4))
    })
    child.once("error", reject)
    child.once("exit", (code, signal) => {
      if (signal !== "SIGKILL") reject(new Error(`writer exited by itself (code ${code}, signal ${signal})`))
      else resolve(acked)
    })
  })

const verifyChain = (filename: string) =>
  Effect.runPromise(verifyLedger().pipe(Effect.provide(sharedSqlite({ filename, readonly: true }))))

export const crashRounds = async (
  rounds: number,
  filename: string,
  progress: (line: string) => void = () => {}
): Promise<CrashTotals> => {
  let acknowledged = 0
  let found = 0
  let duplicates = 0
  let rows = 0
  for (let round = 1; round <= rounds; round++) {
    const acked = await killedWriter(filename, round, 20 + Math.floor(Math.random() * 400))
    const db = new Database(filename, { readonly: true })
    let integrity: unknown
    let stored: Map<string, number>
    try {
      integrity = db.pragma("integrity_check", { simple: true })
      stored = new Map(
        (db.prepare("SELECT id, COUNT(*) AS n FROM signed_events GROUP BY id").all() as Array<
          { id: string; n: number }
        >)
          .map((row) => [row.id, row.n])
      )
    } finally {
      db.close()
    }
    if (integrity !== "ok") throw new Error(`round ${round}: integrity_check says ${String(integrity)}`)
    const report = await verifyChain(filename)
    if (!report.ok) throw new Error(`round ${round}: the chain does not verify: ${JSON.stringify(report.firstFailure)}`)
    const total = [...stored.values()].reduce((a, b) => a + b, 0)
    if (round > 1 && total < rows) throw new Error(`round ${round}: the ledger shrank from ${rows} to ${total} rows`)
    rows = total
    acknowledged += acked.length
    found += acked.filter((id) => stored.get(id) === 1).length
    duplicates += [...stored.values()].filter((n) => n > 1).length
    progress(`round ${round}: ${acked.length} acknowledged, ${total} rows, chain verifies`)
  }
  return { rounds, acknowledged, found, lost: acknowledged - found, duplicates, rows }
}
