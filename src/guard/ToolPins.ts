/**
 * Tool pinning: the definitions of a server's tools the guard has seen, pinned in the ledger so a tool that
 * changes after it was trusted (a "rug pull": a new description or schema telling the agent to do something
 * else) is caught, in this session or any later one.
 *
 * The first time a server's tool is seen (in a `tools/list` answer), its definition digest is recorded as a
 * `tool.pinned` row (per server id). When a later list shows a different definition, a `tool.changed` row
 * records the pinned and the new digest (once per new definition), and the tool is refused under the rule
 * `tool-changed` until it is approved: an operator pins the new definition (`agent-ledger tools approve`, a
 * new `tool.pinned` row), or a person accepts it when a policy's `toolChanged` rule asks (`approve`, the
 * same row, naming who accepted). Pins are read from the ledger's rows when a guard starts (`load`).
 *
 * The digest is SHA-256 of the RFC 8785 JSON of `{name, description, inputSchema, outputSchema,
 * annotations}` as the server sent them (docs/FORMAT.md, "Guard records"). A definition nested deeper than
 * `MAX_DEFINITION_DEPTH` is never pinned: such a tool is always refused.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import canonicalize from "canonicalize"
import { Context, Effect, Option, Schema } from "effect"
import type { JsonValue } from "../audit/AuditEvent.js"
import { DeferredAuditEvent, TOOL_CHANGED_EVENT_TYPE, TOOL_PINNED_EVENT_TYPE } from "../audit/AuditEvent.js"
import * as AuditQueue from "../audit/AuditQueue.js"
import { sha256Hex } from "../internal/encoding.js"
import { findTooDeep } from "../internal/jsonDepth.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import { normalizeName } from "./GuardPolicy.js"
import type { ToolAnnotations, ToolApprover, ToolChange, ToolGate } from "./McpGuard.js"

/** The rule id of calls to a tool whose definition differs from its pin. */
export { TOOL_CHANGED_RULE } from "./McpGuard.js"

/** Definitions nested deeper than this are not pinned (and their tools refused). */
export const MAX_DEFINITION_DEPTH = 64

/** A stored definition larger than this (as JSON) is left out of its row; its digest is still recorded. */
export const MAX_STORED_DEFINITION_BYTES = 64 * 1024

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** The pinned part of a tool as listed: name, description, input and output schema, annotations. */
export const definitionOf = (tool: Record<string, unknown>): Record<string, unknown> => {
  const definition: Record<string, unknown> = { name: tool.name }
  for (const key of ["description", "inputSchema", "outputSchema", "annotations"] as const) {
    if (tool[key] !== undefined) definition[key] = tool[key]
  }
  return definition
}

/** A definition's digest, or undefined when it cannot be pinned (too deep, or not JSON). */
export const digestOf = (tool: Record<string, unknown>): string | undefined => {
  const definition = definitionOf(tool)
  if (findTooDeep(definition, MAX_DEFINITION_DEPTH) !== undefined) return undefined
  try {
    const json = canonicalize(definition)
    return json === undefined ? undefined : sha256Hex(json)
  } catch {
    return undefined
  }
}

const storedDefinition = (tool: Record<string, unknown>): JsonValue => {
  try {
    const json = canonicalize(definitionOf(tool))
    if (json === undefined || Buffer.byteLength(json, "utf8") > MAX_STORED_DEFINITION_BYTES) return null
    return JSON.parse(json) as JsonValue
  } catch {
    return null
  }
}

/** The boolean hints of a listed tool's annotations (others ignored). */
const annotationsOf = (tool: Record<string, unknown>): ToolAnnotations => {
  const out: { -readonly [K in keyof ToolAnnotations]: boolean } = {}
  if (!isRecord(tool.annotations)) return out
  for (const key of ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"] as const) {
    const value = tool.annotations[key]
    if (typeof value === "boolean") out[key] = value
  }
  return out
}

/** A pin or a change as the ledger holds it (`load`). */
export interface PinRecord {
  readonly kind: "pinned" | "changed"
  readonly serverId: string
  readonly toolName: string
  /** The pinned digest (`pinned`), or the new one (`changed`). */
  readonly digest: string
  /** The definition recorded with it (null when it was too large to store, or not recorded). */
  readonly definition?: unknown
}

