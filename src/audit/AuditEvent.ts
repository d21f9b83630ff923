/**
 * The governance audit domain: what an agent tried to do (`AgentAction`), what the guard decided
 * (`Decision`), and the refusal record that travels through the audit pipeline (`DeferredAuditEvent`).
 *
 * `canonicalBytes` is the public payload contract (docs/FORMAT.md, "Refusal payload"): RFC 8785 JSON of
 * the event, hashed into every ledger row. Changing the encoded shape of any schema here changes payload
 * hashes, so it needs a format version bump.
 */
import canonicalize from "canonicalize"
import { Clock, DateTime, Effect, Either, Option, Schema } from "effect"
import { sha256Hex } from "../internal/encoding.js"
import { isWellFormed, isWellFormedDeep, toWellFormed, toWellFormedDeep } from "../internal/unicode.js"
import { uuidV7 } from "../internal/uuid.js"
import * as ArgumentStorage from "./ArgumentStorage.js"

/** Any JSON value (finite numbers only: RFC 8785 has no NaN or Infinity). */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | ReadonlyArray<JsonValue>
  | { readonly [key: string]: JsonValue }

export const JsonValue: Schema.Schema<JsonValue> = Schema.Union(
  Schema.Null,
  Schema.Boolean,
  Schema.Number.pipe(Schema.finite()),
  Schema.String,
  Schema.Array(Schema.suspend(() => JsonValue)),
  Schema.Record({ key: Schema.String, value: Schema.suspend(() => JsonValue) })
).annotations({ identifier: "JsonValue" })

// ---------------------------------------------------------------------------------------------------------
// AgentAction
// ---------------------------------------------------------------------------------------------------------

/**
 * A tool call. Built directly, its `arguments` are stored exactly as given (that is asking for them to be
 * kept); `toolCall` builds one that keeps them as the ledger's `ArgumentStorage` says (a salted digest by
 * default).
 */
export class ToolCall extends Schema.TaggedClass<ToolCall>()("ToolCall", {
  toolName: Schema.String,
  serverId: Schema.String,
  arguments: Schema.optional(JsonValue)
}) {}

export class DataAccess extends Schema.TaggedClass<DataAccess>()("DataAccess", {
  resource: Schema.String,
  mode: Schema.Literal("read", "write", "delete")
}) {}

export class Delegation extends Schema.TaggedClass<Delegation>()("Delegation", {
  toAgentId: Schema.String,
  depth: Schema.Number.pipe(Schema.int(), Schema.nonNegative())
}) {}

export class Custom extends Schema.TaggedClass<Custom>()("Custom", {
  customKind: Schema.String,
  payload: JsonValue
}) {}

/**
 * A value that JSON cannot represent faithfully, found while normalising arguments: `path` is where
 * (`arguments.items.3`), `reason` what (`cycle`, `bigint`, `nonFiniteNumber`, `unsupportedType`).
 */
