/**
 * `npm run test:crash -- --rounds 200`: the crash evidence for release checks, with more rounds than CI
 * runs. Prints each round and the totals; exits 1 when an acknowledged event was lost or duplicated.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { crashRounds } from "./crashRounds.js"

const roundsIndex = process.argv.indexOf("--rounds")
const rounds = roundsIndex >= 0 ? Number(process.argv[roundsIndex + 1]) : 50
const dir = mkdtempSync(join(tmpdir(), "agent-ledger-crash-"))
try {
  const totals = await crashRounds(rounds, join(dir, "crash.db"), (line) => console.log(line))
  console.log(JSON.stringify(totals))
  if (totals.lost !== 0 || totals.duplicates !== 0) process.exitCode = 1
} finally {
  rmSync(dir, { recursive: true, force: true })
}
