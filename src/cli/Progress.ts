/**
 * Progress lines for long CLI operations: written to stderr, only when stderr is a terminal (so CI logs
 * and pipes stay quiet) or when `AGENT_LEDGER_PROGRESS=1` asks for them anyway (then one plain line per
 * update, for a log or a supervising process). Updates are throttled to a few per second.
 */
import { Clock, Effect } from "effect"

export interface Progress {
  /** Report `done` items out of `total` (total unknown: `undefined`). */
  readonly update: (done: number, total?: number) => Effect.Effect<void>
  /** Clear the progress line. */
  readonly finish: Effect.Effect<void>
}

const silent: Progress = { update: () => Effect.void, finish: Effect.void }

/** Whether progress is wanted on a stream that is not a terminal (`AGENT_LEDGER_PROGRESS=1`). */
const forcedByEnvironment = (): boolean => process.env.AGENT_LEDGER_PROGRESS === "1"

export const make = (
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
  forced: boolean = forcedByEnvironment()
): Progress => {
  const terminal = stream.isTTY === true
  if (!terminal && !forced) return silent
  let lastWrite = 0
  let shown = false
  return {
    update: (done, total) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          if (now - lastWrite < 200) return
          lastWrite = now
          shown = true
          const pct = total !== undefined && total > 0 ? ` (${Math.floor((done / total) * 100)}%)` : ""
          const text = `${label}: ${done}${total !== undefined ? `/${total}` : ""}${pct}`
          // A terminal's line is rewritten in place; anything else gets one line per update.
          stream.write(terminal ? `\r${text}\u001b[K` : `${text}\n`)
        })),
    finish: Effect.sync(() => {
      if (shown && terminal) stream.write("\r\u001b[K")
    })
  }
}
