import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, DateTime, Effect, Exit, Fiber, Layer, Option, Schedule, TestClock } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { afterAll } from "vitest"
import { canonicalJson, formatTimestamp, GOVERNANCE_REFUSAL_EVENT_TYPE, payloadHash } from "../src/audit/AuditEvent.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { Appended, AuditSink } from "../src/audit/AuditSink.js"
import type { AppendOutcome } from "../src/audit/AuditSink.js"
import { ZERO_HASH } from "../src/internal/encoding.js"
import { rowEntryHash, rowEntryHashBytes } from "../src/internal/rowFormat.js"
import { sqlite, withWriteTransaction } from "../src/internal/sqlDialect.js"
import type * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-sink-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (): string => join(tempRoot, `ledger-${++fileCounter}.db`)

type Services = SqlClient.SqlClient | LedgerSql.LedgerSql | SqlAuditSink.SqlAuditSink | AuditSink

/** A sink on its own connection to `filename` (migrated), together with that connection's SqlClient. */
const sinkLayer = (filename: string, options: SqlAuditSink.Options = {}) =>
  SqlAuditSink.layer(options).pipe(
    Layer.provideMerge(
      sqliteWithClient({
        filename,
        synchronous: options.synchronous,
        busyTimeout: options.busyTimeout
      })
    )
  )

/** Builds a sink layer into the current scope (so a test can hold two connections at once). */
const openSink = (
  filename: string,
  options: SqlAuditSink.Options = {}
): Effect.Effect<Context.Context<Services>, unknown, Scope.Scope> => Layer.build(sinkLayer(filename, options))

const allRows = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<Record<string, unknown>>`SELECT * FROM signed_events ORDER BY sequence`
)

const dlqRows = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<Record<string, unknown>>`SELECT * FROM signed_events_dlq ORDER BY dlq_id`
)

/**
 * Appends `count` events one after the other. `interleave` lets other fibers run (a timer turn) after each
 * append, so two writers in one process alternate instead of running in long stretches.
 */
const appendAll = (
  sink: Context.Tag.Service<SqlAuditSink.SqlAuditSink>,
  agentId: string,
  count: number,
  options: { readonly interleave?: boolean } = {}
) =>
  Effect.gen(function*() {
    let appended = 0
    let uniqueRaceRetries = 0
    for (let n = 0; n < count; n++) {
      const outcome = yield* sink.append(refusalEvent(agentId, n))
      if (outcome._tag === "Appended") appended++
      uniqueRaceRetries += outcome.uniqueRaceRetries
      if (options.interleave === true) yield* Effect.sleep(0)
    }
    return { appended, uniqueRaceRetries }
  })

/** Asserts the whole file is one gap-free chain of `count` distinct events that verifies. */
const expectIntactChain = (count: number, keyring?: AuditSigner.Keyring) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [stats] = yield* sql<{ rows: number; ids: number; minSeq: number; maxSeq: number }>`
      SELECT COUNT(*) AS rows, COUNT(DISTINCT id) AS ids, MIN(sequence) AS minSeq, MAX(sequence) AS maxSeq
      FROM signed_events`
    expect(stats).toEqual({ rows: count, ids: count, minSeq: 0, maxSeq: count - 1 })
    const report = yield* verifyLedger(keyring === undefined ? {} : { keyring })
    expect(Option.getOrUndefined(report.firstFailure)).toBeUndefined()
    expect(report.ok).toBe(true)
    expect(report.rowsChecked).toBe(count)
  })

const fastRetry = (retries: number) => Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(retries)))

