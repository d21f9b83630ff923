/**
 * MCP over Streamable HTTP through `serve`: each configured upstream (a stdio command) is an MCP endpoint
 * at `/mcp/NAME`. A client's `initialize` POST (no `Mcp-Session-Id`) opens a session: a new server-side
 * Streamable HTTP transport (the SDK's, injected: only `cli/McpSdk.ts` loads the SDK), a new upstream
 * process, and `McpProxy.run` between the two, with every `tools/call` decided by the shared `McpGuard`
 * (journal, ledger rows) exactly as `mcp-proxy` does. The transport's `Mcp-Session-Id` is the guard's
 * session id; the agent is the bearer token's, never the client's `clientInfo`.
 *
 * A session belongs to the token's agent that opened it: another agent's request with its id is refused
 * (403), and so is an `initialize` past `maxSessionsPerAgent` open sessions (each is a process); an unknown
 * id is 404 (the client must initialize again, as the MCP spec says). A DELETE, the upstream exiting,
 * `idleTimeoutMillis` without a request, or closing the layer (shutdown) ends the session: calls in flight
 * are completed and the session's journal is sealed into the ledger.
 *
 * Answers come back on their POST as JSON; a GET (the standalone SSE stream) is 405, which the spec allows:
 * an open stream would hold up the HTTP server's graceful shutdown. So server-to-client requests and
 * notifications outside a request (`elicitation/create`, `list_changed`) do not reach HTTP clients.
 */
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Clock, Context, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Layer, Option, Schema } from "effect"
import * as McpGuard from "../guard/McpGuard.js"
import * as McpGuardHooks from "../guard/McpGuardHooks.js"
import * as McpProxy from "../guard/McpProxy.js"
import { uuidV7 } from "../internal/uuid.js"

/** The route prefix: upstream `NAME` is served at `/mcp/NAME`. */
export const MCP_PATH = "/mcp"

/** How long an ended session's seal may wait to be made durable. */
const SEAL_TIMEOUT = Duration.millis(500)

/** One upstream MCP server, started over stdio for each session. */
export const Upstream = Schema.Struct({
  command: Schema.String.pipe(Schema.minLength(1)),
  args: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  /** Added to `serve`'s own environment. */
  env: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) })
})
export type Upstream = typeof Upstream.Type

/** The `mcp` part of `serve --config FILE`: upstreams by endpoint name. */
export const Config = Schema.Struct({
  mcp: Schema.optionalWith(
    Schema.Record({ key: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_.-]{1,64}$/)), value: Upstream }),
    { default: () => ({}) }
  )
})
export type Config = typeof Config.Type

/** A server-side Streamable HTTP transport (the SDK's `WebStandardStreamableHTTPServerTransport`). */
export interface HttpTransport extends McpProxy.Transport {
  handleRequest(request: Request, options?: { parsedBody?: unknown }): Promise<Response>
  readonly sessionId?: string | undefined
}

/** What `serve` needs of the MCP SDK, given by the CLI layer. */
export interface Sdk {
  /** A new server transport whose session id is `sessionId` (answers in JSON, not SSE, where it can). */
  readonly serverTransport: (sessionId: string) => HttpTransport
  /** A new transport to the upstream (e.g. the SDK's `StdioClientTransport` on `upstream.command`). */
  readonly upstreamTransport: (name: string, upstream: Upstream) => McpProxy.Transport
}

export interface Options {
  readonly upstreams: Readonly<Record<string, Upstream>>
  readonly sdk: Sdk
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
  /** Requests being handled, and when the last one ended (Clock millis): for the idle timeout. */
  busy: number
  lastSeen: number
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
}>() {}

