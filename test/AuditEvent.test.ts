import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, FastCheck as fc, Option, Schema, TestClock } from "effect"
import { createHash } from "node:crypto"

import {
  Allow,
  canonicalBytes,
  canonicalJson,
  canonicalObject,
  Custom,
  DataAccess,
  DeferredAuditEvent,
  Delegation,
  encodeAction,
  encodeDecision,
  formatTimestamp,
  GOVERNANCE_REFUSAL_EVENT_TYPE,
  isRefusal,
  payloadHash,
  reason,
  Refuse,
  ruleId,
  ToolCall,
  Warn
} from "../src/audit/AuditEvent.js"
import { AgentAction, Decision } from "../src/audit/AuditEvent.js"
import type { JsonValue } from "../src/audit/AuditEvent.js"
import { isWellFormed } from "../src/internal/unicode.js"
import { UUID_V7 } from "../src/internal/uuid.js"
import { docBlock } from "./fixtures/formatDoc.js"

const refusalAction = () => new Custom({ customKind: "memory_write", payload: { namespace: "secrets/api" } })
const refusalDecision = () => new Refuse({ ruleId: "R001", reason: "no writes to secrets/*" })

const decodeEvent = Schema.decodeUnknownSync(DeferredAuditEvent)

const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex")

describe("DeferredAuditEvent.fromRefusal", () => {
  it.effect("returns the event for Refuse, with a UUID v7 id and the Clock's time", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-24T06:52:03.120Z"))
      const event = Option.getOrThrow(
        yield* DeferredAuditEvent.fromRefusal("agent:alice", refusalAction(), refusalDecision())
      )
      expect(event.agentId).toBe("agent:alice")
      expect(event.action).toEqual(refusalAction())
      expect(event.decision).toEqual(refusalDecision())
      expect(formatTimestamp(event)).toBe("2026-11-24T06:52:03.120Z")
      expect(event.id).toMatch(UUID_V7)
      // The first 48 bits of a v7 id are the creation time in Unix milliseconds.
      expect(parseInt(event.id.replace(/-/g, "").slice(0, 12), 16)).toBe(Date.parse("2026-11-24T06:52:03.120Z"))
      expect(ruleId(event)).toEqual(Option.some("R001"))
      expect(reason(event)).toEqual(Option.some("no writes to secrets/*"))
    }))

  it.effect("gives every event its own id", () =>
    Effect.gen(function*() {
      const events = yield* Effect.forEach(
        Array.from({ length: 100 }, (_, i) => i),
        (i) => DeferredAuditEvent.fromRefusal(`agent:${i}`, refusalAction(), refusalDecision())
      )
      expect(new Set(events.map((e) => Option.getOrThrow(e).id)).size).toBe(100)
    }))

  it.effect("still checks parts that are not instances of their class (only constructed parts skip the check)", () =>
    Effect.gen(function*() {
      // Instances were checked when they were made, so the event built from them is not checked again.
      const built = Option.getOrThrow(
        yield* DeferredAuditEvent.fromRefusal("agent:alice", refusalAction(), refusalDecision())
      )
      expect(built.action).toBeInstanceOf(Custom)
      // A plain object in place of an action is not vouched for by any constructor: it is checked, and refused.
      const plain = { _tag: "ToolCall", toolName: 7, serverId: "fs" } as unknown as AgentAction
      const exit = yield* Effect.exit(DeferredAuditEvent.fromRefusal("agent:alice", plain, refusalDecision()))
      expect(exit._tag).toBe("Failure")
    }))

  it.effect("returns None for Allow", () =>
    Effect.gen(function*() {
      const event = yield* DeferredAuditEvent.fromRefusal("agent:alice", refusalAction(), new Allow())
      expect(Option.isNone(event)).toBe(true)
    }))

  it.effect("returns None for Warn", () =>
    Effect.gen(function*() {
      const warn = new Warn({ ruleId: "W001", reason: "warning only" })
      const event = yield* DeferredAuditEvent.fromRefusal("agent:alice", refusalAction(), warn)
      expect(Option.isNone(event)).toBe(true)
    }))

  it("isRefusal is true only for Refuse", () => {
    expect(isRefusal(refusalDecision())).toBe(true)
    expect(isRefusal(new Allow())).toBe(false)
    expect(isRefusal(new Warn({ ruleId: "W", reason: "w" }))).toBe(false)
  })
})

