/**
 * The guard inside the MCP proxy: the `McpProxy.Hooks` that put every `tools/call` through `McpGuard` (a
 * refusal answered as a tool error the agent can read, a forwarded call completed with how it ended) and
 * hide from `tools/list` the tools the guard refuses. One implementation for `mcp-proxy` (stdio) and
 * `serve`'s MCP endpoints (Streamable HTTP), which differ only in where the session's identity comes from
 * and in what else they do with `initialize` and `tools/list`.
 */
import { Effect } from "effect"
import * as McpGuard from "./McpGuard.js"
import type * as McpProxy from "./McpProxy.js"

/** The text a refused call returns to the agent, so it sees why. */
export const refusalText = (ruleId: string, reason: string): string =>
  `agent-ledger refused this call (rule ${ruleId}): ${reason}`

/** A refused call's tool result: an error result carrying `refusalText`. */
export const refusalResult = (ruleId: string, reason: string): Record<string, unknown> => ({
  content: [{ type: "text", text: refusalText(ruleId, reason) }],
  isError: true
})

/** The guard's record of how a forwarded call ended; error answers count their bytes like results. */
export const callOutcome = (answer: McpProxy.ToolAnswer): McpGuard.CallOutcome => {
  switch (answer._tag) {
    case "Result":
      return { _tag: "Result", bytesRead: McpGuard.jsonBytes(answer.result) }
    case "Error":
      return { _tag: "ErrorAnswer", bytesRead: McpGuard.jsonBytes(answer.error) }
    case "NotForwarded":
      return { _tag: "ErrorAnswer", bytesRead: 0 }
    default:
      return answer
  }
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * The guard's view of a `tools/call` request's parameters, made by `who` (its session, agent and server),
 * whose fields are read at each call (so a getter can follow an agent named later).
 */
export const toolCallOf = (
  who: { readonly sessionId: string; readonly agentId: string; readonly serverId: string }
) =>
(params: Record<string, unknown>): McpGuard.GuardCall => ({
  sessionId: who.sessionId,
  agentId: who.agentId,
  serverId: who.serverId,
  toolName: typeof params.name === "string" ? params.name : "",
  arguments: params.arguments
})

export interface Options {
  readonly guard: McpGuard.Service
  readonly serverId: string
  /** The guard's view of a `tools/call` request's parameters (the session and agent are the caller's). */
  readonly callOf: (params: Record<string, unknown>) => McpGuard.GuardCall
  /** What else to do with the client's `initialize` parameters (default: nothing). */
  readonly onInitialize?: ((params: unknown) => Effect.Effect<void>) | undefined
  /** What else to do with the upstream's tools before the hidden ones are filtered out (e.g. pin them). */
  readonly observeTools?: ((tools: ReadonlyArray<unknown>) => Effect.Effect<void>) | undefined
}

/** The proxy's hooks for one session, deciding through `options.guard`. */
export const make = (options: Options): McpProxy.Hooks<McpGuard.Ticket> => {
  const { callOf, guard, serverId } = options
  return {
    onInitialize: options.onInitialize ?? (() => Effect.void),
    onToolCall: (params) =>
      Effect.map(
        guard.check(callOf(params)),
        (check): McpProxy.ToolCallRoute<McpGuard.Ticket> =>
          check._tag === "Allowed"
            ? { _tag: "Forward", ticket: check.ticket }
            : { _tag: "Answer", result: refusalResult(check.ruleId, check.reason) }
      ),
    onToolResult: (ticket, answer) => guard.complete(ticket, callOutcome(answer)),
    onRefusal: (params, ruleId, reason) =>
      Effect.as(guard.refuse(callOf(params), ruleId, reason), refusalResult(ruleId, reason)),
    onToolsList: (result) =>
      Effect.gen(function*() {
        if (!Array.isArray(result.tools)) return result
        if (options.observeTools !== undefined) yield* options.observeTools(result.tools)
        return {
          ...result,
          tools: result.tools.filter((tool: unknown) =>
            !isRecord(tool) || typeof tool.name !== "string" || guard.isVisible(serverId, tool.name)
          )
        }
      })
  }
}
