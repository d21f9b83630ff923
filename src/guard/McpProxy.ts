/**
 * An MCP proxy at the JSON-RPC message level, on the official SDK's transports: every message passes
 * between the client and the upstream server unchanged (initialize, tools/list, resources, prompts,
 * notifications, server-to-client requests, ids and all), except that
 *
 * - every `tools/call` request is routed through `Hooks.onToolCall` first: forwarded, or answered by the
 *   proxy itself (a refusal) so the upstream server never sees it;
 * - the upstream's answer to a forwarded `tools/call` is shown to `Hooks.onToolResult` before the client
 *   gets it (so the guard can journal the call with the bytes it returned);
 * - the upstream's answer to `tools/list` passes through `Hooks.onToolsList` (to hide tools).
 *
 * Messages in each direction are handled one at a time, in arrival order, so a guard's decision never
 * reorders what the client sent. The proxy ends when either side closes; `onToolResult` is then called
 * for calls still waiting for an answer (with `undefined`, so they are journaled as unanswered).
 */
import { Data, Deferred, Effect, Queue, Runtime } from "effect"

/** A JSON-RPC 2.0 message (request, response or notification), as the transports carry it. */
export type JSONRPCMessage = { readonly jsonrpc: "2.0" } & Record<string, unknown>

/**
 * The part of an MCP SDK transport (`@modelcontextprotocol/sdk/shared/transport.js`) the proxy uses:
 * `StdioServerTransport`, `StdioClientTransport`, `StreamableHTTPClientTransport` and the others fit it.
 * Written out so that this module's types do not depend on the SDK's (which need the DOM library).
 */
export interface Transport {
  start(): Promise<void>
  send(message: JSONRPCMessage): Promise<void>
  close(): Promise<void>
  onclose?(): void
  onerror?(error: Error): void
  onmessage?(message: JSONRPCMessage): void
}

/** What the guard does with a `tools/call` request. */
export type ToolCallRoute<T> =
  | { readonly _tag: "Forward"; readonly ticket: T }
  | { readonly _tag: "Answer"; readonly result: Record<string, unknown> }

/** The upstream's answer to a forwarded `tools/call`: its `result`, its JSON-RPC `error`, or none (closed). */
export type ToolAnswer =
  | { readonly _tag: "Result"; readonly result: Record<string, unknown> }
  | { readonly _tag: "Error"; readonly error: unknown }
  | { readonly _tag: "Unanswered" }

export interface Hooks<T> {
  /** The client's `initialize` request parameters (its `clientInfo`), before the upstream sees them. */
  readonly onInitialize: (params: unknown) => Effect.Effect<void>
  /** A `tools/call` request's parameters (`name`, `arguments`): forward it, or answer it here. */
  readonly onToolCall: (params: Record<string, unknown>) => Effect.Effect<ToolCallRoute<T>>
  /** The upstream's answer to a call `onToolCall` forwarded with `ticket`. */
  readonly onToolResult: (ticket: T, answer: ToolAnswer) => Effect.Effect<void>
  /** The upstream's `tools/list` result, as the client will see it. */
  readonly onToolsList: (result: Record<string, unknown>) => Record<string, unknown>
}

/** A transport failed (a broken pipe, an upstream that could not be started). */
export class McpProxyError extends Data.TaggedError("McpProxyError")<{
  readonly side: "client" | "upstream"
  /** `start`: the transport could not be started (e.g. the server command does not exist). */
  readonly stage: "start" | "run"
  readonly message: string
}> {}

/** How the proxy ended: which side closed first. */
export type Ended = "client" | "upstream"

type Id = string | number

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const idOf = (message: Record<string, unknown>): Id | undefined =>
  typeof message.id === "string" || typeof message.id === "number" ? message.id : undefined

/**
 * Runs the proxy between `client` (the transport to the MCP client: the proxy is its server) and
 * `upstream` (the transport to the real server: the proxy is its client) until either closes. Both
 * transports are started here and closed when it ends.
 */
