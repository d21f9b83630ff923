/**
 * Checking a session journal export against the ledger's `session.sealed` rows (docs/FORMAT.md, "Session
 * seal"): the export must verify on its own, and the ledger's last seal of its session must commit to a
 * prefix of it (its length and the hash of its last sealed entry). Then the journal cannot have been
 * rewritten after its seal without the signed, hash-chained ledger showing it.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option } from "effect"
import { SESSION_SEALED_EVENT_TYPE } from "../audit/AuditEvent.js"
import { ZERO_HASH } from "../internal/encoding.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import type * as SessionJournal from "./SessionJournal.js"

/** One `session.sealed` row. */
export interface SealRow {
  /** The row's ledger sequence. */
  readonly sequence: number
  readonly sessionId: string
  readonly length: number
  readonly headHash: string
}

/**
 * How an export compares with the ledger's last seal of its session:
 * - `sealed`: the export is exactly what was sealed
 * - `sealedPrefix`: its first `sealedLength` entries are what was sealed; later entries are not sealed yet
 * - `mismatch`: the seal does not match the export (rewritten, or cut below the sealed length)
 * - `unsealed`: the ledger has no seal of the session
 */
export interface SealCheck {
  readonly status: "sealed" | "sealedPrefix" | "mismatch" | "unsealed"
  readonly seal: Option.Option<SealRow>
  readonly detail: string
}

/** The `session.sealed` rows of `sessionId`, in ledger order. */
export const sealsOf = (sessionId: string): Effect.Effect<ReadonlyArray<SealRow>, SqlError, LedgerSql.LedgerSql> =>
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.map(
      client.withoutTransforms()<{ sequence: number; payload: string }>`
        SELECT sequence, payload FROM signed_events WHERE event_type = ${SESSION_SEALED_EVENT_TYPE}
        ORDER BY sequence`,
      (rows) =>
        rows.flatMap((row): ReadonlyArray<SealRow> => {
          try {
            const seal = JSON.parse(row.payload).action.payload
            return seal.session_id === sessionId && typeof seal.length === "number" &&
                typeof seal.head_hash === "string"
              ? [{ sequence: Number(row.sequence), sessionId, length: seal.length, headHash: seal.head_hash }]
              : []
          } catch {
            return []
          }
        })
    )).pipe(LedgerSql.use)

/** Compares a verified export with the last of its session's seals. */
export const check = (exported: SessionJournal.JournalExport, seals: ReadonlyArray<SealRow>): SealCheck => {
  const seal = seals[seals.length - 1]
  if (seal === undefined) {
    return {
      status: "unsealed",
      seal: Option.none(),
      detail: `the ledger has no seal of session ${exported.sessionId}`
    }
  }
  const entries = exported.entries
  const at = (n: number) => n === 0 ? ZERO_HASH : entries[n - 1]?.entryHash
  if (seal.length > entries.length) {
    return {
      status: "mismatch",
      seal: Option.some(seal),
      detail: `sealed with ${seal.length} entries at ledger sequence ${seal.sequence}; the export has ${entries.length}`
    }
  }
  if (at(seal.length) !== seal.headHash) {
    return {
      status: "mismatch",
      seal: Option.some(seal),
      detail: `entry ${seal.length - 1} is not the one sealed at ledger sequence ${seal.sequence} ` +
        `(sealed ${seal.headHash}, found ${at(seal.length)})`
    }
  }
  return seal.length === entries.length
    ? { status: "sealed", seal: Option.some(seal), detail: `sealed at ledger sequence ${seal.sequence}` }
    : {
      status: "sealedPrefix",
      seal: Option.some(seal),
      detail: `the first ${seal.length} of ${entries.length} entries are sealed (ledger sequence ${seal.sequence}); ` +
        `the rest are not sealed yet`
    }
}
