/**
 * The session journal's figures (`journal.*`): records and verification per second beside node:crypto
 * SHA-256 of a same-size message in a loop (the bound: a record hashes one such message), the growth of
 * the per-record time with the journal's length, and the heap each entry keeps.
 */
import { Effect } from "effect"
import * as crypto from "node:crypto"
import { performance } from "node:perf_hooks"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, gc, median, perSecond, sideBySide } from "./harness.js"

const SESSION = "bench-session-0001"

/** A tool call as a guard would record it. */
const call = (i: number): SessionJournal.RecordParams => ({
  toolName: `tool-${i % 7}`,
  serverId: "server-a",
  agentId: "agent-7",
  bytesRead: i,
  bytesWritten: 10,
  delegationDepth: 1,
  allowed: true
})

/** The v1 hash input of a typical record: the bound hashes messages of exactly this size. */
const inputSize = Buffer.concat(
  SessionJournal.entryHashInput({
    ...call(1),
    sessionId: SESSION,
    sequence: 1,
    prevHash: "0".repeat(64),
    timestampMillis: Date.now()
  })
).length

/** SHA-256 per second of `inputSize`-byte messages, one-shot where node has it (the fastest raw call). */
const sha256PerSecond = (n: number): number => {
  const message = Buffer.alloc(inputSize, 7)
  const hash = typeof crypto.hash === "function"
    ? (data: Buffer) => crypto.hash("sha256", data, "buffer")
    : (data: Buffer) => crypto.createHash("sha256").update(data).digest()
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    message.writeUInt32BE(i, 0)
    hash(message)
  }
  return perSecond(n, performance.now() - start)
}

/** A journal with `n` records; the time of the records from `from` on (ms). */
const recordInto = (journal: SessionJournal.Journal, from: number, to: number) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = from; i < to; i++) yield* journal.record(call(i))
    return performance.now() - start
  })

const recordsPerSecond = (n: number): Promise<number> =>
  Effect.runPromise(Effect.gen(function*() {
    const journal = yield* SessionJournal.make(SESSION)
    return perSecond(n, yield* recordInto(journal, 0, n))
  }))

const verifyPerSecond = (n: number): Promise<number> =>
  Effect.runPromise(Effect.gen(function*() {
    const journal = yield* SessionJournal.make(SESSION)
    yield* recordInto(journal, 0, n)
    const start = performance.now()
    yield* journal.verifyIntegrity
    return perSecond(n, performance.now() - start)
  }))

/** Per-record time over a window once the journal holds `large` entries, over the same at `small`. */
const perOpGrowth = (small: number, large: number, window: number): Promise<number> =>
  Effect.runPromise(Effect.gen(function*() {
    const journal = yield* SessionJournal.make(SESSION)
    yield* recordInto(journal, 0, small)
    const atSmall = yield* recordInto(journal, small, small + window)
    yield* recordInto(journal, small + window, large)
    const atLarge = yield* recordInto(journal, large, large + window)
    return atLarge / atSmall
  }))

/** Heap kept per entry by a journal of `n` entries (after full GCs). */
const heapBytesPerEntry = (n: number): Promise<number> =>
  Effect.runPromise(Effect.gen(function*() {
    gc()
    const before = process.memoryUsage().heapUsed
    const journal = yield* SessionJournal.make(SESSION)
    yield* recordInto(journal, 0, n)
    gc()
    const after = process.memoryUsage().heapUsed
    // Keep the journal alive until after the measurement.
    if ((yield* journal.length) !== n) throw new Error("journal lost entries")
    return (after - before) / n
  }))

export const run = async (mode: BenchMode): Promise<Figures> => {
  const n = mode.size(300_000, 5_000)
  await recordsPerSecond(Math.min(n, 50_000)) // warm-up
  sha256PerSecond(Math.min(n, 50_000))
  const record = await sideBySide(mode.rounds, () => recordsPerSecond(n), () => Promise.resolve(sha256PerSecond(n)))
  const verify = await sideBySide(mode.rounds, () => verifyPerSecond(n), () => Promise.resolve(sha256PerSecond(n)))
  const growth: Array<number> = []
  for (let r = 0; r < mode.rounds; r++) {
    growth.push(await perOpGrowth(mode.size(1_000, 1_000), mode.size(1_000_000, 20_000), mode.size(20_000, 1_000)))
  }
  return {
    "journal.record": bounded(record.value, "records/s", record.bound),
    "journal.perOpGrowth": figure(median(growth), "ratio"),
    "journal.heapBytesPerEntry": figure(await heapBytesPerEntry(mode.size(1_000_000, 20_000)), "bytes"),
    "journal.verify": bounded(verify.value, "entries/s", verify.bound)
  }
}
