/**
 * An MCP proxy at the JSON-RPC message level, on the official SDK's transports: every message passes
 * between the client and the upstream server unchanged (initialize, tools/list, resources, prompts,
 * notifications, server-to-client requests, ids and all), except that
 *
 * - every `tools/call` request is routed through `Hooks.onToolCall` first: forwarded, or answered by the
 *   proxy itself (a refusal) so the upstream server never sees it;
 * - how a forwarded `tools/call` ended is shown to `Hooks.onToolResult` exactly once: the upstream's result
 *   or JSON-RPC error (before the client gets it), no answer within `callTimeout` (the client then gets a
 *   JSON-RPC error), the upstream gone, or the session ended first;
 * - the upstream's answer to `tools/list` passes through `Hooks.onToolsList` (to pin and hide tools); with
 *   `relistOnChange`, an upstream's `notifications/tools/list_changed` is held while the proxy asks the
 *   upstream for the new list itself (every page, through `Hooks.onToolsList`), then passed on, so the
 *   guard knows the new definitions before the client does, whether or not the client asks for them;
 * - what the proxy refuses itself goes to `Hooks.onRefusal` (journaled and ledgered by the guard): a
 *   `tools/call` whose arguments are nested deeper than `MAX_ARGUMENT_DEPTH`, a request id already in
 *   flight, a `tools/call` sent as a notification (never forwarded).
 *
 * Every client request gets exactly one answer: a message that cannot be handled (a bug, a message the
 * transport cannot serialise) is answered with a JSON-RPC error and logged with its id, and the session
 * goes on; a line that is not a JSON-RPC message gets a JSON-RPC error with id `null`; an answer from the
 * upstream to a request it already answered (or that timed out) is dropped, not passed on.
 *
 * Messages in each direction are handled one at a time, in arrival order, so a guard's decision never
 * reorders what the client sent. The proxy ends when either side closes (or it is interrupted); calls
 * still in flight are then completed (`UpstreamGone` when the upstream went away, else `Interrupted`) and,
 * while the client is still there, answered with a JSON-RPC error, all before `run` returns; so is a
 * `tools/call` still waiting for the guard's decision (a budget waiting on calls in flight).
 */
import { Cause, Data, Deferred, Duration, Effect, Fiber, FiberRef, Queue, Runtime } from "effect"
import { findTooDeep } from "../internal/jsonDepth.js"

/** A JSON-RPC 2.0 message (request, response or notification), as the transports carry it. */
export type JSONRPCMessage = { readonly jsonrpc: "2.0" } & Record<string, unknown>

/**
 * The part of an MCP SDK transport (`@modelcontextprotocol/sdk/shared/transport.js`) the proxy uses:
 * `StdioServerTransport`, `StdioClientTransport`, `StreamableHTTPClientTransport` and the others fit it.
 * Written out so that this module's types do not depend on the SDK's (which need the DOM library).
 */
export interface Transport {
  start(): Promise<void>
  /**
   * `relatedRequestId`: the client request a message to the client belongs to (a Streamable HTTP server
   * transport sends it on that request's response stream; stdio ignores it).
   */
  send(message: JSONRPCMessage, options?: { readonly relatedRequestId?: string | number }): Promise<void>
  close(): Promise<void>
  onclose?(): void
  onerror?(error: Error): void
  onmessage?(message: JSONRPCMessage): void
}

/** What the guard does with a `tools/call` request. */
export type ToolCallRoute<T> =
  | { readonly _tag: "Forward"; readonly ticket: T }
  | { readonly _tag: "Answer"; readonly result: Record<string, unknown> }

/** How a forwarded `tools/call` ended (see `McpGuard.CallOutcome`). */
export type ToolAnswer =
  /** The upstream answered with a result. */
  | { readonly _tag: "Result"; readonly result: Record<string, unknown> }
  /** The upstream answered with a JSON-RPC error. */
  | { readonly _tag: "Error"; readonly error: unknown }
  /** The transport could not send the call (e.g. it could not serialise it); the client got an error. */
  | { readonly _tag: "NotForwarded"; readonly reason: string }
  /** No answer within `callTimeout`; the client got a JSON-RPC error. */
  | { readonly _tag: "TimedOut" }
  /** The upstream exited (or its transport closed) before answering. */
  | { readonly _tag: "UpstreamGone" }
  /** The session ended (the client went away, a signal) before the upstream answered. */
  | { readonly _tag: "Interrupted" }

