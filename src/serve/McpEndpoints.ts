/**
 * MCP over Streamable HTTP through `serve`: each configured upstream (a stdio command, or a remote
 * Streamable HTTP server: `McpUpstreams`) is an MCP endpoint at `/mcp/NAME`, and with `aggregate` all of
 * them are one more at `/mcp` (`McpAggregate`: tools named `NAME__tool`). A client's `initialize` POST (no
 * `Mcp-Session-Id`) opens a session: a new server-side Streamable HTTP transport (the SDK's, injected: only
 * `cli/McpSdk.ts` loads the SDK), a new upstream process or remote client session (one per upstream for
 * the aggregate), and `McpProxy.run` between the two, with every `tools/call` decided by the shared
 * `McpGuard` (journal, ledger rows) under the upstream's name as server id, exactly as `mcp-proxy` does,
 * tool pins included when `ToolPins` is in context (a tool whose definition changed since it was pinned,
 * in this process or an earlier one, is hidden and refused under `tool-changed`). The transport's
 * `Mcp-Session-Id` is the guard's session id; the agent is the bearer token's, never the client's
 * `clientInfo`.
 *
 * A session belongs to the token's agent that opened it: another agent's request with its id is refused
 * (403), and so is an `initialize` past `maxSessionsPerAgent` open sessions (each is a process); an unknown
 * id is 404 (the client must initialize again, as the MCP spec says). A DELETE, the upstream exiting,
 * `idleTimeoutMillis` without a request, or closing the layer (shutdown) ends the session: calls in flight
 * are completed and the session's journal is sealed into the ledger.
 *
 * Messages to the client travel over SSE: each POST with a request is answered on its own event stream,
 * which carries what belongs to that request before its answer (an `ask` rule's `elicitation/create` about a
 * `tools/call`, asked of a client that declared the capability: `McpElicitation`), and a GET opens the
 * session's standalone stream, which carries the rest (the upstream's `notifications/tools/list_changed`,
 * its own requests). A session is busy while a POST's stream is open, not for its GET stream.
 * `closeStreams`, the first step of `serve`'s shutdown, closes every standalone stream, refuses new ones
 * (503) and withdraws open questions, so the HTTP server's graceful close only waits for the requests in
 * flight.
 */
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import {
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  Layer,
  Option,
  Runtime,
  Schema
} from "effect"
import * as Approvals from "../guard/Approvals.js"
import * as McpGuard from "../guard/McpGuard.js"
import * as McpGuardHooks from "../guard/McpGuardHooks.js"
import * as McpProxy from "../guard/McpProxy.js"
import * as ToolPins from "../guard/ToolPins.js"
import { uuidV7 } from "../internal/uuid.js"
import * as McpAggregate from "./McpAggregate.js"
import { McpElicitation } from "./McpElicitation.js"
import * as McpUpstreams from "./McpUpstreams.js"
import * as SessionToolPins from "./SessionToolPins.js"

/** The route prefix: upstream `NAME` is served at `/mcp/NAME`. */
export const MCP_PATH = "/mcp"

/** How long an ended session's seal may wait to be made durable. */
const SEAL_TIMEOUT = Duration.millis(500)

/** One upstream MCP server: a stdio command started for each session, or a remote Streamable HTTP URL. */
export const Upstream = McpUpstreams.Upstream
export type Upstream = McpUpstreams.Upstream

/** The aggregated endpoint's route (`"aggregate": true`): every upstream's tools as `NAME__tool`. */
export const AGGREGATE_PATH = MCP_PATH

/** The name `handle` takes for the aggregated endpoint (no upstream can have it). */
export const AGGREGATE = ""

/** The server id of refusals the proxy makes itself of calls to a tool of no upstream (aggregated endpoint). */
export const AGGREGATE_SERVER_ID = "agent-ledger-aggregate"

