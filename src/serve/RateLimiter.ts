/**
 * A token bucket per key (an agent, whichever credential named it): `burst` requests at once, refilled at
 * `perSecond`. Time comes from `Clock`, so a test moves it with `TestClock`. Keys are the agents of the
 * tokens and client certificates files, so the map is bounded by them.
 */
import { Clock, Context, Effect, Layer, Ref } from "effect"

export interface Options {
  /** Requests per second, sustained. */
  readonly perSecond: number
  /** Requests at once after an idle spell (the bucket's size); default `perSecond`, at least 1. */
  readonly burst?: number | undefined
}

interface Bucket {
  readonly tokens: number
  readonly atMillis: number
}

export class RateLimiter extends Context.Tag("agent-ledger/RateLimiter")<RateLimiter, {
  /** Takes one request from `key`'s bucket: false when it is empty (the request is over the limit). */
  readonly take: (key: string) => Effect.Effect<boolean>
}>() {}

export const make = (options: Options): Effect.Effect<Context.Tag.Service<RateLimiter>> =>
  Effect.gen(function*() {
    const perMilli = Math.max(0, options.perSecond) / 1000
    const burst = Math.max(1, options.burst ?? options.perSecond)
    const buckets = yield* Ref.make(new Map<string, Bucket>())
    const take = (key: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.modify(buckets, (map) => {
          const bucket = map.get(key) ?? { tokens: burst, atMillis: now }
          const refilled = Math.min(burst, bucket.tokens + Math.max(0, now - bucket.atMillis) * perMilli)
          const allowed = refilled >= 1
          map.set(key, { tokens: allowed ? refilled - 1 : refilled, atMillis: now })
          return [allowed, map]
        }))
    return RateLimiter.of({ take })
  })

export const layer = (options: Options): Layer.Layer<RateLimiter> => Layer.effect(RateLimiter, make(options))
