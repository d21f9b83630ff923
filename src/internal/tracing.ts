/**
 * Span helpers. Span names and attributes are listed in docs/OPERATIONS.md ("Traces").
 */
import { Effect, FiberRef, LogLevel } from "effect"

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
    LogLevel.greaterThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Debug)
      ? effect
      : Effect.withSpan(effect, name, { attributes: attributes() })
  )
