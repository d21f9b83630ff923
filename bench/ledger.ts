/**
 * The verifier's figures (`ledger.*`): rows verified per second over a large unsigned ledger, beside raw
 * better-sqlite3 iterating the same table plus one SHA-256 per row (the bound: the least any verifier must
 * do), the process's resident memory while it runs (flat: rows are read in pages), and how promptly a
 * one-second `Effect.timeout` stops a verify of 300k rows (beside the second).
 */
import Database from "better-sqlite3"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as ConsoleQueries from "../src/console/ConsoleQueries.js"
import { digestHex } from "../src/internal/encoding.js"
import * as LedgerRow from "../src/ledger/LedgerRow.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import { sharedSqlite } from "../test/fixtures/ledgerSql.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, gc, median, perSecond, sideBySide } from "./harness.js"

const MB = 2 ** 20

/**
 * `buildLedger` in a child node (same flags, so the same TypeScript loader): the build's garbage and
 * SQLite's caches stay out of this process, whose resident memory then shows what verification adds.
 */
const buildLedgerApart = async (file: string, rows: number): Promise<void> => {
  const module = JSON.stringify(new URL("../test/fixtures/bigLedger.ts", import.meta.url).href)
  const script = `import(${module}).then((m) => m.buildLedger(${JSON.stringify(file)}, ${rows}))`
  await promisify(execFile)(process.execPath, [...process.execArgv, "--input-type=module", "-e", script], {
    cwd: fileURLToPath(new URL("..", import.meta.url)),
    maxBuffer: 16 * MB
  })
}

/**
 * The bound: raw better-sqlite3 iterating every row in sequence order, the same columns the verifier
 * reads, with one SHA-256 each (of the payload, the least a verifier must hash; hex, as the verifier's).
 */
const rawIterationPerSecond = (file: string, rows: number): number => {
  const db = new Database(file, { readonly: true })
  try {
    const statement = db.prepare(`SELECT ${LedgerRow.COLUMNS.join(", ")} FROM signed_events ORDER BY sequence`)
    let seen = 0
    const start = performance.now()
    for (const row of statement.iterate() as Iterable<{ readonly payload: string }>) {
      digestHex(row.payload)
      seen++
    }
    const ms = performance.now() - start
    if (seen !== rows) throw new Error(`bench ledger: raw iteration read ${seen} rows, expected ${rows}`)
    return perSecond(seen, ms)
  } finally {
    db.close()
  }
}

interface VerifyRun {
  readonly perSecond: number
  /** Resident set size before verifying (after a full GC) and its peak while verifying, in MB. */
  readonly rssBeforeMb: number
  readonly peakRssMb: number
  /** The peak over the last nine tenths of the rows minus the RSS once the first tenth was verified. */
  readonly lateGrowthMb: number
}

/**
 * `verifyLedger` through the library, on the database opened as the CLI opens it (read-only, no WAL
 * switch). RSS is sampled after every page (better-sqlite3 is synchronous: a timer would not fire during
 * one).
 */
const verify = (file: string, rows: number): Promise<VerifyRun> =>
  Effect.runPromise(
    Effect.gen(function*() {
      gc()
      const rssBefore = process.memoryUsage().rss
      let peak = rssBefore
      let atTenth: number | undefined
      const start = performance.now()
      const report = yield* LedgerVerifier.verifyLedger({
        onProgress: (rowsChecked) =>
          Effect.sync(() => {
            const rss = process.memoryUsage().rss
            peak = Math.max(peak, rss)
            if (atTenth === undefined && rowsChecked >= rows / 10) atTenth = rss
          })
      })
      const ms = performance.now() - start
      if (!report.ok || report.rowsChecked !== rows) {
        throw new Error(
          `bench ledger did not verify: ${report.rowsChecked} of ${rows} rows, ${JSON.stringify(report.firstFailure)}`
        )
      }
      return {
        perSecond: perSecond(rows, ms),
        rssBeforeMb: rssBefore / MB,
        peakRssMb: peak / MB,
        lateGrowthMb: (peak - (atTenth ?? peak)) / MB
      }
    }).pipe(Effect.provide(sharedSqlite({ filename: file, readonly: true, disableWAL: true })))
  )

/**
 * Transparency proofs on the same ledger: storing the RFC 6962 tree's subtrees the first time (what
 * `checkpoint` does once for a ledger written before the feature; later runs store only what is new), then
 * inclusion proofs from the stored tree, each fetching its O(log² n) subtrees from the database.
 */
