/**
 * The audit pipeline's figures (bench/results.json IDs `audit.*`), each beside the hardware's own bound
 * measured in the same run on the same file system: raw better-sqlite3 inserts of rows of the ledger's
 * shape (one transaction per row, or 512 per transaction) and a node:crypto Ed25519 sign loop; two
 * threads signing at once beside twice one thread (whether a signing pool would pay); `submit`'s p99 while
 * a backlog drains beside its p99 on an idle queue; the group commit on a ledger with the console's indexes
 * (migration 0009) beside the same on one without them (what those indexes cost the pipeline).
 */
import Database from "better-sqlite3"
import type { Duration } from "effect"
import { DateTime, Effect, Logger } from "effect"
import { generateKeyPairSync, sign as ed25519Sign } from "node:crypto"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { Worker } from "node:worker_threads"
import { canonicalJson, GOVERNANCE_REFUSAL_EVENT_TYPE, payloadHash } from "../src/audit/AuditEvent.js"
import { DeferredAuditEvent, Refuse, ToolCall } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import type { AppendOutcome } from "../src/audit/AuditSink.js"
import { Appended, AuditSink } from "../src/audit/AuditSink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { rowEntryHash } from "../src/internal/rowFormat.js"
import { uuidV7 } from "../src/internal/uuid.js"
import { BASE_MILLIS } from "../test/fixtures/events.js"
import { sqliteWithClient } from "../test/fixtures/ledgerSql.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, gc, median, perSecond, quantile, sideBySide } from "./harness.js"

const quiet = Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))

let fileCounter = 0
const freshFile = (mode: BenchMode, name: string) => join(mode.dir, `${name}-${fileCounter++}.db`)

/**
 * `n` refusals like `refusalEvent`'s, built without re-validating each one (a million events are made
 * for the backlog figure; their construction is setup, not measured).
 */
export const events = (n: number, prefix: string): ReadonlyArray<DeferredAuditEvent> =>
  Array.from({ length: n }, (_, i) =>
    new DeferredAuditEvent({
      id: uuidV7(BASE_MILLIS + i),
      agentId: `${prefix}-${i % 97}`,
      action: new ToolCall({ toolName: "shell.exec", serverId: "local", arguments: { n: i, extra: "" } }, true),
      decision: new Refuse({ ruleId: "no-shell", reason: `refusal ${i}` }, true),
      timestamp: DateTime.unsafeMake(BASE_MILLIS + i)
    }, true))

// ---------------------------------------------------------------------------------------------------------
// Bounds: the raw library doing the same work
// ---------------------------------------------------------------------------------------------------------

/** A database with the ledger's schema (created by the ledger's own migrations). */
const migratedFile = (file: string) =>
  Effect.runPromise(quiet(Effect.provide(Effect.void, sqliteWithClient({ filename: file }))))

/** Row values of the ledger's shape for `n` events (computed before timing: the bound is the database's). */
const rawRows = (n: number) => {
  let prev = "0".repeat(64)
  return events(n, "raw").map((event, sequence) => {
    const payload = canonicalJson(event)
    const hash = payloadHash(event)
    const timestamp = "2026-11-24T06:52:03.120Z"
    const entryHash = rowEntryHash({
      sequence,
      prevHash: prev,
      id: event.id,
      agentId: event.agentId,
      eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
      payloadHash: hash,
      timestamp
    })
    const row = [
      event.id,
      sequence,
      event.agentId,
      GOVERNANCE_REFUSAL_EVENT_TYPE,
      payload,
      hash,
      prev,
      entryHash,
      null,
      null,
      "unsigned",
      timestamp,
      new Date().toISOString()
    ]
    prev = entryHash
    return row
  })
}

/** Raw better-sqlite3, synchronous=FULL, WAL: `perTransaction` prepared INSERTs per transaction. */
const rawInsertsPerSecond = async (mode: BenchMode, n: number, perTransaction: number): Promise<number> => {
  const file = freshFile(mode, "raw")
  await migratedFile(file)
  const rows = rawRows(n)
  const db = new Database(file)
  try {
    db.pragma("journal_mode = WAL")
    db.pragma("synchronous = FULL")
    const insert = db.prepare(`INSERT INTO signed_events VALUES (${Array(13).fill("?").join(", ")})`)
    const start = performance.now()
    for (let i = 0; i < n; i += perTransaction) {
      db.exec("BEGIN IMMEDIATE")
      for (const row of rows.slice(i, i + perTransaction)) insert.run(...row)
      db.exec("COMMIT")
    }
    return perSecond(n, performance.now() - start)
  } finally {
    db.close()
  }
}

