/**
 * One row of the `signed_events` ledger table (docs/FORMAT.md, "Ledger row v1"), field for field as the
 * columns are named. It is also one line of the ledger's JSONL export, so it decodes from `unknown` at
 * both boundaries, with errors that name the bad field.
 *
 * The schema checks types and the closed sets (`attest_level`), not hashes or signatures: a row whose
 * hash fields were tampered with must still decode, so that `LedgerVerifier` can say which check it fails
 * and at which sequence. Hash-bearing fields stay text, exactly as stored (the hash covers the stored text
 * of `timestamp`, so it is not parsed into a date).
 */
import { Schema } from "effect"

/** `"unsigned"`: no signature and no key_id. `"ed25519"`: both present. */
export const AttestLevel = Schema.Literal("unsigned", "ed25519").annotations({ identifier: "AttestLevel" })
export type AttestLevel = typeof AttestLevel.Type

export const LedgerRow = Schema.Struct({
  /** The event id (UUID v7). */
  id: Schema.String,
  sequence: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  agent_id: Schema.String,
  event_type: Schema.String,
  /** The canonical JSON payload text (docs/FORMAT.md, "Refusal payload"). */
  payload: Schema.String,
  /** SHA-256 of the UTF-8 payload text, 64 lowercase hex chars. */
  payload_hash: Schema.String,
  /** The previous row's entry_hash; 64 zeros for sequence 0. */
  prev_hash: Schema.String,
  entry_hash: Schema.String,
  /** Ed25519 signature over the 32 raw bytes of entry_hash, 128 lowercase hex chars; null when unsigned. */
  signature: Schema.NullOr(Schema.String),
  /** 16 lowercase hex chars naming the signing key; null when unsigned. */
  key_id: Schema.NullOr(Schema.String),
  attest_level: AttestLevel,
  /** RFC 3339, exactly the text that entry_hash covers. */
  timestamp: Schema.String,
  /** When the sink appended the row (RFC 3339). Informational: not covered by entry_hash. */
  appended_at: Schema.String
}).annotations({ identifier: "LedgerRow" })

export type LedgerRow = typeof LedgerRow.Type

/**
 * Decodes a row from a database result or a parsed JSONL line; the ParseError names the bad field. A
 * field the format does not have is an error too: it would carry data no hash covers.
 */
export const decodeUnknown = Schema.decodeUnknown(LedgerRow, { onExcessProperty: "error" })

/** `decodeUnknown` as an Either, for synchronous row sources. */
export const decodeUnknownEither = Schema.decodeUnknownEither(LedgerRow, { onExcessProperty: "error" })

/** The column names in schema order, for `SELECT` lists. */
export const COLUMNS: ReadonlyArray<keyof LedgerRow> = [
  "id",
  "sequence",
  "agent_id",
  "event_type",
  "payload",
  "payload_hash",
  "prev_hash",
  "entry_hash",
  "signature",
  "key_id",
  "attest_level",
  "timestamp",
  "appended_at"
]