describe("SqlAuditSink", () => {
  it.effect("appends each event as exactly one row with the documented columns", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678))
      const signer = yield* AuditSigner.generate
      const context = yield* openSink(freshFile(), { signer })
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const events = [refusalEvent("agent-a", 0), refusalEvent("agent-b", 1, "é ✓")]
      const outcomes = yield* Effect.forEach(events, sink.append)
      const rows = yield* Effect.provide(allRows, context)
      expect(rows).toHaveLength(2)
      // Each outcome names its row: the durable acknowledgement's receipt comes from here.
      expect(outcomes).toEqual(rows.map((row) =>
        new Appended({
          uniqueRaceRetries: 0,
          position: { sequence: Number(row.sequence), entryHash: String(row.entry_hash) }
        })
      ))
      let prevHash = ZERO_HASH
      rows.forEach((row, sequence) => {
        const event = events[sequence]!
        const input = {
          sequence,
          prevHash,
          id: event.id,
          agentId: event.agentId,
          eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
          payloadHash: payloadHash(event),
          timestamp: formatTimestamp(event)
        }
        expect(row).toEqual({
          id: event.id,
          sequence,
          agent_id: event.agentId,
          event_type: "governance.refusal",
          payload: canonicalJson(event),
          payload_hash: payloadHash(event),
          prev_hash: prevHash,
          entry_hash: rowEntryHash(input),
          signature: expect.stringMatching(/^[0-9a-f]{128}$/),
          key_id: signer.keyId,
          attest_level: "ed25519",
          timestamp: formatTimestamp(event),
          appended_at: "2026-01-02T03:04:05.678Z"
        })
        expect(AuditSigner.verifySignature(
          AuditSigner.Keyring.fromSigners([signer]),
          signer.keyId,
          rowEntryHashBytes(input),
          row.signature as string
        )).toBe("valid")
        prevHash = rowEntryHash(input)
      })
      expect(yield* sink.head).toEqual(Option.some({ sequence: 1, entryHash: prevHash }))
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(2)
      expect(yield* sink.countByEventType("something.else")).toBe(0)
      expect(yield* sink.dlqSize).toBe(0)
    }).pipe(Effect.scoped))

  it.effect("an empty ledger has no head, no rows and no dead letters; unsigned rows carry NULL signature", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      expect(yield* sink.head).toEqual(Option.none())
      expect(yield* sink.dlqSize).toBe(0)
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(0)
      yield* sink.append(refusalEvent("agent-a", 0))
      const [row] = yield* Effect.provide(allRows, context)
      expect(row).toMatchObject({ sequence: 0, prev_hash: ZERO_HASH, signature: null, key_id: null })
      expect(row!.attest_level).toBe("unsigned")
    }).pipe(Effect.scoped))

  it.effect("connection settings: WAL, synchronous FULL by default or NORMAL on request, foreign keys, busy_timeout", () =>
    Effect.gen(function*() {
      const pragma = (sql: SqlClient.SqlClient, name: string) =>
        Effect.map(sql.unsafe(`PRAGMA ${name}`), (rows) => Object.values(rows[0] as object)[0])
      const byDefault = Context.get(yield* openSink(freshFile()), SqlClient.SqlClient)
      expect(yield* pragma(byDefault, "journal_mode")).toBe("wal")
      expect(yield* pragma(byDefault, "synchronous")).toBe(2) // FULL
      expect(yield* pragma(byDefault, "foreign_keys")).toBe(1)
      expect(yield* pragma(byDefault, "busy_timeout")).toBe(5000)
      const normal = Context.get(
        yield* openSink(freshFile(), { synchronous: "NORMAL", busyTimeout: "250 millis" }),
        SqlClient.SqlClient
      )
      expect(yield* pragma(normal, "synchronous")).toBe(1) // NORMAL
      expect(yield* pragma(normal, "busy_timeout")).toBe(250)
    }).pipe(Effect.scoped))

  it.live("a chain of 1,000 unsigned events verifies", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile(), { synchronous: "NORMAL" })
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      expect(yield* appendAll(sink, "agent-a", 1000)).toEqual({ appended: 1000, uniqueRaceRetries: 0 })
      yield* Effect.provide(expectIntactChain(1000), context)
      const report = yield* Effect.provide(verifyLedger(), context)
      expect(report.attestLevels).toEqual({ unsigned: 1000, ed25519: 0 })
    }).pipe(Effect.scoped))

  it.live("a chain of 1,000 signed events verifies against the signer's key, and is unknownKey without it", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const context = yield* openSink(freshFile(), { signer, synchronous: "NORMAL" })
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      expect(yield* appendAll(sink, "agent-a", 1000)).toEqual({ appended: 1000, uniqueRaceRetries: 0 })
      yield* Effect.provide(expectIntactChain(1000, AuditSigner.Keyring.fromSigners([signer])), context)
      const withoutKey = yield* Effect.provide(verifyLedger(), context)
      expect(withoutKey.ok).toBe(false)
      expect(Option.map(withoutKey.firstFailure, (f) => f.kind)).toEqual(Option.some("unknownKey"))
    }).pipe(Effect.scoped))

  it.effect("a duplicate event id is appended once: the second append is Appended without a second row", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const event = refusalEvent("agent-a", 0)
      const first = yield* sink.append(event)
      const second = yield* sink.append(event)
      expect(first._tag).toBe("Appended")
      expect(second._tag).toBe("Appended")
      expect(yield* Effect.provide(allRows, context)).toHaveLength(1)
      expect(yield* sink.dlqSize).toBe(0)
      // The same id arriving after the chain moved on (a stale head collides too) is still one row.
      yield* sink.append(refusalEvent("agent-a", 1))
      expect((yield* sink.append(event))._tag).toBe("Appended")
      expect(yield* Effect.provide(allRows, context)).toHaveLength(2)
    }).pipe(Effect.scoped))

  it.live("a cached head made stale by another connection costs a counted retry, and the chain stays intact", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const a = Context.get(yield* openSink(file), SqlAuditSink.SqlAuditSink)
      const contextB = yield* openSink(file)
      const b = Context.get(contextB, SqlAuditSink.SqlAuditSink)
      yield* a.append(refusalEvent("a", 0)) // a caches head 0
      yield* appendAll(b, "b", 3) // behind a's back: head is now 3
      const outcome = yield* a.append(refusalEvent("a", 1))
      expect(outcome).toEqual(expect.objectContaining({ _tag: "Appended", uniqueRaceRetries: 1 }))
      yield* Effect.provide(expectIntactChain(5), contextB)
    }).pipe(Effect.scoped))

  it.live("a batch behind a stale head is retried whole from the fresh head: one counted retry, a dense chain", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const a = Context.get(yield* openSink(file), SqlAuditSink.SqlAuditSink)
      const contextB = yield* openSink(file)
      const b = Context.get(contextB, SqlAuditSink.SqlAuditSink)
      yield* a.append(refusalEvent("a", 0)) // a caches head 0
      yield* appendAll(b, "b", 3) // behind a's back: head is now 3
      const outcomes = yield* a.appendBatch([refusalEvent("a", 1), refusalEvent("a", 2), refusalEvent("a", 3)])
      // The transaction's retry is reported once, on its first event.
      expect(outcomes.map((o) => o.uniqueRaceRetries)).toEqual([1, 0, 0])
      expect(outcomes.map((o) => o._tag === "Appended" ? o.position?.sequence : undefined)).toEqual([4, 5, 6])
      yield* Effect.provide(expectIntactChain(7), contextB)
    }).pipe(Effect.scoped))

  it.live("a batch that keeps losing the race fails as a whole, leaving no row of it behind", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const contextA = yield* openSink(file, { retrySchedule: Schedule.recurs(0) })
      const a = Context.get(contextA, SqlAuditSink.SqlAuditSink)
      const b = Context.get(yield* openSink(file), SqlAuditSink.SqlAuditSink)
      yield* a.append(refusalEvent("a", 0))
      yield* b.append(refusalEvent("b", 0))
      const error = yield* Effect.flip(a.appendBatch([refusalEvent("a", 1), refusalEvent("a", 2)]))
      expect(error._tag).toBe("AuditSinkError")
      expect(error.reason).toContain("SQLITE_CONSTRAINT_UNIQUE")
      yield* Effect.provide(expectIntactChain(2), contextA)
      expect(yield* a.dlqSize).toBe(0)
    }).pipe(Effect.scoped))

  it.live("a lost race with no retry budget left lands the event in the DLQ with the driver code", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const contextA = yield* openSink(file, { retrySchedule: Schedule.recurs(0) })
      const a = Context.get(contextA, SqlAuditSink.SqlAuditSink)
      const b = Context.get(yield* openSink(file), SqlAuditSink.SqlAuditSink)
      yield* a.append(refusalEvent("a", 0))
      yield* b.append(refusalEvent("b", 0))
      const event = refusalEvent("a", 1)
      const outcome = yield* a.append(event)
      expect(outcome._tag).toBe("DlqLanded")
      expect(outcome.uniqueRaceRetries).toBe(0)
      expect((outcome as Extract<AppendOutcome, { _tag: "DlqLanded" }>).reason).toContain("SQLITE_CONSTRAINT_UNIQUE")
      const [dlq] = yield* Effect.provide(dlqRows, contextA)
      expect(dlq).toMatchObject({ id: event.id, payload: canonicalJson(event), replayed_at: null })
      expect(yield* a.dlqSize).toBe(1)
      // The next append re-reads the head and succeeds.
      expect((yield* a.append(refusalEvent("a", 2)))._tag).toBe("Appended")
      yield* Effect.provide(expectIntactChain(3), contextA)
    }).pipe(Effect.scoped, quietly))

  it.live("SQLITE_BUSY is retried on the schedule until the other writer lets go", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const sink = Context.get(
        yield* openSink(file, { busyTimeout: "20 millis", retrySchedule: fastRetry(8) }),
        SqlAuditSink.SqlAuditSink
      )
      const other = Context.get(yield* openSink(file), SqlClient.SqlClient)
      yield* other.unsafe("BEGIN IMMEDIATE")
      const append = yield* Effect.fork(sink.append(refusalEvent("a", 0)))
      yield* Effect.sleep("60 millis")
      yield* other.unsafe("COMMIT")
      const outcome = yield* Fiber.join(append)
      expect(outcome._tag).toBe("Appended")
      expect(outcome.uniqueRaceRetries).toBeGreaterThan(0)
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(1)
    }).pipe(Effect.scoped))

  it.live("a lock held past the retry budget fails with AuditSinkError (the DLQ is locked too), not a defect", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const sink = Context.get(
        yield* openSink(file, { busyTimeout: "10 millis", retrySchedule: fastRetry(2) }),
        SqlAuditSink.SqlAuditSink
      )
      const other = Context.get(yield* openSink(file), SqlClient.SqlClient)
      yield* other.unsafe("BEGIN IMMEDIATE")
      const event = refusalEvent("a", 0)
      const exit = yield* Effect.exit(sink.append(event))
      yield* other.unsafe("COMMIT")
      expect(exit).toEqual(Exit.fail(expect.objectContaining({ _tag: "AuditSinkError", eventId: event.id })))
      const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
      expect(Option.map(error, (e) => e.reason).pipe(Option.getOrElse(() => ""))).toContain("SQLITE_BUSY")
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(0)
      expect(yield* sink.dlqSize).toBe(0)
    }).pipe(Effect.scoped))

  it.effect("a schema fault lands the event in the DLQ with the reason; the chain does not advance", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      yield* sink.append(refusalEvent("agent-a", 0))
      yield* sql.unsafe("ALTER TABLE signed_events RENAME COLUMN agent_id TO x")
      const event = refusalEvent("agent-a", 1)
      const outcome = yield* sink.append(event)
      expect(outcome).toEqual(expect.objectContaining({ _tag: "DlqLanded", uniqueRaceRetries: 0 }))
      const reason = (outcome as Extract<AppendOutcome, { _tag: "DlqLanded" }>).reason
      expect(reason).toContain("SQLITE_ERROR")
      expect(reason).toContain("agent_id")
      const dlq = yield* Effect.provide(dlqRows, context)
      expect(dlq).toEqual([{
        dlq_id: 1,
        id: event.id,
        agent_id: "agent-a",
        event_type: GOVERNANCE_REFUSAL_EVENT_TYPE,
        payload: canonicalJson(event),
        payload_hash: payloadHash(event),
        timestamp: formatTimestamp(event),
        failure_reason: reason,
        failed_at: DateTime.formatIso(DateTime.unsafeMake(0)),
        replayed_at: null,
        // No signer: a keyless writer's dead letter carries no signature (docs/FORMAT.md, "Dead-letter signature").
        signature: null,
        key_id: null
      }])
      expect(yield* sink.dlqSize).toBe(1)
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(1)
    }).pipe(Effect.scoped))

  it.effect("with the DLQ table broken too, append fails with AuditSinkError naming both failures", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      yield* sql.unsafe("ALTER TABLE signed_events RENAME COLUMN agent_id TO x")
      yield* sql.unsafe("ALTER TABLE signed_events_dlq RENAME TO signed_events_dlq_gone")
      const event = refusalEvent("agent-a", 0)
      const exit = yield* Effect.exit(sink.append(event))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(false)
      const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
      expect(error?._tag).toBe("AuditSinkError")
      expect(error?.eventId).toBe(event.id)
      expect(error?.reason).toContain("signed_events_dlq")
      expect(error?.reason).toContain("agent_id")
      // deadLetter reports the same failure as a value.
      const dead = yield* Effect.exit(sink.deadLetter(event, "poison"))
      expect(dead).toEqual(Exit.fail(expect.objectContaining({ _tag: "AuditSinkError", eventId: event.id })))
    }).pipe(Effect.scoped))

  it.effect("deadLetter stores the event with the given reason", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const event = refusalEvent("agent-a", 0)
      yield* sink.deadLetter(event, "the sink died on this event")
      expect(yield* Effect.provide(dlqRows, context)).toEqual([
        expect.objectContaining({ id: event.id, failure_reason: "the sink died on this event" })
      ])
      expect(yield* sink.dlqSize).toBe(1)
    }).pipe(Effect.scoped))

  it.effect("appendOnly appends without a dead-letter fallback: a failure is an AuditSinkError, no DLQ row", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      const event = refusalEvent("agent-a", 0)
      const first = yield* sink.appendOnly(event)
      expect(first).toMatchObject({ alreadyInChain: false, uniqueRaceRetries: 0, position: { sequence: 0 } })
      // A duplicate id reports the row that is already there.
      expect(yield* sink.appendOnly(event)).toEqual({ ...first, alreadyInChain: true })
      yield* sql.unsafe("ALTER TABLE signed_events RENAME COLUMN agent_id TO x")
      const next = refusalEvent("agent-a", 1)
      const error = yield* Effect.flip(sink.appendOnly(next))
      expect(error).toMatchObject({ _tag: "AuditSinkError", eventId: next.id })
      expect(error.reason).toContain("SQLITE_ERROR")
      expect(yield* sink.dlqSize).toBe(0)
      expect(yield* sink.countByEventType(GOVERNANCE_REFUSAL_EVENT_TYPE)).toBe(1)
    }).pipe(Effect.scoped))

  it.effect("a full database yields DlqLanded or AuditSinkError, never a defect, and the chain stays intact", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      yield* sink.append(refusalEvent("agent-a", 0, "x".repeat(2000)))
      const [{ page_count }] = (yield* sql.unsafe("PRAGMA page_count")) as unknown as [{ page_count: number }]
      yield* sql.unsafe(`PRAGMA max_page_count = ${page_count + 2}`)
      const exits: Array<Exit.Exit<AppendOutcome, unknown>> = []
      for (let n = 1; n <= 20; n++) {
        exits.push(yield* Effect.exit(sink.append(refusalEvent("agent-a", n, "x".repeat(2000)))))
      }
      expect(exits.some((exit) => Exit.isFailure(exit) && !Cause.isFailType(exit.cause))).toBe(false)
      const refused = exits.filter((exit) => !(Exit.isSuccess(exit) && exit.value._tag === "Appended"))
      expect(refused.length).toBeGreaterThan(0)
      for (const exit of refused) {
        const reason = Exit.match(exit, {
          onSuccess: (outcome) => outcome._tag === "DlqLanded" ? outcome.reason : "",
          onFailure: (cause) => Option.match(Cause.failureOption(cause), { onNone: () => "", onSome: String })
        })
        expect(reason).toContain("SQLITE_FULL")
      }
      const appended = exits.filter((exit) => Exit.isSuccess(exit) && exit.value._tag === "Appended").length
      yield* sql.unsafe("PRAGMA max_page_count = 1073741823")
      yield* sink.append(refusalEvent("agent-a", 100))
      yield* Effect.provide(expectIntactChain(appended + 2), context)
    }).pipe(Effect.scoped))

  it.live("migrates an empty file, and a re-opened file continues its chain", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* Effect.scoped(Effect.gen(function*() {
        const sink = Context.get(yield* openSink(file), SqlAuditSink.SqlAuditSink)
        yield* appendAll(sink, "first-run", 3)
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* openSink(file)
        const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
        expect(Option.map(yield* sink.head, (h) => h.sequence)).toEqual(Option.some(2))
        yield* appendAll(sink, "second-run", 2)
        yield* Effect.provide(expectIntactChain(5), context)
        const sql = Context.get(context, SqlClient.SqlClient)
        const migrations = yield* sql`SELECT migration_id FROM agent_ledger_migrations`
        expect(migrations).toEqual([
          { migration_id: 1 },
          { migration_id: 2 },
          { migration_id: 3 },
          { migration_id: 4 },
          { migration_id: 5 },
          { migration_id: 6 },
          { migration_id: 7 },
          { migration_id: 8 },
          { migration_id: 9 }
        ])
      }))
    }))

  it.live("real race, one process: two connections append 2,000 events each concurrently", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const contextA = yield* openSink(file, { synchronous: "NORMAL" })
      const contextB = yield* openSink(file, { synchronous: "NORMAL" })
      const [a, b] = yield* Effect.all([
        appendAll(Context.get(contextA, SqlAuditSink.SqlAuditSink), "writer-a", 2000, { interleave: true }),
        appendAll(Context.get(contextB, SqlAuditSink.SqlAuditSink), "writer-b", 2000, { interleave: true })
      ], { concurrency: 2 })
      expect(a.appended + b.appended).toBe(4000)
      // Each writer's cached head went stale whenever the other one appended in between.
      expect(a.uniqueRaceRetries).toBeGreaterThan(0)
      expect(b.uniqueRaceRetries).toBeGreaterThan(0)
      yield* Effect.provide(expectIntactChain(4000), contextA)
      const sql = Context.get(contextA, SqlClient.SqlClient)
      const [row] = yield* sql<{ switches: number }>`
        SELECT COUNT(*) AS switches FROM signed_events cur JOIN signed_events prev ON prev.sequence = cur.sequence - 1
        WHERE prev.agent_id <> cur.agent_id`
      expect(row?.switches).toBeGreaterThan(100)
    }).pipe(Effect.scoped))

  it.live("real race, two processes: this process and a child append 2,000 events each to one file", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const context = yield* openSink(file, { synchronous: "NORMAL" })
      const child = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(process.execPath, ["--import", "tsx", "test/fixtures/raceWriter.ts", file, "2000", "child"], {
            stdio: ["pipe", "pipe", "inherit"]
          })
        ),
        (child) => Effect.sync(() => child.exitCode === null && child.kill())
      )
      const lines = createInterface({ input: child.stdout })
      // The next protocol line ("ready" or "result {...}"), skipping the child's log output.
      const nextLine = Effect.async<string, Error>((resume) => {
        const onLine = (line: string) => {
          if (line !== "ready" && !line.startsWith("result ")) return
          lines.off("line", onLine)
          child.off("exit", onExit)
          resume(Effect.succeed(line))
        }
        const onExit = (code: number | null) => {
          lines.off("line", onLine)
          resume(Effect.fail(new Error(`raceWriter exited early (code ${code})`)))
        }
        lines.on("line", onLine)
        child.once("exit", onExit)
      })
      expect(yield* nextLine).toBe("ready")
      child.stdin.write("go\n")
      const [mine, theirs] = yield* Effect.all([
        appendAll(Context.get(context, SqlAuditSink.SqlAuditSink), "parent", 2000),
        Effect.map(
          nextLine,
          (line) => JSON.parse(line.slice("result ".length)) as { appended: number; dlqLanded: number }
        )
      ], { concurrency: 2 })
      expect(mine.appended).toBe(2000)
      expect(theirs).toMatchObject({ appended: 2000, dlqLanded: 0 })
      yield* Effect.provide(expectIntactChain(4000), context)
      const sql = Context.get(context, SqlClient.SqlClient)
      const perAgent = yield* sql`SELECT agent_id, COUNT(*) AS n FROM signed_events GROUP BY agent_id ORDER BY agent_id`
      expect(perAgent).toEqual([{ agent_id: "child", n: 2000 }, { agent_id: "parent", n: 2000 }])
      // The two processes really wrote at the same time: the chain alternates between them more than once
      // (one after the other would be a single switch).
      const [row] = yield* sql<{ switches: number }>`
        SELECT COUNT(*) AS switches FROM signed_events cur JOIN signed_events prev ON prev.sequence = cur.sequence - 1
        WHERE prev.agent_id <> cur.agent_id`
      expect(row?.switches).toBeGreaterThan(1)
    }).pipe(Effect.scoped))
  it.effect("the layer's AuditSink appends through the same chain as SqlAuditSink", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const event = refusalEvent("agent-a", 0)
      expect(yield* Context.get(context, AuditSink).append(event)).toMatchObject({
        _tag: "Appended",
        uniqueRaceRetries: 0,
        position: { sequence: 0 }
      })
      const head = yield* Context.get(context, SqlAuditSink.SqlAuditSink).head
      expect(Option.map(head, (h) => h.sequence)).toEqual(Option.some(0))
    }).pipe(Effect.scoped))

  it.effect("an append inside the caller's transaction runs in a savepoint and commits with it", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      const outcome = yield* sql.withTransaction(sink.append(refusalEvent("agent-a", 0)))
      expect(outcome).toMatchObject({ _tag: "Appended", uniqueRaceRetries: 0, position: { sequence: 0 } })
      const rolledBack = yield* Effect.exit(sql.withTransaction(
        Effect.zipRight(sink.append(refusalEvent("agent-a", 1)), Effect.fail("caller failed" as const))
      ))
      expect(rolledBack).toEqual(Exit.fail("caller failed"))
      // The rolled-back append left the cached head ahead of the table: the next append must not leave a gap.
      yield* sink.append(refusalEvent("agent-a", 2))
      yield* Effect.provide(expectIntactChain(2), context)
    }).pipe(Effect.scoped))
})

