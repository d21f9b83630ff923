/**
 * The bytes of a session journal entry's hash input (docs/FORMAT.md, "Entry hash"), read back: a journal
 * entry row (`journal_entries.body`) stores exactly these bytes, so `entry_hash = SHA-256(body)` and every
 * column a query reads is checked against what `decodeEntryBody` finds in them. The writer is
 * `SessionJournal`'s encoder; this is the reader, shared by the ledger's verifier and receipts.
 *
 * Input is hostile: every length is bounds-checked, nothing recurses, and a body with bytes after its last
 * field is refused (two bodies must not decode to the same entry).
 */

/** The domain strings that open v1 and v2 hash inputs. */
export const ENTRY_DOMAIN_V1 = "agent-ledger/journal-entry/v1"
export const ENTRY_DOMAIN_V2 = "agent-ledger/journal-entry/v2"

/** Kind codes of v2 entries, by byte. */
export const KIND_NAMES = ["", "call", "outcome"] as const

/** Outcome codes of v2 entries, by byte. */
export const OUTCOME_NAMES = [
  "pending",
  "refused",
  "result",
  "errorAnswer",
  "timedOut",
  "upstreamGone",
  "interrupted"
] as const

/** An entry's fields, as its hash input holds them. */
export interface DecodedEntry {
  readonly version: 1 | 2
  readonly sessionId: string
  readonly sequence: number
  readonly prevHash: string
  readonly timestampMillis: number
  readonly toolName: string
  readonly serverId: string
  readonly agentId: string
  readonly bytesRead: number
  readonly bytesWritten: number
  readonly delegationDepth: number
  readonly allowed: boolean
  /** v1 entries are `call`s recorded whole. */
  readonly kind: "call" | "outcome"
  /** v1 entries: `refused` or `result`, as their `allowed` says. */
  readonly outcome: typeof OUTCOME_NAMES[number]
  readonly callSequence: number
}

class Truncated extends Error {}

const TWO_32 = 0x1_0000_0000

/** The entry in `body`, or why `body` is not one entry's hash input. */
export const decodeEntryBody = (body: Uint8Array): DecodedEntry | string => {
  const b = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  let at = 0
  const need = (n: number) => {
    if (at + n > b.length) throw new Truncated(`the body ends at byte ${b.length}, inside a field at byte ${at}`)
  }
  const u8 = () => {
    need(1)
    return b[at++]!
  }
  const u32 = () => {
    need(4)
    const n = b.readUInt32BE(at)
    at += 4
    return n
  }
  const u64 = () => {
    need(8)
    const high = b.readUInt32BE(at)
    const low = b.readUInt32BE(at + 4)
    at += 8
    if (high >= 0x20_0000) throw new Truncated(`a u64 at byte ${at - 8} is larger than a safe integer`)
    return high * TWO_32 + low
  }
  const text = () => {
    const length = u32()
    need(length)
    const bytes = b.subarray(at, at + length)
    at += length
    const s = bytes.toString("utf8")
    // Not UTF-8 (a replacement character that was not in the bytes): the text would not hash back.
    if (Buffer.byteLength(s, "utf8") !== length || !Buffer.from(s, "utf8").equals(bytes)) {
      throw new Truncated(`the string at byte ${at - length} is not valid UTF-8`)
    }
    return s
  }
  try {
    const domain = text()
    const version = domain === ENTRY_DOMAIN_V2 ? 2 : domain === ENTRY_DOMAIN_V1 ? 1 : undefined
    if (version === undefined) return `unknown domain ${JSON.stringify(domain.slice(0, 64))}`
    const sessionId = text()
    const sequence = u64()
    need(32)
    const prevHash = b.toString("hex", at, at + 32)
    at += 32
    const timestampMillis = u64()
    const toolName = text()
    const serverId = text()
    const agentId = text()
    const bytesRead = u64()
    const bytesWritten = u64()
    const delegationDepth = u32()
    const allowedByte = u8()
    if (allowedByte > 1) return `allowed byte ${allowedByte} is neither 0 nor 1`
    const allowed = allowedByte === 1
    let kind: DecodedEntry["kind"] = "call"
    let outcome: DecodedEntry["outcome"] = allowed ? "result" : "refused"
    let callSequence = sequence
    if (version === 2) {
      const kindByte = u8()
      const outcomeByte = u8()
      callSequence = u64()
      if (kindByte !== 1 && kindByte !== 2) return `unknown kind code ${kindByte}`
      if (outcomeByte >= OUTCOME_NAMES.length) return `unknown outcome code ${outcomeByte}`
      kind = KIND_NAMES[kindByte] as DecodedEntry["kind"]
      outcome = OUTCOME_NAMES[outcomeByte]!
    }
    if (at !== b.length) return `${b.length - at} bytes after the last field`
    return {
      version,
      sessionId,
      sequence,
      prevHash,
      timestampMillis,
      toolName,
      serverId,
      agentId,
      bytesRead,
      bytesWritten,
      delegationDepth,
      allowed,
      kind,
      outcome,
      callSequence
    }
  } catch (error) {
    if (error instanceof Truncated) return error.message
    throw error
  }
}
