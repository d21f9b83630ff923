/**
 * The HTTP face of `agent-ledger serve`, on @effect/platform's HTTP server:
 *
 * - `POST /v1/hooks/claude-code`: Claude Code's HTTP hook (every event on one URL), answered by
 *   `ClaudeCodeHooks`. A credential is required: a bearer token, or over HTTPS a verified client certificate
 *   pinned to an agent (`ClientCertificates`); the agent is the credential's (401/403 otherwise, counted).
 *   Each agent has a request rate (429 over it, counted) and a body size limit (413 over it, counted),
 *   checked in that order, before the body is read.
 * - `/mcp/NAME`: MCP over Streamable HTTP to a configured upstream (`McpEndpoints`), same checks; `/mcp`:
 *   every upstream as one server, when the config says `"aggregate": true`.
 * - `GET /openapi.json`: the OpenAPI 3.1 document of these routes (`ServeApi`).
 * - `GET /healthz`: 200 while the process serves. `GET /readyz`: 200 while the audit queue can make
 *   events durable, else 503. `GET /metrics`: every Effect metric of the process (the audit queue's and
 *   the server's) in the Prometheus text format.
 *
 * A 401/413/429 is an HTTP error, which Claude Code treats as a hook failure: configure the hook with
 * `"onFailure": "block"` so that such a failure (or `serve` being down) blocks the tool instead of letting
 * it run (README, "Guarding Claude Code").
 */
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Clock, Effect, Layer, Metric, MetricBoundaries, Option } from "effect"
import * as AuditQueue from "../audit/AuditQueue.js"
import * as BearerTokens from "./BearerTokens.js"
import { ClaudeCodeHooks } from "./ClaudeCodeHooks.js"
import * as ClientCertificates from "./ClientCertificates.js"
import * as McpEndpoints from "./McpEndpoints.js"
import * as PrometheusText from "./PrometheusText.js"
import { RateLimiter } from "./RateLimiter.js"
import * as ServeApi from "./ServeApi.js"

/** The path of Claude Code's hook endpoint. */
export const CLAUDE_CODE_HOOK_PATH = ServeApi.CLAUDE_CODE_HOOK_PATH

/** The default limit on a request body: a hook's `tool_response` can be a whole file or a page. */
export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

export interface Options {
  readonly tokens: BearerTokens.Tokens
  /**
   * Client certificates pinned to agents, for a server that asks for and verifies them (`https` with
   * `requestCert` and `rejectUnauthorized`); without it a client certificate is ignored.
   */
  readonly clientCertificates?: ClientCertificates.Pins | undefined
  /** Bytes a request body may have; default 8 MiB. */
  readonly maxBodyBytes?: number | undefined
}

const requests = Metric.counter("agent_ledger_serve_requests", {
  description: "HTTP requests answered, by route and status",
  incremental: true
})
const refusedRequests = Metric.counter("agent_ledger_serve_refused_requests", {
  description:
    "Requests refused before reaching a handler, by reason (unauthenticated, unmapped_certificate, conflicting_credentials, rate_limited, too_large)",
  incremental: true
})
const hookDuration = Metric.histogram(
  "agent_ledger_serve_hook_duration_ms",
  MetricBoundaries.fromIterable([0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000]),
  "Time to answer a Claude Code hook, in milliseconds"
)

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson(body, { status, headers })

/** The request counter of each route and status, tagged once (tagging per request built and hashed new keys). */
const counters = new Map<string, Metric.Metric.Counter<number>>()
const count = (route: string, status: number) => {
  const key = `${route} ${status}`
  let counter = counters.get(key)
  if (counter === undefined) {
    counter = Metric.tagged(Metric.tagged(requests, "route", route), "status", String(status))
    counters.set(key, counter)
  }
  return Metric.increment(counter)
}

const refused = (reason: string, route: string, status: number, body: unknown, headers: Record<string, string> = {}) =>
  Effect.as(
    Effect.zipRight(Metric.increment(Metric.tagged(refusedRequests, "reason", reason)), count(route, status)),
    json(status, body, headers)
  )

