/**
 * The benchmark cannot rot: its quick mode runs here and must report every figure the results schema
 * names, each bounded figure with its bound and ratio. How fast anything is, is not asserted here
 * (speed targets live in `npm run bench`, read as ratios).
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { repoRoot } from "./fixtures/cliBundle.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-bench-test-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

const BOUNDED = [
  "journal.record",
  "journal.verify",
  "journalStore.durableEntriesPerSec",
  "audit.perEventCommit",
  "audit.groupCommit",
  "audit.groupCommitConsoleIndexes",
  "audit.groupCommitSigned",
  "audit.groupCommitCheckpointed",
  "ledger.verify",
  "ledger.verifyTimeoutMs",
  "mcp.proxiedCallMs",
  "mcp.refusedCallMs",
  "audit.submitP99WhileDraining",
  "audit.ed25519TwoThreads",
  "guard.messageLatenessP99WhileDraining",
  "guard.messageLatenessP99WhileDrainingSigned",
  "guard.messageLatenessP99WhileDrainingInThread",
  "guard.messageLatenessP99WhileDrainingInThreadSigned",
  "serve.hookDecisionP99Ms",
  "serve.requestsPerSecond"
]
const UNBOUNDED = [
  "journal.perOpGrowth",
  "journal.heapBytesPerEntry",
  "audit.queueOnly",
  "audit.groupCommitSpeedup",
  "audit.queueHeapBytesPerEvent",
  "audit.submitAndWait",
  "ledger.verifyPeakRssMb",
  "ledger.storeTreeMs",
  "ledger.proveInclusionMs",
  "console.overviewMs",
  "console.refusalsMs",
  "mcp.failClosedCallOverheadMs",
  "journalStore.bytesPerEntry",
  "mcp.relayOverheadMs",
  "guard.messageLatenessP99Idle",
  "guard.messageLatenessMaxWhileDraining",
  "guard.drainWhileProbed",
  "guard.drainWhileProbedSigned",
  "serve.mixedRequestsPerSecond",
  "serve.mixedHookDecisionP99Ms",
  // Measured only against a PostgreSQL server (AGENT_LEDGER_PG_URL).
  ...(process.env.AGENT_LEDGER_PG_URL ? ["pg.perEventCommit", "pg.groupCommit", "pg.groupCommit4Writers"] : [])
]
/** Beside a bound, but a difference of medians: either can come out at or below zero on a noisy machine. */
const BESIDE = [
  "mcp.proxyOverheadMs",
  "serve.mcpCallOverheadMs",
  ...(process.env.AGENT_LEDGER_PG_URL ? ["pg.groupCommitSigned", "pg.messageLatenessP99WhileDrainingSigned"] : [])
]

describe("npm run bench -- --quick", () => {
  it("reports every figure in the agent-ledger-bench/v1 schema", async () => {
    const out = join(tempRoot, "results.json")
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--expose-gc", "--import", "tsx", "bench/index.ts", "--quick", "--out", out],
      { cwd: repoRoot, timeout: 420_000 }
    )
    const results = JSON.parse(readFileSync(out, "utf8"))
    expect(results.schema).toBe("agent-ledger-bench/v1")
    expect(results.machine).toEqual({
      cpus: expect.any(Number),
      node: process.version,
      platform: `${process.platform}-${process.arch}`
    })
    for (const id of BOUNDED) {
      const figure = results.figures[id]
      expect(figure, id).toEqual({
        value: expect.any(Number),
        unit: expect.any(String),
        bound: expect.any(Number),
        ratio: expect.any(Number)
      })
      expect(figure.value, id).toBeGreaterThan(0)
      expect(figure.ratio, id).toBeCloseTo(figure.value / figure.bound, 9)
    }
    for (const id of BESIDE) {
      const figure = results.figures[id]
      expect(figure, id).toEqual({
        value: expect.any(Number),
        unit: expect.any(String),
        bound: expect.any(Number),
        ratio: expect.any(Number)
      })
    }
    for (const id of UNBOUNDED) {
      expect(results.figures[id], id).toMatchObject({ value: expect.any(Number), unit: expect.any(String) })
      expect(Number.isFinite(results.figures[id].value), id).toBe(true)
    }
    // The table a person reads names every figure too.
    for (const id of [...BOUNDED, ...BESIDE, ...UNBOUNDED]) expect(stdout).toContain(id)
  }, 480_000)
})
