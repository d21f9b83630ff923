/**
 * Values the services hand out are the caller's to keep: writing to one (a cast, plain JavaScript) cannot
 * change a live journal or make a queue misreport its state.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { Appended, AuditSink } from "../src/audit/AuditSink.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import { refusalEvent } from "./fixtures/events.js"

type Writable<T> = { -readonly [K in keyof T]: T[K] }

const call = (toolName: string, bytesRead: number): SessionJournal.RecordParams => ({
  toolName,
  serverId: "fs",
  agentId: "agent-1",
  bytesRead,
  bytesWritten: 1,
  delegationDepth: 0,
  allowed: true
})

const journalOf = Effect.gen(function*() {
  const journal = yield* SessionJournal.make("session-immutable")
  yield* journal.record(call("read_file", 10))
  yield* journal.record(call("write_file", 20))
  yield* journal.record(call("read_file", 30))
  return journal
})

/** Everything a journal reports, as plain data. */
const stateOf = (journal: SessionJournal.Journal) =>
  Effect.gen(function*() {
    return JSON.parse(JSON.stringify({
      entries: yield* journal.entries,
      dataFlow: yield* journal.dataFlow,
      toolSequence: yield* journal.toolSequence,
      toolCounts: Array.from((yield* journal.toolCounts).entries()),
      headHash: yield* journal.headHash,
      length: yield* journal.length
    }))
  })

/** Writes to `value` as careless or hostile JavaScript would; frozen values throw, which is fine too. */
const scribble = (write: () => void): void => {
  try {
    write()
  } catch (error) {
    expect(error).toBeInstanceOf(TypeError)
  }
}

describe("values handed out by a SessionJournal", () => {
  it.effect("writes to entries, recentEntries, export, dataFlow, toolSequence and toolCounts change nothing", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf
      const before = yield* stateOf(journal)

      const entries = yield* journal.entries
      scribble(() => ((entries[0] as Writable<SessionJournal.JournalEntry>).bytesRead = 999))
      scribble(() => (entries as Array<SessionJournal.JournalEntry>).pop())
      const recent = yield* journal.recentEntries(2)
      scribble(() => ((recent[1] as Writable<SessionJournal.JournalEntry>).toolName = "rm"))
      scribble(() => ((recent[0] as Writable<SessionJournal.JournalEntry>).entryHash = "0".repeat(64)))
      const exported = yield* journal.export
      scribble(() => ((exported.entries[2] as Writable<SessionJournal.JournalEntry>).allowed = false))
      scribble(() => ((exported as Writable<SessionJournal.JournalExport>).headHash = "f".repeat(64)))
      scribble(() => (exported.entries as Array<SessionJournal.JournalEntry>).splice(0, 1))
      const flow = yield* journal.dataFlow
      scribble(() => ((flow as Writable<SessionJournal.DataFlow>).totalBytesRead = 0))
      const sequence = yield* journal.toolSequence
      scribble(() => ((sequence as Array<string>)[0] = "rm"))
      const counts = yield* journal.toolCounts
      scribble(() => (counts as Map<string, number>).set("read_file", 0))

      expect(yield* stateOf(journal)).toEqual(before)
      yield* journal.verifyIntegrity
      const again = yield* journal.export
      expect(yield* Effect.either(SessionJournal.verifyExport(JSON.parse(JSON.stringify(again))))).toMatchObject({
        _tag: "Right"
      })
    }))
})

describe("values handed out by an AuditQueue", () => {
  it.effect("a write to metrics cannot make drainPending report a stuck event as drained", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const sink = AuditSink.of({
        append: () => Effect.as(Deferred.await(release), new Appended({ uniqueRaceRetries: 0 })),
        deadLetter: () => Effect.void
      })
      const queue = yield* AuditQueue.make({ sink, queueId: "immutability-test" })
      yield* queue.submit(refusalEvent("agent-1", 0))
      const metrics = yield* queue.metrics
      scribble(() => ((metrics as Writable<typeof metrics>).appended = 1))
      scribble(() => ((metrics as Writable<typeof metrics>).submitted = 0))
      expect(yield* queue.metrics).toMatchObject({ submitted: 1, appended: 0 })
      expect(yield* queue.drainPending(0)).toBe(false)

      const fresh = yield* AuditQueue.make({ sink, queueId: "immutability-test-2" })
      const empty = yield* fresh.metrics
      scribble(() => ((empty as Writable<typeof empty>).submitted = 7))
      expect((yield* fresh.metrics).submitted).toBe(0)

      const draining = yield* Effect.fork(queue.drainPending("5 seconds"))
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(draining)).toBe(true)
    }).pipe(Effect.scoped))
})
