/**
 * PostgreSQL (when `AGENT_LEDGER_PG_URL` is set; skipped otherwise): the audit pipeline through
 * `AuditLedger.layerPg` into a fresh database per figure, on the local server.
 *
 * - `pg.perEventCommit`: one transaction per event (`maxBatch: 1`), one writer: the baseline.
 * - `pg.groupCommit`: group commit, one writer.
 * - `pg.groupCommit4Writers`: group commit, 4 writer processes on one chain (events/s in total, from the
 *   first writer's first submit to the last writer's last acknowledgement).
 * - `pg.groupCommitSpeedup`: `pg.groupCommit` / `pg.perEventCommit`.
 */
import { Effect } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { refusalEvent } from "../test/fixtures/events.js"
import type { BenchMode, Figures } from "./harness.js"
import { figure, median, perSecond } from "./harness.js"

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..")

const withDatabase = async <A>(adminUrl: string, use: (url: string) => Promise<A>): Promise<A> => {
  const name = `agent_ledger_bench_${randomBytes(6).toString("hex")}`
  execFileSync("psql", [adminUrl, "-qc", `CREATE DATABASE ${name}`])
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  try {
    return await use(url.toString())
  } finally {
    execFileSync("psql", [adminUrl, "-qc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`])
  }
}

/** Events per second for `count` submits drained into the ledger at `url`, schema set up beforehand. */
const pipelineRate = (url: string, count: number, maxBatch: number): Promise<number> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const queue = yield* AuditQueue
      const events = Array.from({ length: count }, (_, i) => refusalEvent("bench", i))
      const start = performance.now()
      for (const event of events) yield* queue.submit(event)
      yield* queue.drainPending("10 minutes")
      return perSecond(count, performance.now() - start)
    }).pipe(Effect.provide(AuditLedger.layerPg({ url, maxBatch, shutdownDrainTimeout: "1 minute" })))
  )

/**
 * Events per second of 4 writer processes on one chain, over the window from the first writer's first
 * submit to the last writer's last acknowledgement (process start-up left out: each writer reports its own
 * window).
 */
const fourWriters = async (url: string, perWriter: number): Promise<number> => {
  // Create the schema first, so the figure is about appending.
  await Effect.runPromise(Effect.provide(Effect.void, AuditLedger.layerPg({ url })))
  const outputs = await Promise.all(Array.from({ length: 4 }, (_, w) =>
    promisify(execFile)(process.execPath, [
      "--import",
      "tsx",
      join(repoRoot, "test/fixtures/pgWriter.ts"),
      url,
      `bench-${w}`,
      String(perWriter)
    ], { cwd: repoRoot })))
  const windows = outputs.map(({ stdout }) =>
    JSON.parse(stdout.trim().split("\n").pop()!) as {
      readonly startedAt: number
      readonly endedAt: number
    }
  )
  const start = Math.min(...windows.map((w) => w.startedAt))
  const end = Math.max(...windows.map((w) => w.endedAt))
  return perSecond(4 * perWriter, end - start)
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const adminUrl = process.env.AGENT_LEDGER_PG_URL
  if (adminUrl === undefined || adminUrl === "") {
    console.error("bench: AGENT_LEDGER_PG_URL is not set; the PostgreSQL figures are skipped")
    return {}
  }
  const perEvent: Array<number> = []
  const group: Array<number> = []
  const writers: Array<number> = []
  for (let round = 0; round < mode.rounds; round++) {
    perEvent.push(await withDatabase(adminUrl, (url) => pipelineRate(url, mode.size(2_000, 50), 1)))
    group.push(await withDatabase(adminUrl, (url) => pipelineRate(url, mode.size(20_000, 500), 512)))
    writers.push(await withDatabase(adminUrl, (url) => fourWriters(url, mode.size(5_000, 100))))
  }
  return {
    "pg.perEventCommit": figure(median(perEvent), "events/s"),
    "pg.groupCommit": figure(median(group), "events/s"),
    "pg.groupCommit4Writers": figure(median(writers), "events/s"),
    "pg.groupCommitSpeedup": figure(median(group) / median(perEvent), "ratio")
  }
}
