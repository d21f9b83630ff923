import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  hashBytes,
  isHash,
  lp,
  PrefixViews,
  sha256Hex,
  u32,
  u64,
  u8,
  writeLpAt,
  writeU32At,
  writeU64At,
  ZERO_HASH
} from "../src/internal/encoding.js"
import { rowEntryHash, rowHashInputParts } from "../src/internal/rowFormat.js"
import { UUID_V7, uuidV7 } from "../src/internal/uuid.js"

describe("internal/encoding", () => {
  it("lp prefixes the UTF-8 byte length, not the character count", () => {
    expect(Buffer.from(lp("é")).toString("hex")).toBe("00000002c3a9")
    expect(Buffer.from(lp("")).toString("hex")).toBe("00000000")
  })

  it("length prefixes make split points unambiguous", () => {
    expect(sha256Hex(lp("ab"), lp("c"))).not.toBe(sha256Hex(lp("a"), lp("bc")))
    expect(sha256Hex("ab", "c")).toBe(sha256Hex("a", "bc"))
  })

  it("fixed-width integers are big-endian", () => {
    expect(Buffer.from(u64(Number.MAX_SAFE_INTEGER)).toString("hex")).toBe("001fffffffffffff")
    expect(Buffer.from(u32(0x01020304)).toString("hex")).toBe("01020304")
    expect(Buffer.from(u8(1)).toString("hex")).toBe("01")
  })

  it("sha256Hex matches the NIST vector and hashes round-trip through raw bytes", () => {
    const abc = sha256Hex("abc")
    expect(abc).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    expect(Buffer.from(hashBytes(abc)).toString("hex")).toBe(abc)
    expect(isHash(abc)).toBe(true)
    expect(isHash(ZERO_HASH)).toBe(true)
    expect(isHash(abc.toUpperCase())).toBe(false)
  })
})

describe("internal/encoding: the in-place writers of the hot-path encoders", () => {
  it("writeLpAt, writeU64At and writeU32At write byte for byte lp, u64 and u32 (ASCII fast path, other text, lone surrogates)", () => {
    const text = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ unit: "grapheme", maxLength: 200 }),
      fc.string({ unit: "binary", maxLength: 200 }),
      // Mostly ASCII with one other code unit at a random place (the fast path gives up there).
      fc.tuple(fc.string({ maxLength: 140 }), fc.integer({ min: 0x80, max: 0xffff }), fc.string({ maxLength: 10 }))
        .map(([a, c, b]) => a + String.fromCharCode(c) + b)
    )
    fc.assert(
      fc.property(
        text,
        fc.nat({ max: 16 }),
        fc.maxSafeNat(),
        fc.nat({ max: 0xffff_ffff }),
        (s, offset, big, small) => {
          const b = Buffer.alloc(offset + 4 + 3 * s.length + 12, 0xee)
          const end = writeLpAt(b, offset, s)
          expect(b.subarray(offset, end).toString("hex")).toBe(Buffer.from(lp(s)).toString("hex"))
          const end64 = writeU64At(b, end, big)
          expect(b.subarray(end, end64).toString("hex")).toBe(Buffer.from(u64(big)).toString("hex"))
          const end32 = writeU32At(b, end64, small)
          expect(b.subarray(end64, end32).toString("hex")).toBe(Buffer.from(u32(small)).toString("hex"))
          // Nothing written before the offset.
          expect(b.subarray(0, offset).every((byte) => byte === 0xee)).toBe(true)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("PrefixViews gives one view per length of the current buffer, and views of the new one after reset", () => {
    const first = Buffer.from("abcdef")
    const views = new PrefixViews(first)
    expect(views.view(3).toString()).toBe("abc")
    expect(views.view(3)).toBe(views.view(3))
    first.write("xyz", 0)
    expect(views.view(3).toString()).toBe("xyz")
    views.reset(Buffer.from("123456"))
    expect(views.view(3).toString()).toBe("123")
    expect(views.view(6).toString()).toBe("123456")
  })
})

describe("internal/uuid", () => {
  it("uuidV7 carries the millisecond timestamp in its first 48 bits", () => {
    const id = uuidV7(0x0123456789ab)
    expect(id).toMatch(UUID_V7)
    expect(id.replace(/-/g, "").slice(0, 12)).toBe("0123456789ab")
  })

  it("ids sort in the order they were made: within one millisecond, across milliseconds, and when the clock steps back", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -3, max: 3 }), { minLength: 2, maxLength: 2_000 }), (steps) => {
        // A clock that mostly stands still (many ids per millisecond), sometimes moves on, sometimes steps back.
        let millis = 0x0200_0000_0000 + Math.floor(Math.random() * 1e9)
        const ids = steps.map((step) => {
          millis += step > 1 ? step : step < -2 ? -1 : 0
          return uuidV7(millis)
        })
        for (const id of ids) expect(id).toMatch(UUID_V7)
        expect([...ids].sort()).toEqual(ids)
        expect(new Set(ids).size).toBe(ids.length)
      }),
      { numRuns: 50 }
    )
  })

  it("999 ids made in one millisecond sort in creation order (the RFC 9562 monotonic counter)", () => {
    const millis = 0x0300_0000_0000
    const ids = Array.from({ length: 999 }, () => uuidV7(millis))
    expect([...ids].sort()).toEqual(ids)
    expect(ids.every((id) => id.replace(/-/g, "").startsWith("030000000000"))).toBe(true)
  })
})

describe("row format v1: the one-buffer encoder against the reference parts", () => {
  const text = fc.oneof(fc.string({ unit: "grapheme", maxLength: 40 }), fc.string({ minLength: 400, maxLength: 4000 }))
  const hash = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex"))
  const row = fc.record({
    sequence: fc.oneof(fc.nat(), fc.constantFrom(2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER)),
    prevHash: hash,
    id: text,
    agentId: text,
    eventType: text,
    payloadHash: hash,
    timestamp: text
  })

  it.prop("rowEntryHash is SHA-256 of the concatenated parts, whatever the sizes and their order", [
    fc.array(row, { minLength: 1, maxLength: 8 })
  ], ([rows]) => {
    for (const r of rows) expect(rowEntryHash(r)).toBe(sha256Hex(...rowHashInputParts(r)))
  })
})
