/**
 * The OpenAPI 3.1 document of `agent-ledger serve` (`GET /openapi.json`), made by @effect/platform's
 * `OpenApi.fromApi` from an `HttpApi` description of `GuardServer`'s routes. The routes themselves stay on
 * `HttpRouter` (the MCP endpoints hand raw requests to the SDK's transport, which `HttpApi`'s decoded
 * handlers cannot), so the description takes what can drift from the handlers: the paths are their
 * constants, the hook payload is the schema the hook handler decodes (`ClaudeCodeHooks.HookPayload`), and a
 * test checks that every route has its path here.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import { Schema } from "effect"
import * as ClaudeCodeHooks from "./ClaudeCodeHooks.js"
import { AGGREGATE_PATH, MCP_PATH } from "./McpEndpoints.js"

/** The path of Claude Code's hook endpoint. */
export const CLAUDE_CODE_HOOK_PATH = "/v1/hooks/claude-code"

/** Where the document is served. */
export const OPENAPI_PATH = "/openapi.json"

/** A bearer token of `--tokens` (`agent-ledger token new`); the agent is the token's. */
class BearerToken extends HttpApiMiddleware.Tag<BearerToken>()("agent-ledger/serve/BearerToken", {
  security: { bearer: HttpApiSecurity.bearer }
}) {}

const failure = (status: number, description: string) =>
  Schema.Struct({ error: Schema.String }).annotations(HttpApiSchema.annotations({ status, description }))

/** What every authenticated route may answer before its handler runs. */
const refusals = [
  failure(401, "no valid bearer token (counted)"),
  failure(413, "the body is larger than --max-body-bytes (counted)"),
  failure(429, "over the token's request rate (counted)")
] as const

/** A `PreToolUse` answer (other events answer `{}`). */
const HookOutput = Schema.Struct({
  hookSpecificOutput: Schema.optional(Schema.Struct({
    hookEventName: Schema.Literal("PreToolUse"),
    permissionDecision: Schema.Literal("allow", "deny", "ask"),
    permissionDecisionReason: Schema.String
  }))
}).annotations({ description: "the hook output: a PreToolUse decision with its rule and reason, else {}" })

const hooks = HttpApiGroup.make("claudeCodeHooks").add(
  HttpApiEndpoint.post("claudeCodeHook", CLAUDE_CODE_HOOK_PATH)
    .setPayload(ClaudeCodeHooks.HookPayload)
    .addSuccess(HookOutput)
    .addError(failure(400, "the body is not JSON, or not a hook event (the path to the bad field)"))
    .addError(failure(403, "the session belongs to another agent, or the agent has too many open"))
    .addError(refusals[0])
    .addError(refusals[1])
    .addError(refusals[2])
    .annotate(OpenApi.Description, "Claude Code's HTTP hook: every event on one URL (`hook_event_name`)")
).middleware(BearerToken)

const SessionHeaders = Schema.Struct({
  "mcp-session-id": Schema.optional(Schema.String.annotations({
    description: "the session, from the initialize answer; absent only on initialize"
  }))
})
const McpPath = Schema.Struct({
  name: Schema.String.annotations({ description: "the upstream's name in --config" })
})
/** One JSON-RPC 2.0 message or a batch (the MCP Streamable HTTP transport's POST body). */
const JsonRpcMessage = Schema.Struct(
  { jsonrpc: Schema.Literal("2.0") },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
const EventStream = HttpApiSchema.Text({ contentType: "text/event-stream" }).annotations({
  description: "SSE: the answer, with what the server sends before it (an elicitation about the call)"
})
const mcpEndpoints = <Prefix extends string>(prefix: Prefix, path: `/${string}`, what: string) => {
  const endpoint = <Name extends string, Method extends "GET" | "POST" | "DELETE">(
    method: Method,
    name: Name,
    description: string
  ) =>
    HttpApiEndpoint.make(method)(`${prefix}${name}`, path)
      .setHeaders(SessionHeaders)
      .addError(failure(400, "no Mcp-Session-Id and not an initialize"))
      .addError(failure(403, "the session belongs to another agent, or the agent has too many open"))
      .addError(failure(404, `${what}, or the session is unknown (initialize again)`))
      .addError(refusals[0])
      .addError(refusals[1])
      .addError(refusals[2])
      .annotate(OpenApi.Description, description)
  return [
    endpoint(
      "POST",
      "Post",
      "MCP Streamable HTTP: a JSON-RPC message to the upstream (initialize opens a session)"
    )
      .setPayload(Schema.Union(JsonRpcMessage, Schema.Array(JsonRpcMessage)))
      .addSuccess(EventStream)
      .addSuccess(HttpApiSchema.Accepted),
    endpoint("GET", "Stream", "The session's standalone SSE stream (list_changed, the upstream's requests)")
      .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }))
      .addError(failure(409, "the session has a standalone stream open already"))
      .addError(failure(503, "serve is shutting down")),
    endpoint("DELETE", "End", "Ends the session: its journal is sealed into the ledger")
  ] as const
}

const [mcpPost, mcpStream, mcpEnd] = mcpEndpoints("mcp", `${MCP_PATH}/:name`, "no such upstream")
const [allPost, allStream, allEnd] = mcpEndpoints(
  "mcpAggregate",
  AGGREGATE_PATH,
  "no aggregated endpoint (the config's `aggregate` is not true)"
)

const mcp = HttpApiGroup.make("mcp")
  .add(mcpPost.setPath(McpPath))
  .add(mcpStream.setPath(McpPath))
  .add(mcpEnd.setPath(McpPath))
  .add(allPost.annotate(OpenApi.Summary, "every upstream as one server, tools named NAME__tool"))
  .add(allStream)
  .add(allEnd)
  .middleware(BearerToken)

const Readiness = Schema.Struct({ ready: Schema.Boolean, audit: Schema.String })
const operations = HttpApiGroup.make("operations")
  .add(
    HttpApiEndpoint.get("health", "/healthz")
      .addSuccess(HttpApiSchema.Text())
      .annotate(OpenApi.Description, "200 while the process serves")
  )
  .add(
    HttpApiEndpoint.get("ready", "/readyz")
      .addSuccess(Readiness)
      .addError(Readiness.annotations(HttpApiSchema.annotations({ status: 503 })))
      .annotate(OpenApi.Description, "200 while the audit queue can make events durable, else 503")
  )
  .add(
    HttpApiEndpoint.get("metrics", "/metrics")
      .addSuccess(HttpApiSchema.Text({ contentType: "text/plain; version=0.0.4; charset=utf-8" }))
      .annotate(OpenApi.Description, "every metric of the process, in the Prometheus text format")
  )
  .add(
    HttpApiEndpoint.get("openapi", OPENAPI_PATH)
      .addSuccess(Schema.Unknown)
      .annotate(OpenApi.Description, "this document")
  )

/** `serve`'s routes, described. */
export const api = HttpApi.make("agent-ledger-serve")
  .add(hooks)
  .add(mcp)
  .add(operations)
  .annotate(OpenApi.Title, "agent-ledger serve")
  .annotate(
    OpenApi.Description,
    "The guard as an HTTP service: Claude Code's hooks and MCP over Streamable HTTP, with bearer-token identities"
  )

/**
 * The OpenAPI document. Excess properties are allowed, as the handlers ignore them (Claude Code adds fields
 * to its hook input).
 */
export const openApiDocument = (): OpenApi.OpenAPISpec =>
  OpenApi.fromApi(api, { additionalPropertiesStrategy: "allow" })