/** The MCP part of `serve --config FILE`: upstreams by endpoint name, and whether to aggregate them. */
export const Config = Schema.Struct({
  mcp: Schema.optionalWith(
    Schema.Record({ key: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_.-]{1,64}$/)), value: Upstream }),
    { default: () => ({}) }
  ),
  /** Also serve every upstream at `/mcp` as one server (see `McpAggregate`). */
  aggregate: Schema.optionalWith(Schema.Boolean, { default: () => false })
}).pipe(Schema.filter((config) => {
  if (!config.aggregate) return undefined
  const bad = Object.keys(config.mcp).find((name) => name.includes(McpAggregate.SEPARATOR))
  return bad === undefined
    ? undefined
    : `with "aggregate", an upstream's name may not contain "${McpAggregate.SEPARATOR}" (${bad}): tool names are NAME${McpAggregate.SEPARATOR}TOOL`
}))
export type Config = typeof Config.Type

/** A server-side Streamable HTTP transport (the SDK's `WebStandardStreamableHTTPServerTransport`). */
export interface HttpTransport extends McpProxy.Transport {
  handleRequest(request: Request, options?: { parsedBody?: unknown }): Promise<Response>
  /** Ends the GET stream, if one is open (the client may open another). */
  closeStandaloneSSEStream(): void
  readonly sessionId?: string | undefined
}

/** What `serve` needs of the MCP SDK, given by the CLI layer. */
export interface Sdk {
  /** A new server transport whose session id is `sessionId`, answering POSTs with SSE streams. */
  readonly serverTransport: (sessionId: string) => HttpTransport
  /**
   * A new transport to the upstream, not started: the SDK's `StdioClientTransport` on `upstream.command`,
   * or its `StreamableHTTPClientTransport` to `upstream.url` (through `McpRemote.transport`).
   */
  readonly upstreamTransport: (name: string, upstream: Upstream) => McpProxy.Transport
}

export interface Options {
  readonly upstreams: Readonly<Record<string, Upstream>>
  readonly sdk: Sdk
  /** Also serve every upstream as one server at `/mcp` (`McpAggregate`); upstream names must not contain `__`. */
  readonly aggregate?: boolean | undefined
  /**
   * The policy is in shadow mode: nothing is refused, so neither is a tool a session was shown changed
   * (`SessionToolPins`); the server-wide pins still record it.
   */
  readonly shadow?: boolean | undefined
  /**
   * MCP sessions one agent may have open at once (each has its own upstream process); default 8. Past it,
   * an `initialize` is refused (403) until one of them ends.
   */
  readonly maxSessionsPerAgent?: number | undefined
  /**
   * A session with no request for this long (none in flight) is ended and sealed, as on a `DELETE`: a
   * client that went away without one does not keep its upstream process. Default 30 minutes.
   */
  readonly idleTimeoutMillis?: number | undefined
  /** How long a forwarded `tools/call` may wait for the upstream; default 60 seconds. */
  readonly callTimeoutMillis?: number | undefined
}

/** An answer: the status and JSON body, or the SDK transport's own response. */
export type Answer =
  | {
    readonly _tag: "Json"
    readonly status: number
    readonly body: unknown
    readonly headers?: Record<string, string> | undefined
  }
  /**
   * The SDK transport's own response; `body`, when present, is its whole body, already read (a JSON answer),
   * sent in one write with a `content-length` instead of streamed.
   */
  | { readonly _tag: "Web"; readonly response: Response; readonly body?: Uint8Array | undefined }

