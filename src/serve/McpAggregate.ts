/**
 * One MCP endpoint for every configured upstream (`serve`'s `"aggregate": true`, at `/mcp`): a session
 * opens a session to each upstream and shows their tools as one server's, each named
 * `UPSTREAM__TOOL` (`SEPARATOR`: two underscores, valid in MCP tool names, which allow `A-Z a-z 0-9 _ - .`,
 * and in the function names of the common model APIs, which do not all allow dots). Upstream names
 * may then not contain `__`, so a name splits one way only.
 *
 * Two parts, both for `McpProxy.run`:
 * - `transport`: the upstreams' transports as one upstream. `initialize` goes to every upstream (the
 *   answer declares the tools capability only), `tools/list` merges the upstreams' lists (every page of
 *   each) with qualified names, `tools/call` goes to the upstream its name names, with the upstream's own
 *   tool name; `ping` is answered here; other requests are `Method not found` (resources and prompts are
 *   not aggregated). Requests an upstream sends to the client get ids of their own, mapped back when the
 *   client answers. The session ends when any upstream's does.
 * - `hooks`: every `tools/call` is decided by the hooks of the upstream its name names (the guard then
 *   sees the upstream's server id and the upstream's tool name, so policy rules, pins and ledger rows name
 *   the real server), and `tools/list` is filtered (and pinned) upstream by upstream the same way.
 */
import { Effect } from "effect"
import type * as McpProxy from "../guard/McpProxy.js"

/** Between the upstream's name and its tool's name in an aggregated tool name. */
export const SEPARATOR = "__"

/** The aggregated name of `upstream`'s tool `tool`. */
export const qualify = (upstream: string, tool: string): string => `${upstream}${SEPARATOR}${tool}`

/** The upstream and tool an aggregated name names, if `upstreams` has that upstream. */
export const split = (
  upstreams: ReadonlySet<string>,
  name: string
): { readonly upstream: string; readonly tool: string } | undefined => {
  const at = name.indexOf(SEPARATOR)
  if (at <= 0) return undefined
  const upstream = name.slice(0, at)
  const tool = name.slice(at + SEPARATOR.length)
  return upstreams.has(upstream) && tool.length > 0 ? { upstream, tool } : undefined
}

/** Pages of one upstream's `tools/list` followed for one aggregated list. */
const MAX_LIST_PAGES = 20

const ErrorCode = { MethodNotFound: -32601, InvalidParams: -32602 } as const

type Id = string | number
const keyOf = (id: Id) => `${typeof id}:${id}`

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const idOf = (raw: Record<string, unknown>): Id | undefined =>
  typeof raw.id === "string" || typeof raw.id === "number" ? raw.id : undefined

/** A request sent to every upstream, answered once all have answered. */
interface FanOut {
  readonly id: Id
  readonly method: "initialize" | "tools/list"
  readonly message: McpProxy.JSONRPCMessage
  /** Upstreams yet to answer (their last page, for `tools/list`). */
  readonly waiting: Set<string>
  readonly results: Map<string, Record<string, unknown>>
  readonly tools: Map<string, Array<unknown>>
  readonly pages: Map<string, number>
  error: unknown
}

export interface ServerInfo {
  readonly name: string
  readonly version: string
}

