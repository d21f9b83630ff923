/**
 * Tool pins seen from one MCP session of `serve`. `ToolPins` checks the definition of a server's tool last
 * listed by any session: enough for `mcp-proxy` (one session per process), not for `serve`, where sessions
 * of one upstream run side by side. A server (a remote, above all) could show the pinned definition to one
 * session and a changed one to another; the next list of the first would make the tool look unchanged to
 * both. So each session also keeps the digest of each tool as its own lists showed it, and a call to a tool
 * this session was shown with a definition other than the pinned one is refused under `tool-changed`
 * (journaled and ledgered as the guard's refusals are), whatever other sessions listed since.
 */
import { Effect } from "effect"
import { normalizeName } from "../guard/GuardPolicy.js"
import type * as McpGuard from "../guard/McpGuard.js"
import * as McpGuardHooks from "../guard/McpGuardHooks.js"
import type * as McpProxy from "../guard/McpProxy.js"
import * as ToolPins from "../guard/ToolPins.js"

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

export interface Options {
  readonly guard: McpGuard.Service
  readonly pins: ToolPins.Service
  readonly serverId: string
  readonly agentId: string
  readonly callOf: (params: Record<string, unknown>) => McpGuard.GuardCall
  /** What the session does with its client's `initialize` (e.g. note the elicitation capability). */
  readonly onInitialize?: ((params: unknown) => Effect.Effect<void>) | undefined
}

/** The guard's hooks for one session and one upstream, with pins kept per session as well as per server. */
export const hooks = (options: Options): McpProxy.Hooks<McpGuard.Ticket> => {
  const { callOf, guard, pins, serverId } = options
  /** What this session's lists showed: normalised tool name → digest (null: it cannot be pinned). */
  const shown = new Map<string, string | null>()
  const base = McpGuardHooks.make({
    guard,
    serverId,
    callOf,
    onInitialize: options.onInitialize,
    observeTools: (tools) =>
      Effect.zipRight(
        pins.observe(serverId, options.agentId, tools),
        Effect.sync(() => {
          for (const tool of tools) {
            if (isRecord(tool) && typeof tool.name === "string") {
              shown.set(normalizeName(tool.name), ToolPins.digestOf(tool) ?? null)
            }
          }
        })
      )
  })
  /** Why this session may not call `toolName` though the server-wide pins allow it, if so. */
  const sessionRefusal = (toolName: string): string | undefined => {
    const seen = shown.get(normalizeName(toolName))
    const pinned = pins.state(serverId, toolName)?.pinned
    if (seen === undefined || seen === pinned) return undefined
    return seen === null
      ? `the definition of tool ${toolName} this session was shown cannot be pinned`
      : `the definition of tool ${toolName} this session was shown is not the pinned one (${
        (pinned ?? "none").slice(0, 12)
      } -> ${seen.slice(0, 12)}); an operator must approve it (agent-ledger tools approve)`
  }
  return {
    ...base,
    onToolCall: (params) => {
      const name = typeof params.name === "string" ? params.name : ""
      const reason = sessionRefusal(name)
      if (reason === undefined) return base.onToolCall(params)
      return Effect.as(
        guard.refuse(callOf(params), ToolPins.TOOL_CHANGED_RULE, reason),
        { _tag: "Answer", result: McpGuardHooks.refusalResult(ToolPins.TOOL_CHANGED_RULE, reason) } as const
      )
    }
  }
}
