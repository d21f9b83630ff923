/**
 * Reliability evidence run in CI: SIGKILLed writers lose no acknowledged refusal, and 4 concurrent writer
 * processes on one SQLite file build one dense chain. (`npm run test:crash -- --rounds 200` for more.)
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
import { crashRounds } from "./crash/crashRounds.js"
import { repoRoot } from "./fixtures/cliBundle.js"
import { sharedSqlite, sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-crash-test-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

describe("crash: SIGKILL at random moments", () => {
  it("6 rounds: every acknowledged id is in the ledger exactly once, and the chain verifies", async () => {
    const totals = await crashRounds(6, join(tempRoot, "crash.db"))
    console.log(`crash evidence: ${JSON.stringify(totals)}`)
    expect(totals.acknowledged).toBeGreaterThan(0)
    expect(totals.lost).toBe(0)
    expect(totals.duplicates).toBe(0)
    expect(totals.rows).toBeGreaterThanOrEqual(totals.acknowledged)
  }, 180_000)
})

describe("concurrent writers: 4 processes × 2,500 events on one SQLite file", () => {
  it("10,000 rows, dense sequences, no duplicate ids, the chain verifies, retries counted", async () => {
    const filename = join(tempRoot, "writers.db")
    // Create the schema first, so the writers do not race to migrate.
    await Effect.runPromise(Effect.provide(Effect.void, sqliteWithClient({ filename })))
    const writers = Array.from({ length: 4 }, (_, w) =>
      spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          join(repoRoot, "test/fixtures/ledgerWriter.ts"),
          filename,
          `w${w}`,
          "625",
          "4",
          "submit",
          "--wait"
        ],
        { cwd: repoRoot, stdio: ["pipe", "pipe", "inherit"] }
      ))
    const results = writers.map((child) =>
      new Promise<{ ready: Promise<void>; done: Promise<Record<string, number>> }>((resolveOuter) => {
        let readyResolve!: () => void
        const ready = new Promise<void>((r) => (readyResolve = r))
        const done = new Promise<Record<string, number>>((resolve, reject) => {
          createInterface({ input: child.stdout! }).on("line", (line) => {
            if (line === "ready") readyResolve()
            else if (line.startsWith("done ")) resolve(JSON.parse(line.slice(5)))
          })
          child.once("exit", (code) => code !== 0 && reject(new Error(`writer exited with ${code}`)))
        })
        resolveOuter({ ready, done })
      })
    )
    const handles = await Promise.all(results)
    await Promise.all(handles.map((h) => h.ready))
    for (const child of writers) child.stdin!.write("go\n")
    const metrics = await Promise.all(handles.map((h) => h.done))
    for (const m of metrics) expect(m).toMatchObject({ submitted: 2500, appended: 2500, appendFailures: 0 })
    const retries = metrics.reduce((sum, m) => sum + m.uniqueRaceRetries!, 0)
    console.log(`concurrent writers: 10,000 rows, ${retries} retried transactions`)

    const db = new Database(filename, { readonly: true })
    try {
      expect(
        db.prepare(
          "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, MIN(sequence) AS lo, MAX(sequence) AS hi FROM signed_events"
        ).get()
      )
        .toEqual({ n: 10_000, ids: 10_000, lo: 0, hi: 9_999 })
    } finally {
      db.close()
    }
    const report = await Effect.runPromise(
      verifyLedger().pipe(Effect.provide(sharedSqlite({ filename, readonly: true })))
    )
    expect(report.ok).toBe(true)
    expect(report.rowsChecked).toBe(10_000)
  }, 180_000)
})