/** The transports of `upstreams` (name → transport, not started) as one upstream transport. */
export const transport = (
  upstreams: ReadonlyMap<string, McpProxy.Transport>,
  serverInfo: ServerInfo
): McpProxy.Transport => {
  const names = new Set(upstreams.keys())
  let next = 0
  const newId = () => `agent-ledger:aggregate:${++next}`
  /** Our fan-out requests to upstreams, by our id. */
  const own = new Map<string, { readonly fanOut: FanOut; readonly upstream: string }>()
  /** Client requests routed to one upstream (for `notifications/cancelled`), by the client's id. */
  const routed = new Map<string, string>()
  /** Requests from upstreams to the client, by the id the client sees. */
  const fromUpstreams = new Map<string, { readonly upstream: string; readonly id: Id }>()
  let closed = false

  const deliver = (message: Record<string, unknown>) => {
    if (!closed) outer.onmessage?.({ jsonrpc: "2.0", ...message })
  }
  // Answers made here arrive after the send that asked for them, like a server's.
  const deliverLater = (message: Record<string, unknown>) => void queueMicrotask(() => deliver(message))
  const sendTo = (upstream: string, message: Record<string, unknown>) =>
    upstreams.get(upstream)!.send({ jsonrpc: "2.0", ...message })

  const finish = (fanOut: FanOut) => {
    if (fanOut.error !== undefined) return deliver({ id: fanOut.id, error: fanOut.error })
    if (fanOut.method === "tools/list") {
      const tools: Array<unknown> = []
      for (const name of names) {
        for (const tool of fanOut.tools.get(name) ?? []) {
          if (isRecord(tool) && typeof tool.name === "string") tools.push({ ...tool, name: qualify(name, tool.name) })
        }
      }
      return deliver({ id: fanOut.id, result: { tools } })
    }
    const versions = [...fanOut.results.values()]
      .map((result) => result.protocolVersion)
      .filter((version): version is string => typeof version === "string")
      .sort()
    const requested = isRecord(fanOut.message.params) ? fanOut.message.params.protocolVersion : undefined
    deliver({
      id: fanOut.id,
      result: {
        // Every upstream speaks the oldest version any of them answered (versions are dates).
        protocolVersion: versions[0] ?? requested,
        capabilities: { tools: { listChanged: true } },
        serverInfo
      }
    })
  }

  const askPage = (fanOut: FanOut, upstream: string, cursor: string | undefined) => {
    const id = newId()
    own.set(id, { fanOut, upstream })
    const message = fanOut.method === "initialize"
      ? { ...fanOut.message, id }
      : { id, method: "tools/list", ...(cursor === undefined ? {} : { params: { cursor } }) }
    return sendTo(upstream, message).catch((error: unknown) => {
      own.delete(id)
      answered(fanOut, upstream, { error: { code: -32603, message: `upstream ${upstream}: ${String(error)}` } })
    })
  }

  /** An upstream's answer to one of our fan-out requests. */
  const answered = (fanOut: FanOut, upstream: string, raw: Record<string, unknown>) => {
    if (!fanOut.waiting.has(upstream)) return
    const result = isRecord(raw.result) ? raw.result : undefined
    if (fanOut.method === "initialize") {
      if (result === undefined) fanOut.error ??= { code: -32603, message: `upstream ${upstream}: ${errorText(raw)}` }
      else fanOut.results.set(upstream, result)
    } else if (result !== undefined) {
      // An upstream whose list fails shows no tools; the others' still do.
      const tools = fanOut.tools.get(upstream) ?? []
      if (Array.isArray(result.tools)) tools.push(...(result.tools as Array<unknown>))
      fanOut.tools.set(upstream, tools)
      const page = (fanOut.pages.get(upstream) ?? 0) + 1
      fanOut.pages.set(upstream, page)
      if (typeof result.nextCursor === "string" && page < MAX_LIST_PAGES) {
        void askPage(fanOut, upstream, result.nextCursor)
        return
      }
    }
    fanOut.waiting.delete(upstream)
    if (fanOut.waiting.size === 0) finish(fanOut)
  }

  const fanOut = (message: McpProxy.JSONRPCMessage, id: Id, method: FanOut["method"]) => {
    const state: FanOut = {
      id,
      method,
      message,
      waiting: new Set(names),
      results: new Map(),
      tools: new Map(),
      pages: new Map(),
      error: undefined
    }
    return Promise.all([...names].map((upstream) => askPage(state, upstream, undefined))).then(() => undefined)
  }

  const fromUpstream = (upstream: string) => (message: McpProxy.JSONRPCMessage) => {
    const raw: Record<string, unknown> = message
    const id = idOf(raw)
    if (typeof raw.method !== "string") {
      if (typeof id === "string" && own.has(id)) {
        const { fanOut } = own.get(id)!
        own.delete(id)
        return answered(fanOut, upstream, raw)
      }
      if (id !== undefined && routed.get(keyOf(id)) === upstream) routed.delete(keyOf(id))
      return deliver(raw)
    }
    if (id !== undefined) {
      const mine = newId()
      fromUpstreams.set(mine, { upstream, id })
      return deliver({ ...raw, id: mine })
    }
    deliver(raw)
  }

  const outer: McpProxy.Transport = {
    start: async () => {
      for (const [name, upstream] of upstreams) {
        upstream.onmessage = fromUpstream(name)
        upstream.onclose = () => void outer.close()
        upstream.onerror = (error) => outer.onerror?.(error)
      }
      const started = await Promise.allSettled([...upstreams.values()].map((upstream) => upstream.start()))
      const failed = started.find((result) => result.status === "rejected")
      if (failed !== undefined) {
        await outer.close()
        throw failed.reason
      }
    },
    send: async (message) => {
      const raw: Record<string, unknown> = message
      const id = idOf(raw)
      const method = typeof raw.method === "string" ? raw.method : undefined
      if (method === undefined) {
        // The client's answer to an upstream's request.
        const to = typeof id === "string" ? fromUpstreams.get(id) : undefined
        if (to === undefined) return
        fromUpstreams.delete(id as string)
        return sendTo(to.upstream, { ...raw, id: to.id })
      }
      if (id === undefined) {
        const params = isRecord(raw.params) ? raw.params : {}
        const requestId = params.requestId
        const target = method === "notifications/cancelled" &&
            (typeof requestId === "string" || typeof requestId === "number")
          ? routed.get(keyOf(requestId))
          : undefined
        if (target !== undefined) return sendTo(target, raw)
        await Promise.all([...names].map((upstream) => sendTo(upstream, raw)))
        return
      }
      switch (method) {
        case "initialize":
        case "tools/list":
          return fanOut(message, id, method)
        case "ping":
          return deliverLater({ id, result: {} })
        case "tools/call": {
          const params = isRecord(raw.params) ? raw.params : {}
          const target = typeof params.name === "string" ? split(names, params.name) : undefined
          if (target === undefined) {
            return deliverLater({
              id,
              error: { code: ErrorCode.InvalidParams, message: `no tool named ${String(params.name)}` }
            })
          }
          routed.set(keyOf(id), target.upstream)
          return sendTo(target.upstream, { ...raw, params: { ...params, name: target.tool } })
        }
        default:
          return deliverLater({
            id,
            error: { code: ErrorCode.MethodNotFound, message: `${method}: the aggregated endpoint serves tools only` }
          })
      }
    },
    close: async () => {
      if (closed) return
      closed = true
      await Promise.allSettled([...upstreams.values()].map((upstream) => upstream.close()))
      outer.onclose?.()
    }
  }
  return outer
}

