/**
 * Ledger row format v1 (docs/FORMAT.md, "Ledger row v1"): how a `signed_events` row's `entry_hash` is
 * computed. The sink that writes rows and the verifier that checks them both call `rowEntryHash`, so the
 * two can never drift apart.
 */
import { hashBytes, lp, sha256Bytes, u64 } from "./encoding.js"

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

/** The 32 raw bytes of `entry_hash` (what an Ed25519 signature covers). */
export const rowEntryHashBytes = (row: RowHashInput): Buffer =>
  sha256Bytes(
    lp(ROW_DOMAIN),
    u64(row.sequence),
    hashBytes(row.prevHash),
    lp(row.id),
    lp(row.agentId),
    lp(row.eventType),
    hashBytes(row.payloadHash),
    lp(row.timestamp)
  )

/** `entry_hash` as 64 lowercase hex chars. */
export const rowEntryHash = (row: RowHashInput): string => rowEntryHashBytes(row).toString("hex")
