/**
 * What the console reads from a ledger database, each figure in one SQL query that aggregates (`COUNT`,
 * `GROUP BY`) or pages (keyset on `sequence`, a bounded `LIMIT`), so a page costs one round of small
 * queries whatever the ledger's size. Read only: nothing here writes, and the figures are the ones
 * `agent-ledger stats --json` computes row by row, so an auditor can re-check any of them with the CLI.
 *
 * The refusal's rule is read out of its payload (`decision.ruleId`): with SQLite's JSON functions, with a
 * regular expression on PostgreSQL (below); a payload that is not JSON counts as rule `(unknown)`, as
 * `stats` counts it.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option } from "effect"
import { GOVERNANCE_REFUSAL_EVENT_TYPE } from "../audit/AuditEvent.js"
import { SQLITE_REFUSAL_RULE } from "../internal/migrations.js"
import { dialectOf } from "../internal/sqlDialect.js"
import * as LedgerSql from "../ledger/LedgerSql.js"

export interface Overview {
  readonly rows: number
  readonly head: Option.Option<{ readonly sequence: number; readonly entryHash: string }>
  readonly attestLevels: Readonly<Record<string, number>>
  readonly deadLetters: { readonly pending: number; readonly replayed: number }
  readonly refusals: number
  readonly refusalsByAgent: Readonly<Record<string, number>>
  readonly refusalsByRule: Readonly<Record<string, number>>
  readonly firstTimestamp: Option.Option<string>
  readonly lastTimestamp: Option.Option<string>
}

type Sql = ReturnType<SqlClient.SqlClient["withoutTransforms"]>

const isPostgres = (sql: SqlClient.SqlClient): boolean =>
  Option.exists(dialectOf(sql), (dialect) => dialect.name === "postgres")

/**
 * PostgreSQL: no cast of a payload to `jsonb` (a payload that is not JSON, or holds `\u0000`, would fail the
 * whole query: a tampered row must not take the console down). The canonical payload (docs/FORMAT.md) is
 * read with a regular expression instead: its keys are sorted, so the top-level `decision` and `journal` are
 * the last ones in the text (`^.*` takes the last match; an object nested in `action` comes before them).
 */
const PG_RULE =
  `substring(payload from '^.*"decision":\\{"_tag":"Refuse","reason":"(?:[^"\\\\]|\\\\.)*","ruleId":"((?:[^"\\\\]|\\\\.)*)"\\}')`
const PG_JOURNAL_SESSION =
  `substring(payload from '^.*"journal":\\{"sequence":[0-9]+,"session_id":"((?:[^"\\\\]|\\\\.)*)"\\}')`
const PG_SEALED_SESSION = `CASE WHEN event_type = 'session.sealed' THEN ` +
  `substring(payload from '"session_id":"((?:[^"\\\\]|\\\\.)*)"') END`

/** The SQL expression of a refusal row's rule id: `(unknown)` when the payload does not name one as text. */
const ruleExpression = (sql: SqlClient.SqlClient) =>
  isPostgres(sql)
    ? `COALESCE(${PG_RULE}, '(unknown)')`
    : SQLITE_REFUSAL_RULE

/** The SQL expression of a row's session id (`journal.session_id` of a refusal, `session_id` of a seal). */
const sessionExpression = (sql: SqlClient.SqlClient) =>
  isPostgres(sql)
    ? `COALESCE(${PG_JOURNAL_SESSION}, ${PG_SEALED_SESSION})`
    : `CASE WHEN json_valid(payload) THEN COALESCE(json_extract(payload, '$.journal.session_id'), ` +
      `json_extract(payload, '$.action.payload.session_id')) END`

/** The SQL expression of a row's timestamp in whole seconds since the epoch. */
const epochSecondsExpression = (sql: SqlClient.SqlClient) =>
  isPostgres(sql)
    ? `CASE WHEN timestamp ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$' ` +
      `THEN CAST(FLOOR(EXTRACT(EPOCH FROM CAST(timestamp AS timestamptz))) AS BIGINT) END`
    : `CAST(strftime('%s', timestamp) AS INTEGER)`

const counts = (rows: ReadonlyArray<{ key: string | null; n: number | string }>): Record<string, number> => {
  const result: Record<string, number> = {}
  for (const row of rows) result[row.key ?? "(unknown)"] = Number(row.n)
  return result
}

