/**
 * internal/unicode: the platform's well-formedness checks, and deep variants that walk any depth.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { isWellFormed, isWellFormedDeep, toWellFormed, toWellFormedDeep } from "../src/internal/unicode.js"

/** A reference: the same value through a recursive walk (fine for the shallow values fast-check makes). */
const reference = (value: unknown): unknown =>
  typeof value === "string"
    ? value.toWellFormed()
    : Array.isArray(value)
    ? value.map(reference)
    : typeof value === "object" && value !== null
    ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k.toWellFormed(), reference(v)]))
    : value

const deep = (depth: number, leaf: unknown): unknown => {
  let value = leaf
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? { k: value } : [value]
  return value
}

describe("internal/unicode", () => {
  it("lone surrogates become U+FFFD; pairs stay", () => {
    expect(toWellFormed("a\uD800b")).toBe("a\uFFFDb")
    expect(toWellFormed("\uD83D\uDE00")).toBe("\uD83D\uDE00")
    expect(isWellFormed("\uDC00")).toBe(false)
  })

  it("the deep variants agree with a recursive reference on any JSON-like value, keys included", () => {
    const text = fc.string({ unit: fc.oneof(fc.constantFrom("\uD800", "\uDC00", "a", "\uD83D\uDE00", "é")) })
    const json = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        text,
        fc.integer(),
        fc.constant(null),
        fc.array(tie("value"), { maxLength: 4 }),
        fc.dictionary(text, tie("value"), { maxKeys: 4 })
      )
    })).value
    fc.assert(fc.property(json, (value) => {
      expect(toWellFormedDeep(value)).toEqual(reference(value))
      expect(isWellFormedDeep(value)).toBe(JSON.stringify(reference(value)) === JSON.stringify(value))
    }))
  })

  it("a value nested 200,000 deep is checked and rebuilt without a stack overflow", () => {
    const value = deep(200_000, "lone \uD800")
    expect(isWellFormedDeep(value)).toBe(false)
    const fixed = toWellFormedDeep(value)
    expect(isWellFormedDeep(fixed)).toBe(true)
    let inner: unknown = fixed
    for (let i = 199_999; i >= 0; i--) inner = i % 2 === 0 ? (inner as { k: unknown }).k : (inner as Array<unknown>)[0]
    expect(inner).toBe("lone \uFFFD")
  })

  it("a __proto__ key stays an own property of the rebuilt object", () => {
    const value = JSON.parse("{\"__proto__\": {\"polluted\": \"\\uD800\"}}") as object
    const fixed = toWellFormedDeep(value) as Record<string, unknown>
    expect(Object.getPrototypeOf(fixed)).toBe(Object.prototype)
    expect(Object.getOwnPropertyNames(fixed)).toEqual(["__proto__"])
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined()
  })
})