export interface Hooks<T> {
  /** The client's `initialize` request parameters (its `clientInfo`), before the upstream sees them. */
  readonly onInitialize: (params: unknown) => Effect.Effect<void>
  /** A `tools/call` request's parameters (`name`, `arguments`): forward it, or answer it here. */
  readonly onToolCall: (params: Record<string, unknown>) => Effect.Effect<ToolCallRoute<T>>
  /** How a call `onToolCall` forwarded with `ticket` ended; called exactly once per forwarded call. */
  readonly onToolResult: (ticket: T, answer: ToolAnswer) => Effect.Effect<void>
  /**
   * A `tools/call` the proxy refuses itself (`ruleId`: `arguments-too-deep`, `duplicate-request-id`,
   * `tool-call-without-id`): journal and ledger it; the tool result to answer it with, when it has an id.
   */
  readonly onRefusal: (
    params: Record<string, unknown>,
    ruleId: string,
    reason: string
  ) => Effect.Effect<Record<string, unknown>>
  /** The upstream's `tools/list` result, as the client will see it (the hook may pin or hide tools). */
  readonly onToolsList: (result: Record<string, unknown>) => Effect.Effect<Record<string, unknown>>
}

/** The client's answer to a request the proxy sent it (`ClientRequests.request`). */
export type ClientAnswer =
  | { readonly _tag: "Result"; readonly result: Record<string, unknown> }
  | { readonly _tag: "Error"; readonly error: unknown }
  /** The session is not running (or ended before the client answered). */
  | { readonly _tag: "Gone" }

/**
 * Requests from the proxy itself to the client (e.g. `elicitation/create` to ask its user about a call).
 * Made before `run` (so a guard's approver can hold it) and attached to one running proxy. The client's
 * answers are taken as they arrive, ahead of the client's queued messages: a question asked while a
 * `tools/call` is being decided is answered although that call holds the client's messages behind it.
 */
export interface ClientRequests {
  /** Sends the request and waits for the answer; interrupted, it tells the client (`notifications/cancelled`). */
  readonly request: (method: string, params: Record<string, unknown>) => Effect.Effect<ClientAnswer>
}

/**
 * The id of the client's `tools/call` whose decision is running (set by `run` around `Hooks.onToolCall`):
 * a question the guard asks the client while deciding it (`ClientRequests.request`) is sent as related to
 * that call, so a Streamable HTTP transport puts it on the call's own response stream.
 */
export const CurrentClientRequest: FiberRef.FiberRef<string | number | undefined> = FiberRef.unsafeMake<
  string | number | undefined
>(undefined)

type Send = (message: JSONRPCMessage, options?: { readonly relatedRequestId?: string | number }) => Promise<void>

export interface ClientRequestsHandle extends ClientRequests {
  readonly attach: (send: Send) => void
  /** Takes the client's answer to one of the proxy's requests; false for any other message. */
  readonly intercept: (message: JSONRPCMessage) => boolean
  readonly detach: () => void
}

/** Requests to the client, for `run`'s `clientRequests`. */
export const makeClientRequests = (): ClientRequestsHandle => {
  let send: Send | undefined
  let next = 0
  const pending = new Map<string, (answer: ClientAnswer) => void>()
  return {
    attach: (s) => void (send = s),
    detach: () => {
      send = undefined
      for (const resolve of pending.values()) resolve({ _tag: "Gone" })
      pending.clear()
    },
    intercept: (message) => {
      const raw: Record<string, unknown> = message
      if (raw.method !== undefined || typeof raw.id !== "string") return false
      const resolve = pending.get(raw.id)
      if (resolve === undefined) return false
      pending.delete(raw.id)
      resolve(isRecord(raw.result) ? { _tag: "Result", result: raw.result } : { _tag: "Error", error: raw.error })
      return true
    },
    request: (method, params) =>
      Effect.flatMap(FiberRef.get(CurrentClientRequest), (related) =>
        Effect.async<ClientAnswer>((resume) => {
          const to = send
          if (to === undefined) return resume(Effect.succeed({ _tag: "Gone" }))
          const id = `agent-ledger:${method}:${++next}`
          const options = related === undefined ? undefined : { relatedRequestId: related }
          pending.set(id, (answer) => resume(Effect.succeed(answer)))
          to({ jsonrpc: "2.0", id, method, params }, options).catch(() => {
            if (pending.delete(id)) resume(Effect.succeed({ _tag: "Gone" }))
          })
          return Effect.sync(() => {
            if (!pending.delete(id)) return
            void send?.({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id } }, options)
              .catch(() => undefined)
          })
        }))
  }
}

