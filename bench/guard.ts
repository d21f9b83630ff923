/**
 * What a guard co-located with its ledger feels (bench/results.json IDs `guard.*`): a 1 ms timer stands in
 * for the guard's incoming messages, and its lateness (how long after its due time each tick runs) is
 * measured while 100,000 refusals drain into a SQLite ledger (synchronous FULL), unsigned and signed,
 * beside the same timer's lateness on an idle process in the same run (the bound). The in-thread writer
 * (`writerThread: false`) is measured too, in the same run, for what the writer thread removes.
 */
import { Effect, Logger } from "effect"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { events } from "./audit.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, quantile } from "./harness.js"

const quiet = Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))

let fileCounter = 0
const freshFile = (mode: BenchMode, name: string) => join(mode.dir, `guard-${name}-${fileCounter++}.db`)

/** A 1 ms interval timer recording each tick's lateness (ms past its due time) until stopped. */
export const lateness = () => {
  const samples: Array<number> = []
  let due = performance.now() + 1
  const timer = setInterval(() => {
    const now = performance.now()
    samples.push(Math.max(0, now - due))
    due = now + 1
  }, 1)
  return {
    stop: (): Array<number> => {
      clearInterval(timer)
      return samples
    }
  }
}

export const summary = (samples: ReadonlyArray<number>) => ({
  p50: quantile(samples, 0.5),
  p99: quantile(samples, 0.99),
  max: Math.max(...samples),
  ticks: samples.length
})

/** The timer's lateness on an idle process for `ms`. */
const idle = (ms: number) =>
  new Promise<ReturnType<typeof summary>>((resolve) => {
    const probe = lateness()
    setTimeout(() => resolve(summary(probe.stop())), ms)
  })

/**
 * The timer's lateness while `n` refusals, submitted at once, drain into a fresh ledger; and the drain's
 * rate. The timer starts after the submits (a burst of `submit`s is the guard's own work).
 */
const whileDraining = (
  mode: BenchMode,
  n: number,
  options: { readonly signer?: AuditSigner.AuditSigner; readonly writerThread: boolean }
) => {
  const batch = events(n, "guard")
  return Effect.runPromise(quiet(
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      for (const event of batch) yield* queue.submit(event)
      const probe = lateness()
      const start = performance.now()
      if (!(yield* queue.drainPending("10 minutes"))) throw new Error("the refusals did not drain")
      const ms = performance.now() - start
      const samples = probe.stop()
      if ((yield* queue.metrics).appended !== n) throw new Error("not every refusal was appended")
      return { ...summary(samples), eventsPerSecond: n / (ms / 1000) }
    }).pipe(
      Effect.provide(AuditLedger.layerSqlite({
        filename: freshFile(mode, options.signer === undefined ? "unsigned" : "signed"),
        synchronous: "FULL",
        writerThread: options.writerThread,
        ...(options.signer === undefined ? {} : { signer: options.signer })
      }))
    )
  ))
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const figures: Figures = {}
  const n = mode.size(100_000, 2_000)
  const signer = await Effect.runPromise(AuditSigner.generate)
  const rest = await idle(mode.quick ? 300 : 3_000)
  const unsigned = await whileDraining(mode, n, { writerThread: true })
  const signed = await whileDraining(mode, n, { writerThread: true, signer })
  const inThread = await whileDraining(mode, n, { writerThread: false })
  const inThreadSigned = await whileDraining(mode, n, { writerThread: false, signer })
  const restAfter = await idle(mode.quick ? 300 : 3_000)
  // The bound: the idle p99, the larger of the two idle windows around the drains (the machine's own noise).
  const idleP99 = Math.max(rest.p99, restAfter.p99)
  figures["guard.messageLatenessP99Idle"] = figure(idleP99, "ms")
  figures["guard.messageLatenessP99WhileDraining"] = bounded(unsigned.p99, "ms", idleP99)
  figures["guard.messageLatenessP99WhileDrainingSigned"] = bounded(signed.p99, "ms", idleP99)
  figures["guard.messageLatenessMaxWhileDraining"] = figure(Math.max(unsigned.max, signed.max), "ms")
  figures["guard.drainWhileProbed"] = figure(unsigned.eventsPerSecond, "events/s")
  figures["guard.drainWhileProbedSigned"] = figure(signed.eventsPerSecond, "events/s")
  // The same drains with the writes on the guard's thread (writerThread: false), same run.
  figures["guard.messageLatenessP99WhileDrainingInThread"] = bounded(inThread.p99, "ms", idleP99)
  figures["guard.messageLatenessP99WhileDrainingInThreadSigned"] = bounded(inThreadSigned.p99, "ms", idleP99)
  console.error(
    `bench: guard lateness (ms) idle ${JSON.stringify(rest)} / ${JSON.stringify(restAfter)}; thread unsigned ${
      JSON.stringify(unsigned)
    }; thread signed ${JSON.stringify(signed)}; in-thread unsigned ${JSON.stringify(inThread)}; in-thread signed ${
      JSON.stringify(inThreadSigned)
    }`
  )
  return figures
}
