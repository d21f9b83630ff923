/**
 * `"action": "ask"` in the guard, with an approver that answers accept, decline, cancel, never (TestClock
 * drives the rule's timeout) or cannot be asked: what is allowed and refused, the refusal's reason, the
 * `governance.approval` row (who was asked, the answer, latency, the call's journal entry), that a rule
 * refusing outright wins without a question, and that an accepted call is decided again (a limit reached
 * while it waited still refuses it).
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestClock } from "effect"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import type * as Approvals from "../src/guard/Approvals.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as SessionJournals from "../src/journal/SessionJournals.js"
import { recordingQueue } from "./fixtures/recordingQueue.js"

const setup = (rules: ReadonlyArray<unknown>, approver?: Approvals.Approver) =>
  Effect.gen(function*() {
    const { queue, recorded } = yield* recordingQueue
    const policy = Effect.runSync(GuardPolicy.decode({ version: 1, rules }))
    const asked: Array<Approvals.ApprovalRequest> = []
    const guard = yield* McpGuard.make({
      policy: GuardPolicy.engine(policy, { salt: "s" }),
      sealEvery: 0,
      approverName: "test approver",
      ...(approver === undefined ? {} : {
        approver: (request: Approvals.ApprovalRequest) =>
          Effect.zipRight(Effect.sync(() => asked.push(request)), approver(request))
      })
    }).pipe(
      Effect.provideService(AuditQueue.AuditQueue, queue),
      Effect.provideServiceEffect(SessionJournals.SessionJournals, SessionJournals.make)
    )
    const rows = Effect.map(recorded, (all) =>
      all.map((e): Record<string, any> => ({
        type: AuditEvent.eventTypeOf(e),
        journal: e.journal?.sequence,
        ...(e.action._tag === "Custom" ? e.action.payload as Record<string, any> : {}) as Record<string, any>,
        ...(e.decision._tag === "Refuse" ? { ruleId: e.decision.ruleId, reason: e.decision.reason } : {})
      })))
    return { guard, rows, asked }
  })

const write = (args: unknown = { path: "/data/out.txt", content: "secret text" }): McpGuard.GuardCall => ({
  sessionId: "s",
  agentId: "agent",
  serverId: "fs",
  toolName: "write_file",
  arguments: args
})

const askWrite = { id: "ask-write", kind: "blockTools", tools: ["write_file"], action: "ask", showArguments: ["path"] }
const answer = (tag: "Accept" | "Decline" | "Cancel"): Approvals.Approver => () =>
  Effect.succeed({ _tag: tag, approver: "alice" })

describe("ask rules", () => {
  it.scoped("accept: the call runs; the question names tool, server, rule and shown arguments only", () =>
    Effect.gen(function*() {
      const { asked, guard, rows } = yield* setup([askWrite], answer("Accept"))
      const check = yield* guard.check(write())
      expect(check._tag).toBe("Allowed")
      expect(asked).toHaveLength(1)
      expect(asked[0]!.question).toContain("Allow write_file on server fs?")
      expect(asked[0]!.question).toContain("Rule ask-write")
      expect(asked[0]!.question).toContain("path: /data/out.txt")
      expect(asked[0]!.question).not.toContain("secret text")
      expect(asked[0]!.question).toContain("content (13 bytes)")
      const [row] = yield* rows
      expect(row).toMatchObject({
        type: AuditEvent.APPROVAL_EVENT_TYPE,
        rule_id: "ask-write",
        asked: "test approver",
        approver: "alice",
        answer: "accept",
        outcome: "allowed",
        latency_ms: 0,
        journal: check._tag === "Allowed" ? check.ticket.sequence : -1
      })
      expect(JSON.stringify(row)).not.toContain("secret text")
      const entries = yield* (yield* guard.journal("s")).entries
      expect(entries.map((e) => [e.kind, e.outcome])).toEqual([["call", "pending"]])
    }))

  for (const [tag, word] of [["Decline", "declined"], ["Cancel", "cancelled"]] as const) {
    it.scoped(`${tag.toLowerCase()}: refused, with the answer in the reason, a refusal row and an approval row`, () =>
      Effect.gen(function*() {
        const { guard, rows } = yield* setup([askWrite], answer(tag))
        const check = yield* guard.check(write())
        expect(check).toMatchObject({ _tag: "Refused", ruleId: "ask-write" })
        if (check._tag !== "Refused") return
        expect(check.reason).toContain(`${word} by alice`)
        expect((yield* rows).map((r) => [r.type, r.journal, r.answer ?? r.ruleId])).toEqual([
          ["governance.refusal", check.sequence, "ask-write"],
          ["governance.approval", check.sequence, tag.toLowerCase()]
        ])
      }))
  }

  it.scoped("no answer within the rule's timeout (TestClock): refused; onTimeout allow lets it run", () =>
    Effect.gen(function*() {
      const { guard, rows } = yield* setup([{ ...askWrite, timeout: 30 }], () => Effect.never)
      const fiber = yield* Effect.fork(guard.check(write()))
      yield* TestClock.adjust("29 seconds")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 second")
      const check = yield* Fiber.join(fiber)
      expect(check).toMatchObject({ _tag: "Refused", ruleId: "ask-write" })
      expect(check._tag === "Refused" && check.reason).toContain("no answer within 30 s")
      expect((yield* rows).at(-1)).toMatchObject({ answer: "timeout", outcome: "refused", latency_ms: 30_000 })

      const lenient = yield* setup([{ ...askWrite, onTimeout: "allow" }], () => Effect.never)
      const allowed = yield* Effect.fork(lenient.guard.check(write()))
      yield* TestClock.adjust("60 seconds")
      expect((yield* Fiber.join(allowed))._tag).toBe("Allowed")
      expect((yield* lenient.rows).at(-1)).toMatchObject({ answer: "timeout", outcome: "allowed" })
    }))

  it.scoped("no one to ask: the fallback (refuse by default, saying approval was needed; or allow)", () =>
    Effect.gen(function*() {
      const none = yield* setup([askWrite])
      const check = yield* none.guard.check(write())
      expect(check._tag === "Refused" && check.reason).toContain("approval was needed")
      expect((yield* none.rows).at(-1)).toMatchObject({ answer: "unavailable", asked: "nobody", approver: null })
      const unavailable = yield* setup(
        [{ ...askWrite, fallback: "allow" }],
        () => Effect.succeed({ _tag: "Unavailable", detail: "no elicitation" })
      )
      expect((yield* unavailable.guard.check(write()))._tag).toBe("Allowed")
    }))

  it.scoped("a rule that refuses outright wins over an ask rule: no question is asked", () =>
    Effect.gen(function*() {
      const { asked, guard } = yield* setup(
        [askWrite, { id: "no-etc", kind: "arguments", path: "path", match: { regex: "^/data/" } }],
        answer("Accept")
      )
      expect(yield* guard.check(write({ path: "/etc/passwd", content: "x" }))).toMatchObject({ ruleId: "no-etc" })
      expect(asked).toHaveLength(0)
    }))

  it.scoped("an accepted call is decided again: a limit reached while it waited refuses it", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { guard } = yield* setup(
        [askWrite, { id: "one-call", kind: "callLimit", max: 1, per: "rule" }],
        () => Effect.as(Deferred.await(gate), { _tag: "Accept", approver: "alice" } as const)
      )
      const waiting = yield* Effect.fork(guard.check(write()))
      yield* Effect.yieldNow()
      // Another call is allowed while the write waits for its answer (the session is not blocked).
      expect((yield* guard.check({ ...write(), toolName: "read_file" }))._tag).toBe("Allowed")
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(waiting)).toMatchObject({ _tag: "Refused", ruleId: "one-call" })
    }))

  it("a tool behind an ask rule is not hidden", () => {
    const policy = Effect.runSync(GuardPolicy.decode({ version: 1, hideRefusedTools: true, rules: [askWrite] }))
    expect(GuardPolicy.isVisible(policy, "fs", "write_file")).toBe(true)
  })
})