describe("DeferredAuditEvent.fromRefusal with lone surrogates (docs/FORMAT.md rule)", () => {
  it.effect("replaces every lone surrogate with U+FFFD, in ids, strings, argument keys and values", () =>
    Effect.gen(function*() {
      const event = Option.getOrThrow(
        yield* DeferredAuditEvent.fromRefusal(
          "a\uD800",
          new ToolCall({ toolName: "\uDC00t", serverId: "s", arguments: { "k\uD83D": ["\uDE00", "ok \uD83D\uDE00"] } }),
          new Refuse({ ruleId: "R\uD800", reason: "why\uDFFF" })
        )
      )
      expect(event.agentId).toBe("a\uFFFD")
      expect(event.action).toEqual(
        new ToolCall({ toolName: "\uFFFDt", serverId: "s", arguments: { "k\uFFFD": ["\uFFFD", "ok \uD83D\uDE00"] } })
      )
      expect(event.decision).toEqual(new Refuse({ ruleId: "R\uFFFD", reason: "why\uFFFD" }))
      // Now canonicalizable; the UTF-8 bytes are those any UTF-8 encoder gives for the original strings.
      expect(Buffer.from(canonicalJson(event), "utf8").includes(Buffer.from("a\uD800", "utf8"))).toBe(true)
    }))

  it.effect("leaves well-formed strings (valid surrogate pairs included) exactly as given", () =>
    Effect.gen(function*() {
      const action = new Custom({ customKind: "emoji \uD83D\uDE00", payload: { x: 1 } })
      const decision = new Refuse({ ruleId: "R", reason: "r" })
      const event = Option.getOrThrow(yield* DeferredAuditEvent.fromRefusal("agent \uD83D\uDE00", action, decision))
      expect(event.action).toBe(action)
      expect(event.decision).toBe(decision)
      expect(event.agentId).toBe("agent \uD83D\uDE00")
    }))

  it.prop(
    "any strings: the event canonicalizes, and well-formed input comes through unchanged",
    [fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) })],
    ([text]) => {
      const event = Option.getOrThrow(Effect.runSync(
        DeferredAuditEvent.fromRefusal(
          text,
          new Custom({ customKind: text, payload: { [text]: text } }),
          refusalDecision()
        )
      ))
      expect(() => canonicalJson(event)).not.toThrow()
      expect(Buffer.from(event.agentId, "utf8")).toEqual(Buffer.from(text, "utf8"))
      if (isWellFormed(text)) expect(event.agentId).toBe(text)
    }
  )
})

describe("ruleId / reason", () => {
  const eventWith = (decision: Allow | Warn | Refuse) =>
    new DeferredAuditEvent({
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "x",
      action: refusalAction(),
      decision,
      timestamp: DateTime.unsafeMake(0)
    })

  it("return the refusal's rule id and verbatim reason", () => {
    const event = eventWith(new Refuse({ ruleId: "R-42", reason: "  spaces & ünïcode kept  " }))
    expect(ruleId(event)).toEqual(Option.some("R-42"))
    expect(reason(event)).toEqual(Option.some("  spaces & ünïcode kept  "))
  })

  it("return None for a non-refusal decision", () => {
    for (const decision of [new Allow(), new Warn({ ruleId: "W001", reason: "warning only" })]) {
      expect(Option.isNone(ruleId(eventWith(decision)))).toBe(true)
      expect(Option.isNone(reason(eventWith(decision)))).toBe(true)
    }
  })

  it("the refusal event type is a stable wire string", () => {
    expect(GOVERNANCE_REFUSAL_EVENT_TYPE).toBe("governance.refusal")
  })
})

describe("DeferredAuditEvent schema", () => {
  it("rejects an id that is not a lowercase UUID", () => {
    const encoded = JSON.parse(docBlock("payload-event"))
    expect(() => decodeEvent({ ...encoded, id: "not-a-uuid" })).toThrow()
    expect(() => decodeEvent({ ...encoded, id: encoded.id.toUpperCase() })).toThrow()
  })

  it("rejects an unknown action or decision tag and a bad data-access mode", () => {
    const encoded = JSON.parse(docBlock("payload-event"))
    expect(() => decodeEvent({ ...encoded, action: { _tag: "Teleport" } })).toThrow()
    expect(() => decodeEvent({ ...encoded, decision: { _tag: "Maybe" } })).toThrow()
    expect(() => decodeEvent({ ...encoded, action: { _tag: "DataAccess", resource: "r", mode: "chmod" } })).toThrow()
  })

  it("round-trips through its encoded form", () => {
    const event = decodeEvent(JSON.parse(docBlock("payload-event")))
    const again = decodeEvent(JSON.parse(JSON.stringify(Schema.encodeSync(DeferredAuditEvent)(event))))
    expect(canonicalJson(again)).toBe(canonicalJson(event))
  })
})

