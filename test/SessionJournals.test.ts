import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { ZERO_HASH } from "../src/internal/encoding.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import { SessionJournals } from "../src/journal/SessionJournals.js"
import * as Registry from "../src/journal/SessionJournals.js"

const params = (toolName: string): SessionJournal.RecordParams => ({
  toolName,
  serverId: "srv-1",
  agentId: "agent-1",
  bytesRead: 1,
  bytesWritten: 2,
  delegationDepth: 0,
  allowed: true
})

describe("SessionJournals", () => {
  it.effect("get creates a journal on first use and returns the same journal after", () =>
    Effect.gen(function*() {
      const journals = yield* SessionJournals
      const first = yield* journals.get("sess-1")
      expect(yield* first.sessionId).toBe("sess-1")
      yield* first.record(params("read_file"))
      const again = yield* journals.get("sess-1")
      expect(again).toBe(first)
      expect(yield* again.length).toBe(1)
      const other = yield* journals.get("sess-2")
      expect(other).not.toBe(first)
      expect(yield* other.isEmpty).toBe(true)
    }).pipe(Effect.provide(Registry.layer)))

  it.effect("concurrent gets of one new id yield one journal", () =>
    Effect.gen(function*() {
      // Yielding every few operations interleaves the fibers inside `get`, so they race on creation.
      const journals = yield* SessionJournals
      const got = yield* Effect.forEach(
        Array.from({ length: 100 }, (_, i) => i),
        (i) => Effect.tap(journals.get("sess-race"), (journal) => journal.record(params(`tool_${i}`))),
        { concurrency: "unbounded" }
      )
      expect(new Set(got).size).toBe(1)
      const journal = got[0]!
      expect(yield* journal.length).toBe(100)
      yield* journal.verifyIntegrity
      expect(yield* journals.list).toEqual(["sess-race"])
    }).pipe(Effect.withMaxOpsBeforeYield(10), Effect.provide(Registry.layer)))

  it.effect("end returns the final export and forgets the session; a later get starts a new journal", () =>
    Effect.gen(function*() {
      const journals = yield* SessionJournals
      const journal = yield* journals.get("sess-end")
      yield* journal.record(params("read_file"))
      yield* journal.record(params("bash"))
      const head = yield* journal.headHash

      const ended = yield* journals.end("sess-end")
      expect(Option.isSome(ended)).toBe(true)
      const exported = Option.getOrThrow(ended)
      expect(exported.sessionId).toBe("sess-end")
      expect(exported.headHash).toBe(head)
      expect(exported.entries.map((entry) => entry.toolName)).toEqual(["read_file", "bash"])
      yield* SessionJournal.verifyExport(exported)
      expect(yield* journals.list).toEqual([])

      const fresh = yield* journals.get("sess-end")
      expect(fresh).not.toBe(journal)
      expect(yield* fresh.headHash).toBe(ZERO_HASH)
      expect(yield* fresh.record(params("write_file"))).toBe(0)
    }).pipe(Effect.provide(Registry.layer)))

  it.effect("end of a session that is not open is None", () =>
    Effect.gen(function*() {
      const journals = yield* SessionJournals
      expect(yield* journals.end("never-opened")).toEqual(Option.none())
      yield* journals.get("sess-once")
      expect(Option.isSome(yield* journals.end("sess-once"))).toBe(true)
      expect(yield* journals.end("sess-once")).toEqual(Option.none())
    }).pipe(Effect.provide(Registry.layer)))

  it.effect("list returns the open session ids, sorted", () =>
    Effect.gen(function*() {
      const journals = yield* SessionJournals
      expect(yield* journals.list).toEqual([])
      for (const id of ["sess-c", "sess-a", "sess-b"]) yield* journals.get(id)
      expect(yield* journals.list).toEqual(["sess-a", "sess-b", "sess-c"])
      yield* journals.end("sess-b")
      expect(yield* journals.list).toEqual(["sess-a", "sess-c"])
    }).pipe(Effect.provide(Registry.layer)))

  it.effect("each layer is a separate registry", () =>
    Effect.gen(function*() {
      const first = yield* Effect.provide(Effect.flatMap(SessionJournals, (j) => j.get("sess-1")), Registry.layer)
      const second = yield* Effect.provide(Effect.flatMap(SessionJournals, (j) => j.get("sess-1")), Registry.layer)
      expect(first).not.toBe(second)
    }))
})