/** A transport failed (a broken pipe, an upstream that could not be started). */
export class McpProxyError extends Data.TaggedError("McpProxyError")<{
  readonly side: "client" | "upstream"
  /** `start`: the transport could not be started (e.g. the server command does not exist). */
  readonly stage: "start" | "run"
  readonly message: string
}> {}

/** A transport refused one message (it could not serialise it): that message fails, the session goes on. */
class MessageNotSent extends Data.TaggedError("MessageNotSent")<{
  readonly side: "client" | "upstream"
  readonly message: string
}> {}

/** Which side closed first. */
export type Ended = "client" | "upstream"

/** How the proxy ended: the side that closed first, and what happened. */
export interface Ending {
  readonly side: Ended
  readonly detail: string
  /** Forwarded calls still in flight at the end (each completed `UpstreamGone` or `Interrupted`). */
  readonly inFlight: number
}

/** `tools/call` arguments nested deeper than this are refused (`arguments-too-deep`) before the guard. */
export const MAX_ARGUMENT_DEPTH = 256

/** The most pages of `tools/list` the proxy asks for itself after one `list_changed`. */
const MAX_RELIST_PAGES = 100

/** How long completing one call in flight may take when the proxy ends. */
const END_HOOK_TIMEOUT = Duration.millis(250)

/** The default `callTimeout`. */
export const DEFAULT_CALL_TIMEOUT: Duration.Duration = Duration.seconds(60)

/** JSON-RPC error codes the proxy answers with. */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  InternalError: -32603,
  /** The upstream did not answer within the call timeout. */
  Timeout: -32001,
  /** The upstream went away (or the session ended) before answering. */
  UpstreamGone: -32002
} as const

type Id = string | number

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const idOf = (message: Record<string, unknown>): Id | undefined =>
  typeof message.id === "string" || typeof message.id === "number" ? message.id : undefined

/** Ids as map keys: `1` and `"1"` are different JSON-RPC ids. */
const keyOf = (id: Id): string => `${typeof id}:${id}`

/** Whether `value` nests deeper than `limit` (objects and arrays), found without recursion. */
export const deeperThan = (value: unknown, limit: number): boolean => findTooDeep(value, limit) !== undefined

/** A forwarded request waiting for the upstream's answer. */
type InFlight<T> =
  | {
    readonly _tag: "Call"
    readonly id: Id
    readonly ticket: T
    timer: Fiber.RuntimeFiber<unknown, unknown> | undefined
  }
  | { readonly _tag: "List"; readonly id: Id }
  /** The proxy's own `tools/list` after a `list_changed`: the notification is passed on once it is answered. */
  | { readonly _tag: "OwnList"; readonly id: Id; readonly notification: JSONRPCMessage; readonly page: number }
  | { readonly _tag: "Other"; readonly id: Id }
  /**
   * A `tools/call` whose decision is not made yet (the guard may wait on calls in flight, e.g. for a read
   * budget): if the session ends meanwhile it is still answered, once, with an error.
   */
  | { readonly _tag: "Deciding"; readonly id: Id }

/** What arrives from the client: a message, or a line its transport could not read as one. */
type FromClient =
  | { readonly _tag: "Message"; readonly message: JSONRPCMessage }
  | { readonly _tag: "Unreadable"; readonly error: Error }

const errorAnswer = (id: Id | null, code: number, message: string): JSONRPCMessage => ({
  jsonrpc: "2.0",
  id,
  error: { code, message }
})