describe("canonical payload (docs/FORMAT.md, Refusal payload v1)", () => {
  it("matches the test vector in docs/FORMAT.md byte for byte", () => {
    const event = decodeEvent(JSON.parse(docBlock("payload-event")))
    const canonical = docBlock("payload-canonical")
    const hash = docBlock("payload-hash").trim()
    expect(canonicalJson(event)).toBe(canonical)
    expect(Buffer.from(canonicalBytes(event)).equals(Buffer.from(canonical, "utf8"))).toBe(true)
    expect(payloadHash(event)).toBe(hash)
    // The documented hash is SHA-256 of the documented bytes, independently of our code.
    expect(sha256(Buffer.from(canonical, "utf8"))).toBe(hash)
  })

  it("a changed field no longer matches the documented vector", () => {
    const encoded = JSON.parse(docBlock("payload-event"))
    const hash = docBlock("payload-hash").trim()
    const changes = [
      { ...encoded, agentId: "agent:mallory" },
      { ...encoded, timestamp: "2026-11-24T06:52:03.121Z" },
      { ...encoded, decision: { ...encoded.decision, reason: "something else" } },
      { ...encoded, action: { ...encoded.action, payload: { ...encoded.action.payload, size: 1025 } } }
    ]
    for (const changed of changes) {
      const event = decodeEvent(changed)
      expect(payloadHash(event)).not.toBe(hash)
      expect(canonicalJson(event)).not.toBe(docBlock("payload-canonical"))
    }
  })

  it("has exactly the five documented top-level keys, tagged action/decision and a millisecond UTC timestamp", () => {
    const event = new DeferredAuditEvent({
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "agent:t",
      action: new DataAccess({ resource: "db/users", mode: "delete" }),
      decision: refusalDecision(),
      timestamp: DateTime.unsafeMake(Date.parse("2026-01-02T03:04:05Z"))
    })
    const parsed = JSON.parse(canonicalJson(event))
    expect(Object.keys(parsed)).toEqual(["action", "agent_id", "decision", "event_id", "timestamp"])
    expect(parsed).toEqual({
      action: { _tag: "DataAccess", resource: "db/users", mode: "delete" },
      agent_id: "agent:t",
      decision: { _tag: "Refuse", ruleId: "R001", reason: "no writes to secrets/*" },
      event_id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      timestamp: "2026-01-02T03:04:05.000Z"
    })
    expect(canonicalObject(event)).toEqual(parsed)
  })

  it("encodes every action variant with its _tag (optional ToolCall arguments absent when missing)", () => {
    const base = {
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "a",
      decision: refusalDecision(),
      timestamp: DateTime.unsafeMake(0)
    }
    const actionOf = (action: ToolCall | DataAccess | Delegation | Custom) =>
      JSON.parse(canonicalJson(new DeferredAuditEvent({ ...base, action }))).action
    expect(actionOf(new ToolCall({ toolName: "t", serverId: "s" }))).toEqual({
      _tag: "ToolCall",
      toolName: "t",
      serverId: "s"
    })
    expect(actionOf(new ToolCall({ toolName: "t", serverId: "s", arguments: [1, "x", null] }))).toEqual({
      _tag: "ToolCall",
      toolName: "t",
      serverId: "s",
      arguments: [1, "x", null]
    })
    expect(actionOf(new Delegation({ toAgentId: "agent:b", depth: 2 }))).toEqual({
      _tag: "Delegation",
      toAgentId: "agent:b",
      depth: 2
    })
    expect(actionOf(new Custom({ customKind: "k", payload: "p" }))).toEqual({
      _tag: "Custom",
      customKind: "k",
      payload: "p"
    })
  })

  it("includes the rule id, the action kind and the agent id (ported from the original)", () => {
    const event = new DeferredAuditEvent({
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "agent:alice",
      action: refusalAction(),
      decision: refusalDecision(),
      timestamp: DateTime.unsafeMake(0)
    })
    const text = Buffer.from(canonicalBytes(event)).toString("utf8")
    expect(text).toContain("R001")
    expect(text).toContain("memory_write")
    expect(text).toContain("agent:alice")
  })

  it("is independent of the key order of the input", () => {
    const a = decodeEvent({
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "agent:alice",
      action: { _tag: "Custom", customKind: "k", payload: { b: 1, a: { y: [1, 2], x: "x" } } },
      decision: { _tag: "Refuse", ruleId: "R", reason: "r" },
      timestamp: "2026-11-24T06:52:03.120Z"
    })
    const b = decodeEvent({
      timestamp: "2026-11-24T06:52:03.120Z",
      decision: { reason: "r", ruleId: "R", _tag: "Refuse" },
      action: { payload: { a: { x: "x", y: [1, 2] }, b: 1 }, customKind: "k", _tag: "Custom" },
      agentId: "agent:alice",
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d"
    })
    expect(canonicalJson(a)).toBe(canonicalJson(b))
    expect(payloadHash(a)).toBe(payloadHash(b))
    expect(canonicalJson(a)).toBe(
      "{\"action\":{\"_tag\":\"Custom\",\"customKind\":\"k\",\"payload\":{\"a\":{\"x\":\"x\",\"y\":[1,2]},\"b\":1}}," +
        "\"agent_id\":\"agent:alice\",\"decision\":{\"_tag\":\"Refuse\",\"reason\":\"r\",\"ruleId\":\"R\"}," +
        "\"event_id\":\"01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d\",\"timestamp\":\"2026-11-24T06:52:03.120Z\"}"
    )
  })

  it("array order is significant (only object keys are sorted)", () => {
    const withTags = (tags: ReadonlyArray<string>) =>
      new DeferredAuditEvent({
        id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
        agentId: "a",
        action: new Custom({ customKind: "k", payload: { tags } }),
        decision: refusalDecision(),
        timestamp: DateTime.unsafeMake(0)
      })
    expect(payloadHash(withTags(["a", "b"]))).not.toBe(payloadHash(withTags(["b", "a"])))
  })

  it.prop(
    "any permutation of the payload's keys gives the same bytes and hash",
    [fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 }).filter((v) => v !== undefined), { maxKeys: 8 })],
    ([payload]) => {
      const reversed = Object.fromEntries(Object.entries(payload).reverse())
      const event = (p: unknown) =>
        decodeEvent({
          id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
          agentId: "agent:p",
          action: { _tag: "Custom", customKind: "k", payload: p },
          decision: { _tag: "Refuse", ruleId: "R", reason: "r" },
          timestamp: "2026-11-24T06:52:03.120Z"
        })
      const a = event(payload)
      const b = event(reversed)
      expect(Buffer.from(canonicalBytes(a)).equals(Buffer.from(canonicalBytes(b)))).toBe(true)
      expect(payloadHash(a)).toBe(payloadHash(b))
      expect(payloadHash(a)).toBe(sha256(canonicalBytes(a)))
    }
  )
})

