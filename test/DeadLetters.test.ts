import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { canonicalJson } from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-dlq-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = () => join(tempRoot, `ledger-${++fileCounter}.db`)

/** A fresh connection (and sink) per use: statements prepared against a broken schema are not reused. */
const withSink = (filename: string) =>
  Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(sqliteWithClient({ filename }))))

const exec = (statement: string) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))

const chainIds = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<{ id: string }>`SELECT id FROM signed_events ORDER BY sequence`
).pipe(Effect.map((rows) => rows.map((r) => r.id)))

/** A ledger with `appended` rows in the chain, then `dead` events dead-lettered by a broken schema. */
const ledgerWithDeadLetters = (filename: string, appended: number, dead: number) =>
  Effect.gen(function*() {
    yield* Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      for (let n = 0; n < appended; n++) yield* sink.append(refusalEvent("agent-ok", n))
      yield* exec("ALTER TABLE signed_events RENAME COLUMN agent_id TO agent_id_broken")
    }).pipe(withSink(filename))
    const outcomes = yield* Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      return yield* Effect.forEach(
        Array.from({ length: dead }, (_, i) => refusalEvent("agent-dead", 1_000 + i)),
        sink.append
      )
    }).pipe(withSink(filename))
    expect(outcomes.every((o) => o._tag === "DlqLanded")).toBe(true)
    yield* exec("ALTER TABLE signed_events RENAME COLUMN agent_id_broken TO agent_id").pipe(withSink(filename))
  }).pipe(quietly)

describe("DeadLetters", () => {
  it("eventOf rebuilds the event byte for byte from a dead letter's payload", () => {
    const event = refusalEvent("agent", 7, "ünïcode ✓")
    const letter = {
      dlq_id: 1,
      id: event.id,
      agent_id: event.agentId,
      event_type: "governance.refusal",
      payload: canonicalJson(event),
      payload_hash: "",
      timestamp: "",
      failure_reason: "test",
      failed_at: "",
      replayed_at: null
    }
    const rebuilt = DeadLetters.eventOf(letter)
    expect(Either.isRight(rebuilt) && canonicalJson(rebuilt.right)).toBe(canonicalJson(event))
    // An edited payload (here: keys reordered, so no longer canonical) is refused, not re-canonicalized.
    const edited = JSON.parse(letter.payload)
    const reordered = JSON.stringify({ timestamp: edited.timestamp, ...edited })
    expect(Either.isLeft(DeadLetters.eventOf({ ...letter, payload: reordered }))).toBe(true)
    expect(Either.isLeft(DeadLetters.eventOf({ ...letter, payload: "{" }))).toBe(true)
    expect(Either.isLeft(DeadLetters.eventOf({ ...letter, id: refusalEvent("agent", 8).id }))).toBe(true)
  })

  it.live("replay appends in order once, is idempotent, and the chain verifies", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* ledgerWithDeadLetters(file, 3, 4)
      const result = yield* Effect.gen(function*() {
        const dry = yield* DeadLetters.replayDeadLetters({ dryRun: true })
        expect(dry).toMatchObject({ dryRun: true, pending: 4, replayed: 0 })
        expect(yield* chainIds).toHaveLength(3)
        const progress: Array<readonly [number, number]> = []
        const first = yield* DeadLetters.replayDeadLetters({
          onProgress: (done, total) => Effect.sync(() => progress.push([done, total]))
        })
        expect(progress).toEqual([[0, 4], [1, 4], [2, 4], [3, 4], [4, 4]])
        const second = yield* DeadLetters.replayDeadLetters()
        const letters = yield* DeadLetters.list()
        return { first, second, letters, ids: yield* chainIds, report: yield* verifyLedger() }
      }).pipe(withSink(file))
      expect(result.first).toMatchObject({ replayed: 4, alreadyInChain: 0, failed: [], pending: 4 })
      expect(result.second).toMatchObject({ replayed: 0, pending: 0 })
      expect(result.ids.slice(3)).toEqual(result.letters.map((l) => l.id))
      expect(result.letters.every((l) => l.replayed_at !== null)).toBe(true)
      expect(result.report.ok).toBe(true)
      expect(result.report.rowsChecked).toBe(7)
    }))

  it.live("a dead letter whose event is already in the chain is marked without a second row", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* ledgerWithDeadLetters(file, 2, 0)
      const result = yield* Effect.gen(function*() {
        yield* exec(`INSERT INTO signed_events_dlq (id, agent_id, event_type, payload, payload_hash, timestamp,
                       failure_reason, failed_at)
                     SELECT id, agent_id, event_type, payload, payload_hash, timestamp, 'lost ack', 'x'
                     FROM signed_events WHERE sequence = 1`)
        const replay = yield* DeadLetters.replayDeadLetters()
        return { replay, ids: yield* chainIds, pending: yield* DeadLetters.list({ pendingOnly: true }) }
      }).pipe(withSink(file))
      expect(result.replay).toMatchObject({ replayed: 1, alreadyInChain: 1 })
      expect(result.ids).toHaveLength(2)
      expect(result.pending).toHaveLength(0)
    }))

  it.live("a dead letter that cannot be replayed stays pending, is reported, and adds no dead letter", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* ledgerWithDeadLetters(file, 1, 2)
      const result = yield* Effect.gen(function*() {
        yield* exec("UPDATE signed_events_dlq SET payload = '{\"tampered\":true}' WHERE dlq_id = 1")
        const replay = yield* DeadLetters.replayDeadLetters()
        return { replay, letters: yield* DeadLetters.list(), ids: yield* chainIds }
      }).pipe(withSink(file))
      expect(result.replay.replayed).toBe(1)
      expect(result.replay.failed).toEqual([
        { dlqId: 1, eventId: result.letters[0]!.id, reason: expect.stringContaining("payload does not decode") }
      ])
      expect(result.letters).toHaveLength(2)
      expect(result.letters[0]!.replayed_at).toBeNull()
      expect(result.letters[1]!.replayed_at).not.toBeNull()
      expect(result.ids).toHaveLength(2)
    }))

  it.live("layerSqlite with replayDeadLettersOnStart replays before new events are appended", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* ledgerWithDeadLetters(file, 2, 3)
      const fresh = refusalEvent("agent-new", 5_000)
      yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        expect(yield* queue.submit(fresh)).toBe(true)
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename: file, replayDeadLettersOnStart: true })), quietly)
      const { ids, letters } = yield* Effect.all({ ids: chainIds, letters: DeadLetters.list() }).pipe(withSink(file))
      expect(ids).toEqual([...ids.slice(0, 2), ...letters.map((l) => l.id), fresh.id])
      expect(letters.every((l) => l.replayed_at !== null)).toBe(true)
    }))

  it.live("without the option, dead letters stay pending when the layer starts", () =>
    Effect.gen(function*() {
      const file = freshFile()
      yield* ledgerWithDeadLetters(file, 1, 2)
      yield* Effect.void.pipe(Effect.provide(AuditLedger.layerSqlite({ filename: file })))
      const pending = yield* DeadLetters.list({ pendingOnly: true }).pipe(withSink(file))
      expect(pending).toHaveLength(2)
    }))
})
