/**
 * Byte encodings shared by the hash formats in docs/FORMAT.md: length-prefixed strings, fixed-width
 * big-endian integers, SHA-256 and lowercase hex. Every hashed format is built from these pieces only,
 * so a third party can re-implement them from the spec.
 */
import * as crypto from "node:crypto"

/** 64 lowercase hex zeros: the prevHash of the first entry/row and the head of an empty chain. */
export const ZERO_HASH = "0".repeat(64)

const HEX_64 = /^[0-9a-f]{64}$/

/** True for a 64-char lowercase hex string (a SHA-256 digest as shown everywhere in agent-ledger). */
export const isHash = (s: string): boolean => HEX_64.test(s)

/** `u32 big-endian byte length of UTF-8(s) || UTF-8(s)`. */
export const lp = (s: string): Uint8Array => {
  const body = Buffer.from(s, "utf8")
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
}

/** 8-byte big-endian unsigned; callers pass non-negative safe integers. */
export const u64 = (n: number): Uint8Array => {
  const out = Buffer.allocUnsafe(8)
  out.writeBigUInt64BE(BigInt(n), 0)
  return out
}

/** 4-byte big-endian unsigned. */
export const u32 = (n: number): Uint8Array => {
  const out = Buffer.allocUnsafe(4)
  out.writeUInt32BE(n, 0)
  return out
}

/** One byte. */
export const u8 = (n: number): Uint8Array => Uint8Array.of(n)

/** The 32 raw bytes of a 64-char hex digest. */
export const hashBytes = (hex: string): Uint8Array => Buffer.from(hex, "hex")

/** SHA-256 over the concatenation of `parts`, as 64 lowercase hex chars. */
export const sha256Hex = (...parts: ReadonlyArray<Uint8Array | string>): string => {
  const h = crypto.createHash("sha256")
  for (const p of parts) h.update(p)
  return h.digest("hex")
}

/** SHA-256 over the concatenation of `parts`, as 32 raw bytes. */
export const sha256Bytes = (...parts: ReadonlyArray<Uint8Array | string>): Buffer => {
  const h = crypto.createHash("sha256")
  for (const p of parts) h.update(p)
  return h.digest()
}

/**
 * One-shot SHA-256 of one message (strings as UTF-8), as 32 raw bytes: `crypto.hash` where node has it
 * (20.12+; no Hash object per call), else the classic API. For the per-row and per-entry hot paths.
 */
export const digestBytes: (data: Uint8Array | string) => Buffer = typeof crypto.hash === "function"
  ? (data) => crypto.hash("sha256", data, "buffer")
  : (data) => crypto.createHash("sha256").update(data).digest()

/** `digestBytes` as 64 lowercase hex chars: cheaper than a new Buffer where the hex is what is needed. */
export const digestHex: (data: Uint8Array | string) => string = typeof crypto.hash === "function"
  ? (data) => crypto.hash("sha256", data, "hex")
  : (data) => crypto.createHash("sha256").update(data).digest("hex")
