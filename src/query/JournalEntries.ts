/**
 * Stored session journal entries (`journal_entries`, docs/FORMAT.md "Journal entry row") as the operator
 * queries read them: pages of calls in time order by the indexed columns, the outcome that ended each
 * pending call, and per-session aggregates. Counts and bytes come from each row's `body` (the hashed entry),
 * not from a column a query could trust blindly; a body that does not decode is reported, never thrown.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Fragment } from "@effect/sql/Statement"
import { Effect, Option } from "effect"
import { decodeEntryBody } from "../internal/journalEntryFormat.js"

/** Where a journal row sits in the log's time order: `(timestamp_ms, session_id, seq)`. */
export interface Key {
  readonly ms: number
  readonly session: string
  readonly seq: number
}

/** A stored `call` entry, with what ended it when it was pending. */
export interface Call {
  readonly key: Key
  readonly agentId: string
  readonly serverId: string
  readonly toolName: string
  /** The entry's own outcome, or the outcome entry's that ended it; `pending` when none has (unfinished). */
  readonly outcome: string
  readonly bytesRead: number
  readonly bytesWritten: number
  /** Why the sizes are missing: the body does not decode. */
  readonly problem: string | null
}

/** Whether the database has the table (a ledger from before stored journals, opened read-only, has not). */
export const tableExists: Effect.Effect<boolean, never, SqlClient.SqlClient> = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql`SELECT 1 FROM journal_entries WHERE 1 = 0`.pipe(Effect.as(true), Effect.orElseSucceed(() => false))
)

/** The last row's key in time order. */
export const lastKey: Effect.Effect<Option.Option<Key>, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const [row] = yield* sql<Record<string, unknown>>`
    SELECT timestamp_ms, session_id, seq FROM journal_entries
    ORDER BY timestamp_ms DESC, session_id DESC, seq DESC LIMIT 1`
  return row === undefined
    ? Option.none()
    : Option.some({ ms: Number(row.timestamp_ms), session: String(row.session_id), seq: Number(row.seq) })
})

/** What narrows the journal's calls: plain columns, compared exactly (NUL never reaches PostgreSQL). */
export interface Filter {
  readonly agent?: string | undefined
  readonly tool?: string | undefined
  readonly session?: string | undefined
  readonly sinceMs?: number | undefined
  readonly untilMs?: number | undefined
}

const textIs = (sql: SqlClient.SqlClient, column: string, value: string): Fragment =>
  sql.onDialectOrElse({
    pg: () => value.includes("\u0000") ? sql`1 = 0` : sql`${sql(column)} = ${value}`,
    orElse: () => sql`${sql(column)} = ${value}`
  })

/**
 * Up to `limit` allowed calls (refused ones are the ledger's refusal rows) after (`asc`) or before (`desc`)
 * `from` in time order, each with the outcome that ended it.
 */
export const callsPage = (
  filter: Filter,
  from: Option.Option<Key>,
  order: "asc" | "desc",
  limit: number
): Effect.Effect<ReadonlyArray<Call>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const where: Array<Fragment> = [sql`kind = 'call'`, sql`outcome <> 'refused'`]
    if (filter.agent !== undefined) where.push(textIs(sql, "agent_id", filter.agent))
    if (filter.tool !== undefined) where.push(textIs(sql, "tool_name", filter.tool))
    if (filter.session !== undefined) where.push(textIs(sql, "session_id", filter.session))
    if (filter.sinceMs !== undefined) where.push(sql`timestamp_ms >= ${filter.sinceMs}`)
    if (filter.untilMs !== undefined) where.push(sql`timestamp_ms <= ${filter.untilMs}`)
    if (Option.isSome(from)) {
      const { ms, seq, session } = from.value
      where.push(
        order === "asc"
          ? sql`(timestamp_ms > ${ms} OR (timestamp_ms = ${ms} AND (session_id > ${session} OR (session_id = ${session} AND seq > ${seq}))))`
          : sql`(timestamp_ms < ${ms} OR (timestamp_ms = ${ms} AND (session_id < ${session} OR (session_id = ${session} AND seq < ${seq}))))`
      )
    }
    const direction = sql.literal(order === "asc" ? "ASC" : "DESC")
    const rows = yield* sql<Record<string, unknown>>`
      SELECT session_id, seq, outcome, agent_id, server_id, tool_name, timestamp_ms, body FROM journal_entries
      WHERE ${sql.and(where)}
      ORDER BY timestamp_ms ${direction}, session_id ${direction}, seq ${direction} LIMIT ${limit}`
    const ended = yield* outcomesOf(rows.filter((row) => row.outcome === "pending"))
    return rows.map((row): Call => {
      const session = String(row.session_id)
      const seq = Number(row.seq)
      const body = decodeEntryBody(toBytes(row.body))
      const end = ended.get(`${seq}\u0000${session}`)
      return {
        key: { ms: Number(row.timestamp_ms), session, seq },
        agentId: String(row.agent_id),
        serverId: String(row.server_id),
        toolName: String(row.tool_name),
        outcome: end?.outcome ?? String(row.outcome),
        bytesRead: (typeof body === "string" ? 0 : body.bytesRead) + (end?.bytesRead ?? 0),
        bytesWritten: typeof body === "string" ? 0 : body.bytesWritten,
        problem: typeof body === "string" ? `the entry's body does not decode: ${body}` : end?.problem ?? null
      }
    })
  })