/** What the guard knows of one tool of one server. */
export interface ToolState {
  readonly serverId: string
  readonly toolName: string
  /** The pinned digest, if any. */
  readonly pinned: string | undefined
  /** The digest of the definition last listed in this process (`null`: it cannot be pinned). */
  readonly seen: string | null | undefined
  /** The pinned definition's annotations, when the definition last listed is the pinned one. */
  readonly annotations: ToolAnnotations | undefined
}

export class ToolPins extends Context.Tag("agent-ledger/ToolPins")<
  ToolPins,
  ToolGate & {
    /**
     * A server's `tools/list` answer (its `tools`): pins tools seen for the first time and records changed
     * definitions (each new definition once). `agentId` is who the rows are recorded for.
     */
    readonly observe: (serverId: string, agentId: string, tools: ReadonlyArray<unknown>) => Effect.Effect<void>
    /** The tool's state (undefined when never listed nor pinned). */
    readonly state: (serverId: string, toolName: string) => ToolState | undefined
  }
>() {}

export type Service = Context.Tag.Service<ToolPins>

const keyOf = (serverId: string, toolName: string) => `${serverId}\u0000${normalizeName(toolName)}`

interface Entry {
  readonly serverId: string
  toolName: string
  pinned: string | undefined
  seen: string | null | undefined
  annotations: ToolAnnotations | undefined
  /** The pinned definition, when known (first seen here, or stored with its row). */
  pinnedDefinition: Record<string, unknown> | undefined
  /** The definition last listed (its pinned part), when it can be pinned. */
  seenDefinition: Record<string, unknown> | undefined
  /** New digests already recorded as `tool.changed` against the current pin. */
  readonly changes: Set<string>
}

