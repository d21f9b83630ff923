/**
 * The benchmark's shared pieces: the `bench/results.json` schema ("agent-ledger-bench/v1"), medians of
 * several rounds, and a figure beside the bound it was measured against in the same run.
 *
 * Every throughput figure is the median of `rounds` measurements, and its bound is measured the same way,
 * interleaved with it in the same run on the same file system, so the ratio is what counts on a shared,
 * noisy machine.
 */
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { bundleForNode } from "../test/fixtures/nodeBundle.js"

export const SCHEMA = "agent-ledger-bench/v1"

export interface Figure {
  readonly value: number
  readonly unit: string
  readonly bound?: number
  readonly ratio?: number
}

export type Figures = Record<string, Figure>

export interface Results {
  readonly schema: typeof SCHEMA
  readonly machine: { readonly cpus: number; readonly node: string; readonly platform: string }
  readonly figures: Figures
}

/** How big a run is: `quick` is the smoke run a test executes (every ID reported, sizes tiny). */
export interface BenchMode {
  readonly quick: boolean
  /** Scales a count: the full count normally, a small one (at least `min`) in quick mode. */
  readonly size: (full: number, quick: number) => number
  readonly rounds: number
  /** A directory for database files, removed after the run. */
  readonly dir: string
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** The `p`-quantile (0..1) of `values`, nearest rank. */
export const quantile = (values: ArrayLike<number>, p: number): number => {
  const sorted = Array.from(values).sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!
}

/** Runs `fn` and returns its wall time in milliseconds with its value. */
export const time = async <A>(fn: () => Promise<A> | A): Promise<{ readonly value: A; readonly ms: number }> => {
  const start = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - start }
}

/** Operations per second for `count` operations in `ms`. */
export const perSecond = (count: number, ms: number): number => count / (ms / 1000)

/** A figure with no bound. */
export const figure = (value: number, unit: string): Figure => ({ value, unit })

/** A figure beside its bound; `ratio` = value / bound. */
export const bounded = (value: number, unit: string, bound: number): Figure => ({
  value,
  unit,
  bound,
  ratio: value / bound
})

/**
 * Measures a figure and its bound in alternating rounds (bound, figure, bound, figure, ...) and returns
 * the medians of each, so drift in the machine's load hits both alike.
 */
export const sideBySide = async (
  rounds: number,
  measureValue: (round: number) => Promise<number>,
  measureBound: (round: number) => Promise<number>
): Promise<{ readonly value: number; readonly bound: number }> => {
  const values: Array<number> = []
  const bounds: Array<number> = []
  for (let round = 0; round < rounds; round++) {
    bounds.push(await measureBound(round))
    values.push(await measureValue(round))
  }
  return { value: median(values), bound: median(bounds) }
}

/** Forces a full GC when node runs with --expose-gc (the bench script passes it); a no-op otherwise. */
export const gc = (): void => {
  const collect = (globalThis as { gc?: () => void }).gc
  if (collect !== undefined) collect()
}

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..")
const cliBundles = new Map<string, Promise<string>>()

/**
 * The CLI as one file (as an install runs it), with its ledger writer thread beside it where the bundled
 * CLI looks (an MCP client passes its child no environment of ours): bundled once per run, in the run's
 * directory, for every section that spawns it.
 */
export const cliBundle = (mode: BenchMode): Promise<string> => {
  let bundle = cliBundles.get(mode.dir)
  if (bundle === undefined) {
    const dir = join(mode.dir, "cli")
    fs.mkdirSync(dir, { recursive: true })
    const cli = join(dir, "cli.mjs")
    bundle = Promise.all([
      bundleForNode(join(repoRoot, "src/cli/main.ts"), cli),
      bundleForNode(join(repoRoot, "src/ledger/LedgerWriterWorker.ts"), join(dir, "LedgerWriterWorker.mjs"))
    ]).then(() => cli)
    cliBundles.set(mode.dir, bundle)
  }
  return bundle
}
