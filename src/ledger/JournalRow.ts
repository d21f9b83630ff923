/**
 * One row of the `journal_entries` table (docs/FORMAT.md, "Journal entry row"): a session journal entry
 * made durable in the ledger's database. `body` is the entry's hash input byte for byte, so the row
 * verifies from what is stored (`entry_hash = SHA-256(body)`); the other columns are copies of fields of
 * `body` for queries, and `checkSession` holds every one of them to the body. `intent` (what the call
 * asked for, as the policy's `argumentStorage` lets the ledger keep it) is not covered by the entry hash.
 */
import { Schema } from "effect"
import { digestHex, ZERO_HASH } from "../internal/encoding.js"
import type { DecodedEntry } from "../internal/journalEntryFormat.js"
import { decodeEntryBody } from "../internal/journalEntryFormat.js"

/** An entry as the journal hands it to the store (the columns but `written_at`). */
export interface JournalRow {
  readonly sessionId: string
  readonly sequence: number
  readonly kind: "call" | "outcome"
  readonly outcome: DecodedEntry["outcome"]
  readonly callSequence: number
  readonly agentId: string
  readonly serverId: string
  readonly toolName: string
  readonly timestampMillis: number
  readonly prevHash: string
  readonly entryHash: string
  /** The entry's hash input (docs/FORMAT.md, "Entry hash"). */
  readonly body: Uint8Array
  /** Canonical JSON of what the call asked for (tool arguments as the policy stores them), or null. */
  readonly intent: string | null
}

/** The table's columns in insert order. */
export const COLUMNS = [
  "session_id",
  "seq",
  "kind",
  "outcome",
  "call_seq",
  "agent_id",
  "server_id",
  "tool_name",
  "timestamp_ms",
  "prev_hash",
  "entry_hash",
  "body",
  "intent",
  "written_at"
] as const

/** The row's column values, `COLUMNS` order. */
export const toParams = (row: JournalRow, writtenAt: string): ReadonlyArray<string | number | Uint8Array | null> => [
  row.sessionId,
  row.sequence,
  row.kind,
  row.outcome,
  row.callSequence,
  row.agentId,
  row.serverId,
  row.toolName,
  row.timestampMillis,
  row.prevHash,
  row.entryHash,
  row.body,
  row.intent,
  writtenAt
]

/**
 * A stored row as read back. Integers may arrive as strings (PostgreSQL's BIGINT) and `body` as any byte
 * array; decoding makes them numbers and a `Uint8Array`.
 */
export const StoredRow = Schema.Struct({
  session_id: Schema.String,
  seq: Schema.Union(Schema.Number, Schema.NumberFromString),
  kind: Schema.String,
  outcome: Schema.String,
  call_seq: Schema.Union(Schema.Number, Schema.NumberFromString),
  agent_id: Schema.String,
  server_id: Schema.String,
  tool_name: Schema.String,
  timestamp_ms: Schema.Union(Schema.Number, Schema.NumberFromString),
  prev_hash: Schema.String,
  entry_hash: Schema.String,
  body: Schema.Uint8ArrayFromSelf,
  intent: Schema.NullOr(Schema.String),
  written_at: Schema.String
}).annotations({ identifier: "JournalEntryRow" })
export type StoredRow = typeof StoredRow.Type

export const decodeStoredRow = Schema.decodeUnknownEither(StoredRow)

/** A broken entry of a stored journal: the session, the sequence and the check it fails. */
export interface JournalFailure {
  readonly sessionId: string
  readonly sequence: number
  readonly check:
    | "row"
    | "body"
    | "entryHash"
    | "column"
    | "sequence"
    | "prevHash"
    | "outcome"
    | "seal"
  readonly detail: string
}

/** A seal of the session as the ledger's `session.sealed` row commits to it. */
export interface SessionSeal {
  readonly ledgerSequence: number
  readonly length: number
  readonly headHash: string
}

/** What `checkSession` found of one session. */
export interface SessionCheck {
  readonly entries: number
  readonly headHash: string
  /** Allowed calls with no `outcome` entry (the guard stopped, or was killed, before they ended). */
  readonly unfinished: number
  readonly failures: ReadonlyArray<JournalFailure>
}

const COLUMN_FIELDS = [
  ["kind", "kind"],
  ["outcome", "outcome"],
  ["call_seq", "callSequence"],
  ["agent_id", "agentId"],
  ["server_id", "serverId"],
  ["tool_name", "toolName"],
  ["timestamp_ms", "timestampMillis"],
  ["prev_hash", "prevHash"]
] as const