/** Pins from `initial` (the ledger's records, oldest first); new rows go to the `AuditQueue`. */
export const make = (
  options: { readonly initial?: ReadonlyArray<PinRecord> | undefined } = {}
): Effect.Effect<Service, never, AuditQueue.AuditQueue> =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue.AuditQueue
    const entries = new Map<string, Entry>()
    const entryOf = (serverId: string, toolName: string): Entry => {
      const key = keyOf(serverId, toolName)
      let entry = entries.get(key)
      if (entry === undefined) {
        entry = {
          serverId,
          toolName,
          pinned: undefined,
          seen: undefined,
          annotations: undefined,
          pinnedDefinition: undefined,
          seenDefinition: undefined,
          changes: new Set()
        }
        entries.set(key, entry)
      }
      return entry
    }
    for (const record of options.initial ?? []) {
      const entry = entryOf(record.serverId, record.toolName)
      if (record.kind === "pinned") {
        entry.pinned = record.digest
        entry.pinnedDefinition = isRecord(record.definition) ? record.definition : undefined
        entry.changes.clear()
      } else {
        entry.changes.add(record.digest)
      }
    }

    const record = (agentId: string, kind: string, payload: JsonValue) =>
      Effect.flatMap(DeferredAuditEvent.record(agentId, kind, payload), queue.submit)

    const observeOne = (serverId: string, agentId: string, tool: unknown) =>
      Effect.gen(function*() {
        if (!isRecord(tool) || typeof tool.name !== "string") return
        const entry = entryOf(serverId, tool.name)
        const digest = digestOf(tool)
        entry.seen = digest ?? null
        entry.seenDefinition = digest === undefined ? undefined : definitionOf(tool)
        if (digest === undefined) {
          entry.annotations = undefined
          return
        }
        if (entry.pinned === undefined) {
          entry.pinned = digest
          entry.pinnedDefinition = entry.seenDefinition
          yield* record(agentId, TOOL_PINNED_EVENT_TYPE, {
            server_id: serverId,
            tool_name: tool.name,
            digest,
            definition: storedDefinition(tool)
          })
        } else if (entry.pinned !== digest && !entry.changes.has(digest)) {
          entry.changes.add(digest)
          yield* Effect.logWarning(`agent-ledger guard: the definition of tool ${tool.name} changed`).pipe(
            Effect.annotateLogs({ serverId, pinned: entry.pinned, digest })
          )
          yield* record(agentId, TOOL_CHANGED_EVENT_TYPE, {
            server_id: serverId,
            tool_name: tool.name,
            pinned_digest: entry.pinned,
            digest,
            definition: storedDefinition(tool)
          })
        }
        entry.annotations = entry.pinned === digest ? annotationsOf(tool) : undefined
      })

    /** Pins the definition last listed, if it is the one of `digest` (a person accepted it). */
    const approve = (serverId: string, toolName: string, digest: string, by: ToolApprover) =>
      Effect.suspend(() => {
        const entry = entries.get(keyOf(serverId, toolName))
        if (entry === undefined || entry.seen !== digest || entry.seenDefinition === undefined) {
          return Effect.succeed(entry?.pinned === digest)
        }
        if (entry.pinned === digest) return Effect.succeed(true)
        const previous = entry.pinned ?? null
        const definition = entry.seenDefinition
        entry.pinned = digest
        entry.pinnedDefinition = definition
        entry.changes.clear()
        entry.annotations = annotationsOf(definition)
        return Effect.as(
          record(by.agentId, TOOL_PINNED_EVENT_TYPE, {
            server_id: serverId,
            tool_name: entry.toolName,
            digest,
            definition: storedDefinition(definition),
            approves: {
              change_sequence: null,
              previous_digest: previous,
              approver: by.approver,
              via: by.via,
              session_id: by.sessionId
            }
          }),
          true
        )
      })

    /** How the definition last listed differs from the pinned one. */
    const change = (serverId: string, toolName: string): ToolChange | undefined => {
      const entry = entries.get(keyOf(serverId, toolName))
      if (entry === undefined || typeof entry.seen !== "string" || entry.pinned === undefined) return undefined
      if (entry.seen === entry.pinned) return undefined
      const seen = entry.seenDefinition ?? {}
      const pinned = entry.pinnedDefinition
      const changed = pinned === undefined
        ? []
        : (["description", "inputSchema", "outputSchema", "annotations"] as const).filter((key) =>
          canonicalize(pinned[key] ?? null) !== canonicalize(seen[key] ?? null)
        )
      return {
        pinnedDigest: entry.pinned,
        digest: entry.seen,
        changed,
        ...(typeof seen.description === "string" ? { description: seen.description } : {})
      }
    }

    return ToolPins.of({
      change,
      approve,
      observe: (serverId, agentId, tools) =>
        Effect.forEach(tools, (tool) => observeOne(serverId, agentId, tool), { discard: true }),
      refusal: (serverId, toolName) => {
        const entry = entries.get(keyOf(serverId, toolName))
        if (entry === undefined || entry.seen === undefined) return undefined
        if (entry.seen === null) {
          return `the definition of tool ${toolName} cannot be pinned (nested deeper than ${MAX_DEFINITION_DEPTH} levels)`
        }
        return entry.seen === entry.pinned
          ? undefined
          : `the definition of tool ${toolName} changed since it was pinned (${entry.pinned!.slice(0, 12)} -> ${
            entry.seen.slice(0, 12)
          }); it must be approved (agent-ledger tools approve)`
      },
      annotations: (serverId, toolName) => entries.get(keyOf(serverId, toolName))?.annotations,
      state: (serverId, toolName) => {
        const entry = entries.get(keyOf(serverId, toolName))
        return entry === undefined ? undefined : {
          serverId: entry.serverId,
          toolName: entry.toolName,
          pinned: entry.pinned,
          seen: entry.seen,
          annotations: entry.annotations
        }
      }
    })
  })

const PinPayload = Schema.parseJson(Schema.Struct({
  action: Schema.Struct({
    customKind: Schema.String,
    payload: Schema.Struct({
      server_id: Schema.String,
      tool_name: Schema.String,
      digest: Schema.String,
      definition: Schema.optional(Schema.Unknown)
    })
  })
}))
const decodePin = Schema.decodeUnknownOption(PinPayload)