/** Rows, head, attest levels, dead letters, refusals by agent and rule, time span: the `stats` figures. */
export const overview: Effect.Effect<Overview, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(
  Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    // Three queries, not one: a lone MIN or MAX reads one entry of the timestamp index (migration 0009).
    const [count] = yield* sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM signed_events`
    const [first] = yield* sql<{ t: string | null }>`SELECT MIN(timestamp) AS t FROM signed_events`
    const [last] = yield* sql<{ t: string | null }>`SELECT MAX(timestamp) AS t FROM signed_events`
    const [head] = yield* sql<{ sequence: number | string; entry_hash: string }>`
      SELECT sequence, entry_hash FROM signed_events ORDER BY sequence DESC LIMIT 1`
    const attest = yield* sql<{ key: string; n: number }>`
      SELECT attest_level AS key, COUNT(*) AS n FROM signed_events GROUP BY attest_level`
    const [dlq] = yield* sql<{ pending: number | string | null; replayed: number | string | null }>`
      SELECT SUM(CASE WHEN replayed_at IS NULL THEN 1 ELSE 0 END) AS pending,
             SUM(CASE WHEN replayed_at IS NULL THEN 0 ELSE 1 END) AS replayed
      FROM signed_events_dlq`
    const byAgent = yield* sql<{ key: string; n: number }>`
      SELECT agent_id AS key, COUNT(*) AS n FROM signed_events
      WHERE event_type = ${GOVERNANCE_REFUSAL_EVENT_TYPE} GROUP BY agent_id`
    const byRule = yield* sql<{ key: string; n: number }>`
      SELECT ${sql.literal(ruleExpression(client))} AS key, COUNT(*) AS n FROM signed_events
      WHERE event_type = ${GOVERNANCE_REFUSAL_EVENT_TYPE} GROUP BY 1`
    const refusalsByRule = counts(byRule)
    return {
      rows: Number(count?.n ?? 0),
      head: head === undefined
        ? Option.none()
        : Option.some({ sequence: Number(head.sequence), entryHash: head.entry_hash }),
      attestLevels: counts(attest),
      deadLetters: { pending: Number(dlq?.pending ?? 0), replayed: Number(dlq?.replayed ?? 0) },
      refusals: Object.values(refusalsByRule).reduce((a, b) => a + b, 0),
      refusalsByAgent: counts(byAgent),
      refusalsByRule,
      firstTimestamp: Option.fromNullable(first?.t ?? null),
      lastTimestamp: Option.fromNullable(last?.t ?? null)
    }
  })
)

/** What the refusals are split by on the chart and filtered by in the list. */
export type SplitBy = "rule" | "agent"

export interface TimeRange {
  /** RFC 3339 text, inclusive; compared as text with the stored timestamps (all UTC, `Z`). */
  readonly from?: string | undefined
  /** RFC 3339 text, exclusive. */
  readonly to?: string | undefined
}

const rangeCondition = (sql: Sql, range: TimeRange) =>
  sql.and([
    sql`event_type = ${GOVERNANCE_REFUSAL_EVENT_TYPE}`,
    ...(range.from === undefined ? [] : [sql`timestamp >= ${range.from}`]),
    ...(range.to === undefined ? [] : [sql`timestamp < ${range.to}`])
  ])

export interface RefusalSeries {
  /** Bucket width in seconds. */
  readonly bucketSeconds: number
  /** Bucket starts (epoch seconds), ascending, every bucket from the first to the last (empty ones too). */
  readonly buckets: ReadonlyArray<number>
  /** One series per key (the largest first, at most `MAX_SERIES`; the rest summed as `(other)`). */
  readonly series: ReadonlyArray<{ readonly key: string; readonly counts: ReadonlyArray<number> }>
}

/** Series on one chart; more keys than this are summed into `(other)`. */
export const MAX_SERIES = 8

/** Buckets on one chart at most: the width is the smallest "nice" one that keeps the span under this. */
const MAX_BUCKETS = 240

const BUCKET_WIDTHS = [1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400]

/** Refusals per time bucket and per rule (or agent), counted in SQL. */
export const refusalSeries = (
  splitBy: SplitBy,
  range: TimeRange
): Effect.Effect<RefusalSeries, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const where = rangeCondition(sql, range)
    const epoch = sql.literal(epochSecondsExpression(client))
    const [span] = yield* sql<{ lo: number | string | null; hi: number | string | null }>`
      SELECT MIN(${epoch}) AS lo, MAX(${epoch}) AS hi FROM signed_events WHERE ${where}`
    if (span?.lo === null || span?.lo === undefined || span.hi === null) {
      return { bucketSeconds: 60, buckets: [], series: [] }
    }
    const lo = Number(span.lo)
    const hi = Number(span.hi)
    const width = BUCKET_WIDTHS.find((w) => (hi - lo) / w < MAX_BUCKETS) ?? 365 * 86400
    const key = sql.literal(splitBy === "rule" ? ruleExpression(client) : "agent_id")
    const rows = yield* sql<{ bucket: number | string | null; key: string | null; n: number | string }>`
      SELECT (${epoch} / ${width}) * ${width} AS bucket, ${key} AS key, COUNT(*) AS n
      FROM signed_events WHERE ${where} GROUP BY 1, 2 ORDER BY 1`
    const first = Math.floor(lo / width) * width
    const buckets = Array.from({ length: Math.floor(hi / width) - Math.floor(lo / width) + 1 }, (_, i) =>
      first + i * width)
    const totals = new Map<string, number>()
    for (const row of rows) {
      totals.set(row.key ?? "(unknown)", (totals.get(row.key ?? "(unknown)") ?? 0) + Number(row.n))
    }
    const ranked = Array.from(totals.entries()).sort(([a, x], [b, y]) =>
      y - x || a.localeCompare(b)
    )
    const shown = new Set(ranked.slice(0, MAX_SERIES).map(([k]) => k))
    const keys = [...ranked.slice(0, MAX_SERIES).map(([k]) => k), ...(ranked.length > MAX_SERIES ? ["(other)"] : [])]
    const table = new Map(keys.map((k) => [k, new Array<number>(buckets.length).fill(0)]))
    for (const row of rows) {
      // A row whose timestamp is not a time has no bucket (verify reports it).
      if (row.bucket === null) continue
      const k = row.key ?? "(unknown)"
      const series = table.get(shown.has(k) ? k : "(other)")!
      series[(Number(row.bucket) - first) / width]! += Number(row.n)
    }
    return { bucketSeconds: width, buckets, series: keys.map((k) => ({ key: k, counts: table.get(k)! })) }
  }))

export interface RefusalListItem {
  readonly sequence: number
  readonly timestamp: string
  readonly agentId: string
  readonly rule: string
  readonly sessionId: string | null
}

export interface RefusalFilter extends TimeRange {
  readonly rule?: string | undefined
  readonly agent?: string | undefined
  /** Only refusals with a smaller sequence (the next page, newest first). */
  readonly before?: number | undefined
}

/** Refusals shown per page. */
export const PAGE_SIZE = 50

/**
 * One page of refusals, newest first (keyset on `sequence`): `limit` of them (default `PAGE_SIZE`) and the
 * `before` of the next page, if there is one.
 */
export const refusals = (
  filter: RefusalFilter,
  limit: number = PAGE_SIZE
): Effect.Effect<
  { readonly items: ReadonlyArray<RefusalListItem>; readonly next: Option.Option<number> },
  SqlError,
  LedgerSql.LedgerSql
> =>
  LedgerSql.use(Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const rule = sql.literal(ruleExpression(client))
    const where = sql.and([
      rangeCondition(sql, filter),
      ...(filter.agent === undefined ? [] : [sql`agent_id = ${filter.agent}`]),
      ...(filter.rule === undefined ? [] : [sql`${rule} = ${filter.rule}`]),
      ...(filter.before === undefined ? [] : [sql`sequence < ${filter.before}`])
    ])
    const rows = yield* sql<
      { sequence: number | string; timestamp: string; agent_id: string; rule: string; session_id: string | null }
    >`
      SELECT sequence, timestamp, agent_id, ${rule} AS rule, ${sql.literal(sessionExpression(client))} AS session_id
      FROM signed_events WHERE ${where} ORDER BY sequence DESC LIMIT ${limit + 1}`
    const items = rows.slice(0, limit).map((row) => ({
      sequence: Number(row.sequence),
      timestamp: row.timestamp,
      agentId: row.agent_id,
      rule: row.rule,
      sessionId: row.session_id
    }))
    return {
      items,
      next: rows.length > limit ? Option.some(items[items.length - 1]!.sequence) : Option.none()
    }
  }))

/** One stored row as it is (every column), by sequence. */
export const row = (
  sequence: number
): Effect.Effect<Option.Option<Record<string, unknown>>, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE sequence = ${sequence}`
    return Option.fromNullable(rows[0])
  }))
