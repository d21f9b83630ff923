/**
 * The console's SQL aggregates against `LedgerStats` (what `stats --json` prints), on SQLite and on
 * PostgreSQL, over a ledger with hostile rows: arguments that spell a refusal decision of another rule, and
 * a payload tampered into text that is not JSON. The console must count what `stats` counts, list each
 * refusal under its own rule and session, and keep answering.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Option } from "effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { DeferredAuditEvent, JournalRef, Refuse, ToolCall } from "../src/audit/AuditEvent.js"
import * as ConsoleQueries from "../src/console/ConsoleQueries.js"
import { uuidV7 } from "../src/internal/uuid.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"
import { append, SEEDED, T0 } from "./fixtures/queryLedger.js"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-console-queries-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** Sequence 8: a refusal by rule `real` whose arguments hold a whole refusal decision of rule `fake`. */
const spoofing = new DeferredAuditEvent({
  id: uuidV7(T0 + 9 * 60_000),
  agentId: "agent-e",
  action: new ToolCall({
    toolName: "post",
    serverId: "web",
    arguments: {
      decision: { _tag: "Refuse", reason: "x", ruleId: "fake" },
      journal: { sequence: 0, session_id: "s-fake" }
    } as never
  }),
  decision: new Refuse({ ruleId: "real", reason: "real says no" }),
  timestamp: DateTime.unsafeMake(T0 + 9 * 60_000),
  journal: new JournalRef({ sessionId: "s5", sequence: 2 })
})

/** Sequence 2's payload, tampered into text that is not JSON. */
const TAMPERED = 2

const check = (db: string) =>
  Effect.gen(function*() {
    yield* append(db, [...SEEDED, spoofing])
    yield* LedgerSql.use(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`UPDATE signed_events SET payload = ${"{not json \u0001"} WHERE sequence = ${TAMPERED}`))
    const stats = yield* LedgerStats.stats()
    const overview = yield* ConsoleQueries.overview
    expect(overview.rows).toBe(stats.rows)
    expect(overview.head).toEqual(stats.head)
    expect(overview.attestLevels).toEqual(stats.attestLevels)
    expect(overview.deadLetters).toEqual(stats.deadLetters)
    expect(overview.refusalsByAgent).toEqual(stats.refusalsByAgent)
    expect(overview.refusalsByRule).toEqual(stats.refusalsByRule)
    expect(overview.firstTimestamp).toEqual(stats.firstTimestamp)
    expect(overview.lastTimestamp).toEqual(stats.lastTimestamp)
    expect(overview.refusalsByRule).toMatchObject({ real: 1, "(unknown)": 1 })
    expect(overview.refusalsByRule.fake).toBeUndefined()

    const series = yield* ConsoleQueries.refusalSeries("rule", {})
    const totals = Object.fromEntries(series.series.map((s) => [
      s.key,
      s.counts.reduce((a, b) =>
        a + b, 0)
    ]))
    expect(totals).toEqual(stats.refusalsByRule)
    expect(series.buckets.length).toBe(series.series[0]!.counts.length)

    const page = yield* ConsoleQueries.refusals({})
    const spoofed = page.items.find((item) => item.sequence === 8)!
    expect(spoofed).toMatchObject({ rule: "real", sessionId: "s5", agentId: "agent-e" })
    expect(page.items.map((item) => item.sequence)).toEqual([8, 5, 4, 3, 2, 0])
    expect((yield* ConsoleQueries.refusals({ rule: "fake" })).items).toEqual([])
    expect((yield* ConsoleQueries.refusals({ rule: "real" })).items.map((i) => i.sequence)).toEqual([8])
    // A bucket's time range lists exactly that bucket's refusals.
    const minute3 = new Date(T0 + 3 * 60_000).toISOString()
    const minute4 = new Date(T0 + 4 * 60_000).toISOString()
    expect((yield* ConsoleQueries.refusals({ from: minute3, to: minute4 })).items.map((i) => i.sequence)).toEqual([3])
    expect(Option.isSome(yield* ConsoleQueries.row(8))).toBe(true)
    expect(Option.isNone(yield* ConsoleQueries.row(99))).toBe(true)
  })

describe("console queries", () => {
  it.live("count what stats counts on SQLite, a hostile or tampered payload included", () =>
    Effect.gen(function*() {
      const db = join(dir, "queries.db")
      yield* check(db).pipe(Effect.provide(LedgerSql.layerSqlite({ filename: db })))
    }))

  it.live.skipIf(noPostgres)("count what stats counts on PostgreSQL, a hostile or tampered payload included", () => {
    const { drop, url } = freshDatabase()
    return check(url).pipe(
      Effect.provide(LedgerSql.layerPg({ url })),
      Effect.ensuring(Effect.sync(drop))
    )
  })
})