/** node:crypto Ed25519 signatures of 32-byte messages per second, with one key object made once. */
const ed25519SignsPerSecond = (n: number): Promise<number> => {
  const { privateKey } = generateKeyPairSync("ed25519")
  const message = Buffer.alloc(32, 7)
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    message[0] = i & 0xff
    ed25519Sign(null, message, privateKey).toString("hex")
  }
  return Promise.resolve(perSecond(n, performance.now() - start))
}

// ---------------------------------------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------------------------------------

/** Migration 0009's indexes (the console's): `audit.groupCommitConsoleIndexes` measures what they cost. */
const CONSOLE_INDEXES = [
  "idx_signed_events_time",
  "idx_signed_events_type_time",
  "idx_signed_events_attest",
  "idx_signed_events_rule"
]

/** A migrated ledger file without the console's indexes. */
const fileWithoutConsoleIndexes = async (mode: BenchMode): Promise<string> => {
  const file = freshFile(mode, "pipe-lean")
  await migratedFile(file)
  const db = new Database(file)
  try {
    for (const index of CONSOLE_INDEXES) db.exec(`DROP INDEX ${index}`)
  } finally {
    db.close()
  }
  return file
}

/** Events per second from the first submit until every event is accounted, through `layerSqlite`. */
const pipelinePerSecond = async (
  mode: BenchMode,
  n: number,
  options: {
    readonly maxBatch?: number
    readonly signer?: AuditSigner.AuditSigner
    readonly checkpointEvery?: Duration.DurationInput
    /** On a ledger whose console indexes (migration 0009) were dropped after migrating. */
    readonly withoutConsoleIndexes?: boolean
  }
): Promise<number> => {
  const batch = events(n, "pipe")
  const filename = options.withoutConsoleIndexes === true
    ? await fileWithoutConsoleIndexes(mode)
    : freshFile(mode, "pipe")
  return Effect.runPromise(quiet(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      const start = performance.now()
      for (const event of batch) yield* queue.submit(event)
      if (!(yield* queue.drainPending("10 minutes"))) throw new Error("pipeline did not drain")
      const ms = performance.now() - start
      const metrics = yield* queue.metrics
      if (metrics.appended !== n) throw new Error(`appended ${metrics.appended} of ${n}`)
      return perSecond(n, ms)
    }).pipe(
      Effect.provide(AuditLedger.layerSqlite({
        filename,
        synchronous: "FULL",
        ...(options.maxBatch === undefined ? {} : { maxBatch: options.maxBatch }),
        ...(options.signer === undefined ? {} : { signer: options.signer }),
        ...(options.checkpointEvery === undefined
          ? {}
          : { checkpoints: { origin: "bench.example/agent-ledger", every: options.checkpointEvery } })
      }))
    )
  ))
}

/** A sink that does nothing, with group commit: what the queue itself costs per event. */
const nullSink = AuditSink.of({
  append: () => Effect.succeed(new Appended({ uniqueRaceRetries: 0 })),
  appendBatch: (batch) => Effect.succeed(batch.map((): AppendOutcome => new Appended({ uniqueRaceRetries: 0 }))),
  deadLetter: () => Effect.void
})

const queueOnlyPerSecond = (n: number): Promise<number> => {
  const batch = events(n, "queue")
  return Effect.runPromise(quiet(Effect.scoped(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.make({ sink: nullSink })
      const start = performance.now()
      for (const event of batch) yield* queue.submit(event)
      if (!(yield* queue.drainPending("10 minutes"))) throw new Error("queue did not drain")
      return perSecond(n, performance.now() - start)
    })
  )))
}

/**
 * p99 of `submit` (µs) while `backlog` events are queued and the drainer writes them to a SQLite ledger
 * at full speed; also the heap each queued event costs (event included).
 */