interface Session {
  readonly agentId: string
  readonly name: string
  readonly transport: HttpTransport
  /** Requests being handled (a POST until its stream ends), and when the last one ended (Clock millis). */
  busy: number
  lastSeen: number
  /** Whether the client declared `elicitation` in its `initialize`. */
  canElicit: boolean
  /** The open standalone (GET) streams, by what writes into them. */
  readonly standalone: Set<(text: string) => void>
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const isInitialize = (body: unknown) =>
  (isRecord(body) && body.method === "initialize") ||
  (Array.isArray(body) && body.some((m) => isRecord(m) && m.method === "initialize"))

const json = (status: number, body: unknown): Answer => ({ _tag: "Json", status, body })

export class McpEndpoints extends Context.Tag("agent-ledger/McpEndpoints")<McpEndpoints, {
  /**
   * One HTTP request to `/mcp/NAME` from `agentId` (already authenticated), with its body (for a POST,
   * read within the server's size limit).
   */
  readonly handle: (
    agentId: string,
    name: string,
    request: HttpServerRequest.HttpServerRequest,
    body: string | undefined
  ) => Effect.Effect<Answer>
  readonly openSessions: Effect.Effect<number>
  /**
   * The first step of shutdown: closes every session's GET stream, refuses new ones (503) and withdraws
   * open elicitation questions, so that the HTTP server's graceful close does not wait on a stream.
   */
  readonly closeStreams: Effect.Effect<void>
}>() {}

/** How long a client should wait before it reconnects a standalone stream that shutdown closed. */
const SHUTDOWN_RETRY_MILLIS = 60_000

/**
 * `response` with `headers` set and a body that starts with `preamble` and calls `end` once when it is read
 * to its end, fails or is cancelled (the client went away): a POST's SSE stream is a request in flight for
 * as long as it is open. `say` puts text into the body ahead of what the transport writes next.
 */
const wrapBody = (
  response: Response,
  options: { readonly end: () => void; readonly headers?: Record<string, string>; readonly preamble?: string }
): { readonly response: Response; readonly say: (text: string) => void } => {
  const { end } = options
  if (response.body === null) {
    end()
    return { response, say: () => undefined }
  }
  const encoder = new TextEncoder()
  const reader = response.body.getReader()
  let controllerOf: ReadableStreamDefaultController<Uint8Array> | undefined
  const body = new ReadableStream<Uint8Array>({
    start: (controller) => {
      controllerOf = controller
      if (options.preamble !== undefined) controller.enqueue(encoder.encode(options.preamble))
    },
    pull: async (controller) => {
      try {
        const chunk = await reader.read()
        if (chunk.done) {
          end()
          controller.close()
        } else {
          controller.enqueue(chunk.value)
        }
      } catch (error) {
        end()
        controller.error(error)
      }
    },
    cancel: (reason) => {
      end()
      return reader.cancel(reason)
    }
  })
  const headers = new Headers(response.headers)
  for (const [key, value] of Object.entries(options.headers ?? {})) headers.set(key, value)
  const say = (text: string) => {
    try {
      controllerOf?.enqueue(encoder.encode(text))
    } catch {
      // The stream has ended.
    }
  }
  return {
    response: new Response(body, { status: response.status, statusText: response.statusText, headers }),
    say
  }
}

export const make = (options: Options) =>
  Effect.gen(function*() {
    const guard = yield* McpGuard.McpGuard
    // Tool pins (when the policy keeps them): every upstream's lists are pinned under its server id, and
    // each session is held to the definitions it was shown (`SessionToolPins`).
    const pins = Option.getOrUndefined(yield* Effect.serviceOption(ToolPins.ToolPins))
    const elicitation = yield* McpElicitation
    const runtime = yield* Effect.runtime<never>()
    let stopping = false
    const fibers = yield* FiberSet.make<unknown, unknown>()
    const sessions = new Map<string, Session>()
    const maxSessions = options.maxSessionsPerAgent ?? 8
    const idle = options.idleTimeoutMillis ?? 30 * 60 * 1000

    const hooksFor = (session: Session, sessionId: string, serverId: string): McpProxy.Hooks<McpGuard.Ticket> => {
      const { agentId } = session
      const callOf = McpGuardHooks.toolCallOf({ sessionId, agentId, serverId })
      const onInitialize = (params: unknown) =>
        Effect.sync(() => void (session.canElicit = Approvals.declaresElicitation(params)))
      if (pins !== undefined && options.shadow !== true) {
        return SessionToolPins.hooks({ guard, pins, serverId, agentId, callOf, onInitialize })
      }
      return McpGuardHooks.make({
        guard,
        serverId,
        callOf,
        observeTools: pins === undefined ? undefined : (tools) => pins.observe(serverId, agentId, tools),
        onInitialize
      })
    }

    /** The proxy of one session: to upstream `name`, or to every upstream (the aggregated endpoint). */
    const proxyFor = (
      name: string,
      session: Session,
      sessionId: string,
      client: McpProxy.Transport,
      clientRequests: McpProxy.ClientRequestsHandle
    ) => {
      const common = {
        client,
        clientRequests,
        callTimeout: options.callTimeoutMillis ?? McpProxy.DEFAULT_CALL_TIMEOUT,
        relistOnChange: pins !== undefined
      }
      if (name !== AGGREGATE) {
        return McpProxy.run({
          ...common,
          upstream: options.sdk.upstreamTransport(name, options.upstreams[name]!),
          hooks: hooksFor(session, sessionId, name)
        })
      }
      const names = Object.keys(options.upstreams)
      return McpProxy.run({
        ...common,
        upstream: McpAggregate.transport(
          new Map(names.map((n) => [n, options.sdk.upstreamTransport(n, options.upstreams[n]!)])),
          { name: "agent-ledger", version: "aggregate" }
        ),
        hooks: McpAggregate.hooks(
          new Map(names.map((n) => [n, hooksFor(session, sessionId, n)])),
          hooksFor(session, sessionId, AGGREGATE_SERVER_ID)
        )
      })
    }

    /** Starts a session's proxy; succeeds once the proxy listens to the client transport. */
    const open = (agentId: string, name: string) =>
      Effect.gen(function*() {
        const sessionId = uuidV7(yield* Clock.currentTimeMillis)
        const transport = options.sdk.serverTransport(sessionId)
        const started = yield* Deferred.make<void>()
        // McpProxy sets its callbacks on `client`; the SDK transport calls them through these.
        const client: McpProxy.Transport = {
          start: async () => {
            await transport.start()
            Runtime.runFork(runtime)(Deferred.succeed(started, undefined))
          },
          send: (message, options) => transport.send(message, options),
          close: () => transport.close()
        }
        transport.onmessage = (message) => client.onmessage?.(message)
        transport.onclose = () => client.onclose?.()
        transport.onerror = (error) => client.onerror?.(error)
        const session: Session = {
          agentId,
          name,
          transport,
          busy: 0,
          lastSeen: yield* Clock.currentTimeMillis,
          canElicit: false,
          standalone: new Set()
        }
        const clientRequests = McpProxy.makeClientRequests()
        /** The guard's questions about this session's calls go to its client while the proxy runs. */
        const asked = elicitation.register(sessionId, {
          requests: clientRequests,
          canElicit: () => session.canElicit,
          name: agentId
        })
        /** Ends the session (its transport closes, so the proxy ends) once it has been idle `idle` millis. */
        const watchIdle = Effect.gen(function*() {
          while (true) {
            const now = yield* Clock.currentTimeMillis
            const left = session.lastSeen + idle - now
            if (session.busy === 0 && left <= 0) {
              yield* Effect.logInfo("agent-ledger serve: an idle MCP session is ended")
              yield* Effect.promise(() => transport.close().catch(() => undefined))
              return yield* Effect.never
            }
            yield* Effect.sleep(Duration.millis(Math.max(left, idle / 10, 10)))
          }
        })
        const proxy = Effect.acquireUseRelease(
          asked,
          () => proxyFor(name, session, sessionId, client, clientRequests),
          (unregister) => unregister
        ).pipe(
          Effect.raceFirst(watchIdle),
          Effect.tap((ending) =>
            Effect.logInfo(`agent-ledger serve: MCP session ended (${ending.side}: ${ending.detail})`)
          ),
          Effect.ensuring(Effect.suspend(() => {
            sessions.delete(sessionId)
            // Bounded and interruptible (a finalizer): a ledger that cannot write must not hold up the end.
            return Effect.interruptible(guard.endSession(sessionId)).pipe(
              Effect.timeout(SEAL_TIMEOUT),
              Effect.catchAll(() =>
                Effect.logError("agent-ledger serve: an MCP session's seal was not durable in time; it stays queued")
              )
            )
          })),
          Effect.annotateLogs({ sessionId, agentId, upstream: name === AGGREGATE ? "(aggregate)" : name })
        )
        // Counted and taken with no yield in between: concurrent `initialize`s cannot both take the last place.
        let open = 0
        for (const other of sessions.values()) if (other.agentId === agentId) open++
        if (open >= maxSessions) {
          return yield* Effect.fail(
            json(403, { error: `agent ${agentId} has ${open} MCP sessions open (at most ${maxSessions})` })
          )
        }
        sessions.set(sessionId, session)
        const fiber = yield* FiberSet.run(fibers, proxy)
        const first = yield* Effect.raceFirst(
          Effect.as(Deferred.await(started), Option.none()),
          Effect.map(Fiber.await(fiber), Option.some)
        )
        if (Option.isSome(first)) {
          sessions.delete(sessionId)
          const reason = Exit.isFailure(first.value) ? "the upstream server could not be started" : "it ended"
          const which = name === AGGREGATE ? "an MCP upstream of the aggregated endpoint" : `MCP upstream '${name}'`
          return yield* Effect.fail(json(502, { error: `${which}: ${reason}` }))
        }
        return session
      })

    const toWeb = (request: HttpServerRequest.HttpServerRequest, body: string | undefined) => {
      const headers = new Headers()
      for (const [key, value] of Object.entries(request.headers)) headers.set(key, value)
      return new Request(new URL(request.url, "http://localhost"), {
        method: request.method,
        headers,
        ...(body === undefined ? {} : { body })
      })
    }

    /** The session stops being busy with one request (its response, or its stream, ended). */
    const seen = (session: Session) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          session.busy--
          session.lastSeen = now
        }))

    /** Hands the request to the session's transport; the session is busy until a POST's answer stream ends. */
    const forward = (
      session: Session,
      request: HttpServerRequest.HttpServerRequest,
      body: string | undefined,
      parsed: unknown
    ) =>
      Effect.suspend(() => {
        session.busy++
        let ended = false
        const end = () => {
          if (ended) return
          ended = true
          Runtime.runFork(runtime)(seen(session))
        }
        return Effect.promise(() =>
          session.transport.handleRequest(
            toWeb(request, body),
            parsed === undefined ? undefined : { parsedBody: parsed }
          )
        ).pipe(
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Effect.sync(end)),
          Effect.flatMap((response): Effect.Effect<Answer> => {
            if (request.method !== "GET") {
              // A JSON answer (an error, a batch of notifications) is read whole and sent in one write with its
              // length; an SSE answer streams.
              const type = response.headers.get("content-type") ?? ""
              if (response.body !== null && type.startsWith("application/json")) {
                return Effect.promise(() => response.arrayBuffer()).pipe(
                  Effect.map((bytes): Answer => ({ _tag: "Web", response, body: new Uint8Array(bytes) })),
                  Effect.ensuring(Effect.sync(end))
                )
              }
              return Effect.succeed({ _tag: "Web", response: wrapBody(response, { end }).response })
            }
            // The standalone stream is not a request in flight: a client that holds one and sends nothing for
            // `idle` is ended like any other (its stream closes with the transport).
            end()
            if (response.status !== 200) return Effect.succeed({ _tag: "Web", response })
            const stream = wrapBody(response, {
              end: () => void session.standalone.delete(stream.say),
              // Not kept alive, so that no idle connection outlives a stream that shutdown closed.
              headers: { connection: "close" },
              // The HTTP server sends the headers with the first bytes: without them, the client's request for
              // the stream would not complete until the first message.
              preamble: ": stream open\n\n"
            })
            session.standalone.add(stream.say)
            return Effect.succeed({ _tag: "Web", response: stream.response })
          })
        )
      })

    const handle = (
      agentId: string,
      name: string,
      request: HttpServerRequest.HttpServerRequest,
      body: string | undefined
    ): Effect.Effect<Answer> =>
      Effect.gen(function*() {
        const known = name === AGGREGATE
          ? options.aggregate === true && Object.keys(options.upstreams).length > 0
          : Object.hasOwn(options.upstreams, name)
        if (!known) {
          return json(404, {
            error: name === AGGREGATE
              ? "no aggregated MCP endpoint (\"aggregate\": true)"
              : `no MCP upstream named '${name}'`
          })
        }
        let parsed: unknown = undefined
        if (body !== undefined && body.length > 0) {
          try {
            parsed = JSON.parse(body)
          } catch {
            return json(400, { jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } })
          }
        }
        // Shutting down: no new standalone stream (it would hold the HTTP server's graceful close open).
        if (request.method === "GET" && stopping) {
          return {
            _tag: "Json",
            status: 503,
            body: { error: "serve is shutting down" },
            headers: { "retry-after": "1" }
          }
        }
        const sessionId = request.headers["mcp-session-id"]
        if (sessionId !== undefined) {
          const session = sessions.get(sessionId)
          if (session === undefined || session.name !== name) {
            return json(404, { jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } })
          }
          if (session.agentId !== agentId) return json(403, { error: "this MCP session belongs to another agent" })
          return yield* forward(session, request, body, parsed)
        }
        if (request.method !== "POST" || !isInitialize(parsed)) {
          return json(400, {
            jsonrpc: "2.0",
            id: null,
            error: { code: -32000, message: "Bad Request: no Mcp-Session-Id, and not an initialize request" }
          })
        }
        const session = yield* Effect.either(open(agentId, name))
        if (session._tag === "Left") return session.left
        return yield* forward(session.right, request, body, parsed)
      })

    yield* Effect.addFinalizer(() =>
      Effect.logDebug(`agent-ledger serve: ending ${sessions.size} MCP session(s)`).pipe(
        Effect.zipRight(FiberSet.clear(fibers))
      )
    )
    const closeStreams = Effect.zipRight(
      Effect.sync(() => {
        stopping = true
        for (const session of sessions.values()) {
          // A client reconnects a standalone stream that ends (the SDK's after a second): told to wait
          // (SSE `retry`), it does not come back on a connection the closing server no longer answers.
          for (const say of session.standalone) say(`retry: ${SHUTDOWN_RETRY_MILLIS}\n\n`)
          session.transport.closeStandaloneSSEStream()
        }
      }),
      elicitation.stop
    )
    return McpEndpoints.of({ handle, openSessions: Effect.sync(() => sessions.size), closeStreams })
  })