describe("the hand-written encoders agree with the schemas", () => {
  const json = fc.jsonValue({ maxDepth: 3 }).filter((v) => v !== undefined) as fc.Arbitrary<JsonValue>
  const action: fc.Arbitrary<AgentAction> = fc.oneof(
    fc.record({ toolName: fc.string(), serverId: fc.string(), arguments: fc.option(json, { nil: undefined }) })
      .map((f) =>
        f.arguments === undefined
          ? new ToolCall({ toolName: f.toolName, serverId: f.serverId })
          : new ToolCall({ toolName: f.toolName, serverId: f.serverId, arguments: f.arguments })
      ),
    fc.record({ resource: fc.string(), mode: fc.constantFrom("read" as const, "write" as const, "delete" as const) })
      .map((f) => new DataAccess(f)),
    fc.record({ toAgentId: fc.string(), depth: fc.nat() }).map((f) => new Delegation(f)),
    fc.record({ customKind: fc.string(), payload: json }).map((f) => new Custom(f))
  )
  const decision: fc.Arbitrary<Decision> = fc.oneof(
    fc.constant(new Allow()),
    fc.record({ ruleId: fc.string(), reason: fc.string() }).map((f) => new Warn(f)),
    fc.record({ ruleId: fc.string(), reason: fc.string() }).map((f) => new Refuse(f))
  )

  it.prop("encodeAction is Schema.encodeSync(AgentAction), key for key", [action], ([a]) => {
    expect(encodeAction(a)).toStrictEqual(Schema.encodeSync(AgentAction)(a))
  })

  it.prop("encodeDecision is Schema.encodeSync(Decision), key for key", [decision], ([d]) => {
    expect(encodeDecision(d)).toStrictEqual(Schema.encodeSync(Decision)(d))
  })

  it("a ToolCall built with arguments: undefined encodes as the schema does", () => {
    const call = new ToolCall({ toolName: "t", serverId: "s", arguments: undefined })
    expect(encodeAction(call)).toStrictEqual(Schema.encodeSync(AgentAction)(call))
    const event = new DeferredAuditEvent({
      id: "01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d",
      agentId: "a",
      action: call,
      decision: refusalDecision(),
      timestamp: DateTime.unsafeMake(0)
    })
    expect(canonicalJson(event)).not.toContain("arguments")
  })
})
