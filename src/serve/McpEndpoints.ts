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
import * as ToolPins from "../guard/ToolPins.js"
import { uuidV7 } from "../internal/uuid.js"
import * as McpAggregate from "./McpAggregate.js"
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
  readonly sessionId?: string | undefined
}

/** What `serve` needs of the MCP SDK, given by the CLI layer. */
export interface Sdk {
  /** A new server transport whose session id is `sessionId` (answers in JSON, not SSE, where it can). */
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
  | { readonly _tag: "Web"; readonly response: Response }

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
    // Tool pins (when the policy keeps them): every upstream's lists are pinned under its server id, and
    // each session is held to the definitions it was shown (`SessionToolPins`).
    const pins = Option.getOrUndefined(yield* Effect.serviceOption(ToolPins.ToolPins))
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
      if (pins !== undefined && options.shadow !== true) {
        return SessionToolPins.hooks({ guard, pins, serverId, agentId, callOf })
      }
      return McpGuardHooks.make({
        guard,
        serverId,
        callOf,
        observeTools: pins === undefined ? undefined : (tools) => pins.observe(serverId, agentId, tools)
      })
    }

    /** The proxy of one session: to upstream `name`, or to every upstream (the aggregated endpoint). */
    const proxyFor = (name: string, sessionId: string, agentId: string, client: McpProxy.Transport) => {
      const common = {
        client,
        callTimeout: options.callTimeoutMillis ?? McpProxy.DEFAULT_CALL_TIMEOUT,
        relistOnChange: pins !== undefined
      }
      if (name !== AGGREGATE) {
        return McpProxy.run({
          ...common,
          upstream: options.sdk.upstreamTransport(name, options.upstreams[name]!),
          hooks: hooksFor(sessionId, agentId, name)
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
          new Map(names.map((n) => [n, hooksFor(sessionId, agentId, n)])),
          hooksFor(sessionId, agentId, AGGREGATE_SERVER_ID)
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
        const proxy = proxyFor(name, sessionId, agentId, client).pipe(
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
              )
            ),
          () =>
            Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.sync(() => {
                session.busy--
                session.lastSeen = now
              }))
        ),
        (response): Answer => ({ _tag: "Web", response })
      )

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
        const session = yield* Effect.either(open(agentId, name))
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

/** Turns an answer into the HTTP response. */
export const toResponse = (answer: Answer): HttpServerResponse.HttpServerResponse =>
  answer._tag === "Json"
    ? HttpServerResponse.unsafeJson(answer.body, { status: answer.status, headers: answer.headers ?? {} })
    : HttpServerResponse.fromWeb(answer.response)

/** Reads a request body within `maxBytes`; `None` if it is larger or cannot be read. */
export const readBody = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  request.text.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)), Effect.option)