export class InvalidJson extends Schema.TaggedError<InvalidJson>()("InvalidJson", {
  path: Schema.String,
  reason: Schema.Literal("cycle", "bigint", "nonFiniteNumber", "unsupportedType", "tooDeep"),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.detail}`
  }
}

/** The deepest nesting `normalizeJson` follows. */
export const MAX_JSON_DEPTH = 256

/**
 * `value` as the JSON value `JSON.parse(JSON.stringify(value))` would give, without a round trip:
 * object members that are `undefined`, functions or symbols are dropped (array elements become `null`),
 * anything with `toJSON` (a `Date`) is replaced by its result, boxed primitives are unwrapped. Where
 * `JSON.stringify` would lose information silently, this fails with `InvalidJson` instead, because an audit
 * record must say what happened: `NaN` and `±Infinity` (which it turns into `null`), `Map`, `Set` and
 * typed arrays (which it turns into `{}` or index maps); and it fails where it would throw: cycles and
 * `BigInt`. `root` names the value in error paths.
 */
export const normalizeJson = (value: unknown, root = "value"): Either.Either<JsonValue, InvalidJson> => {
  const ancestors = new Set<object>()
  const fail = (path: string, reason: InvalidJson["reason"], detail: string) =>
    new InvalidJson({ path, reason, detail })
  const go = (input: unknown, path: string, depth: number): JsonValue | InvalidJson | undefined => {
    let v = input
    if (typeof v === "object" && v !== null && typeof (v as { toJSON?: unknown }).toJSON === "function") {
      v = (v as { toJSON: (key: string) => unknown }).toJSON(path.slice(path.lastIndexOf(".") + 1))
    }
    if (v instanceof Number || v instanceof String || v instanceof Boolean) v = v.valueOf()
    switch (typeof v) {
      case "string":
      case "boolean":
        return v
      case "number":
        // -0 is written as 0 by JSON (and RFC 8785).
        return Number.isFinite(v) ? (v === 0 ? 0 : v) : fail(path, "nonFiniteNumber", `${v} is not a JSON number`)
      case "bigint":
        return fail(path, "bigint", "a BigInt is not a JSON value (convert it to a string or number)")
      case "undefined":
      case "function":
      case "symbol":
        return undefined
    }
    if (v === null) return null
    const object = v as object
    if (depth >= MAX_JSON_DEPTH) return fail(path, "tooDeep", `nested deeper than ${MAX_JSON_DEPTH} levels`)
    if (ancestors.has(object)) return fail(path, "cycle", "the value contains itself")
    if (object instanceof Map || object instanceof Set || ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
      return fail(path, "unsupportedType", `a ${object.constructor.name} has no faithful JSON form`)
    }
    ancestors.add(object)
    try {
      if (Array.isArray(object)) {
        const out: Array<JsonValue> = []
        for (let i = 0; i < object.length; i++) {
          const item = go(object[i], `${path}.${i}`, depth + 1)
          if (item instanceof InvalidJson) return item
          out.push(item === undefined ? null : item)
        }
        return out
      }
      const out: Record<string, JsonValue> = {}
      for (const key of Object.keys(object)) {
        const item = go((object as Record<string, unknown>)[key], `${path}.${key}`, depth + 1)
        if (item instanceof InvalidJson) return item
        if (item !== undefined) out[key] = item
      }
      return out
    } finally {
      ancestors.delete(object)
    }
  }
  const result = go(value, root, 0)
  return result instanceof InvalidJson ? Either.left(result) : Either.right(result === undefined ? null : result)
}

/**
 * A `ToolCall` from arguments as they arrive (MCP's `Record<string, unknown>`, or anything else), normalised
 * by `normalizeJson`; fails with `InvalidJson` naming the argument JSON cannot represent. Never throws.
 *
 * The arguments are kept as the `ArgumentStorage` service says: by default only their salted digest and
 * size (`{ sha256, bytes }`), so nothing passed here lands in a signed row verbatim unless the ledger's
 * `argumentStorage` asks for it (`ArgumentStorage.storeAll` keeps every field). `AuditLedger`'s layers
 * provide the service; `new ToolCall({ ..., arguments })` keeps arguments exactly as given.
 */
export const toolCall = (call: {
  readonly toolName: string
  readonly serverId: string
  readonly arguments?: unknown
}): Effect.Effect<ToolCall, InvalidJson, ArgumentStorage.ArgumentStorage> =>
  call.arguments === undefined
    ? Effect.succeed(new ToolCall({ toolName: call.toolName, serverId: call.serverId }, true))
    : Effect.flatMap(normalizeJson(call.arguments, "arguments"), (args) =>
      Effect.map(ArgumentStorage.ArgumentStorage, (storage) =>
        new ToolCall(
          { toolName: call.toolName, serverId: call.serverId, arguments: storage.store(call.toolName, args) },
          true
        )))

/**
 * A `Custom` action with its payload normalised by `normalizeJson` (see `toolCall`). The payload is stored
 * as given: it is the application's own record, not a third party's arguments (hash what must not be kept
 * with `ArgumentStorage.digest` before passing it).
 */
export const custom = (customKind: string, payload: unknown): Effect.Effect<Custom, InvalidJson> =>
  Effect.map(normalizeJson(payload, "payload"), (json) => new Custom({ customKind, payload: json }, true))

export const AgentAction = Schema.Union(ToolCall, DataAccess, Delegation, Custom)
export type AgentAction = typeof AgentAction.Type

// ---------------------------------------------------------------------------------------------------------
// Decision
// ---------------------------------------------------------------------------------------------------------

export class Allow extends Schema.TaggedClass<Allow>()("Allow", {}) {}

export class Warn extends Schema.TaggedClass<Warn>()("Warn", {
  ruleId: Schema.String,
  reason: Schema.String
}) {}

export class Refuse extends Schema.TaggedClass<Refuse>()("Refuse", {
  ruleId: Schema.String,
  reason: Schema.String
}) {}

export const Decision = Schema.Union(Allow, Warn, Refuse)
export type Decision = typeof Decision.Type

export const isRefusal = (decision: Decision): decision is Refuse => decision._tag === "Refuse"

// ---------------------------------------------------------------------------------------------------------
// DeferredAuditEvent
// ---------------------------------------------------------------------------------------------------------

/** The ledger's `event_type` for a refusal row. */
export const GOVERNANCE_REFUSAL_EVENT_TYPE = "governance.refusal"

/** The ledger's `event_type` for a session seal row (docs/FORMAT.md, "Session seal"). */
export const SESSION_SEALED_EVENT_TYPE = "session.sealed"

/**
 * The ledger's `event_type` for a refusal a guard in shadow mode would have made but did not enforce
 * (payload v3 `mode: "shadow"`, docs/FORMAT.md).
 */
export const WOULD_REFUSE_EVENT_TYPE = "governance.would-refuse"

/** The ledger's `event_type` of a tool definition a guard pinned (docs/FORMAT.md, "Guard records"). */
export const TOOL_PINNED_EVENT_TYPE = "tool.pinned"

/** The ledger's `event_type` of a pinned tool whose definition changed (docs/FORMAT.md, "Guard records"). */
export const TOOL_CHANGED_EVENT_TYPE = "tool.changed"

/** The ledger's `event_type` of a question a guard asked before a call, and its answer ("Guard records"). */
export const APPROVAL_EVENT_TYPE = "governance.approval"

/**
 * `customKind`s of `Allow` + `Custom` events that are rows of their own `event_type` (the seal and the
 * guard's records); any other event is a refusal row.
 */
export const RECORD_EVENT_TYPES: ReadonlySet<string> = new Set([
  SESSION_SEALED_EVENT_TYPE,
  TOOL_PINNED_EVENT_TYPE,
  TOOL_CHANGED_EVENT_TYPE,
  APPROVAL_EVENT_TYPE
])

/** The journal entry a refusal belongs to: its session and position (payload v2 `journal`). */
export class JournalRef extends Schema.Class<JournalRef>("JournalRef")({
  sessionId: Schema.String,
  sequence: Schema.Number.pipe(Schema.int(), Schema.nonNegative())
}) {}

/** What a session seal commits to: a journal's id, length and head hash (its `JournalExport`'s). */
export interface SessionSeal {
  readonly sessionId: string
  readonly length: number
  readonly headHash: string
  /** The sealed journal's export format (`SessionJournal.EXPORT_FORMAT`); default `agent-ledger/journal/v1`. */
  readonly journalFormat?: string | undefined
}

export class DeferredAuditEvent extends Schema.Class<DeferredAuditEvent>("DeferredAuditEvent")({
  /** UUID v7 made when the event is created; retries and replays de-duplicate by it. */
  id: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)),
  agentId: Schema.String,
  action: AgentAction,
  decision: Decision,
  timestamp: Schema.DateTimeUtc,
  /** The journal entry the refusal belongs to, when the guard journals its calls (payload v2). */
  journal: Schema.optional(JournalRef),
  /** `shadow`: a refusal the guard would have made, recorded but not enforced (payload v3). */
  mode: Schema.optional(Schema.Literal("shadow"))
}) {
  /**
   * The audit event for a refusal, `None` for `Allow` and `Warn` (only refusals are chain-logged).
   * The timestamp and the time part of the id come from `Clock`.
   *
   * Strings are stored as well-formed Unicode: a lone UTF-16 surrogate anywhere in the agent id, the
   * action (arguments and their keys included) or the decision becomes U+FFFD (docs/FORMAT.md, "Refusal
   * payload v1"), so a hostile string cannot keep its refusal out of the ledger. An event built directly
   * with such strings is dead-lettered by the SQL sink instead, its data kept as plain JSON.
   *
   * The event is checked by its Schema constructor only when a part is not an instance of its class
   * already (each class checked its fields when it was made; the id and timestamp are made here): that
   * second check cost a guard's refusal more than the rest of building its event (docs/PERFORMANCE.md,
   * "MCP proxy").
   */
  static fromRefusal(
    agentId: string,
    action: AgentAction,
    decision: Decision,
    journal?: JournalRef,
    mode?: "shadow"
  ): Effect.Effect<Option.Option<DeferredAuditEvent>> {
    if (!isRefusal(decision)) return Effect.succeedNone
    const partsChecked = typeof agentId === "string" && isConstructedAction(action) && decision instanceof Refuse &&
      (journal === undefined || journal instanceof JournalRef) && (mode === undefined || mode === "shadow")
    return Effect.map(Clock.currentTimeMillis, (millis) =>
      Option.some(
        new DeferredAuditEvent({
          id: uuidV7(millis),
          ...wellFormedParts(agentId, action, decision),
          timestamp: DateTime.unsafeMake(millis),
          ...(journal === undefined ? {} : {
            journal: isWellFormed(journal.sessionId)
              ? journal
              : new JournalRef({ sessionId: toWellFormed(journal.sessionId), sequence: journal.sequence })
          }),
          ...(mode === undefined ? {} : { mode })
        }, partsChecked)
      ))
  }

  /**
   * A guard record (`tool.pinned`, `tool.changed`, `governance.approval`): an `Allow` of a `Custom` action
   * whose `customKind` is the row's `event_type` (docs/FORMAT.md, "Guard records"). Strings are made
   * well-formed, as in `fromRefusal`.
   */
  static record(
    agentId: string,
    kind: string,
    payload: JsonValue,
    journal?: JournalRef
  ): Effect.Effect<DeferredAuditEvent> {
    return Effect.map(Clock.currentTimeMillis, (millis) =>
      new DeferredAuditEvent({
        id: uuidV7(millis),
        agentId: toWellFormed(agentId),
        action: new Custom({ customKind: kind, payload: toWellFormedDeep(payload) as JsonValue }),
        decision: new Allow(),
        timestamp: DateTime.unsafeMake(millis),
        ...(journal === undefined ? {} : {
          journal: new JournalRef({ sessionId: toWellFormed(journal.sessionId), sequence: journal.sequence })
        })
      }))
  }

  /**
   * The `session.sealed` event for a journal: its id, length and head hash, so that an export of the
   * journal can later be checked against the ledger (docs/FORMAT.md, "Session seal"). The agent id is the
   * session's agent.
   */
  static sessionSeal(agentId: string, seal: SessionSeal): Effect.Effect<DeferredAuditEvent> {
    return Effect.map(Clock.currentTimeMillis, (millis) =>
      new DeferredAuditEvent({
        id: uuidV7(millis),
        agentId: toWellFormed(agentId),
        action: new Custom({
          customKind: SESSION_SEALED_EVENT_TYPE,
          payload: {
            session_id: toWellFormed(seal.sessionId),
            journal_format: seal.journalFormat ?? JOURNAL_EXPORT_FORMAT_V1,
            length: seal.length,
            head_hash: seal.headHash
          }
        }),
        decision: new Allow(),
        timestamp: DateTime.unsafeMake(millis)
      }))
  }
}

/** The journal export format a seal names when it is not given (`SessionJournal.EXPORT_FORMAT_V1`). */
const JOURNAL_EXPORT_FORMAT_V1 = "agent-ledger/journal/v1"

/**
 * The ledger `event_type` of an event's row: a seal or a guard record (an `Allow` of a `Custom` action whose
 * `customKind` is in `RECORD_EVENT_TYPES`), a refusal not enforced (`mode: "shadow"`), or a refusal.
 */
export const eventTypeOf = (event: DeferredAuditEvent): string =>
  event.decision._tag === "Allow" && event.action._tag === "Custom" &&
    RECORD_EVENT_TYPES.has(event.action.customKind)
    ? event.action.customKind
    : event.mode === "shadow"
    ? WOULD_REFUSE_EVENT_TYPE
    : GOVERNANCE_REFUSAL_EVENT_TYPE

/** The seal a `session.sealed` event commits to (`None` for any other event). */
export const sealOf = (event: DeferredAuditEvent): Option.Option<SessionSeal> => {
  if (eventTypeOf(event) !== SESSION_SEALED_EVENT_TYPE || event.action._tag !== "Custom") return Option.none()
  const p = event.action.payload as Record<string, unknown>
  return typeof p.session_id === "string" && typeof p.length === "number" && typeof p.head_hash === "string"
    ? Option.some({ sessionId: p.session_id, length: p.length, headHash: p.head_hash })
    : Option.none()
}

const decodeAction = Schema.decodeUnknownSync(AgentAction)
const decodeDecision = Schema.decodeUnknownSync(Decision)

/** The parts as given when every string is well-formed (the usual case, checked cheaply), else repaired. */
/** Whether `action` is an instance of one of the action classes (so its constructor checked its fields). */
const isConstructedAction = (action: AgentAction): boolean =>
  action instanceof ToolCall || action instanceof DataAccess || action instanceof Delegation ||
  action instanceof Custom

const wellFormedParts = (agentId: string, action: AgentAction, decision: Decision) => {
  const encodedAction = encodeAction(action)
  const encodedDecision = encodeDecision(decision)
  if (isWellFormed(agentId) && isWellFormedDeep(encodedAction) && isWellFormedDeep(encodedDecision)) {
    return { agentId, action, decision }
  }
  return {
    agentId: toWellFormed(agentId),
    action: decodeAction(toWellFormedDeep(encodedAction)),
    decision: decodeDecision(toWellFormedDeep(encodedDecision))
  }
}

/** The refusing rule's id (`None` unless the decision is a refusal). */
export const ruleId = (event: DeferredAuditEvent): Option.Option<string> =>
  isRefusal(event.decision) ? Option.some(event.decision.ruleId) : Option.none()

/** The operator-authored refusal reason, verbatim (`None` unless the decision is a refusal). */
export const reason = (event: DeferredAuditEvent): Option.Option<string> =>
  isRefusal(event.decision) ? Option.some(event.decision.reason) : Option.none()

/** RFC 3339 UTC with milliseconds, e.g. `2026-11-24T06:52:03.120Z`: the `timestamp` of payloads and rows. */
export const formatTimestamp = (event: DeferredAuditEvent): string =>
  // What `DateTime.formatIso` gives for a UTC DateTime, without its per-call conversions (the drainer
  // formats every event's timestamp).
  new Date(DateTime.toEpochMillis(event.timestamp)).toISOString()

/**
 * The encoded form of an action, as `Schema.encodeSync(AgentAction)` gives it (test/AuditEvent.test.ts
 * checks the two agree). Written out because the drainer encodes every event, and the schema's encoder
 * re-validates what the constructors already validated, at several times the cost of the rest of a row.
 */
export const encodeAction = (action: AgentAction): typeof AgentAction.Encoded => {
  switch (action._tag) {
    case "ToolCall":
      return !Object.hasOwn(action, "arguments")
        ? { _tag: "ToolCall", toolName: action.toolName, serverId: action.serverId }
        : { _tag: "ToolCall", toolName: action.toolName, serverId: action.serverId, arguments: action.arguments }
    case "DataAccess":
      return { _tag: "DataAccess", resource: action.resource, mode: action.mode }
    case "Delegation":
      return { _tag: "Delegation", toAgentId: action.toAgentId, depth: action.depth }
    case "Custom":
      return { _tag: "Custom", customKind: action.customKind, payload: action.payload }
  }
}

/** The encoded form of a decision, as `Schema.encodeSync(Decision)` gives it (see `encodeAction`). */
export const encodeDecision = (decision: Decision): typeof Decision.Encoded =>
  decision._tag === "Allow"
    ? { _tag: "Allow" }
    : { _tag: decision._tag, ruleId: decision.ruleId, reason: decision.reason }

/**
 * The JSON object that `canonicalBytes` canonicalizes (docs/FORMAT.md, "Refusal payload"): the five
 * members of v1, and `journal` (v2) when the event names its journal entry.
 */
export const canonicalObject = (event: DeferredAuditEvent) => ({
  action: encodeAction(event.action),
  agent_id: event.agentId,
  decision: encodeDecision(event.decision),
  event_id: event.id,
  ...(event.journal === undefined
    ? {}
    : { journal: { session_id: event.journal.sessionId, sequence: event.journal.sequence } }),
  ...(event.mode === undefined ? {} : { mode: event.mode }),
  timestamp: formatTimestamp(event)
})

/** The canonical payload as a string: RFC 8785 (JCS) serialization of `canonicalObject(event)`. */
export const canonicalJson = (event: DeferredAuditEvent): string => {
  const json = canonicalize(canonicalObject(event))
  // canonicalize returns undefined only for `undefined` input; the object above is always defined.
  if (json === undefined) throw new Error("canonicalize returned undefined for a defined object")
  return json
}

/** RFC 8785 UTF-8 bytes of the event's canonical payload. */
export const canonicalBytes = (event: DeferredAuditEvent): Uint8Array => Buffer.from(canonicalJson(event), "utf8")

/** Lowercase hex SHA-256 of `canonicalBytes(event)`: the ledger row's `payload_hash`. */
export const payloadHash = (event: DeferredAuditEvent): string => sha256Hex(canonicalBytes(event))
