/**
 * Asking a person before a call runs (`"action": "ask"` rules): what the guard's `approver` is asked (tool,
 * server, rule, reason, and a summary of the arguments the rule allows to show), the answers it can give,
 * and the `governance.approval` row that records each question and its answer (who was asked, the answer,
 * how long it took, the journal entry of the call it decided), so "who approved this write?" has a signed
 * answer. The MCP proxy's approver (and `serve`'s, for its MCP sessions) asks the client through MCP
 * elicitation (`elicitation/create`): `askClient`.
 *
 * A `toolChanged` rule asks the same approver about a tool whose definition changed since it was pinned
 * (`toolChangeQuestion`): an accept pins the new definition. Claude Code's hooks ask through Claude Code's
 * own permission prompt instead (`McpGuard.CheckOptions.deferAsk`), and learn the answer from what follows.
 */
import { Effect } from "effect"
import type { JsonValue } from "../audit/AuditEvent.js"
import { jsonBytes } from "./McpGuard.js"
import type { GuardCall, ToolChange } from "./McpGuard.js"
import type { ClientRequests } from "./McpProxy.js"

/** What an approver is asked. */
export interface ApprovalRequest {
  readonly call: GuardCall
  readonly ruleId: string
  readonly reason: string
  /** The arguments as the question shows them: the rule's `showArguments` fields as given, else sizes. */
  readonly argumentSummary: JsonValue
  /** The whole question, as one text (what elicitation shows). */
  readonly question: string
  readonly timeoutMillis: number
  /** The question is about a changed tool definition (rule `tool-changed`): an accept pins it. */
  readonly toolChange?: ToolChange | undefined
}

/** An approver's answer. `approver` names who answered (a client name, a chat user). */
export type ApprovalAnswer =
  | { readonly _tag: "Accept"; readonly approver: string }
  | { readonly _tag: "Decline"; readonly approver: string }
  | { readonly _tag: "Cancel"; readonly approver: string }
  /** No one can be asked (the client did not declare elicitation): the rule's `fallback` applies. */
  | { readonly _tag: "Unavailable"; readonly detail: string }

/**
 * Asks a person about a call. The guard bounds the wait with the rule's `timeout` (on `Clock`) and
 * interrupts the approver when it passes; an approver should then withdraw its question.
 */
export type Approver = (request: ApprovalRequest) => Effect.Effect<ApprovalAnswer>

/**
 * How a question ended, as the approval row records it. `unknown`: the question was asked where the guard
 * cannot see the answer (Claude Code's prompt) and nothing showed the call ran.
 */
export type Answer = "accept" | "decline" | "cancel" | "timeout" | "unavailable" | "unknown"

/** What became of the call asked about: `not-run` when nothing showed it ran (answer `unknown`). */
export type Outcome = "allowed" | "refused" | "not-run"

/** The longest argument value a question shows (longer ones are cut, with their size). */
export const MAX_SHOWN_CHARS = 200

