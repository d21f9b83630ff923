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

const TWO_32 = 0x1_0000_0000

/**
 * Writes `u64(n)` (a non-negative safe integer) into `b` at `at`; returns the end. Byte for byte `u64`,
 * without BigInt or a buffer of its own: for encoders that fill one reused buffer.
 */
export const writeU64At = (b: Uint8Array, at: number, n: number): number => {
  const high = Math.floor(n / TWO_32)
  const low = n >>> 0
  b[at] = high >>> 24
  b[at + 1] = high >>> 16
  b[at + 2] = high >>> 8
  b[at + 3] = high
  b[at + 4] = low >>> 24
  b[at + 5] = low >>> 16
  b[at + 6] = low >>> 8
  b[at + 7] = low
  return at + 8
}

/** Writes `u32(n)` into `b` at `at`; returns the end. */
export const writeU32At = (b: Uint8Array, at: number, n: number): number => {
  b[at] = n >>> 24
  b[at + 1] = n >>> 16
  b[at + 2] = n >>> 8
  b[at + 3] = n
  return at + 4
}

/** Strings up to this many code units are tried as ASCII in JS before the native UTF-8 encoder. */
const ASCII_FAST_PATH = 128

/**
 * Writes `lp(s)` into `b` at `at` (which has room for 4 + 3 bytes per code unit); returns the end. Byte for
 * byte `lp`: a short ASCII string (tool names, server and agent ids, timestamps, uuids) is copied in JS,
 * which costs a fraction of a call into the native encoder; anything else goes through it.
 */
export const writeLpAt = (b: Buffer, at: number, s: string): number => {
  const length = s.length
  if (length <= ASCII_FAST_PATH) {
    const start = at + 4
    let i = 0
    for (; i < length; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) break
      b[start + i] = c
    }
    if (i === length) return writeU32At(b, at, length) + length
  }
  const written = b.write(s, at + 4, "utf8")
  writeU32At(b, at, written)
  return at + 4 + written
}

/**
 * Views `[0, length)` of one reused buffer, one per length, made once: hashing the input of an encoder
 * that reuses its buffer then allocates no view per call. Forget them (`reset`) when the buffer is replaced.
 */
export class PrefixViews {
  #buffer: Buffer
  #views: Array<Buffer | undefined> = []
  constructor(buffer: Buffer) {
    this.#buffer = buffer
  }

  view(length: number): Buffer {
    let view = this.#views[length]
    if (view === undefined) {
      view = this.#buffer.subarray(0, length)
      this.#views[length] = view
    }
    return view
  }

  reset(buffer: Buffer): void {
    this.#buffer = buffer
    this.#views = []
  }
}
