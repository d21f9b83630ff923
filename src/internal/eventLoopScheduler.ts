/**
 * A fiber scheduler that yields to the Node event loop (`setImmediate`) between batches of work.
 * Effect's default scheduler yields through microtasks for long stretches; with synchronous SQLite
 * calls in between, that can keep timers, sockets and signal handlers waiting until a whole backlog is
 * done. Long-running loops (the audit drainer, CLI commands) run on this one instead.
 */
import { Scheduler } from "effect"

export const eventLoopScheduler: Scheduler.Scheduler = Scheduler.makeBatched((runBatch) => setImmediate(runBatch))
