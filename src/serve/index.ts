/**
 * `agent-ledger serve`: one long-running guard for Claude Code's hooks and for MCP over Streamable HTTP
 * (`McpEndpoints`: stdio or remote upstreams, `McpUpstreams`, `McpRemote`; all of them as one server,
 * `McpAggregate`; its clients the guard's `ask` rules reach through elicitation: `McpElicitation`), with
 * agents identified by bearer tokens (`BearerTokens`) or pinned mTLS client certificates
 * (`ClientCertificates`), rate limits per agent (`RateLimiter`), Claude Code's
 * hook events answered by `McpGuard` (`ClaudeCodeHooks`), the HTTP routes with health, readiness and
 * Prometheus metrics (`GuardServer`, `PrometheusText`), and their OpenAPI document (`ServeApi`).
 *
 * May import: `guard/`, `journal/`, `ledger/`, `audit/`, `internal/` and the `AuditLedger` assembly, and
 * use `McpGuard` through its public service only. Never `cli/`.
 */
export * as BearerTokens from "./BearerTokens.js"
export * as ClaudeCodeHooks from "./ClaudeCodeHooks.js"
export * as ClientCertificates from "./ClientCertificates.js"
export * as GuardServer from "./GuardServer.js"
export * as McpAggregate from "./McpAggregate.js"
export * as McpElicitation from "./McpElicitation.js"
export * as McpEndpoints from "./McpEndpoints.js"
export * as McpRemote from "./McpRemote.js"
export * as McpUpstreams from "./McpUpstreams.js"
export * as PrometheusText from "./PrometheusText.js"
export * as RateLimiter from "./RateLimiter.js"
export * as Serve from "./Serve.js"
export * as ServeApi from "./ServeApi.js"
export * as SessionToolPins from "./SessionToolPins.js"
export * as StandaloneHook from "./StandaloneHook.js"
