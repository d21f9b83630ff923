/**
 * `agent-ledger serve`: one long-running guard for Claude Code's hooks and for MCP over Streamable HTTP
 * (`McpEndpoints`, whose clients the guard's `ask` rules reach through elicitation: `McpElicitation`), with
 * agents identified by bearer tokens (`BearerTokens`), rate limits per token (`RateLimiter`), Claude Code's
 * hook events answered by `McpGuard` (`ClaudeCodeHooks`), the HTTP routes with health, readiness and
 * Prometheus metrics (`GuardServer`, `PrometheusText`), and their OpenAPI document (`ServeApi`).
 *
 * May import: `guard/`, `journal/`, `ledger/`, `audit/`, `internal/` and the `AuditLedger` assembly, and
 * use `McpGuard` through its public service only. Never `cli/`.
 */
export * as BearerTokens from "./BearerTokens.js"
export * as ClaudeCodeHooks from "./ClaudeCodeHooks.js"
export * as GuardServer from "./GuardServer.js"
export * as McpElicitation from "./McpElicitation.js"
export * as McpEndpoints from "./McpEndpoints.js"
export * as PrometheusText from "./PrometheusText.js"
export * as RateLimiter from "./RateLimiter.js"
export * as Serve from "./Serve.js"
export * as ServeApi from "./ServeApi.js"