export const make = (options: Options) =>
  Effect.gen(function*() {
    const guard = yield* McpGuard.McpGuard
    const fibers = yield* FiberSet.make<unknown, unknown>()
    const sessions = new Map<string, Session>()
    const maxSessions = options.maxSessionsPerAgent ?? 8
    const idle = options.idleTimeoutMillis ?? 30 * 60 * 1000

    const hooksFor = (sessionId: string, agentId: string, serverId: string): McpProxy.Hooks<McpGuard.Ticket> => {
      const callOf = (params: Record<string, unknown>): McpGuard.GuardCall => ({
        sessionId,
        agentId,
        serverId,
        toolName: typeof params.name === "string" ? params.name : "",
        arguments: params.arguments
      })
      return McpGuardHooks.make({ guard, serverId, callOf })
    }

    /** Starts a session's proxy; succeeds once the proxy listens to the client transport. */
    const open = (agentId: string, name: string, upstream: Upstream) =>
      Effect.gen(function*() {
        const sessionId = uuidV7(yield* Clock.currentTimeMillis)
        const transport = options.sdk.serverTransport(sessionId)
        const started = yield* Deferred.make<void>()
        // McpProxy sets its callbacks on `client`; the SDK transport calls them through these.
        const client: McpProxy.Transport = {
          start: async () => {
            await transport.start()
            Effect.runSync(Deferred.succeed(started, undefined))
          },
          send: (message) => transport.send(message),
          close: () => transport.close()
        }
        transport.onmessage = (message) => client.onmessage?.(message)
        transport.onclose = () => client.onclose?.()
        transport.onerror = (error) => client.onerror?.(error)
        const session: Session = { agentId, name, transport, busy: 0, lastSeen: yield* Clock.currentTimeMillis }
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
        const proxy = McpProxy.run({
          client,
          upstream: options.sdk.upstreamTransport(name, upstream),
          hooks: hooksFor(sessionId, agentId, name),
          callTimeout: options.callTimeoutMillis ?? McpProxy.DEFAULT_CALL_TIMEOUT
        }).pipe(
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
          Effect.annotateLogs({ sessionId, agentId, upstream: name })
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
          return yield* Effect.fail(json(502, { error: `MCP upstream '${name}': ${reason}` }))
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

    const forward = (
      session: Session,
      request: HttpServerRequest.HttpServerRequest,
      body: string | undefined,
      parsed: unknown
    ) =>
      Effect.map(
        Effect.acquireUseRelease(
          Effect.sync(() => void session.busy++),
          () =>
            Effect.promise(() =>
              session.transport.handleRequest(
                toWeb(request, body),
                parsed === undefined ? undefined : { parsedBody: parsed }
              ).then(buffered)
            ),
          () =>
            Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.sync(() => {
                session.busy--
                session.lastSeen = now
              }))
        ),
        (answer): Answer => answer
      )

    const handle = (
      agentId: string,
      name: string,
      request: HttpServerRequest.HttpServerRequest,
      body: string | undefined
    ): Effect.Effect<Answer> =>
      Effect.gen(function*() {
        const upstream = Object.hasOwn(options.upstreams, name) ? options.upstreams[name] : undefined
        if (upstream === undefined) return json(404, { error: `no MCP upstream named '${name}'` })
        let parsed: unknown = undefined
        if (body !== undefined && body.length > 0) {
          try {
            parsed = JSON.parse(body)
          } catch {
            return json(400, { jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } })
          }
        }
        // No standalone SSE stream (the spec lets a server answer GET with 405): one would hold the HTTP
        // server's graceful shutdown open. Answers come back on their POST, as JSON.
        if (request.method === "GET") {
          return {
            _tag: "Json",
            status: 405,
            body: { error: "no SSE stream: use POST" },
            headers: { allow: "POST, DELETE" }
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
        const session = yield* Effect.either(open(agentId, name, upstream))
        if (session._tag === "Left") return session.left
        return yield* forward(session.right, request, body, parsed)
      })

    yield* Effect.addFinalizer(() =>
      Effect.logDebug(`agent-ledger serve: ending ${sessions.size} MCP session(s)`).pipe(
        Effect.zipRight(FiberSet.clear(fibers))
      )
    )
    return McpEndpoints.of({ handle, openSessions: Effect.sync(() => sessions.size) })
  })

/** The endpoints on the `McpGuard` in context; closing the layer ends (and seals) every MCP session. */
export const layer = (options: Options): Layer.Layer<McpEndpoints, never, McpGuard.McpGuard> =>
  Layer.scoped(McpEndpoints, make(options))

/** No upstreams: every `/mcp/NAME` is 404. */
export const none: Layer.Layer<McpEndpoints> = Layer.succeed(
  McpEndpoints,
  McpEndpoints.of({
    handle: (_agent, name) => Effect.succeed(json(404, { error: `no MCP upstream named '${name}'` })),
    openSessions: Effect.succeed(0)
  })
)

/**
 * The transport's response with its body read when it is a JSON answer (not an SSE stream): the JSON mode's
 * answers are whole strings, and one buffered write (with `content-length`) spares each answer a stream
 * pumped chunk by chunk, a chunked encoding and its terminator written after the body (measured: a few
 * milliseconds per call on an idle machine, tens under load; docs/PERFORMANCE.md, "serve").
 */
const buffered = async (response: Response): Promise<Answer> => {
  const type = response.headers.get("content-type") ?? ""
  if (response.body === null || !type.startsWith("application/json")) return { _tag: "Web", response }
  return { _tag: "Web", response, body: new Uint8Array(await response.arrayBuffer()) }
}

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