const submitWhileDraining = (mode: BenchMode, backlog: number, samples: number) =>
  Effect.runPromise(quiet(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      gc()
      const heapBefore = process.memoryUsage().heapUsed
      const queued = events(backlog, "backlog")
      for (const event of queued) yield* queue.submit(event)
      gc()
      const heapAfter = process.memoryUsage().heapUsed
      const probes = events(samples, "probe")
      const latencies: Array<number> = []
      // Each probe runs on its own turn of the event loop, between the drainer's batches, as a guard's
      // request handler would; probing stops when the backlog has drained.
      for (let i = 0; i < samples; i++) {
        yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
        const start = performance.now()
        yield* queue.submit(probes[i]!)
        latencies.push((performance.now() - start) * 1000)
        if (i % 64 === 0 && AuditMetrics.inFlight(yield* queue.metrics) < backlog / 20) break
      }
      const metrics = yield* queue.metrics
      const drainedMeanwhile = metrics.appended
      if (!(yield* queue.drainPending("10 minutes"))) throw new Error("backlog did not drain")
      return {
        p99: quantile(latencies, 0.99),
        p50: quantile(latencies, 0.5),
        max: Math.max(...latencies),
        samples: latencies.length,
        heapPerEvent: (heapAfter - heapBefore) / backlog,
        drainedMeanwhile
      }
    }).pipe(
      Effect.provide(AuditLedger.layerSqlite({ filename: freshFile(mode, "backlog"), synchronous: "FULL" }))
    )
  ))

/** p99 of `submit` (µs) on the same probes with nothing queued and nothing draining: its bound. */
const submitIdle = (mode: BenchMode, samples: number) =>
  Effect.runPromise(quiet(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      const probes = events(samples, "idle")
      const latencies: Array<number> = []
      for (let i = 0; i < samples; i++) {
        // Each probe waits until the previous one has drained: nothing else is queued when it is submitted.
        yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
        if (i % 16 === 0) yield* queue.drainPending("1 minute")
        const start = performance.now()
        yield* queue.submit(probes[i]!)
        latencies.push((performance.now() - start) * 1000)
      }
      return quantile(latencies, 0.99)
    }).pipe(
      Effect.provide(AuditLedger.layerSqlite({ filename: freshFile(mode, "idle"), synchronous: "FULL" }))
    )
  ))

/**
 * Ed25519 signatures per second on two threads at once (one key each, as a pool would sign a batch's
 * entry hashes), beside twice one thread's rate measured just before on the same threads: whether a second
 * core pays for signing on this machine.
 */
const ed25519TwoThreads = async (n: number): Promise<{ readonly two: number; readonly one: number }> => {
  const source = `const { parentPort } = require("node:worker_threads")
const { generateKeyPairSync, sign } = require("node:crypto")
const { privateKey } = generateKeyPairSync("ed25519")
const message = Buffer.alloc(32, 7)
parentPort.on("message", (n) => {
  for (let i = 0; i < n; i++) { message[0] = i & 0xff; sign(null, message, privateKey).toString("hex") }
  parentPort.postMessage(n)
})`
  const threads = [new Worker(source, { eval: true }), new Worker(source, { eval: true })]
  const run = (thread: Worker, count: number) =>
    new Promise<void>((resolve) => {
      thread.once("message", () => resolve())
      thread.postMessage(count)
    })
  try {
    await Promise.all(threads.map((thread) => run(thread, 200)))
    let start = performance.now()
    await run(threads[0]!, n)
    const one = perSecond(n, performance.now() - start)
    start = performance.now()
    await Promise.all(threads.map((thread) => run(thread, n / 2)))
    return { two: perSecond(n, performance.now() - start), one }
  } finally {
    await Promise.all(threads.map((thread) => thread.terminate()))
  }
}

