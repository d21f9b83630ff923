/**
 * Benchmarks (`npm run bench`; `npm run bench -- --quick` is the smoke run a test executes). This
 * machine is shared and noisy, so every figure that has a bound is printed beside it as a ratio: both
 * measured in this one run, on the same file system, as medians of several rounds.
 *
 * Writes `bench/results.json` (or `--out FILE`) in the "agent-ledger-bench/v1" schema (bench/harness.ts).
 */
import * as fs from "node:fs"
import { cpus } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { bundleForNode } from "../test/fixtures/nodeBundle.js"
import * as audit from "./audit.js"
import * as guard from "./guard.js"
import type { BenchMode, Figures, Results } from "./harness.js"
import { SCHEMA } from "./harness.js"
import * as journal from "./journal.js"
import * as ledger from "./ledger.js"
import * as mcp from "./mcp.js"
import * as pg from "./pg.js"
import * as serve from "./serve.js"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
// `--only audit,guard`: run those sections and merge their figures into the results file's others.
const onlyIndex = args.indexOf("--only")
const only = onlyIndex >= 0 ? new Set((args[onlyIndex + 1] ?? "").split(",")) : undefined
const outIndex = args.indexOf("--out")
const here = dirname(fileURLToPath(import.meta.url))
const out = outIndex >= 0 && args[outIndex + 1] !== undefined ? args[outIndex + 1]! : join(here, "results.json")

// Database files live beside the project (the file system the ledger would use), not in a tmpfs.
const dir = fs.mkdtempSync(join(here, "..", ".bench-"))
const mode: BenchMode = {
  quick,
  rounds: quick ? 1 : 3,
  size: (full, small) => quick ? small : full,
  dir
}

const format = (n: number): string => Math.abs(n) >= 100 ? Math.round(n).toLocaleString("en-US") : n.toPrecision(3)

const printTable = (figures: Figures): void => {
  const rows = Object.entries(figures).map(([id, f]) => [
    id,
    `${format(f.value)} ${f.unit}`,
    f.bound === undefined ? "" : format(f.bound),
    f.ratio === undefined ? "" : `${(f.ratio * 100).toFixed(1)} %`
  ])
  const header = ["figure", "value", "bound", "ratio"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ")
  console.log(line(header))
  for (const row of rows) console.log(line(row))
}

/**
 * The ledger writer thread's entry as one JS file (as a built install runs it), so the ledgers the bench
 * opens do not start their threads through the TypeScript loader.
 */
const bundleWriterThread = async () => {
  const outfile = join(dir, "LedgerWriterWorker.mjs")
  await bundleForNode(join(here, "..", "src/ledger/LedgerWriterWorker.ts"), outfile)
  process.env.AGENT_LEDGER_WRITER_ENTRY = outfile
}

const main = async () => {
  await bundleWriterThread()
  const previous: Figures = only !== undefined && fs.existsSync(out)
    ? (JSON.parse(fs.readFileSync(out, "utf8")) as Results).figures
    : {}
  const figures: Figures = { ...previous }
  // The verifier first: its peak RSS figure is the process's, and later sections leave a larger heap behind.
  for (
    const [name, section] of [
      ["ledger", ledger],
      ["journal", journal],
      ["audit", audit],
      ["guard", guard],
      [
        "mcp",
        mcp
      ],
      ["serve", serve],
      ["pg", pg]
    ] as const
  ) {
    if (only !== undefined && !only.has(name)) continue
    const start = Date.now()
    Object.assign(figures, await section.run(mode))
    console.error(`bench: ${name} done in ${((Date.now() - start) / 1000).toFixed(1)} s`)
  }
  const results: Results = {
    schema: SCHEMA,
    machine: { cpus: cpus().length, node: process.version, platform: `${process.platform}-${process.arch}` },
    figures
  }
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`)
  printTable(figures)
  console.log(`\n${quick ? "quick run; " : ""}written to ${out}`)
}

main()
  .catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => fs.rmSync(dir, { recursive: true, force: true }))
