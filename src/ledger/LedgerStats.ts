/**
 * A summary of a ledger database for operators: rows and head, dead-letter backlog, refusals by agent
 * and by rule, attest levels, and the time span covered. Rows are read in pages (LedgerVerifier's
 * `storedRows`), so it runs in flat memory and needs no dialect-specific JSON functions.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option, Stream } from "effect"
import { GOVERNANCE_REFUSAL_EVENT_TYPE, WOULD_REFUSE_EVENT_TYPE } from "../audit/AuditEvent.js"
import * as LedgerSql from "./LedgerSql.js"
import * as LedgerVerifier from "./LedgerVerifier.js"

export interface LedgerStats {
  readonly rows: number
  readonly head: Option.Option<{ readonly sequence: number; readonly entryHash: string }>
  readonly deadLetters: { readonly pending: number; readonly replayed: number }
  readonly byEventType: Readonly<Record<string, number>>
  readonly refusalsByAgent: Readonly<Record<string, number>>
  readonly refusalsByRule: Readonly<Record<string, number>>
  /** Refusals a guard in shadow mode would have made (`governance.would-refuse` rows), by rule. */
  readonly wouldRefuseByRule: Readonly<Record<string, number>>
  readonly attestLevels: Readonly<Record<string, number>>
  readonly firstTimestamp: Option.Option<string>
  readonly lastTimestamp: Option.Option<string>
}

const bump = (counts: Record<string, number>, key: string): void => {
  counts[key] = (counts[key] ?? 0) + 1
}

/** The rule id inside a refusal payload, or `"(unknown)"` when the payload is not one. */
const ruleIdOf = (payload: unknown): string => {
  if (typeof payload !== "string") return "(unknown)"
  try {
    const decision = (JSON.parse(payload) as { decision?: { ruleId?: unknown } }).decision
    return typeof decision?.ruleId === "string" ? decision.ruleId : "(unknown)"
  } catch {
    return "(unknown)"
  }
}

export const stats = (options: { readonly pageSize?: number } = {}): Effect.Effect<
  LedgerStats,
  SqlError,
  LedgerSql.LedgerSql
> =>
  LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const [dlq] = yield* sql<{ pending: number | null; replayed: number | null }>`
      SELECT CAST(SUM(CASE WHEN replayed_at IS NULL THEN 1 ELSE 0 END) AS INTEGER) AS pending,
             CAST(SUM(CASE WHEN replayed_at IS NULL THEN 0 ELSE 1 END) AS INTEGER) AS replayed
      FROM signed_events_dlq`
    let rows = 0
    let head: LedgerStats["head"] = Option.none()
    let firstTimestamp: Option.Option<string> = Option.none()
    let lastTimestamp: Option.Option<string> = Option.none()
    const byEventType: Record<string, number> = {}
    const refusalsByAgent: Record<string, number> = {}
    const refusalsByRule: Record<string, number> = {}
    const wouldRefuseByRule: Record<string, number> = {}
    const attestLevels: Record<string, number> = {}
    yield* Stream.runForEach(LedgerVerifier.storedRows({ pageSize: options.pageSize }), (row) =>
      Effect.sync(() => {
        rows++
        head = Option.some({ sequence: Number(row.sequence), entryHash: String(row.entry_hash) })
        const timestamp = String(row.timestamp)
        if (Option.isNone(firstTimestamp) || timestamp < firstTimestamp.value) firstTimestamp = Option.some(timestamp)
        if (Option.isNone(lastTimestamp) || timestamp > lastTimestamp.value) lastTimestamp = Option.some(timestamp)
        bump(byEventType, String(row.event_type))
        bump(attestLevels, String(row.attest_level))
        if (row.event_type === GOVERNANCE_REFUSAL_EVENT_TYPE) {
          bump(refusalsByAgent, String(row.agent_id))
          bump(refusalsByRule, ruleIdOf(row.payload))
        } else if (row.event_type === WOULD_REFUSE_EVENT_TYPE) {
          bump(wouldRefuseByRule, ruleIdOf(row.payload))
        }
      }))
    return {
      rows,
      head,
      deadLetters: { pending: Number(dlq?.pending ?? 0), replayed: Number(dlq?.replayed ?? 0) },
      byEventType,
      refusalsByAgent,
      refusalsByRule,
      wouldRefuseByRule,
      attestLevels,
      firstTimestamp,
      lastTimestamp
    }
  }))