/**
 * The endpoints on the `McpGuard` in context, whose `approver` must be the `McpElicitation`'s (Serve.layer
 * wires both); closing the layer ends (and seals) every MCP session.
 */
export const layer = (options: Options): Layer.Layer<McpEndpoints, never, McpGuard.McpGuard | McpElicitation> =>
  Layer.scoped(McpEndpoints, make(options))

/** No upstreams: every `/mcp/NAME` is 404. */
export const none: Layer.Layer<McpEndpoints> = Layer.succeed(
  McpEndpoints,
  McpEndpoints.of({
    handle: (_agent, name) => Effect.succeed(json(404, { error: `no MCP upstream named '${name}'` })),
    openSessions: Effect.succeed(0),
    closeStreams: Effect.void
  })
)

/** Turns an answer into the HTTP response. */
export const toResponse = (answer: Answer): HttpServerResponse.HttpServerResponse =>
  answer._tag === "Json"
    ? HttpServerResponse.unsafeJson(answer.body, { status: answer.status, headers: answer.headers ?? {} })
    : answer.body !== undefined
    ? HttpServerResponse.uint8Array(answer.body, {
      status: answer.response.status,
      headers: answer.response.headers,
      contentType: answer.response.headers.get("content-type") ?? undefined
    })
    : HttpServerResponse.fromWeb(answer.response)

/** Reads a request body within `maxBytes`; `None` if it is larger or cannot be read. */
export const readBody = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  request.text.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)), Effect.option)
