/**
 * Span helpers. Span names and attributes are listed in docs/OPERATIONS.md ("Traces").
 */
import type { Fiber } from "effect"
import { Effect, FiberRef, LogLevel } from "effect"

/** Whether `fiber`'s minimum log level lets Debug through: what turns the per-call spans on. */
export const debugEnabled = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  !LogLevel.greaterThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Debug)

/**
 * `effect` in a span named `name`, only while the fiber's minimum log level lets Debug through: the
 * journal's per-call spans cost nothing unless asked for (`Logger.minimumLogLevel(LogLevel.Debug)`).
 */
export const debugSpan = (
  name: string,
  attributes: () => Record<string, unknown>
) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    debugEnabled(fiber) ? Effect.withSpan(effect, name, { attributes: attributes() }) : effect
  )
