/**
 * Ledger row format v1 (docs/FORMAT.md, "Ledger row v1"): how a `signed_events` row's `entry_hash` is
 * computed. The sink that writes rows and the verifier that checks them both call `rowEntryHash`, so the
 * two can never drift apart.
 *
 * The input is written into one reused buffer and hashed in one call (the sink and the verifier hash every
 * row); `rowHashInputParts` is the same encoding field by field, the reference the tests compare it with.
 */
import { digestBytes, digestHex, hashBytes, lp, PrefixViews, u64, writeLpAt, writeU64At } from "./encoding.js"

export const ROW_DOMAIN = "agent-ledger/signed-event/v1"

export interface RowHashInput {
  readonly sequence: number
  /** 64 lowercase hex chars */
  readonly prevHash: string
  readonly id: string
  readonly agentId: string
  readonly eventType: string
  /** 64 lowercase hex chars: SHA-256 of the row's payload text */
  readonly payloadHash: string
  /** RFC 3339, exactly as stored in the row */
  readonly timestamp: string
}

/** The v1 input as its parts, in order: the reference encoding. */
export const rowHashInputParts = (row: RowHashInput): ReadonlyArray<Uint8Array> => [
  lp(ROW_DOMAIN),
  u64(row.sequence),
  hashBytes(row.prevHash),
  lp(row.id),
  lp(row.agentId),
  lp(row.eventType),
  hashBytes(row.payloadHash),
  lp(row.timestamp)
]

const DOMAIN = lp(ROW_DOMAIN)
// Reused by every call: the callers are synchronous, so no two encodings can overlap.
let buffer = Buffer.allocUnsafe(1024)
buffer.set(DOMAIN, 0)
const views = new PrefixViews(buffer)

/**
 * The v1 hash input of `row`, encoded into the reused buffer: a view that is valid only until the next
 * call. Byte for byte `rowHashInputParts` concatenated.
 */
const encodeRowHashInput = (row: RowHashInput): Uint8Array => {
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  const needed = DOMAIN.length + 8 + 32 + 16 + 32 +
    3 * (row.id.length + row.agentId.length + row.eventType.length + row.timestamp.length)
  if (needed > buffer.length) {
    buffer = Buffer.allocUnsafe(Math.max(needed, 2 * buffer.length))
    buffer.set(DOMAIN, 0)
    views.reset(buffer)
  }
  let at = writeU64At(buffer, DOMAIN.length, row.sequence)
  at += buffer.write(row.prevHash, at, 32, "hex")
  at = writeLpAt(buffer, at, row.id)
  at = writeLpAt(buffer, at, row.agentId)
  at = writeLpAt(buffer, at, row.eventType)
  at += buffer.write(row.payloadHash, at, 32, "hex")
  at = writeLpAt(buffer, at, row.timestamp)
  return views.view(at)
}

/** The 32 raw bytes of `entry_hash` (what an Ed25519 signature covers). */
export const rowEntryHashBytes = (row: RowHashInput): Buffer => digestBytes(encodeRowHashInput(row))

/** `entry_hash` as 64 lowercase hex chars. */
export const rowEntryHash = (row: RowHashInput): string => digestHex(encodeRowHashInput(row))

/** A ledger row's hashed columns, as stored (`signed_events`) and exported. */
export interface StoredRowColumns {
  readonly sequence: number
  readonly prev_hash: string
  readonly id: string
  readonly agent_id: string
  readonly event_type: string
  readonly payload_hash: string
  readonly timestamp: string
}

/** `entry_hash` recomputed from a stored row's columns. */
export const storedRowEntryHash = (row: StoredRowColumns): string =>
  rowEntryHash({
    sequence: row.sequence,
    prevHash: row.prev_hash,
    id: row.id,
    agentId: row.agent_id,
    eventType: row.event_type,
    payloadHash: row.payload_hash,
    timestamp: row.timestamp
  })
