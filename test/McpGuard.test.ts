/**
 * McpGuard on an in-memory sink: what it journals and ledgers for allowed and refused calls, seals every N
 * entries and at session end, fail-closed refusals while the sink cannot write, and the Promise form.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Context } from "effect"
import { Effect, Layer, ManagedRuntime, Option, Ref } from "effect"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { Appended, AuditSink, AuditSinkError } from "../src/audit/AuditSink.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import { eventLoopTurn, quietly } from "./fixtures/effects.js"

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [
    { id: "no-move", kind: "blockTools", tools: ["move_file"] },
    { id: "no-read-then-write", kind: "sequence", after: ["read_*"], then: ["write_file"], within: 2 }
  ]
}))

/** A sink that keeps what it appends, and can be switched to "cannot write". */
const memorySink = Effect.gen(function*() {
  const appended = yield* Ref.make<ReadonlyArray<AuditEvent.DeferredAuditEvent>>([])
  const down = yield* Ref.make(false)
  let sequence = 0
  const sink = AuditSink.of({
    append: (event) =>
      Effect.flatMap(Ref.get(down), (isDown) =>
        isDown
          ? Effect.fail(new AuditSinkError({ eventId: event.id, reason: "disk full", unavailable: true }))
          : Effect.as(
            Ref.update(appended, (all) => [...all, event]),
            new Appended({ uniqueRaceRetries: 0, position: { sequence: sequence++, entryHash: "0".repeat(64) } })
          )),
    deadLetter: () => Effect.void
  })
  return { sink, appended, down }
})

const call = (toolName: string, args: unknown = { path: "/data/x" }): McpGuard.GuardCall => ({
  sessionId: "sess-1",
  agentId: "agent-1",
  serverId: "fs",
  toolName,
  arguments: args
})

const guardOn = (sink: Context.Tag.Service<typeof AuditSink>, options: Partial<McpGuard.Options> = {}) =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue.make({ sink })
    const guard = yield* McpGuard.McpGuard.pipe(
      Effect.provide(McpGuard.layer({ policy: GuardPolicy.engine(policy, { salt: "salt" }), ...options })),
      Effect.provideService(AuditQueue.AuditQueue, queue)
    )
    return { guard, queue }
  })