/**
 * The agent of `request`, from its credentials, or the refusal to answer (counted): a bearer token
 * (`Authorization`) and a client certificate the TLS layer verified (pinned in `clientCertificates`). A
 * credential that is presented must name an agent: an unknown token is refused (401) even beside a good
 * certificate, a verified certificate pinned to no agent is refused (403) even beside a good token, and a
 * token and a certificate naming two agents are refused (403). Then the agent's rate is taken (429).
 */
const admit = (options: Options, request: HttpServerRequest.HttpServerRequest, route: string) =>
  Effect.gen(function*() {
    const refuse = (reason: string, status: number, error: string, headers: Record<string, string> = {}) =>
      Effect.map(refused(reason, route, status, { error }, headers), (response) => ({
        _tag: "Refused" as const,
        response
      }))
    const authorization = request.headers["authorization"]
    let tokenAgent: string | undefined
    if (authorization !== undefined) {
      const agent = BearerTokens.authenticate(options.tokens, authorization)
      if (Option.isNone(agent)) {
        return yield* refuse("unauthenticated", 401, "the bearer token is not valid", { "www-authenticate": "Bearer" })
      }
      tokenAgent = agent.value
    }
    let certificateAgent: string | undefined
    const certificate = options.clientCertificates === undefined
      ? Option.none()
      : ClientCertificates.verifiedPeerCertificate(request)
    if (Option.isSome(certificate)) {
      const identity = ClientCertificates.identify(options.clientCertificates!, certificate.value)
      if (identity._tag === "Unmapped") {
        const fingerprint = `cert-sha256:${identity.fingerprint}`
        yield* Effect.logWarning("agent-ledger serve: a verified client certificate is pinned to no agent").pipe(
          Effect.annotateLogs({ fingerprint, route })
        )
        return yield* refuse(
          "unmapped_certificate",
          403,
          `the client certificate (${fingerprint}) is pinned to no agent`
        )
      }
      certificateAgent = identity.agentId
    }
    if (tokenAgent !== undefined && certificateAgent !== undefined && tokenAgent !== certificateAgent) {
      return yield* refuse(
        "conflicting_credentials",
        403,
        "the bearer token and the client certificate name two agents"
      )
    }
    const agent = tokenAgent ?? certificateAgent
    if (agent === undefined) {
      return yield* refuse(
        "unauthenticated",
        401,
        options.clientCertificates === undefined
          ? "a valid bearer token is required"
          : "a valid bearer token or a pinned client certificate is required",
        { "www-authenticate": "Bearer" }
      )
    }
    const limiter = yield* RateLimiter
    if (!(yield* limiter.take(agent))) {
      return yield* refuse("rate_limited", 429, "too many requests for this agent", { "retry-after": "1" })
    }
    return { _tag: "Agent" as const, agentId: agent }
  })

const hookRoute = (options: Options) => {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const route = CLAUDE_CODE_HOOK_PATH
    const agent = yield* admit(options, request, route)
    if (agent._tag === "Refused") return agent.response
    const tooLarge = { error: `the request body is larger than ${maxBody} bytes` }
    const declared = Number(request.headers["content-length"] ?? "0")
    if (!Number.isFinite(declared) || declared > maxBody) return yield* refused("too_large", route, 413, tooLarge)
    const text = yield* request.text.pipe(
      HttpIncomingMessage.withMaxBodySize(Option.some(maxBody)),
      Effect.option
    )
    // A body that cannot be read within the limit (chunked past it, or cut off) is refused like a large one.
    if (Option.isNone(text)) return yield* refused("too_large", route, 413, tooLarge)
    let body: unknown
    try {
      body = JSON.parse(text.value)
    } catch {
      yield* count(route, 400)
      return json(400, { error: "the body is not JSON" })
    }
    const hooks = yield* ClaudeCodeHooks
    const started = yield* Clock.currentTimeNanos
    const answer = yield* hooks.handle(agent.agentId, body)
    const elapsed = Number((yield* Clock.currentTimeNanos) - started) / 1e6
    yield* Metric.update(hookDuration, elapsed)
    yield* count(route, answer.status)
    return json(answer.status, answer.body)
  })
}