const toBytes = (value: unknown): Uint8Array =>
  value instanceof Uint8Array ? value : typeof value === "string" ? Buffer.from(value, "hex") : new Uint8Array()

/** The outcome entries that ended `calls`, by `seq NUL session`. */
const outcomesOf = (calls: ReadonlyArray<Record<string, unknown>>) =>
  Effect.gen(function*() {
    const ended = new Map<string, { outcome: string; bytesRead: number; problem: string | null }>()
    if (calls.length === 0) return ended
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const sessions = Array.from(new Set(calls.map((row) => String(row.session_id))))
    const sequences = Array.from(new Set(calls.map((row) => Number(row.seq))))
    const rows = yield* sql<Record<string, unknown>>`
      SELECT session_id, call_seq, outcome, body FROM journal_entries
      WHERE kind = 'outcome' AND ${sql.in("session_id", sessions)} AND ${sql.in("call_seq", sequences)}`
    for (const row of rows) {
      const body = decodeEntryBody(toBytes(row.body))
      ended.set(`${Number(row.call_seq)}\u0000${String(row.session_id)}`, {
        outcome: String(row.outcome),
        bytesRead: typeof body === "string" ? 0 : body.bytesRead,
        problem: typeof body === "string" ? `the outcome entry's body does not decode: ${body}` : null
      })
    }
    return ended
  })

/** One session's stored totals. */
export interface SessionTotals {
  readonly sessionId: string
  readonly agentId: string
  readonly firstMs: number
  readonly lastMs: number
  readonly calls: number
  readonly refusals: number
}

/** Every stored session's calls, refusals and time span (optionally one agent's, or one session). */
export const sessionTotals = (
  agent: string | undefined,
  only?: string
): Effect.Effect<ReadonlyArray<SessionTotals>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const where: Array<Fragment> = []
    if (agent !== undefined) where.push(textIs(sql, "agent_id", agent))
    if (only !== undefined) where.push(textIs(sql, "session_id", only))
    const rows = yield* sql<Record<string, unknown>>`
      SELECT session_id, MIN(agent_id) AS agent_id, MIN(timestamp_ms) AS first_ms, MAX(timestamp_ms) AS last_ms,
             SUM(CASE WHEN kind = 'call' THEN 1 ELSE 0 END) AS calls,
             SUM(CASE WHEN outcome = 'refused' THEN 1 ELSE 0 END) AS refusals
      FROM journal_entries WHERE ${sql.and(where)} GROUP BY session_id`
    return rows.map((row) => ({
      sessionId: String(row.session_id),
      agentId: String(row.agent_id),
      firstMs: Number(row.first_ms),
      lastMs: Number(row.last_ms),
      calls: Number(row.calls),
      refusals: Number(row.refusals)
    }))
  })

/** A stored entry of one session, decoded for the session view. */
export interface SessionEntry {
  readonly sessionId: string
  readonly seq: number
  readonly kind: string
  readonly outcome: string
  readonly callSeq: number
  readonly agentId: string
  readonly serverId: string
  readonly toolName: string
  readonly ms: number
  readonly bytesRead: number
  readonly bytesWritten: number
  readonly problem: string | null
}

/** The first `limit` stored entries of `sessionId`, in journal order. */
export const sessionEntries = (
  sessionId: string,
  limit: number
): Effect.Effect<ReadonlyArray<SessionEntry>, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    if (sessionId.includes("\u0000")) return []
    const rows = yield* sql<Record<string, unknown>>`
      SELECT seq, kind, outcome, call_seq, agent_id, server_id, tool_name, timestamp_ms, body FROM journal_entries
      WHERE session_id = ${sessionId} ORDER BY seq LIMIT ${limit}`
    return rows.map((row) => {
      const body = decodeEntryBody(toBytes(row.body))
      return {
        sessionId,
        seq: Number(row.seq),
        kind: String(row.kind),
        outcome: String(row.outcome),
        callSeq: Number(row.call_seq),
        agentId: String(row.agent_id),
        serverId: String(row.server_id),
        toolName: String(row.tool_name),
        ms: Number(row.timestamp_ms),
        bytesRead: typeof body === "string" ? 0 : body.bytesRead,
        bytesWritten: typeof body === "string" ? 0 : body.bytesWritten,
        problem: typeof body === "string" ? `the entry's body does not decode: ${body}` : null
      }
    })
  })