/**
 * Runs the proxy between `client` (the transport to the MCP client: the proxy is its server) and
 * `upstream` (the transport to the real server: the proxy is its client) until either closes. Both
 * transports are started here; the client's is closed when it ends, the upstream's close is started
 * (not awaited: a server that ignores it must not hold up the session's end).
 */
export const run = <T>(options: {
  readonly client: Transport
  readonly upstream: Transport
  readonly hooks: Hooks<T>
  /** How long a forwarded `tools/call` may wait for its answer. Default 60 seconds. */
  readonly callTimeout?: Duration.DurationInput | undefined
  /** On the upstream's `notifications/tools/list_changed`, list its tools before passing it on. */
  readonly relistOnChange?: boolean | undefined
  /** The proxy's own requests to the client (`makeClientRequests`). */
  readonly clientRequests?: ReturnType<typeof makeClientRequests> | undefined
}): Effect.Effect<Ending, McpProxyError> =>
  Effect.gen(function*() {
    const { client, hooks, upstream } = options
    const callTimeout = Duration.decode(options.callTimeout ?? DEFAULT_CALL_TIMEOUT)
    const runtime = yield* Effect.runtime<never>()
    const fromClient = yield* Queue.unbounded<FromClient>()
    const fromUpstream = yield* Queue.unbounded<JSONRPCMessage>()
    const ended = yield* Deferred.make<{ side: Ended; detail: string }>()
    /** Client requests forwarded upstream and not yet answered, by id key. */
    const inFlight = new Map<string, InFlight<T>>()

    const send = (transport: Transport, side: "client" | "upstream", message: JSONRPCMessage) =>
      Effect.tryPromise({
        try: () => transport.send(message),
        // The SDK's stdio transports reject a send only when they cannot serialise the message (a value
        // nested too deep for JSON.stringify) or are not connected any more.
        catch: (error): McpProxyError | MessageNotSent =>
          error instanceof RangeError || error instanceof TypeError
            ? new MessageNotSent({ side, message: String(error) })
            : new McpProxyError({ side, stage: "run", message: `cannot send: ${String(error)}` })
      })

    /** Answers the client (when the message had an id) with an error; a message the client cannot take is dropped. */
    const answerError = (id: Id | null, code: number, message: string) =>
      Effect.catchTag(send(client, "client", errorAnswer(id, code, message)), "MessageNotSent", () => Effect.void)

    const paramsOf = (raw: Record<string, unknown>) => isRecord(raw.params) ? raw.params : {}

    /** Completes a forwarded call: removes it from `inFlight` first, so it is completed exactly once. */
    const settle = (entry: InFlight<T> & { _tag: "Call" }, answer: ToolAnswer) =>
      Effect.suspend(() => {
        if (inFlight.get(keyOf(entry.id)) !== entry) return Effect.succeed(false)
        inFlight.delete(keyOf(entry.id))
        const timer = entry.timer
        return Effect.zipRight(
          timer === undefined ? Effect.void : Fiber.interruptFork(timer),
          Effect.as(hooks.onToolResult(entry.ticket, answer), true)
        )
      })

    const timeOut = (entry: InFlight<T> & { _tag: "Call" }) =>
      Effect.gen(function*() {
        entry.timer = undefined
        if (!(yield* settle(entry, { _tag: "TimedOut" }))) return
        yield* Effect.logWarning(`agent-ledger mcp-proxy: no answer within ${Duration.format(callTimeout)}`).pipe(
          Effect.annotateLogs({ requestId: entry.id })
        )
        yield* answerError(
          entry.id,
          ErrorCode.Timeout,
          `the upstream server did not answer within ${Duration.format(callTimeout)}`
        )
      })

    const refuseCall = (id: Id | undefined, raw: Record<string, unknown>, ruleId: string, reason: string) =>
      Effect.gen(function*() {
        const result = yield* hooks.onRefusal(paramsOf(raw), ruleId, reason)
        if (id !== undefined) yield* send(client, "client", { jsonrpc: "2.0", id, result })
      })

    const forwardCall = (id: Id, raw: Record<string, unknown>, message: JSONRPCMessage) =>
      Effect.gen(function*() {
        const params = paramsOf(raw)
        if (deeperThan(params.arguments, MAX_ARGUMENT_DEPTH)) {
          return yield* refuseCall(
            id,
            raw,
            "arguments-too-deep",
            `the arguments are nested deeper than ${MAX_ARGUMENT_DEPTH} levels`
          )
        }
        const deciding: InFlight<T> = { _tag: "Deciding", id }
        inFlight.set(keyOf(id), deciding)
        // Interrupted (the session ends while the decision waits), the entry stays for the end to answer.
        const route = yield* hooks.onToolCall(params).pipe(
          Effect.locally(CurrentClientRequest, id),
          Effect.onError((cause) =>
            Cause.isInterruptedOnly(cause) ? Effect.void : Effect.sync(() => inFlight.delete(keyOf(id)))
          )
        )
        if (route._tag === "Answer") {
          inFlight.delete(keyOf(id))
          return yield* send(client, "client", { jsonrpc: "2.0", id, result: route.result })
        }
        const entry: InFlight<T> & { _tag: "Call" } = { _tag: "Call", id, ticket: route.ticket, timer: undefined }
        inFlight.set(keyOf(id), entry)
        // A broken client transport is the client pump's to report; the timer only stops.
        entry.timer = yield* Effect.forkDaemon(
          Effect.zipRight(Effect.sleep(callTimeout), Effect.ignore(timeOut(entry)))
        )
        const sent = yield* Effect.either(send(upstream, "upstream", message))
        if (sent._tag === "Left") {
          if (sent.left._tag === "McpProxyError") return yield* sent.left
          if (yield* settle(entry, { _tag: "NotForwarded", reason: sent.left.message })) {
            yield* answerError(id, ErrorCode.InternalError, `the call could not be forwarded: ${sent.left.message}`)
          }
        }
      })

    const fromClientStep = (message: JSONRPCMessage): Effect.Effect<void, McpProxyError | MessageNotSent> =>
      Effect.gen(function*() {
        const raw: Record<string, unknown> = message
        const id = idOf(raw)
        const method = typeof raw.method === "string" ? raw.method : undefined
        if (method === undefined) return yield* send(upstream, "upstream", message) // a response to the server
        if (id === undefined) {
          if (method !== "tools/call") return yield* send(upstream, "upstream", message)
          yield* Effect.logWarning("agent-ledger mcp-proxy: a tools/call without an id (a notification) not forwarded")
          return yield* refuseCall(undefined, raw, "tool-call-without-id", "a tools/call must be a request with an id")
        }
        if (inFlight.has(keyOf(id))) {
          const reason = `request id ${JSON.stringify(id)} is already in flight`
          yield* Effect.logWarning(`agent-ledger mcp-proxy: ${reason}`).pipe(Effect.annotateLogs({ requestId: id }))
          if (method === "tools/call") yield* hooks.onRefusal(paramsOf(raw), "duplicate-request-id", reason)
          return yield* answerError(id, ErrorCode.InvalidRequest, reason)
        }
        if (method === "tools/call") return yield* forwardCall(id, raw, message)
        if (method === "initialize") yield* hooks.onInitialize(raw.params)
        inFlight.set(keyOf(id), { _tag: method === "tools/list" ? "List" : "Other", id })
        yield* send(upstream, "upstream", message).pipe(
          Effect.tapError(() => Effect.sync(() => inFlight.delete(keyOf(id))))
        )
      })

    let ownRequests = 0
    /** Asks the upstream for (a page of) its tools; the `list_changed` notification waits for the answer. */
    const relist = (notification: JSONRPCMessage, page: number, cursor: unknown) =>
      Effect.gen(function*() {
        let id = `agent-ledger:tools/list:${++ownRequests}`
        while (inFlight.has(keyOf(id))) id = `agent-ledger:tools/list:${++ownRequests}`
        inFlight.set(keyOf(id), { _tag: "OwnList", id, notification, page })
        yield* send(upstream, "upstream", {
          jsonrpc: "2.0",
          id,
          method: "tools/list",
          ...(typeof cursor === "string" ? { params: { cursor } } : {})
        }).pipe(Effect.tapError(() => Effect.sync(() => inFlight.delete(keyOf(id)))))
      })

    const fromUpstreamStep = (message: JSONRPCMessage): Effect.Effect<void, McpProxyError | MessageNotSent> =>
      Effect.gen(function*() {
        const raw: Record<string, unknown> = message
        const id = idOf(raw)
        if (
          options.relistOnChange === true && raw.method === "notifications/tools/list_changed" && id === undefined
        ) {
          return yield* relist(message, 0, undefined)
        }
        if (typeof raw.method === "string" || !("result" in raw || "error" in raw)) {
          return yield* send(client, "client", message) // a request or notification for the client
        }
        const entry = id === undefined ? undefined : inFlight.get(keyOf(id))
        if (entry === undefined || entry._tag === "Deciding") {
          // A second answer, an answer after the timeout, or one to an id the client never sent.
          return yield* Effect.logWarning("agent-ledger mcp-proxy: dropped an upstream answer to no request in flight")
            .pipe(Effect.annotateLogs({ requestId: id ?? null }))
        }
        if (entry._tag === "Call") {
          const answer: ToolAnswer = isRecord(raw.result)
            ? { _tag: "Result", result: raw.result }
            : { _tag: "Error", error: raw.error }
          yield* settle(entry, answer)
          return yield* send(client, "client", message).pipe(
            Effect.catchTag("MessageNotSent", (error) =>
              answerError(
                entry.id,
                ErrorCode.InternalError,
                `the upstream's answer could not be relayed: ${error.message}`
              ))
          )
        }
        inFlight.delete(keyOf(entry.id))
        if (entry._tag === "OwnList") {
          if (isRecord(raw.result)) {
            yield* hooks.onToolsList(raw.result)
            const next = raw.result.nextCursor
            if (typeof next === "string" && entry.page + 1 < MAX_RELIST_PAGES) {
              return yield* relist(entry.notification, entry.page + 1, next)
            }
          }
          return yield* send(client, "client", entry.notification)
        }
        if (entry._tag === "List" && isRecord(raw.result)) {
          return yield* send(client, "client", { ...message, result: yield* hooks.onToolsList(raw.result) })
        }
        yield* send(client, "client", message)
      })

    /**
     * One message, isolated: a failure other than a broken transport (a bug, a message that cannot be
     * serialised) is logged with the request id and, for a client request, answered with an error.
     */
    const isolated = (
      direction: "client" | "upstream",
      message: JSONRPCMessage,
      step: (message: JSONRPCMessage) => Effect.Effect<void, McpProxyError | MessageNotSent>
    ): Effect.Effect<void, McpProxyError> =>
      step(message).pipe(
        Effect.catchAllCause((cause) => {
          const failure = Cause.failureOption(cause)
          if (failure._tag === "Some" && failure.value._tag === "McpProxyError") return Effect.fail(failure.value)
          if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
          const raw: Record<string, unknown> = message
          const id = idOf(raw)
          const isRequest = direction === "client" && id !== undefined && typeof raw.method === "string"
          return Effect.zipRight(
            Effect.logError(
              `agent-ledger mcp-proxy: a message from the ${direction} could not be handled: ` +
                Cause.pretty(cause).split("\n")[0]
            ).pipe(Effect.annotateLogs({ requestId: id ?? null, method: String(raw.method ?? "") })),
            isRequest
              ? answerError(id, ErrorCode.InternalError, "the proxy could not handle this request")
              : Effect.void
          )
        })
      )

    const clientPump = Effect.forever(Effect.flatMap(Queue.take(fromClient), (item) =>
      item._tag === "Message"
        ? isolated("client", item.message, fromClientStep)
        : Effect.zipRight(
          Effect.logWarning(`agent-ledger mcp-proxy: an unreadable message from the client: ${item.error.message}`),
          answerError(
            null,
            item.error instanceof SyntaxError ? ErrorCode.ParseError : ErrorCode.InvalidRequest,
            item.error instanceof SyntaxError
              ? "Parse error"
              : "Invalid Request (not a JSON-RPC message; batches are not supported)"
          )
        )))
    const upstreamPump = Effect.forever(
      Effect.flatMap(Queue.take(fromUpstream), (message) => isolated("upstream", message, fromUpstreamStep))
    )

    const endWith = (side: Ended, detail: string) => () =>
      Runtime.runFork(runtime)(Deferred.succeed(ended, { side, detail }))
    const requests = options.clientRequests
    client.onmessage = (message) => {
      if (requests?.intercept(message) === true) return
      Queue.unsafeOffer(fromClient, { _tag: "Message", message })
    }
    upstream.onmessage = (message) => Queue.unsafeOffer(fromUpstream, message)
    client.onclose = endWith("client", "the client closed the connection")
    upstream.onclose = endWith("upstream", "the upstream server exited")
    client.onerror = (error) => {
      if (error instanceof SyntaxError || error.name === "ZodError") {
        Queue.unsafeOffer(fromClient, { _tag: "Unreadable", error })
      }
    }
    // A malformed line from the upstream is skipped; one over the transport's size limit ends the session
    // (the transport closes itself; its close would first wait for the server to exit).
    upstream.onerror = (error) => {
      if (/exceeded maximum size/i.test(error.message)) {
        endWith("upstream", `the upstream server sent a message over the transport's limit (${error.message})`)()
      }
    }

    const start = (transport: Transport, side: "client" | "upstream") =>
      Effect.tryPromise({
        try: () => transport.start(),
        catch: (error) => new McpProxyError({ side, stage: "start", message: `cannot start: ${String(error)}` })
      })

    /** Completes every call still in flight with `answer`; while the client is there it gets an error for each. */
    const endInFlight = (answer: ToolAnswer, clientThere: boolean) =>
      Effect.gen(function*() {
        const entries = [...inFlight.values()]
        let calls = 0
        for (const entry of entries) {
          if (entry._tag === "Call") {
            calls++
            // Bounded and interruptible (this runs in a finalizer): a hook that waits on a ledger that cannot
            // write (a fail-closed seal) must not hold up the end; `settle` takes the call off first.
            yield* Effect.interruptible(settle(entry, answer)).pipe(Effect.timeoutOption(END_HOOK_TIMEOUT))
          } else {
            inFlight.delete(keyOf(entry.id))
          }
          if (clientThere && entry._tag !== "OwnList") {
            yield* answerError(
              entry.id,
              ErrorCode.UpstreamGone,
              entry._tag === "Deciding"
                ? "the session ended before the call was decided"
                : answer._tag === "UpstreamGone"
                ? "the upstream server went away before answering"
                : "the session ended"
            ).pipe(Effect.ignore)
          }
        }
        return calls
      })

    let ending: { side: Ended; detail: string } | undefined
    let inFlightAtEnd = 0
    const pumps: Array<Fiber.RuntimeFiber<void, McpProxyError>> = []
    return yield* Effect.gen(function*() {
      yield* start(upstream, "upstream")
      yield* start(client, "client")
      requests?.attach((message, options) => client.send(message, options))
      pumps.push(yield* Effect.fork(clientPump), yield* Effect.fork(upstreamPump))
      // A pump stops only on a broken transport: the session ends on that side.
      for (const pump of pumps) {
        yield* Effect.fork(
          Effect.catchAll(
            Fiber.join(pump),
            (error) => Deferred.succeed(ended, { side: error.side, detail: error.message })
          )
        )
      }
      ending = yield* Deferred.await(ended)
    }).pipe(
      Effect.ensuring(Effect.gen(function*() {
        requests?.detach()
        yield* Fiber.interruptAll(pumps)
        const side = ending?.side
        const clientThere = side !== "client"
        if (clientThere) {
          // What the upstream sent before it closed still reaches the client.
          yield* Effect.forEach(
            yield* Queue.takeAll(fromUpstream),
            (message) => isolated("upstream", message, fromUpstreamStep),
            { discard: true }
          ).pipe(Effect.ignore)
        }
        inFlightAtEnd = yield* endInFlight(
          side === "upstream" ? { _tag: "UpstreamGone" } : { _tag: "Interrupted" },
          clientThere
        )
        yield* Effect.promise(() => client.close().catch(() => undefined))
        yield* Effect.sync(() => void upstream.close().catch(() => undefined))
      })),
      Effect.map(() => ({ side: ending!.side, detail: ending!.detail, inFlight: inFlightAtEnd }))
    )
  })