/**
 * `/mcp/NAME` (POST, GET, DELETE): MCP over Streamable HTTP to upstream `NAME` (`McpEndpoints`), with
 * the same bearer token, rate and size checks as the hook endpoint; `/mcp` (`aggregate`) to all of them.
 */
const mcpRoute = (options: Options, aggregate: boolean) => {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const route = aggregate ? McpEndpoints.AGGREGATE_PATH : `${McpEndpoints.MCP_PATH}/:name`
    const agent = yield* admit(options, request, route)
    if (agent._tag === "Refused") return agent.response
    let body: string | undefined = undefined
    if (request.method === "POST") {
      const tooLarge = { error: `the request body is larger than ${maxBody} bytes` }
      const declared = Number(request.headers["content-length"] ?? "0")
      if (!Number.isFinite(declared) || declared > maxBody) return yield* refused("too_large", route, 413, tooLarge)
      const text = yield* McpEndpoints.readBody(request, maxBody)
      if (Option.isNone(text)) return yield* refused("too_large", route, 413, tooLarge)
      body = text.value
    }
    const params = yield* HttpRouter.params
    const endpoints = yield* McpEndpoints.McpEndpoints
    const name = aggregate ? McpEndpoints.AGGREGATE : params.name ?? "-"
    const answer = yield* endpoints.handle(agent.agentId, name, request, body)
    yield* count(route, answer._tag === "Json" ? answer.status : answer.response.status)
    return McpEndpoints.toResponse(answer)
  })
}

/** The server's routes. */
export const router = (options: Options) => {
  const openApi = ServeApi.openApiDocument()
  return HttpRouter.empty.pipe(
    HttpRouter.get("/healthz", Effect.as(count("/healthz", 200), HttpServerResponse.text("ok\n"))),
    HttpRouter.get(
      "/readyz",
      Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const open = yield* queue.isOpen
        const status = yield* queue.status
        const ready = open && status !== "Stalled" && status !== "Failed"
        yield* count("/readyz", ready ? 200 : 503)
        return json(ready ? 200 : 503, { ready, audit: status })
      })
    ),
    HttpRouter.get(
      "/metrics",
      Effect.zipRight(
        count("/metrics", 200),
        Effect.map(
          PrometheusText.snapshot,
          (text) => HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
        )
      )
    ),
    HttpRouter.post(CLAUDE_CODE_HOOK_PATH, hookRoute(options)),
    HttpRouter.all(`${McpEndpoints.MCP_PATH}/:name`, mcpRoute(options, false)),
    HttpRouter.all(McpEndpoints.AGGREGATE_PATH, mcpRoute(options, true)),
    HttpRouter.get(
      ServeApi.OPENAPI_PATH,
      Effect.as(count(ServeApi.OPENAPI_PATH, 200), json(200, openApi))
    )
  )
}

/**
 * Serves the routes on the `HttpServer` in context (e.g. `NodeHttpServer.layer`). Build it after the hooks
 * (provide the hooks below it), so that on shutdown the server stops taking requests before the hooks seal
 * the open sessions, and those before the ledger flushes its queue. The first step of shutdown closes the
 * MCP endpoints' SSE streams (`McpEndpoints.closeStreams`): the server's graceful close waits for every open
 * response, and a standalone stream never ends by itself.
 */
export const layer = (options: Options) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const endpoints = yield* McpEndpoints.McpEndpoints
    yield* HttpServer.serveEffect(router(options))
    // Added after the server serves (and the HTTP server's own close, in the layer below): runs before both.
    yield* Effect.addFinalizer(() => endpoints.closeStreams)
  }))