/** Acknowledged events per second with `fibers` concurrent fibers each waiting on `submitAndWait`. */
const submitAndWaitPerSecond = (mode: BenchMode, n: number, fibers: number): Promise<number> => {
  const all = events(n, "ack")
  return Effect.runPromise(quiet(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      const start = performance.now()
      yield* Effect.forEach(
        Array.from({ length: fibers }, (_, f) => f),
        (f) =>
          Effect.gen(function*() {
            for (let i = f; i < n; i += fibers) yield* queue.submitAndWait(all[i]!)
          }),
        { concurrency: "unbounded", discard: true }
      )
      return perSecond(n, performance.now() - start)
    }).pipe(
      Effect.provide(AuditLedger.layerSqlite({ filename: freshFile(mode, "ack"), synchronous: "FULL" }))
    )
  ))
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const figures: Figures = {}
  const perEventN = mode.size(2_000, 100)
  const groupN = mode.size(60_000, 1_000)

  const queueOnly: Array<number> = []
  for (let r = 0; r < mode.rounds; r++) queueOnly.push(await queueOnlyPerSecond(mode.size(200_000, 2_000)))
  figures["audit.queueOnly"] = figure(median(queueOnly), "events/s")

  const perEvent = await sideBySide(
    mode.rounds,
    () => pipelinePerSecond(mode, perEventN, { maxBatch: 1 }),
    () => rawInsertsPerSecond(mode, perEventN, 1)
  )
  figures["audit.perEventCommit"] = bounded(perEvent.value, "events/s", perEvent.bound)

  const group = await sideBySide(
    mode.rounds,
    () => pipelinePerSecond(mode, groupN, {}),
    () => rawInsertsPerSecond(mode, groupN, AuditQueue.DEFAULT_MAX_BATCH)
  )
  figures["audit.groupCommit"] = bounded(group.value, "events/s", group.bound)
  figures["audit.groupCommitSpeedup"] = figure(group.value / perEvent.value, "ratio")

  // The console's indexes (migration 0009) on the same pipeline: with them beside without them, same run.
  const indexed = await sideBySide(
    mode.rounds,
    () => pipelinePerSecond(mode, mode.size(20_000, 500), {}),
    () => pipelinePerSecond(mode, mode.size(20_000, 500), { withoutConsoleIndexes: true })
  )
  figures["audit.groupCommitConsoleIndexes"] = bounded(indexed.value, "events/s", indexed.bound)

  const signer = await Effect.runPromise(AuditSigner.generate)
  const signed = await sideBySide(
    mode.rounds,
    () => pipelinePerSecond(mode, groupN, { signer }),
    () => ed25519SignsPerSecond(groupN)
  )
  figures["audit.groupCommitSigned"] = bounded(signed.value, "events/s", signed.bound)

  // A signing pool pays only if two threads sign nearly twice as fast as one here.
  const pool: Array<{ readonly two: number; readonly one: number }> = []
  for (let r = 0; r < mode.rounds; r++) pool.push(await ed25519TwoThreads(mode.size(40_000, 2_000)))
  figures["audit.ed25519TwoThreads"] = bounded(
    median(pool.map((p) => p.two)),
    "signatures/s",
    2 * median(pool.map((p) => p.one))
  )

  // Transparency checkpoints (the stored tree extended, a note signed and kept) every 250 ms while the
  // signed pipeline runs flat out, against the same pipeline without them: the cost of checkpointing.
  const checkpointed = await sideBySide(
    mode.rounds,
    () => pipelinePerSecond(mode, groupN, { signer, checkpointEvery: "250 millis" }),
    () => pipelinePerSecond(mode, groupN, { signer })
  )
  figures["audit.groupCommitCheckpointed"] = bounded(checkpointed.value, "events/s", checkpointed.bound)

  const draining = await submitWhileDraining(mode, mode.size(1_000_000, 5_000), mode.size(5_000, 200))
  const idleP99 = await submitIdle(mode, mode.size(5_000, 200))
  figures["audit.submitP99WhileDraining"] = bounded(draining.p99, "µs", idleP99)
  figures["audit.queueHeapBytesPerEvent"] = figure(draining.heapPerEvent, "bytes")

  const acks: Array<number> = []
  for (let r = 0; r < mode.rounds; r++) acks.push(await submitAndWaitPerSecond(mode, mode.size(20_000, 500), 64))
  figures["audit.submitAndWait"] = figure(median(acks), "events/s")
  return figures
}