describe("McpGuard", () => {
  it.scoped("journals an allowed call's decision at once and its outcome on completion; refusals ledgered", () =>
    Effect.gen(function*() {
      const memory = yield* memorySink
      const { guard, queue } = yield* guardOn(memory.sink, { sealEvery: 0 })
      const read = yield* guard.check(call("read_file"))
      expect(read._tag).toBe("Allowed")
      if (read._tag !== "Allowed") return
      // The decision is journaled at once (pending); the outcome when the call completes.
      expect(yield* (yield* guard.journal("sess-1")).pendingCalls).toEqual([0])
      expect(read.ticket.sequence).toBe(0)
      yield* guard.complete(read.ticket, { _tag: "Result", bytesRead: 1234 })
      const write = yield* guard.check(call("write_file", { path: "/data/out", content: "secret" }))
      expect(write).toMatchObject({ _tag: "Refused", ruleId: "no-read-then-write", sequence: 2 })
      expect(yield* queue.drainPending("5 seconds")).toBe(true)

      const entries = yield* (yield* guard.journal("sess-1")).entries
      expect(
        entries.map((e) => [e.toolName, e.kind, e.outcome, e.callSequence, e.allowed, e.bytesRead, e.bytesWritten])
      )
        .toEqual([
          ["read_file", "call", "pending", 0, true, 0, McpGuard.jsonBytes({ path: "/data/x" })],
          ["read_file", "outcome", "result", 0, true, 1234, 0],
          ["write_file", "call", "refused", 2, false, 0, McpGuard.jsonBytes({ path: "/data/out", content: "secret" })]
        ])
      const [refusal] = yield* Ref.get(memory.appended)
      expect(refusal?.journal).toEqual(new AuditEvent.JournalRef({ sessionId: "sess-1", sequence: 2 }))
      expect(AuditEvent.ruleId(refusal!)).toEqual(Option.some("no-read-then-write"))
      expect(JSON.stringify(AuditEvent.canonicalObject(refusal!))).not.toContain("secret")
    }))

  it.scoped("seals every N entries and at session end, each seal naming the journal's length and head", () =>
    Effect.gen(function*() {
      const memory = yield* memorySink
      const { guard, queue } = yield* guardOn(memory.sink, { sealEvery: 2 })
      for (let i = 0; i < 3; i++) {
        const checked = yield* guard.check(call("list_directory"))
        if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: 10 })
      }
      const journal = yield* guard.journal("sess-1")
      const head = yield* journal.headHash
      const ended = yield* guard.endSession("sess-1")
      // Each call is two entries: its decision and its outcome.
      expect(Option.map(ended, (e) => e.entries.length)).toEqual(Option.some(6))
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      const sealEvents = (yield* Ref.get(memory.appended)).filter((event) => Option.isSome(AuditEvent.sealOf(event)))
      const seals = sealEvents.flatMap((event) => Option.toArray(AuditEvent.sealOf(event)))
      expect(seals.map((s) => s.length)).toEqual([2, 4, 6, 6])
      expect(seals[3]).toEqual({ sessionId: "sess-1", length: 6, headHash: head })
      // The seal names the journal's format.
      expect(JSON.stringify(AuditEvent.canonicalObject(sealEvents[3]!))).toContain(
        `"journal_format":"${SessionJournal.EXPORT_FORMAT}"`
      )
      // An ended session is gone: the next call starts a new journal.
      expect(yield* guard.endSession("sess-1")).toEqual(Option.none())
    }))

  it.live("fail-closed: while the ledger cannot write, every call is refused as audit-unavailable", () =>
    Effect.gen(function*() {
      const memory = yield* memorySink
      const { guard, queue } = yield* guardOn(memory.sink, { failClosed: true, sealEvery: 0 })
      const before = yield* guard.check(call("list_directory"))
      expect(before._tag).toBe("Allowed")
      // A refusal is acknowledged durable before the guard answers.
      const refused = yield* guard.check(call("move_file"))
      expect(refused).toMatchObject({ _tag: "Refused", ruleId: "no-move", ledgerSequence: 0 })

      yield* Ref.set(memory.down, true)
      yield* queue.submit(
        yield* AuditEvent.DeferredAuditEvent.sessionSeal("a", {
          sessionId: "x",
          length: 0,
          headHash: "0".repeat(64)
        })
      )
      for (let i = 0; i < 100 && (yield* queue.status) !== "Stalled"; i++) yield* eventLoopTurn
      expect(yield* queue.status).toBe("Stalled")
      const during = yield* guard.check(call("list_directory"))
      expect(during).toMatchObject({ _tag: "Refused", ruleId: McpGuard.AUDIT_UNAVAILABLE_RULE, ledgerSequence: null })
      // When the ledger can write again, the held events land in order, the unavailable refusal among them.
      yield* Ref.set(memory.down, false)
      expect(yield* queue.drainPending("10 seconds")).toBe(true)
      const rules = (yield* Ref.get(memory.appended)).map((event) =>
        Option.getOrElse(AuditEvent.ruleId(event), () => "seal")
      )
      expect(rules).toEqual(["no-move", "seal", McpGuard.AUDIT_UNAVAILABLE_RULE])
    }).pipe(Effect.scoped, quietly))

  it.scoped("every ending is on the record: result, error answer, timeout, upstream gone, and interrupted", () =>
    Effect.gen(function*() {
      const memory = yield* memorySink
      const { guard } = yield* guardOn(memory.sink, { sealEvery: 0 })
      const outcomes: ReadonlyArray<McpGuard.CallOutcome> = [
        { _tag: "Result", bytesRead: 10 },
        { _tag: "ErrorAnswer", bytesRead: 20 },
        { _tag: "TimedOut" },
        { _tag: "UpstreamGone" }
      ]
      for (const outcome of outcomes) {
        const checked = yield* guard.check(call("list_directory"))
        if (checked._tag !== "Allowed") return expect.unreachable()
        yield* guard.complete(checked.ticket, outcome)
      }
      // Two calls still in flight when the session ends: ended as interrupted before the seal.
      const inFlight = [yield* guard.check(call("list_directory")), yield* guard.check(call("search"))]
      const ended = Option.getOrThrow(yield* guard.endSession("sess-1"))
      const verified = yield* SessionJournal.verifyExport(JSON.parse(JSON.stringify(ended)))
      const endings = verified.entries.filter((e) => e.kind === "outcome")
      expect(endings.map((e) => [e.outcome, e.bytesRead])).toEqual([
        ["result", 10],
        ["errorAnswer", 20],
        ["timedOut", 0],
        ["upstreamGone", 0],
        ["interrupted", 0],
        ["interrupted", 0]
      ])
      // Every allowed call has exactly one ending; none is left pending.
      const calls = verified.entries.filter((e) => e.kind === "call" && e.allowed)
      expect(calls.map((e) => e.sequence).sort()).toEqual(endings.map((e) => e.callSequence).sort())
      // A completion after the end (the transport's) changes nothing.
      for (const checked of inFlight) {
        if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: 5 })
      }
      expect(yield* guard.endSession("sess-1")).toEqual(Option.none())
    }))

  it.scoped("error answers count their bytes toward the read budget", () =>
    Effect.gen(function*() {
      const memory = yield* memorySink
      const budgeted = Effect.runSync(GuardPolicy.decode({
        version: 1,
        rules: [{ id: "read-budget", kind: "budget", read: 100_000 }]
      }))
      const queue = yield* AuditQueue.make({ sink: memory.sink })
      const guard = yield* McpGuard.McpGuard.pipe(
        Effect.provide(McpGuard.layer({ policy: GuardPolicy.engine(budgeted, { salt: "s" }), sealEvery: 0 })),
        Effect.provideService(AuditQueue.AuditQueue, queue)
      )
      const first = yield* guard.check(call("query"))
      if (first._tag !== "Allowed") return expect.unreachable()
      yield* guard.complete(first.ticket, { _tag: "ErrorAnswer", bytesRead: 1024 * 1024 })
      expect(yield* guard.check(call("query"))).toMatchObject({ _tag: "Refused", ruleId: "read-budget" })
    }))

  it("the Promise form serves code that is not written with Effect", async () => {
    const memory = await Effect.runPromise(memorySink)
    const runtime = ManagedRuntime.make(
      McpGuard.layer({ policy: GuardPolicy.engine(policy, { salt: "salt" }) }).pipe(
        Layer.provideMerge(AuditQueue.layer({ sink: memory.sink }))
      )
    )
    const guard = await runtime.runPromise(McpGuard.McpGuard)
    const promised = McpGuard.toPromise(guard, await runtime.runtime())
    const checked = await promised.check(call("move_file"))
    expect(checked).toMatchObject({ _tag: "Refused", ruleId: "no-move" })
    expect(promised.isVisible("fs", "move_file")).toBe(true)
    await runtime.runPromise(Effect.flatMap(AuditQueue.AuditQueue, (queue) => queue.drainPending("5 seconds")))
    const ledgered = await Effect.runPromise(Ref.get(memory.appended))
    expect(ledgered.map((event) => Option.getOrNull(AuditEvent.ruleId(event)))).toEqual(["no-move"])
    await runtime.dispose()
  })
})

describe("McpGuard.jsonBytes", () => {
  /** `[[[…"bottom"…]]]` built without recursion (JSON.parse of hand-written text). */
  const deep = (levels: number): unknown => JSON.parse("[".repeat(levels) + "\"bottom\"" + "]".repeat(levels))

  it("counts a result too deep for JSON.stringify (10,000 levels) by its JSON size, not 0", () => {
    const value = deep(10_000)
    expect(() => JSON.stringify(value)).toThrow(RangeError)
    // 10,000 pairs of brackets and "bottom" with its quotes.
    expect(McpGuard.jsonBytes(value)).toBe(2 * 10_000 + 8)
  })

  it("is exact for values JSON.stringify can write, and 0 for one that contains itself", () => {
    expect(McpGuard.jsonBytes(deep(100))).toBe(2 * 100 + 8)
    expect(McpGuard.jsonBytes({ text: "é\"" })).toBe(Buffer.byteLength(JSON.stringify({ text: "é\"" })))
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(McpGuard.jsonBytes(cyclic)).toBe(0)
  })
})
