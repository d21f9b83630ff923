/**
 * The guard: a JSON policy and its rules (`GuardPolicy`), the guard that decides each tool call against the
 * session's journal and ledgers refusals (`McpGuard`), and the JSON-RPC-level MCP proxy it runs inside
 * (`McpProxy`). None of these modules imports the MCP SDK: the CLI's `mcp-proxy` brings the SDK's
 * transports, so a library user can run the guard behind any transport.
 *
 * May import: `journal/`, `audit/`, `internal/` (and `ledger/` through public services only). Never `cli/`
 * or the `AuditLedger` assembly.
 */
export * as Approvals from "./Approvals.js"
export * as GuardPolicy from "./GuardPolicy.js"
export * as McpGuard from "./McpGuard.js"
export * as McpGuardHooks from "./McpGuardHooks.js"
export * as McpProxy from "./McpProxy.js"
export * as ToolPins from "./ToolPins.js"
