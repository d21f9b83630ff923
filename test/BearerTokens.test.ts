/**
 * BearerTokens and RateLimiter: the tokens file holds digests only and names the agent of each token; a
 * token is accepted only as `Bearer <token>`, never as its digest, a prefix or another scheme; a bad line
 * is an error naming it. The rate limiter refills on the `Clock`, one bucket per agent.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option, TestClock } from "effect"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as RateLimiter from "../src/serve/RateLimiter.js"

const parse = (text: string) => Effect.runSync(Effect.either(BearerTokens.parse(text, "tokens.txt")))

describe("BearerTokens", () => {
  it("generates a fresh token whose line names its agent and holds only its SHA-256", () => {
    const a = BearerTokens.generate("ci-bot")
    const b = BearerTokens.generate("ci-bot")
    expect(a.token).not.toBe(b.token)
    expect(a.token).toMatch(/^al_[A-Za-z0-9_-]{43}$/)
    expect(a.line).toMatch(/^ci-bot sha256:[0-9a-f]{64}$/)
    expect(a.line).not.toContain(a.token.slice(3))
    const tokens = parse(`${a.line}\n`)
    expect(Either.isRight(tokens)).toBe(true)
  })

  it("authenticates the token's agent, and nothing else", () => {
    const alice = BearerTokens.generate("alice")
    const bob = BearerTokens.generate("bob")
    const tokens = Effect.runSync(BearerTokens.parse(`# comment\n\n${alice.line}\n  ${bob.line}  \n`, "t"))
    const auth = (header: string | undefined) => Option.getOrNull(BearerTokens.authenticate(tokens, header))
    expect(auth(`Bearer ${alice.token}`)).toBe("alice")
    expect(auth(`bearer ${bob.token}`)).toBe("bob")
    expect(auth(undefined)).toBe(null)
    expect(auth(alice.token)).toBe(null)
    expect(auth(`Basic ${alice.token}`)).toBe(null)
    expect(auth(`Bearer ${alice.token.slice(0, -1)}`)).toBe(null)
    expect(auth(`Bearer ${alice.token}x`)).toBe(null)
    expect(auth(`Bearer ${alice.line.split("sha256:")[1]}`)).toBe(null)
    expect(auth(`Bearer ${alice.token} ${bob.token}`)).toBe(null)
    expect(auth(`Bearer ${"a".repeat(5000)}`)).toBe(null)
  })

  it("names the line of a bad entry, a duplicate digest, or an empty file", () => {
    const good = BearerTokens.generate("a").line
    const digest = good.split(" ")[1]!
    const lineOf = (text: string) => {
      const result = parse(text)
      return Either.isLeft(result) ? result.left.message : "ok"
    }
    expect(lineOf(`${good}\nb sha256:${"A".repeat(64)}\n`)).toMatch(/^tokens\.txt:2: /)
    expect(lineOf(`${good}\nb ${digest}\n`)).toMatch(/^tokens\.txt:2: the same token digest/)
    expect(lineOf(`agent\u0000x ${digest}\n`)).toMatch(/^tokens\.txt:1: /)
    expect(lineOf(`a sha256:${"0".repeat(63)}\n`)).toMatch(/^tokens\.txt:1: /)
    expect(lineOf("# nothing\n")).toBe("tokens.txt: no tokens")
  })
})

describe("RateLimiter", () => {
  it.effect("lets a burst through, refuses the next, and refills with time, per key", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ perSecond: 2, burst: 3 })
      const takes = (key: string, n: number) => Effect.all(Array.from({ length: n }, () => limiter.take(key)))
      expect(yield* takes("a", 4)).toEqual([true, true, true, false])
      expect(yield* limiter.take("b")).toBe(true)
      yield* TestClock.adjust("499 millis")
      expect(yield* limiter.take("a")).toBe(false)
      yield* TestClock.adjust("1 millis")
      expect(yield* limiter.take("a")).toBe(true)
      yield* TestClock.adjust("1 hour")
      expect(yield* takes("a", 4)).toEqual([true, true, true, false])
    }))
})
