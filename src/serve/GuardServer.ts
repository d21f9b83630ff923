/**
 * The HTTP face of `agent-ledger serve`, on @effect/platform's HTTP server:
 *
 * - `POST /v1/hooks/claude-code`: Claude Code's HTTP hook (every event on one URL), answered by
 *   `ClaudeCodeHooks`. A bearer token is required (401 otherwise, counted); the agent is the token's. Each
 *   token has a request rate (429 over it, counted) and a body size limit (413 over it, counted), checked in
 *   that order, before the body is read.
 * - `/mcp/NAME`: MCP over Streamable HTTP to a configured upstream (`McpEndpoints`), same checks.
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
import { Clock, Effect, Metric, MetricBoundaries, Option } from "effect"
import * as AuditQueue from "../audit/AuditQueue.js"
import * as BearerTokens from "./BearerTokens.js"
import { ClaudeCodeHooks } from "./ClaudeCodeHooks.js"
import * as McpEndpoints from "./McpEndpoints.js"
import * as PrometheusText from "./PrometheusText.js"
import { RateLimiter } from "./RateLimiter.js"

/** The path of Claude Code's hook endpoint. */
export const CLAUDE_CODE_HOOK_PATH = "/v1/hooks/claude-code"

/** The default limit on a request body: a hook's `tool_response` can be a whole file or a page. */
export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

export interface Options {
  readonly tokens: BearerTokens.Tokens
  /** Bytes a request body may have; default 8 MiB. */
  readonly maxBodyBytes?: number | undefined
}

const requests = Metric.counter("agent_ledger_serve_requests", {
  description: "HTTP requests answered, by route and status",
  incremental: true
})
const refusedRequests = Metric.counter("agent_ledger_serve_refused_requests", {
  description: "Requests refused before reaching a handler, by reason (unauthenticated, rate_limited, too_large)",
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

const hookRoute = (options: Options) => {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const route = CLAUDE_CODE_HOOK_PATH
    const agent = BearerTokens.authenticate(options.tokens, request.headers["authorization"])
    if (Option.isNone(agent)) {
      return yield* refused("unauthenticated", route, 401, { error: "a valid bearer token is required" }, {
        "www-authenticate": "Bearer"
      })
    }
    const limiter = yield* RateLimiter
    if (!(yield* limiter.take(agent.value))) {
      return yield* refused("rate_limited", route, 429, { error: "too many requests for this token" }, {
        "retry-after": "1"
      })
    }
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
    const answer = yield* hooks.handle(agent.value, body)
    const elapsed = Number((yield* Clock.currentTimeNanos) - started) / 1e6
    yield* Metric.update(hookDuration, elapsed)
    yield* count(route, answer.status)
    return json(answer.status, answer.body)
  })
}

/**
 * `/mcp/NAME` (POST, GET, DELETE): MCP over Streamable HTTP to upstream `NAME` (`McpEndpoints`), with
 * the same bearer token, rate and size checks as the hook endpoint.
 */
const mcpRoute = (options: Options) => {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const route = `${McpEndpoints.MCP_PATH}/:name`
    const agent = BearerTokens.authenticate(options.tokens, request.headers["authorization"])
    if (Option.isNone(agent)) {
      return yield* refused("unauthenticated", route, 401, { error: "a valid bearer token is required" }, {
        "www-authenticate": "Bearer"
      })
    }
    const limiter = yield* RateLimiter
    if (!(yield* limiter.take(agent.value))) {
      return yield* refused("rate_limited", route, 429, { error: "too many requests for this token" }, {
        "retry-after": "1"
      })
    }
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
    const answer = yield* endpoints.handle(agent.value, params.name ?? "", request, body)
    yield* count(route, answer._tag === "Json" ? answer.status : answer.response.status)
    return McpEndpoints.toResponse(answer)
  })
}

/** The server's routes. */
export const router = (options: Options) =>
  HttpRouter.empty.pipe(
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
    HttpRouter.all(`${McpEndpoints.MCP_PATH}/:name`, mcpRoute(options))
  )

/**
 * Serves the routes on the `HttpServer` in context (e.g. `NodeHttpServer.layer`). Build it after the hooks
 * (provide the hooks below it), so that on shutdown the server stops taking requests before the hooks seal
 * the open sessions, and those before the ledger flushes its queue.
 */
export const layer = (options: Options) => HttpServer.serve(router(options))
