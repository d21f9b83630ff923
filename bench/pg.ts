/**
 * PostgreSQL (when `AGENT_LEDGER_PG_URL` is set; skipped otherwise): the audit pipeline through
 * `AuditLedger.layerPg` into a fresh database per figure, on the local server.
 *
 * - `pg.perEventCommit`: one transaction per event (`maxBatch: 1`), one writer: the baseline.
 * - `pg.groupCommit`: group commit, one writer.
 * - `pg.groupCommit4Writers`: group commit, 4 writer processes on one chain (events/s in total, from the
 *   first writer's first submit to the last writer's last acknowledgement).
 * - `pg.groupCommitSpeedup`: `pg.groupCommit` / `pg.perEventCommit`.
 * - `pg.groupCommitSigned`: group commit, signed, the rows hashed and signed in the row thread (the
 *   default), beside the same with `writerThread: false` (hashed and signed on the caller's thread).
 * - `pg.messageLatenessP99WhileDrainingSigned`: a 1 ms timer's p99 lateness (bench/guard.ts) on the
 *   caller's thread while those signed events drain, beside the same with `writerThread: false`: what
 *   moving the CPU work off the thread pays.
 */
import { Effect } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { refusalEvent } from "../test/fixtures/events.js"
import { lateness, summary } from "./guard.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, median, perSecond } from "./harness.js"

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
  Effect.map(pipeline(url, count, { maxBatch }), ({ rate }) => rate).pipe(Effect.runPromise)

/** `count` submits drained into the ledger at `url`: the rate, and the 1 ms timer's p99 lateness meanwhile. */
const pipeline = (
  url: string,
  count: number,
  options: { readonly maxBatch: number; readonly signer?: AuditSigner.AuditSigner; readonly writerThread?: boolean }
) =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue
    const events = Array.from({ length: count }, (_, i) => refusalEvent("bench", i))
    const start = performance.now()
    for (const event of events) yield* queue.submit(event)
    const probe = lateness()
    yield* queue.drainPending("10 minutes")
    const rate = perSecond(count, performance.now() - start)
    return { rate, p99: summary(probe.stop()).p99 }
  }).pipe(Effect.provide(AuditLedger.layerPg({ url, shutdownDrainTimeout: "1 minute", ...options })))

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
  const signer = await Effect.runPromise(AuditSigner.generate)
  const signedN = mode.size(20_000, 500)
  // Alternating rounds, the row thread and the caller's thread, each in a fresh database.
  const threaded: Array<{ readonly rate: number; readonly p99: number }> = []
  const inThread: Array<{ readonly rate: number; readonly p99: number }> = []
  for (let round = 0; round < mode.rounds; round++) {
    inThread.push(
      await withDatabase(
        adminUrl,
        (url) => Effect.runPromise(pipeline(url, signedN, { maxBatch: 512, signer, writerThread: false }))
      )
    )
    threaded.push(
      await withDatabase(adminUrl, (url) => Effect.runPromise(pipeline(url, signedN, { maxBatch: 512, signer })))
    )
  }
  const signed = {
    value: { rate: median(threaded.map((r) => r.rate)), p99: median(threaded.map((r) => r.p99)) },
    bound: { rate: median(inThread.map((r) => r.rate)), p99: median(inThread.map((r) => r.p99)) }
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
    "pg.groupCommitSpeedup": figure(median(group) / median(perEvent), "ratio"),
    "pg.groupCommitSigned": bounded(signed.value.rate, "events/s", signed.bound.rate),
    "pg.messageLatenessP99WhileDrainingSigned": bounded(signed.value.p99, "ms", signed.bound.p99)
  }
}