/** A `tool.pinned` or `tool.changed` row's record (`None` for a row of another shape). */
export const recordOf = (row: { readonly event_type: unknown; readonly payload: unknown }): Option.Option<PinRecord> =>
  Option.map(decodePin(row.payload), (p) => ({
    kind: row.event_type === TOOL_PINNED_EVENT_TYPE ? "pinned" : "changed",
    serverId: p.action.payload.server_id,
    toolName: p.action.payload.tool_name,
    digest: p.action.payload.digest,
    definition: p.action.payload.definition ?? null
  }))

/**
 * The ledger's pins and changes, oldest first. They are read, not verified: run `agent-ledger verify` to
 * know that no row was planted or edited (a planted pin could approve a definition).
 */
export const load: Effect.Effect<ReadonlyArray<PinRecord>, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<{ event_type: string; payload: string }>`
      SELECT event_type, payload FROM signed_events
      WHERE event_type IN (${TOOL_PINNED_EVENT_TYPE}, ${TOOL_CHANGED_EVENT_TYPE}) ORDER BY sequence`
    return rows.flatMap((row) => Option.toArray(recordOf(row)))
  })
)

/** One tool of one server as the ledger records it: its pin and the changes seen since. */
export interface LedgerTool {
  readonly serverId: string
  readonly toolName: string
  readonly pinned: { readonly digest: string; readonly sequence: number; readonly timestamp: string } | undefined
  /** Definitions seen since the pin that differ from it (`tool.changed` rows), oldest first. */
  readonly changes: ReadonlyArray<{
    readonly digest: string
    readonly sequence: number
    readonly timestamp: string
    /** The new definition as recorded (null when it was too large to store). */
    readonly definition: JsonValue
  }>
}

/** Every tool the ledger has pinned or seen changed, with its pending changes (read, not verified). */
export const ledgerTools: Effect.Effect<ReadonlyArray<LedgerTool>, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<{ sequence: number; timestamp: string; event_type: string; payload: string }>`
      SELECT sequence, timestamp, event_type, payload FROM signed_events
      WHERE event_type IN (${TOOL_PINNED_EVENT_TYPE}, ${TOOL_CHANGED_EVENT_TYPE}) ORDER BY sequence`
    const tools = new Map<string, { -readonly [K in keyof LedgerTool]: LedgerTool[K] }>()
    for (const row of rows) {
      const record = recordOf(row)
      if (Option.isNone(record)) continue
      const { digest, serverId, toolName } = record.value
      const key = keyOf(serverId, toolName)
      const tool = tools.get(key) ?? { serverId, toolName, pinned: undefined, changes: [] }
      tools.set(key, tool)
      const at = { digest, sequence: Number(row.sequence), timestamp: String(row.timestamp) }
      if (record.value.kind === "pinned") {
        tool.pinned = at
        tool.changes = []
      } else {
        const definition = (JSON.parse(row.payload) as { action: { payload: { definition?: JsonValue } } }).action
          .payload.definition ?? null
        tool.changes = [...tool.changes, { ...at, definition }]
      }
    }
    return [...tools.values()]
  })
)

/**
 * The `tool.pinned` payload that approves a pending change of `tool` (the latest, or the one of `digest`):
 * the definition recorded with the change is pinned only if it hashes to the change's digest (a row read
 * back is not signed again unchecked). `undefined` when there is no such change.
 */
export const approvalOf = (
  tool: LedgerTool,
  digest?: string
): { readonly payload: JsonValue } | { readonly problem: string } => {
  const change = digest === undefined ? tool.changes.at(-1) : tool.changes.find((c) => c.digest === digest)
  if (change === undefined) {
    return {
      problem: digest === undefined
        ? `tool ${tool.toolName} of server ${tool.serverId} has no change to approve`
        : `tool ${tool.toolName} of server ${tool.serverId} has no change with digest ${digest}`
    }
  }
  if (change.definition !== null) {
    const recomputed = isRecord(change.definition) ? digestOf(change.definition) : undefined
    if (recomputed !== change.digest) {
      return { problem: `the definition recorded with change ${change.sequence} does not hash to its digest` }
    }
  }
  return {
    payload: {
      server_id: tool.serverId,
      tool_name: tool.toolName,
      digest: change.digest,
      definition: change.definition,
      approves: { change_sequence: change.sequence, previous_digest: tool.pinned?.digest ?? null }
    }
  }
}
