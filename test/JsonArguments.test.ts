/**
 * Building an event from ordinary tool arguments never throws: `AuditEvent.toolCall` normalises them the way
 * JSON.stringify would, and fails with a typed error naming the path of what JSON cannot represent.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import fc from "fast-check"
import * as ArgumentStorage from "../src/audit/ArgumentStorage.js"
import * as AuditEvent from "../src/audit/AuditEvent.js"

const reasonAt = (value: unknown) =>
  Either.match(AuditEvent.normalizeJson(value, "arguments"), {
    onLeft: (error) => [error.path, error.reason],
    onRight: () => ["ok"]
  })

describe("AuditEvent.normalizeJson", () => {
  it("drops undefined members, nulls undefined elements, honours toJSON, unwraps boxed values", () => {
    const date = new Date("2026-11-24T06:52:03.120Z")
    const value = {
      a: undefined,
      b: [1, undefined, () => 1, Symbol("s")],
      when: date,
      custom: { toJSON: () => ({ redacted: true }) },
      boxed: [new Number(3), new String("x"), new Boolean(false)],
      f: () => 1
    }
    expect(AuditEvent.normalizeJson(value)).toEqual(Either.right({
      b: [1, null, null, null],
      when: "2026-11-24T06:52:03.120Z",
      custom: { redacted: true },
      boxed: [3, "x", false]
    }))
  })

  it("fails, naming the path, where JSON would throw or silently lose data", () => {
    const cyclic: Record<string, unknown> = { items: [] }
    ;(cyclic.items as Array<unknown>).push({ back: cyclic })
    expect(reasonAt(cyclic)).toEqual(["arguments.items.0.back", "cycle"])
    expect(reasonAt({ n: 10n })).toEqual(["arguments.n", "bigint"])
    expect(reasonAt({ x: [1, NaN] })).toEqual(["arguments.x.1", "nonFiniteNumber"])
    expect(reasonAt({ x: -Infinity })).toEqual(["arguments.x", "nonFiniteNumber"])
    expect(reasonAt({ m: new Map([["a", 1]]) })).toEqual(["arguments.m", "unsupportedType"])
    expect(reasonAt({ s: new Set([1]) })).toEqual(["arguments.s", "unsupportedType"])
    expect(reasonAt({ bytes: new Uint8Array(2) })).toEqual(["arguments.bytes", "unsupportedType"])
    // A shared (not cyclic) object is fine.
    const shared = { k: 1 }
    expect(reasonAt({ a: shared, b: shared })).toEqual(["ok"])
  })

  it("agrees with JSON.parse(JSON.stringify(x)) on every JSON-safe value", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const normalized = AuditEvent.normalizeJson(value)
        expect(normalized).toEqual(Either.right(JSON.parse(JSON.stringify(value))))
      }),
      { numRuns: 500, seed: 12 }
    )
  })
})

describe("AuditEvent.toolCall", () => {
  it.effect("takes MCP's Record<string, unknown> arguments and builds a ToolCall that canonicalizes", () =>
    Effect.gen(function*() {
      const mcpArguments: Record<string, unknown> = {
        path: "/tmp/x",
        options: { since: new Date(0), limit: undefined }
      }
      const action = yield* AuditEvent.toolCall({ toolName: "read_file", serverId: "fs", arguments: mcpArguments })
      // Kept field by field here (`storeAll`): the normalised values, beside the whole digest.
      expect((action.arguments as { fields: unknown }).fields).toEqual({
        path: "/tmp/x",
        options: { since: "1970-01-01T00:00:00.000Z" }
      })
      const event = yield* AuditEvent.DeferredAuditEvent.fromRefusal(
        "agent",
        action,
        new AuditEvent.Refuse({ ruleId: "r", reason: "no" })
      )
      expect(event._tag).toBe("Some")
      const error = yield* Effect.flip(AuditEvent.toolCall({ toolName: "t", serverId: "s", arguments: { n: 1n } }))
      expect(error).toBeInstanceOf(AuditEvent.InvalidJson)
      expect(error.path).toBe("arguments.n")
      const bare = yield* AuditEvent.toolCall({ toolName: "t", serverId: "s" })
      expect("arguments" in bare).toBe(false)
      const payload = yield* AuditEvent.custom("memory_write", { at: new Date(0), drop: undefined })
      expect(payload.payload).toEqual({ at: "1970-01-01T00:00:00.000Z" })
    }).pipe(Effect.provide(ArgumentStorage.layer({ salt: "salt", tools: ArgumentStorage.storeAll }))))
})