/**
 * Verifies one session's stored journal, rows in `seq` order: each body hashes to its `entry_hash`, names
 * this session and its own position, links to the previous entry's hash (the zero hash first), agrees with
 * every query column; positions run from 0 without a gap; every `outcome` entry ends a pending call of the
 * session once; and every seal of the session commits to a prefix of the chain (its length and the hash of
 * its last entry). Failures name the session and the entry's sequence (a seal's: its sealed length − 1).
 * Stops at the first broken link: what follows no longer chains to anything verified.
 */
export const checkSession = (
  sessionId: string,
  rows: ReadonlyArray<StoredRow>,
  seals: ReadonlyArray<SessionSeal>
): SessionCheck => {
  const failures: Array<JournalFailure> = []
  const fail = (sequence: number, check: JournalFailure["check"], detail: string) =>
    failures.push({ sessionId, sequence, check, detail })
  const hashes: Array<string> = []
  const pending = new Map<number, DecodedEntry>()
  let previous = ZERO_HASH
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!
    const sequence = Number(row.seq)
    if (sequence !== i) {
      fail(i, "sequence", `expected entry ${i}, found ${sequence} (entries missing)`)
      break
    }
    const actual = digestHex(row.body)
    if (actual !== row.entry_hash) {
      fail(i, "entryHash", `SHA-256 of the body is ${actual}, entry_hash is ${row.entry_hash}`)
      break
    }
    const entry = decodeEntryBody(row.body)
    if (typeof entry === "string") {
      fail(i, "body", entry)
      break
    }
    if (entry.sessionId !== sessionId || entry.sequence !== i) {
      fail(i, "body", `the body is entry ${entry.sequence} of session ${JSON.stringify(entry.sessionId)}`)
      break
    }
    if (entry.prevHash !== previous) {
      fail(i, "prevHash", `the body links to ${entry.prevHash}, the previous entry is ${previous}`)
      break
    }
    const mismatch = COLUMN_FIELDS.find(([column, field]) => String(row[column]) !== String(entry[field]))
    if (mismatch !== undefined) {
      fail(i, "column", `${mismatch[0]} is ${String(row[mismatch[0]])}, the body says ${String(entry[mismatch[1]])}`)
    }
    if (entry.version === 2) {
      if (entry.kind === "call") {
        if (entry.callSequence !== i) fail(i, "outcome", `a call entry names call ${entry.callSequence}`)
        if (entry.outcome === "pending") pending.set(i, entry)
        if (entry.allowed === (entry.outcome === "refused")) {
          fail(i, "outcome", `an ${entry.allowed ? "allowed" : "refused"} call entry is ${entry.outcome}`)
        }
      } else {
        const call = pending.get(entry.callSequence)
        pending.delete(entry.callSequence)
        if (call === undefined) {
          fail(i, "outcome", `ends call ${entry.callSequence}, which is not a pending call of the session`)
        } else if (entry.outcome === "pending" || entry.outcome === "refused" || !entry.allowed) {
          fail(i, "outcome", `an outcome entry cannot be ${entry.allowed ? entry.outcome : "refused"}`)
        } else if (
          call.toolName !== entry.toolName || call.serverId !== entry.serverId || call.agentId !== entry.agentId ||
          call.delegationDepth !== entry.delegationDepth
        ) {
          fail(i, "outcome", `ends call ${entry.callSequence} of ${call.toolName} as ${entry.toolName}`)
        }
      }
    }
    previous = row.entry_hash
    hashes.push(row.entry_hash)
  }
  for (const seal of seals) {
    const at = seal.length === 0 ? ZERO_HASH : hashes[seal.length - 1]
    if (at === undefined) {
      fail(
        Math.max(0, seal.length - 1),
        "seal",
        `sealed with ${seal.length} entries at ledger sequence ${seal.ledgerSequence}; ${hashes.length} verify`
      )
    } else if (at !== seal.headHash) {
      fail(
        seal.length - 1,
        "seal",
        `entry ${
          seal.length - 1
        } is not the one sealed at ledger sequence ${seal.ledgerSequence} (sealed ${seal.headHash}, found ${at})`
      )
    }
  }
  return { entries: rows.length, headHash: previous, unfinished: pending.size, failures }
}