export const run = <T>(options: {
  readonly client: Transport
  readonly upstream: Transport
  readonly hooks: Hooks<T>
}): Effect.Effect<Ended, McpProxyError> =>
  Effect.gen(function*() {
    const { client, hooks, upstream } = options
    const runtime = yield* Effect.runtime<never>()
    const fromClient = yield* Queue.unbounded<JSONRPCMessage>()
    const fromUpstream = yield* Queue.unbounded<JSONRPCMessage>()
    const ended = yield* Deferred.make<Ended, McpProxyError>()
    /** Forwarded `tools/call` requests by id, waiting for the upstream's answer. */
    const pendingCalls = new Map<Id, T>()
    /** `tools/list` request ids, whose answers pass through `onToolsList`. */
    const pendingLists = new Set<Id>()

    const send = (transport: Transport, side: "client" | "upstream", message: JSONRPCMessage) =>
      Effect.tryPromise({
        try: () => transport.send(message),
        catch: (error) => new McpProxyError({ side, stage: "run", message: `cannot send: ${String(error)}` })
      })

    const fromClientStep = (message: JSONRPCMessage): Effect.Effect<void, McpProxyError> =>
      Effect.gen(function*() {
        const raw: Record<string, unknown> = message
        const id = idOf(raw)
        if (id !== undefined && typeof raw.method === "string") {
          if (raw.method === "initialize") yield* hooks.onInitialize(raw.params)
          if (raw.method === "tools/list") pendingLists.add(id)
          if (raw.method === "tools/call") {
            const route = yield* hooks.onToolCall(isRecord(raw.params) ? raw.params : {})
            if (route._tag === "Answer") {
              return yield* send(client, "client", { jsonrpc: "2.0", id, result: route.result })
            }
            pendingCalls.set(id, route.ticket)
          }
        }
        yield* send(upstream, "upstream", message)
      })

    const fromUpstreamStep = (message: JSONRPCMessage): Effect.Effect<void, McpProxyError> =>
      Effect.gen(function*() {
        const raw: Record<string, unknown> = message
        const id = idOf(raw)
        const isResponse = id !== undefined && typeof raw.method !== "string"
        if (isResponse && pendingCalls.has(id)) {
          const ticket = pendingCalls.get(id)!
          pendingCalls.delete(id)
          yield* hooks.onToolResult(
            ticket,
            isRecord(raw.result) ? { _tag: "Result", result: raw.result } : { _tag: "Error", error: raw.error }
          )
        } else if (isResponse && pendingLists.has(id)) {
          pendingLists.delete(id)
          if (isRecord(raw.result)) {
            return yield* send(client, "client", { ...message, result: hooks.onToolsList(raw.result) })
          }
        }
        yield* send(client, "client", message)
      })

    const pump = (
      queue: Queue.Queue<JSONRPCMessage>,
      step: (m: JSONRPCMessage) => Effect.Effect<void, McpProxyError>
    ) =>
      Effect.forever(Effect.flatMap(Queue.take(queue), step)).pipe(
        Effect.catchAll((error) => Deferred.fail(ended, error))
      )

    const endWith = (side: Ended) => () => Runtime.runFork(runtime)(Deferred.succeed(ended, side))
    client.onmessage = (message) => Queue.unsafeOffer(fromClient, message)
    upstream.onmessage = (message) => Queue.unsafeOffer(fromUpstream, message)
    client.onclose = endWith("client")
    upstream.onclose = endWith("upstream")
    // A malformed line is reported by the transport and skipped; the conversation goes on.
    client.onerror = () => {}
    upstream.onerror = () => {}

    const start = (transport: Transport, side: "client" | "upstream") =>
      Effect.tryPromise({
        try: () => transport.start(),
        catch: (error) => new McpProxyError({ side, stage: "start", message: `cannot start: ${String(error)}` })
      })
    const close = (transport: Transport) => Effect.promise(() => transport.close().catch(() => undefined))

    return yield* Effect.gen(function*() {
      yield* start(upstream, "upstream")
      yield* start(client, "client")
      yield* Effect.forkScoped(pump(fromClient, fromClientStep))
      yield* Effect.forkScoped(pump(fromUpstream, fromUpstreamStep))
      const side = yield* Deferred.await(ended)
      // What the upstream sent before it closed still reaches the client.
      yield* Effect.forEach(yield* Queue.takeAll(fromUpstream), fromUpstreamStep, { discard: true }).pipe(
        Effect.catchAll(() => Effect.void)
      )
      return side
    }).pipe(
      Effect.ensuring(Effect.gen(function*() {
        for (const ticket of pendingCalls.values()) yield* hooks.onToolResult(ticket, { _tag: "Unanswered" })
        pendingCalls.clear()
        yield* close(client)
        yield* close(upstream)
      })),
      Effect.scoped
    )
  })