const proofFigures = async (file: string, rows: number): Promise<Figures> => {
  return Effect.runPromise(
    Effect.gen(function*() {
      const start = performance.now()
      const size = yield* LedgerTransparency.extendStoredTree
      const buildMs = performance.now() - start
      if (size !== rows) throw new Error(`bench ledger: the tree has ${size} leaves, expected ${rows}`)
      const proofs = 300
      const samples: Array<number> = []
      for (let i = 0; i < proofs; i++) {
        const proveStart = performance.now()
        yield* LedgerTransparency.withStoredTree(size, (tree) => tree.inclusionProof((i * 7919) % size))
        samples.push(performance.now() - proveStart)
      }
      return {
        "ledger.storeTreeMs": figure(buildMs, "ms"),
        "ledger.proveInclusionMs": figure(median(samples), "ms")
      }
    }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename: file })))
  )
}

/**
 * The console's overview of the ledger (`console.overviewMs`): every query its page runs (the `stats`
 * figures, the latest refusals), on the database opened read-only as `agent-ledger console` opens it, the
 * median of `rounds` runs after one to warm SQLite's page cache. Also the refusals page (chart and first
 * page of the list) as `console.refusalsMs`.
 */
export const consoleFigures = (file: string, rounds: number): Promise<Figures> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const overview = Effect.zip(ConsoleQueries.overview, ConsoleQueries.refusals({}, 10))
      const refusals = Effect.zip(ConsoleQueries.refusalSeries("rule", {}), ConsoleQueries.refusals({}))
      const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          yield* effect
          const samples: Array<number> = []
          for (let round = 0; round < rounds; round++) {
            const start = performance.now()
            yield* effect
            samples.push(performance.now() - start)
          }
          return median(samples)
        })
      return {
        "console.overviewMs": figure(yield* timed(overview), "ms"),
        "console.refusalsMs": figure(yield* timed(refusals), "ms")
      }
    }).pipe(Effect.provide(sharedSqlite({ filename: file, readonly: true, disableWAL: true })))
  )

/** The bound of `ledger.verifyTimeoutMs`: the timeout the verify runs under. */
const VERIFY_TIMEOUT_MS = 1_000

/**
 * How long `verifyLedger().pipe(Effect.timeout("1 second"))` takes to return on the default scheduler, over
 * a ledger that takes several seconds to verify: the timeout, plus the rest of the page in progress when it
 * fired, plus the interruption. (A verify that never yielded returned only once it had finished.) The
 * connection is opened before the clock starts.
 */
const verifyTimeoutMs = (file: string, rounds: number): Promise<number> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const samples: Array<number> = []
      for (let round = 0; round < rounds; round++) {
        const start = performance.now()
        yield* LedgerVerifier.verifyLedger().pipe(Effect.timeoutOption(VERIFY_TIMEOUT_MS))
        samples.push(performance.now() - start)
      }
      return median(samples)
    }).pipe(Effect.provide(sharedSqlite({ filename: file, readonly: true, disableWAL: true })))
  )

export const run = async (mode: BenchMode): Promise<Figures> => {
  const rows = mode.size(1_000_000, 5_000)
  const file = join(mode.dir, "verify.db")
  await buildLedgerApart(file, rows)
  const runs: Array<VerifyRun> = []
  const result = await sideBySide(
    mode.rounds,
    async () => {
      const run = await verify(file, rows)
      runs.push(run)
      return run.perSecond
    },
    () => Promise.resolve(rawIterationPerSecond(file, rows))
  )
  const proofs = await proofFigures(file, rows)
  const consoleTimes = await consoleFigures(file, mode.rounds)
  const timeoutFile = join(mode.dir, "verify-timeout.db")
  await buildLedgerApart(timeoutFile, mode.size(300_000, 5_000))
  const timedOut = await verifyTimeoutMs(timeoutFile, mode.rounds)
  return {
    ...proofs,
    ...consoleTimes,
    // Target ≤ 1.1 × the bound. In --quick mode the ledger verifies before the timeout: the figure is then its time.
    "ledger.verifyTimeoutMs": bounded(timedOut, "ms", VERIFY_TIMEOUT_MS),
    "ledger.verify": bounded(result.value, "rows/s", result.bound),
    "ledger.verifyPeakRssMb": figure(Math.max(...runs.map((r) => r.peakRssMb)), "MB"),
    "ledger.verifyRssGrowthMb": figure(Math.max(...runs.map((r) => r.peakRssMb - r.rssBeforeMb)), "MB"),
    // Flat memory: whatever verification holds, it holds by the first tenth of the rows (the SQL client,
    // compiled code, the young generation at full size); rows after that add nothing.
    "ledger.verifyRssLateGrowthMb": figure(Math.max(...runs.map((r) => r.lateGrowthMb)), "MB")
  }
}