describe("internal/sqlDialect", () => {
  const classifyCode = (code: string, message = "whatever the driver says") =>
    sqlite.classify(new SqlError({ cause: Object.assign(new Error(message), { code }) })).kind

  it("classifies SQLite errors by code, never by message", () => {
    expect(classifyCode("SQLITE_CONSTRAINT_UNIQUE")).toBe("uniqueViolation")
    expect(classifyCode("SQLITE_CONSTRAINT_PRIMARYKEY")).toBe("uniqueViolation")
    expect(classifyCode("SQLITE_BUSY")).toBe("busy")
    expect(classifyCode("SQLITE_BUSY_SNAPSHOT")).toBe("busy")
    expect(classifyCode("SQLITE_LOCKED")).toBe("busy")
    expect(classifyCode("SQLITE_FULL")).toBe("storageFull")
    expect(classifyCode("SQLITE_CONSTRAINT_NOTNULL")).toBe("other")
    expect(classifyCode("SQLITE_MISMATCH", "UNIQUE constraint failed: database is locked")).toBe("other")
    // The environment, not the event: the queue holds events and retries instead of dead-lettering.
    expect(classifyCode("SQLITE_READONLY")).toBe("unavailable")
    expect(classifyCode("SQLITE_READONLY_DIRECTORY")).toBe("unavailable")
    expect(classifyCode("SQLITE_IOERR_WRITE", "UNIQUE constraint failed")).toBe("unavailable")
    expect(classifyCode("SQLITE_CANTOPEN")).toBe("unavailable")
    expect(sqlite.classify(new SqlError({ message: "UNIQUE constraint failed" })).kind).toBe("other")
  })

  it.effect("classifies a real driver error from a duplicate sequence", () =>
    Effect.gen(function*() {
      const context = yield* openSink(freshFile())
      const sink = Context.get(context, SqlAuditSink.SqlAuditSink)
      const sql = Context.get(context, SqlClient.SqlClient)
      yield* sink.append(refusalEvent("agent-a", 0))
      const error = yield* Effect.flip(sql.unsafe(
        `INSERT INTO signed_events SELECT 'other-id', sequence, agent_id, event_type, payload, payload_hash,
         prev_hash, entry_hash, signature, key_id, attest_level, timestamp, appended_at FROM signed_events`
      ))
      const failure = sqlite.classify(error)
      expect(failure.kind).toBe("uniqueViolation")
      expect(failure.code).toEqual(Option.some("SQLITE_CONSTRAINT_UNIQUE"))
    }).pipe(Effect.scoped))

  it.effect("withWriteTransaction holds the write lock from BEGIN, on the connection its statements use", () =>
    Effect.gen(function*() {
      const file = freshFile()
      const sqlA = Context.get(yield* openSink(file), SqlClient.SqlClient)
      // busy_timeout 0: a lock conflict is reported at once instead of blocking this (only) thread.
      const sqlB = Context.get(yield* openSink(file, { busyTimeout: 0 }), SqlClient.SqlClient)
      yield* sqlA.unsafe("CREATE TABLE scratch (n INTEGER)")
      const otherWriterWhileInside = yield* withWriteTransaction(
        sqlA,
        sqlite,
        Effect.gen(function*() {
          yield* sqlA`SELECT COUNT(*) FROM scratch` // a read only: a deferred BEGIN would not lock yet
          // Outside the transaction's context, so the statement runs on B's own connection.
          const otherBegin = sqlB.unsafe("BEGIN IMMEDIATE").pipe(
            Effect.mapInputContext((context: Context.Context<never>) =>
              Context.omit(SqlClient.TransactionConnection)(context as Context.Context<SqlClient.TransactionConnection>)
            )
          )
          return sqlite.classify(yield* Effect.flip(otherBegin)).kind
        })
      )
      expect(otherWriterWhileInside).toBe("busy")
      yield* sqlB.unsafe("BEGIN IMMEDIATE") // free again after COMMIT
      yield* sqlB.unsafe("ROLLBACK")

      // The body's statements are in the transaction: committed on success, rolled back on failure.
      yield* withWriteTransaction(sqlA, sqlite, sqlA`INSERT INTO scratch (n) VALUES (1)`)
      const failed = yield* Effect.exit(withWriteTransaction(
        sqlA,
        sqlite,
        Effect.zipRight(sqlA`INSERT INTO scratch (n) VALUES (2)`, Effect.fail("body failed" as const))
      ))
      expect(failed).toEqual(Exit.fail("body failed"))
      const interrupted = yield* Effect.exit(withWriteTransaction(
        sqlA,
        sqlite,
        Effect.zipRight(sqlA`INSERT INTO scratch (n) VALUES (3)`, Effect.interrupt)
      ))
      expect(Exit.isInterrupted(interrupted)).toBe(true)
      expect(yield* sqlB`SELECT n FROM scratch`).toEqual([{ n: 1 }])
    }).pipe(Effect.scoped))
})
