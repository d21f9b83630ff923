/**
 * Progress lines for long CLI operations: written to stderr, only when stderr is a terminal, so CI logs
 * and pipes stay quiet. Updates are throttled to a few per second.
 */
import { Clock, Effect } from "effect"

export interface Progress {
  /** Report `done` items out of `total` (total unknown: `undefined`). */
  readonly update: (done: number, total?: number) => Effect.Effect<void>
  /** Clear the progress line. */
  readonly finish: Effect.Effect<void>
}

const silent: Progress = { update: () => Effect.void, finish: Effect.void }

export const make = (label: string, stream: NodeJS.WriteStream = process.stderr): Progress => {
  if (!stream.isTTY) return silent
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
          stream.write(`\r${label}: ${done}${total !== undefined ? `/${total}` : ""}${pct}\u001b[K`)
        })),
    finish: Effect.sync(() => {
      if (shown) stream.write("\r\u001b[K")
    })
  }
}