const errorText = (raw: Record<string, unknown>): string =>
  isRecord(raw.error) && typeof raw.error.message === "string" ? raw.error.message : "no result"

/** A ticket of the aggregated hooks: the upstream whose hooks issued it. */
export interface Ticket<T> {
  readonly upstream: string
  readonly ticket: T
}

/**
 * The hooks of an aggregated session: each call and each upstream's part of a list goes through the hooks
 * of its upstream (`perUpstream`, which see the upstream's own tool names); a call whose name names no
 * upstream is answered here as a tool error, and a refusal of one (by the proxy itself) goes to `fallback`.
 */
export const hooks = <T>(
  perUpstream: ReadonlyMap<string, McpProxy.Hooks<T>>,
  fallback: McpProxy.Hooks<T>
): McpProxy.Hooks<Ticket<T>> => {
  const names = new Set(perUpstream.keys())
  const target = (params: Record<string, unknown>) => {
    const found = typeof params.name === "string" ? split(names, params.name) : undefined
    return found === undefined
      ? undefined
      : { ...found, hooks: perUpstream.get(found.upstream)!, params: { ...params, name: found.tool } }
  }
  return {
    onInitialize: (params) => Effect.forEach(perUpstream.values(), (h) => h.onInitialize(params), { discard: true }),
    onToolCall: (params) => {
      const to = target(params)
      if (to === undefined) {
        return Effect.succeed({
          _tag: "Answer",
          result: {
            content: [{
              type: "text",
              text: `no tool named ${String(params.name)}: aggregated tools are named UPSTREAM${SEPARATOR}TOOL`
            }],
            isError: true
          }
        })
      }
      return Effect.map(
        to.hooks.onToolCall(to.params),
        (route): McpProxy.ToolCallRoute<Ticket<T>> =>
          route._tag === "Answer" ? route : { _tag: "Forward", ticket: { upstream: to.upstream, ticket: route.ticket } }
      )
    },
    onToolResult: (ticket, answer) => perUpstream.get(ticket.upstream)!.onToolResult(ticket.ticket, answer),
    onRefusal: (params, ruleId, reason) => {
      const to = target(params)
      return to === undefined
        ? fallback.onRefusal(params, ruleId, reason)
        : to.hooks.onRefusal(to.params, ruleId, reason)
    },
    onToolsList: (result) =>
      Effect.gen(function*() {
        if (!Array.isArray(result.tools)) return result
        const byUpstream = new Map<string, Array<unknown>>()
        for (const tool of result.tools as Array<unknown>) {
          const found = isRecord(tool) && typeof tool.name === "string" ? split(names, tool.name) : undefined
          if (found === undefined) continue
          const list = byUpstream.get(found.upstream) ?? []
          list.push({ ...(tool as Record<string, unknown>), name: found.tool })
          byUpstream.set(found.upstream, list)
        }
        const tools: Array<unknown> = []
        for (const [upstream, list] of byUpstream) {
          const shown = yield* perUpstream.get(upstream)!.onToolsList({ tools: list })
          for (const tool of Array.isArray(shown.tools) ? shown.tools as Array<unknown> : []) {
            if (isRecord(tool) && typeof tool.name === "string") {
              tools.push({ ...tool, name: qualify(upstream, tool.name) })
            }
          }
        }
        return { ...result, tools }
      })
  }
}
