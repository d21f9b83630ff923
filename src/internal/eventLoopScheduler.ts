/**
 * Giving the Node event loop its turn during long work.
 *
 * `eventLoopScheduler` is a fiber scheduler that yields to the event loop (`setImmediate`) between batches
 * of work. Effect's default scheduler yields through microtasks for long stretches; with synchronous SQLite
 * calls in between, that can keep timers, sockets and signal handlers waiting until a whole backlog is
 * done. Long-running loops (the audit drainer, CLI commands) run on this one instead.
 *
 * A scheduler only yields after a number of operations, whatever they cost: a page of rows is a handful of
 * operations and many milliseconds. So long reads (verify, export, bundles, tree building) also call
 * `yieldToEventLoop` between pages, whatever scheduler they run on.
 */
import { Effect, Scheduler } from "effect"

export const eventLoopScheduler: Scheduler.Scheduler = Scheduler.makeBatched((runBatch) => setImmediate(runBatch))

/**
 * Suspends the fiber until the event loop has turned once (it resumes from a `setImmediate`): timers, I/O
 * and signal handlers that were waiting run first, on any scheduler. An interruption sent meanwhile (by
 * `Effect.timeout`, `Fiber.interrupt`, Ctrl-C in the CLI) takes effect here, at once. Costs a few
 * microseconds: call it between pages of work, not per row.
 */
export const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const immediate = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(immediate))
})