/** The arguments as a question shows them: the listed top-level fields (cut to `MAX_SHOWN_CHARS`), sizes of the rest. */
export const argumentSummary = (args: unknown, show: ReadonlyArray<string>): JsonValue => {
  if (typeof args !== "object" || args === null || Array.isArray(args)) return { bytes: jsonBytes(args) }
  const shown: Record<string, JsonValue> = {}
  const hidden: Record<string, JsonValue> = {}
  for (const [key, value] of Object.entries(args)) {
    if (show.includes(key)) {
      const text = typeof value === "string" ? value : JSON.stringify(value) ?? ""
      shown[key] = text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS)}… (${text.length} chars)` : text
    } else {
      hidden[key] = jsonBytes(value)
    }
  }
  return { shown, hiddenBytes: hidden }
}

/** The question's text: tool, server, rule, reason and the argument summary. */
export const questionText = (call: GuardCall, ruleId: string, reason: string, summary: JsonValue): string => {
  const s = summary as { shown?: Record<string, string>; hiddenBytes?: Record<string, number> }
  const shown = Object.entries(s.shown ?? {}).map(([k, v]) => `  ${k}: ${v}`)
  const hidden = Object.entries(s.hiddenBytes ?? {}).map(([k, n]) => `${k} (${n} bytes)`)
  return [
    `Allow ${call.toolName} on server ${call.serverId}?`,
    `Rule ${ruleId}: ${reason}`,
    ...(shown.length > 0 ? ["Arguments:", ...shown] : []),
    ...(hidden.length > 0 ? [`Not shown: ${hidden.join(", ")}`] : [])
  ].join("\n")
}

/**
 * The question about a changed tool definition: tool, server, the pinned and the new digest, which fields
 * changed and the new description (cut to `MAX_SHOWN_CHARS`), and what an accept does.
 */
export const toolChangeQuestion = (call: GuardCall, ruleId: string, change: ToolChange): string => {
  const description = change.description === undefined
    ? []
    : [
      `New description: ${
        change.description.length > MAX_SHOWN_CHARS
          ? `${change.description.slice(0, MAX_SHOWN_CHARS)}… (${change.description.length} chars)`
          : change.description
      }`
    ]
  return [
    `Approve the changed definition of ${call.toolName} on server ${call.serverId}?`,
    `Rule ${ruleId}: the tool's definition changed since it was pinned (${
      change.changed.length > 0 ? `changed: ${change.changed.join(", ")}` : "the pinned definition is not stored"
    }).`,
    `Pinned ${change.pinnedDigest.slice(0, 12)}, now ${change.digest.slice(0, 12)}.`,
    ...description,
    "Accepting pins the new definition in the ledger and lets this call run."
  ].join("\n")
}

/** The `governance.approval` row's payload (docs/FORMAT.md, "Guard records"). */
export const approvalPayload = (fields: {
  readonly call: GuardCall
  readonly ruleId: string
  readonly reason: string
  readonly askedBy: string
  readonly approver: string | null
  readonly answer: Answer
  readonly allowed: boolean
  /** Overrides `allowed` (`not-run`: nothing showed the call ran). */
  readonly outcome?: Outcome | undefined
  readonly latencyMillis: number
  readonly argumentSummary: JsonValue
  /** A question about a changed tool definition: the `toolChanged` rule that asked, and the digests. */
  readonly toolChange?: { readonly askRule: string; readonly change: ToolChange } | undefined
}): JsonValue => ({
  session_id: fields.call.sessionId,
  server_id: fields.call.serverId,
  tool_name: fields.call.toolName,
  rule_id: fields.ruleId,
  reason: fields.reason,
  asked: fields.askedBy,
  approver: fields.approver,
  answer: fields.answer,
  outcome: fields.outcome ?? (fields.allowed ? "allowed" : "refused"),
  latency_ms: Math.max(0, Math.round(fields.latencyMillis)),
  arguments: fields.argumentSummary,
  ...(fields.toolChange === undefined ? {} : {
    tool_change: {
      ask_rule: fields.toolChange.askRule,
      pinned_digest: fields.toolChange.change.pinnedDigest,
      digest: fields.toolChange.change.digest,
      changed: [...fields.toolChange.change.changed]
    }
  })
})

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Whether MCP `initialize` parameters declare the client's `elicitation` capability. */
export const declaresElicitation = (params: unknown): boolean =>
  isRecord(params) && isRecord(params.capabilities) && isRecord(params.capabilities.elicitation)

/**
 * Asks an MCP client's user a yes/no question through elicitation (`accept` with `approve` not false
 * allows; `decline`, `cancel` or `approve: false` refuse). A client that did not declare the capability, or
 * that is gone or answers with an error, cannot be asked: the rule's fallback applies.
 */
export const askClient = (
  requests: ClientRequests,
  canElicit: boolean,
  clientName: string,
  request: ApprovalRequest
): Effect.Effect<ApprovalAnswer> =>
  canElicit
    ? Effect.map(
      requests.request("elicitation/create", {
        message: request.question,
        requestedSchema: {
          type: "object",
          properties: { approve: { type: "boolean", title: "Allow this call", default: true } }
        }
      }),
      (answer): ApprovalAnswer => {
        if (answer._tag === "Gone") return { _tag: "Unavailable", detail: "the client went away" }
        if (answer._tag === "Error") {
          return { _tag: "Unavailable", detail: `the client could not ask (${JSON.stringify(answer.error)})` }
        }
        const approver = `client ${clientName}`
        const content = isRecord(answer.result.content) ? answer.result.content : {}
        switch (answer.result.action) {
          case "accept":
            return content.approve === false ? { _tag: "Decline", approver } : { _tag: "Accept", approver }
          case "decline":
            return { _tag: "Decline", approver }
          default:
            return { _tag: "Cancel", approver }
        }
      }
    )
    : Effect.succeed({ _tag: "Unavailable", detail: "the client did not declare the elicitation capability" })
