/**
 * The operator queries (`LedgerQuery`) on SQLite and on PostgreSQL (skipped, visibly, without
 * `AGENT_LEDGER_PG_URL`): one row with its session entry and seal, the filtered log and its paging, `tail`
 * and `tail -f` (driven by TestClock), sessions; and hostile input: unknown ids, bad times and limits, a
 * cursor that is not one, an injection attempt in a filter, and a payload that spells another row's rule,
 * tool and session.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import type { Context } from "effect"
import { Chunk, DateTime, Effect, Either, Fiber, Layer, ManagedRuntime, Option, Stream, TestClock } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerQuery from "../src/query/LedgerQuery.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"
import { append, appendJournal, at, laterRefusal, SEEDED } from "./fixtures/queryLedger.js"

const scratch = mkdtempSync(join(tmpdir(), "agent-ledger-query-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const sequences = (entries: ReadonlyArray<LedgerQuery.LogEntry>) => entries.map((e) => e.ledgerSequence)

const b64 = (text: string) => `log:${Buffer.from(text).toString("base64url")}`

const time = (minute: number) => DateTime.unsafeMake(at(minute))

const suite = (name: string, skip: boolean, open: () => { readonly db: string; readonly close: () => void }) =>
  describe.skipIf(skip)(`LedgerQuery on ${name}`, () => {
    let db = ""
    let close = () => {}
    // One connection (pool) for the suite: opening one migrates, which PostgreSQL does under a lock.
    let runtime: ManagedRuntime.ManagedRuntime<LedgerQuery.LedgerQuery, unknown> | undefined
    let context: Context.Context<LedgerQuery.LedgerQuery> | undefined
    beforeAll(async () => {
      ;({ db, close } = open())
      await Effect.runPromise(append(db, SEEDED))
      runtime = ManagedRuntime.make(LedgerQuery.layer.pipe(Layer.provide(LedgerSql.layerFor(db))))
      context = (await runtime.runtime()).context
    })
    afterAll(async () => {
      await runtime?.dispose()
      close()
    })

    const query = <A, E>(body: (q: LedgerQuery.Service) => Effect.Effect<A, E>) =>
      Effect.flatMap(LedgerQuery.LedgerQuery, body).pipe(Effect.provide(context!))
    const logOf = (q: LedgerQuery.LogQuery) =>
      query((service) => Effect.map(Stream.runCollect(service.log(q)), Chunk.toReadonlyArray))

    it.live("log: everything in ledger order, decoded", () =>
      Effect.gen(function*() {
        const all = yield* logOf({})
        expect(sequences(all)).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
        expect(all.map((e) => e.kind)).toEqual([
          "refusal",
          "seal",
          "refusal",
          "refusal",
          "refusal",
          "refusal",
          "seal",
          "seal"
        ])
        expect(all[3]).toMatchObject({
          agentId: "agent-a",
          decision: "refuse",
          ruleId: "no-write",
          reason: "no-write says no",
          toolName: "write_file",
          serverId: "fs",
          sessionId: "s1",
          journalSequence: 3,
          timestamp: at(3),
          eventId: SEEDED[3].id,
          problem: null
        })
        expect(all[6]).toMatchObject({ kind: "seal", sessionId: "s1", sealLength: 5, decision: null })
      }))

    it.live("log filters combine, and are matched exactly, not by the text a payload happens to contain", () =>
      Effect.gen(function*() {
        expect(sequences(yield* logOf({ agent: "agent-a" }))).toEqual([0, 1, 3, 4, 6])
        // Row 5's arguments spell "ruleId":"no-write", "session_id":"s1" and "toolName":"write_file".
        expect(sequences(yield* logOf({ rule: "no-write" }))).toEqual([3])
        expect(sequences(yield* logOf({ session: "s1" }))).toEqual([0, 1, 3, 6])
        expect(sequences(yield* logOf({ tool: "write_file" }))).toEqual([3])
        expect(sequences(yield* logOf({ tool: "shell.exec", agent: "agent-a" }))).toEqual([0, 4])
        expect(sequences(yield* logOf({ decision: "refuse" }))).toEqual([0, 2, 3, 4, 5])
        // Before the journal is stored, the ledger has no allowed calls.
        expect(sequences(yield* logOf({ decision: "allow" }))).toEqual([])
        expect(sequences(yield* logOf({ since: time(2), until: time(4) }))).toEqual([2, 3, 4])
        expect(sequences(yield* logOf({ since: time(3), decision: "refuse", session: "s1" }))).toEqual([3])
      }))

    it.live("hostile filters: an injection attempt, quotes, NUL and unknown values find nothing and break nothing", () =>
      Effect.gen(function*() {
        for (
          const hostile of [
            "' OR 1=1 --",
            "agent-a' OR '1'='1",
            "\"; DROP TABLE signed_events; --",
            "\u0000",
            "%",
            "_",
            "\\",
            "x".repeat(100_000)
          ]
        ) {
          expect(yield* logOf({ agent: hostile })).toEqual([])
          expect(yield* logOf({ rule: hostile })).toEqual([])
          expect(yield* logOf({ session: hostile })).toEqual([])
          expect(yield* logOf({ tool: hostile })).toEqual([])
        }
        // The injection text stored inside a payload is data, and the table is still there.
        expect(sequences(yield* logOf({}))).toHaveLength(8)
      }))

    it.live("page: keyset paging in both orders, limits checked", () =>
      Effect.gen(function*() {
        const first = yield* query((q) => q.page({}, { limit: 3 }))
        expect(sequences(first.entries)).toEqual([0, 1, 2])
        const second = yield* query((q) => q.page({}, { limit: 3, after: first.next! }))
        expect(sequences(second.entries)).toEqual([3, 4, 5])
        const third = yield* query((q) => q.page({}, { limit: 3, after: second.next! }))
        expect(sequences(third.entries)).toEqual([6, 7])
        expect(third.next).toBeNull()
        const newest = yield* query((q) => q.page({ decision: "refuse" }, { limit: 2, order: "desc" }))
        expect(sequences(newest.entries)).toEqual([5, 4])
        const older = yield* query((q) =>
          q.page({ decision: "refuse" }, { limit: 2, order: "desc", after: newest.next! })
        )
        expect(sequences(older.entries)).toEqual([3, 2])
        for (const limit of [0, -1, 1.5, LedgerQuery.MAX_PAGE_LIMIT + 1, Number.MAX_SAFE_INTEGER, NaN]) {
          const error = yield* Effect.flip(query((q) => q.page({}, { limit })))
          expect(error).toMatchObject({ _tag: "InvalidQuery", field: "limit" })
        }
        for (
          const after of [
            "",
            "ledger:",
            "ledger:-1",
            "ledger:1 OR 1=1",
            "journal:3",
            "ledger:99999999999999999",
            "log:!!!",
            "log:",
            b64("[1,2,3]"),
            b64("[null,-1,\"s\",0]"),
            b64("{}")
          ]
        ) {
          const error = yield* Effect.flip(query((q) => q.page({}, { limit: 1, after })))
          expect(error).toMatchObject({ _tag: "InvalidQuery", field: "after" })
        }
        // A cursor past the end is an empty page, not an error.
        expect((yield* query((q) => q.page({}, { limit: 5, after: "ledger:1000000" }))).entries).toEqual([])
      }))

    it.live("recent: the last N matches, oldest first; a huge N is refused, not allocated", () =>
      Effect.gen(function*() {
        expect(sequences(yield* query((q) => q.recent({ agent: "agent-a" }, 2)))).toEqual([4, 6])
        expect(sequences(yield* query((q) => q.recent({}, 100)))).toHaveLength(8)
        const error = yield* Effect.flip(query((q) => q.recent({}, 1e12)))
        expect(error).toMatchObject({ _tag: "InvalidQuery", field: "limit" })
        const backwards = yield* Effect.flip(query((q) => q.recent({ since: time(5), until: time(1) }, 5)))
        expect(backwards).toMatchObject({ _tag: "InvalidQuery", field: "until" })
      }))

    it.live("show: by sequence and by event id, with the session entry and the seal that covers it", () =>
      Effect.gen(function*() {
        const bySequence = yield* query((q) => q.show({ sequence: 3 }))
        const byId = yield* query((q) => q.show({ eventId: SEEDED[3].id }))
        expect(byId).toEqual(bySequence)
        expect(bySequence.row.sequence).toBe(3)
        expect(bySequence.session).toMatchObject({ sessionId: "s1", sequence: 3 })
        // Seal 1 covers entries 0-1 only; seal 6 (length 5) is the first that covers entry 3.
        expect(bySequence.seal).toMatchObject({ ledgerSequence: 6, length: 5 })
        expect((yield* query((q) => q.show({ sequence: 0 }))).seal).toMatchObject({ ledgerSequence: 1, length: 2 })
        expect(bySequence.payload).toMatchObject({ decision: { ruleId: "no-write" } })
        // Unsealed session, no session at all, a seal row (its own seal).
        expect((yield* query((q) => q.show({ sequence: 2 }))).seal).toBeNull()
        const loose = yield* query((q) => q.show({ sequence: 4 }))
        expect([loose.session, loose.seal]).toEqual([null, null])
        const sealRow = yield* query((q) => q.show({ sequence: 6 }))
        expect(sealRow.session).toMatchObject({ sessionId: "s1", sequence: null })
        expect(sealRow.seal).toMatchObject({ ledgerSequence: 6 })
        // The hostile row is about session s3, whatever its arguments say.
        expect((yield* query((q) => q.show({ sequence: 5 }))).session).toMatchObject({ sessionId: "s3" })
      }))

    it.live("show: unknown and malformed ids", () =>
      Effect.gen(function*() {
        expect(yield* Effect.flip(query((q) => q.show({ sequence: 99 })))).toMatchObject({ _tag: "NotFound", id: "99" })
        const unknown = "01936f2a-5c00-7a3b-8c4d-000000000000"
        expect(yield* Effect.flip(query((q) => q.show({ eventId: unknown })))).toMatchObject({ _tag: "NotFound" })
        for (const bad of ["", "-1", "1e3", "3 OR 1=1", "99999999999999999999", "not-a-uuid", "0x10"]) {
          expect(Either.isLeft(Effect.runSync(Effect.either(LedgerQuery.parseRowId(bad)))), bad).toBe(true)
        }
        expect(Effect.runSync(LedgerQuery.parseRowId(SEEDED[2].id.toUpperCase()))).toEqual({ eventId: SEEDED[2].id })
      }))

    it.live("sessions: agent, start, end, calls, refusals, sealed", () =>
      Effect.gen(function*() {
        const sessions = yield* query((q) => q.sessions())
        expect(sessions.map((s) => s.sessionId)).toEqual(["s1", "s2", "s3", "s4"])
        expect(sessions[0]).toMatchObject({
          agentId: "agent-a",
          start: at(0),
          end: at(6),
          calls: 5,
          refusals: 2,
          sealed: true,
          sealedLength: 5,
          lastSealSequence: 6
        })
        expect(sessions[1]).toMatchObject({ agentId: "agent-b", calls: 1, refusals: 1, sealed: false })
        expect(sessions[3]).toMatchObject({ agentId: "agent-d", calls: 0, refusals: 0, sealed: true, sealedLength: 0 })
        expect((yield* query((q) => q.sessions({ agent: "agent-b" }))).map((s) => s.sessionId)).toEqual(["s2"])
        expect(yield* query((q) => q.sessions({ agent: "' OR 1=1 --" }))).toEqual([])
      }))

    it.live("session: its entries, seals and totals; an unknown session is NotFound", () =>
      Effect.gen(function*() {
        const s1 = yield* query((q) => q.session("s1"))
        expect(sequences(s1.entries)).toEqual([0, 3])
        expect(s1.seals.map((s) => s.length)).toEqual([2, 5])
        expect(s1.totals).toMatchObject({ calls: 5, refusals: 2 })
        expect(s1.byTool.map((t) => [t.toolName, t.calls, t.refusals])).toEqual([["shell.exec", 1, 1], [
          "write_file",
          1,
          1
        ]])
        expect(yield* Effect.flip(query((q) => q.session("nope")))).toMatchObject({ _tag: "NotFound" })
        expect(yield* Effect.flip(query((q) => q.session("' OR 1=1 --")))).toMatchObject({ _tag: "NotFound" })
      }))

    it.effect(
      "follow: the matches so far, then each new row once the poll (TestClock) comes round",
      () =>
        Effect.gen(function*() {
          const fiber = yield* query((q) =>
            Stream.runCollect(
              q.follow({ agent: "agent-a", decision: "refuse" }, { pollInterval: "5 seconds" }).pipe(Stream.take(4))
            )
          ).pipe(Effect.fork)
          // Caught up: the stream is waiting for its next poll.
          while ((yield* TestClock.sleeps()).length === 0) {
            const early = yield* Fiber.poll(fiber)
            if (Option.isSome(early)) throw new Error(`follow ended early: ${JSON.stringify(early.value)}`)
            yield* Effect.yieldNow()
          }
          expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
          yield* Effect.promise(() => Effect.runPromise(append(db, [laterRefusal(60, 7)])))
          yield* TestClock.adjust("5 seconds")
          const followed = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
          expect(sequences(followed)).toEqual([0, 3, 4, 8])
          expect(followed[3]).toMatchObject({ journalSequence: 7, timestamp: at(60) })
        }),
      { timeout: 20_000 }
    )

    it.live(
      "with a stored journal: allowed calls join the log once, by time, and sessions count every call",
      () =>
        Effect.gen(function*() {
          yield* Effect.promise(() => Effect.runPromise(appendJournal(db)))
          const allowed = yield* logOf({ decision: "allow" })
          expect(allowed.map((e) => [e.kind, e.toolName, e.outcome, e.bytesRead, e.bytesWritten, e.journalSequence]))
            .toEqual([
              ["call", "read_file", "result", 100, 10, 0],
              ["call", "list_dir", "pending", 0, 0, 3]
            ])
          // The refused call is the ledger's refusal row, not a second entry from the journal.
          expect((yield* logOf({ tool: "upload", session: "j1" })).map((e) => [e.kind, e.ledgerSequence]))
            .toEqual([["refusal", 9]])
          const all = yield* logOf({})
          expect(all).toHaveLength(12)
          expect(sequences(all.slice(0, 9))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8])
          expect(all.slice(9).map((e) => e.kind).sort()).toEqual(["call", "call", "refusal"])
          // Paging through both sources, either way, gives the same log without a gap or a repeat.
          const paged: Array<LedgerQuery.LogEntry> = []
          let next: string | null | undefined = undefined
          do {
            const after = next ?? undefined
            const page: LedgerQuery.LogPage = yield* query((q) => q.page({}, { limit: 5, after }))
            paged.push(...page.entries)
            next = page.next
          } while (next !== null)
          expect(paged.map(LedgerQuery.entryKey)).toEqual(all.map(LedgerQuery.entryKey))
          const backwards: Array<LedgerQuery.LogEntry> = []
          next = undefined
          do {
            const after = next ?? undefined
            const page: LedgerQuery.LogPage = yield* query((q) => q.page({}, { limit: 4, after, order: "desc" }))
            backwards.push(...page.entries)
            next = page.next
          } while (next !== null)
          expect(backwards.map(LedgerQuery.entryKey).reverse()).toEqual(all.map(LedgerQuery.entryKey))
          expect((yield* query((q) => q.recent({ session: "j1" }, 2))).map(LedgerQuery.entryKey))
            .toEqual(all.slice(10).map(LedgerQuery.entryKey))
          const j1 = yield* query((q) => q.session("j1"))
          expect(j1.journalStored).toBe(true)
          expect(j1.entries.map((e) => [e.kind, e.journalSequence, e.ruleId, e.ledgerSequence, e.outcome])).toEqual([
            ["call", 0, null, null, "result"],
            ["refusal", 2, "no-upload", 9, "refused"],
            ["call", 3, null, null, "pending"]
          ])
          expect(j1.totals).toEqual({ calls: 3, refusals: 1, bytesRead: 100, bytesWritten: 17 })
          expect(j1.summary).toMatchObject({ agentId: "agent-a", calls: 3, refusals: 1, sealed: false })
          const listed = (yield* query((q) => q.sessions({ agent: "agent-a" }))).map((s) => [s.sessionId, s.calls])
          // s1: sealed at 5, and the follow test refused its entry 7.
          expect(listed).toEqual([["s1", 8], ["j1", 3]])
        }),
      { timeout: 20_000 }
    )
  })

suite("SQLite", false, () => ({ db: join(scratch, "query.db"), close: () => {} }))

suite("PostgreSQL", noPostgres, () => {
  const { url, drop } = freshDatabase()
  return { db: url, close: drop }
})
