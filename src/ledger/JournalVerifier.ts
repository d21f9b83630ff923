/**
 * Verifies every session journal stored in the ledger's database (`journal_entries`, docs/FORMAT.md
 * "Journal entry row") against itself and the ledger's `session.sealed` rows: `JournalRow.checkSession` per
 * session, from the database alone. Part of `verifyLedger`; each broken entry is a failure naming its
 * session and sequence.
 *
 * Seal rows are read before the entries: a guard makes a seal only once the entries it seals are stored,
 * so on a database still being written every seal read has its entries there too.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, Schema } from "effect"
import { SESSION_SEALED_EVENT_TYPE } from "../audit/AuditEvent.js"
import { yieldToEventLoop } from "../internal/eventLoopScheduler.js"
import * as JournalRow from "./JournalRow.js"

/** What the journal check found. */
export const JournalsReport = Schema.Struct({
  /** Sessions with stored entries. */
  sessions: Schema.Number,
  entries: Schema.Number,
  /** Sealed sessions with no stored entry at all (sealed by a guard whose journals were in memory). */
  sealedWithoutEntries: Schema.Number,
  /** Calls whose `call` entry has no `outcome` entry (the guard stopped before they ended). */
  unfinishedCalls: Schema.Number
}).annotations({ identifier: "JournalsReport" })
export type JournalsReport = typeof JournalsReport.Type

export interface JournalsCheck {
  readonly report: JournalsReport
  readonly failures: ReadonlyArray<JournalRow.JournalFailure>
}

/** The seals of every session, from the `session.sealed` rows' payloads, in ledger order. */
const readSeals = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql<{ sequence: number | string; payload: string }>`
      SELECT sequence, payload FROM signed_events WHERE event_type = ${SESSION_SEALED_EVENT_TYPE} ORDER BY sequence`,
    (rows) => {
      const seals = new Map<string, Array<JournalRow.SessionSeal>>()
      for (const row of rows) {
        try {
          const seal = JSON.parse(row.payload).action.payload
          if (
            typeof seal.session_id !== "string" || !Number.isSafeInteger(seal.length) ||
            typeof seal.head_hash !== "string"
          ) continue
          const list = seals.get(seal.session_id) ?? []
          list.push({ ledgerSequence: Number(row.sequence), length: seal.length, headHash: seal.head_hash })
          seals.set(seal.session_id, list)
        } catch {
          // A payload that is not JSON fails the chain's own checks (its payload hash); it seals nothing.
        }
      }
      return seals
    }
  )

/** The seals of every session (`session.sealed` rows), in ledger order, read on the ledger's database. */
export const sealsBySession: Effect.Effect<
  ReadonlyMap<string, ReadonlyArray<JournalRow.SessionSeal>>,
  SqlError,
  SqlClient.SqlClient
> = Effect.flatMap(SqlClient.SqlClient, (sql) => readSeals(sql.withoutTransforms()))

/** Whether the database has the table (a ledger migrated before journals were stored has not). */
const hasTable = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql.onDialectOrElse({
      pg: () =>
        sql<
          { n: number }
        >`SELECT CAST(COUNT(*) AS INTEGER) AS n FROM information_schema.tables WHERE table_name = 'journal_entries'`,
      orElse: () =>
        sql<{ n: number }>`SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'journal_entries'`
    }),
    (rows) => Number(rows[0]?.n ?? 0) > 0
  )

/** Checks every stored session; `maxFailures` bounds the failures listed. */
export const verifyJournals = (
  maxFailures: number
): Effect.Effect<JournalsCheck, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const empty: JournalsCheck = {
      report: { sessions: 0, entries: 0, sealedWithoutEntries: 0, unfinishedCalls: 0 },
      failures: []
    }
    if (!(yield* hasTable(sql))) return empty
    const seals = yield* readSeals(sql)
    const sessions = (yield* sql<{ session_id: string }>`
      SELECT DISTINCT session_id FROM journal_entries ORDER BY session_id`).map((row) => row.session_id)
    const failures: Array<JournalRow.JournalFailure> = []
    let entries = 0
    let unfinished = 0
    for (const sessionId of sessions) {
      const raw = yield* sql`
        SELECT ${sql.literal(JournalRow.COLUMNS.join(", "))} FROM journal_entries
        WHERE session_id = ${sessionId} ORDER BY seq`
      const rows: Array<JournalRow.StoredRow> = []
      for (const [i, row] of raw.entries()) {
        const decoded = JournalRow.decodeStoredRow(row)
        if (Either.isLeft(decoded)) {
          failures.push({ sessionId, sequence: i, check: "row", detail: `malformed row: ${decoded.left.message}` })
          break
        }
        rows.push(decoded.right)
      }
      const checked = JournalRow.checkSession(sessionId, rows, seals.get(sessionId) ?? [])
      entries += rows.length
      unfinished += checked.unfinished
      for (const failure of checked.failures) if (failures.length < maxFailures) failures.push(failure)
      yield* yieldToEventLoop
    }
    const stored = new Set(sessions)
    const sealedWithoutEntries = Array.from(seals.keys()).filter((id) => !stored.has(id)).length
    return {
      report: { sessions: sessions.length, entries, sealedWithoutEntries, unfinishedCalls: unfinished },
      failures
    }
  })
