/**
 * The MCP SDK is an optional peer dependency: a ledger-only application installs agent-ledger without it.
 * The CLI's MCP commands (`mcp-proxy`, `demo --mcp`, `serve --config`) load the SDK's pieces here when they run, and say how
 * to install it (exit 2) when it is missing, instead of the whole CLI failing to start.
 */
import { Effect } from "effect"
import { InputError } from "./CliError.js"

/** The SDK version range agent-ledger is tested with (its peer dependency). */
export const SDK_RANGE = "^1.32"

const missing = (cause: unknown) =>
  new InputError({
    message:
      `this command needs the MCP SDK, an optional peer dependency: npm install @modelcontextprotocol/sdk@${SDK_RANGE} (${
        cause instanceof Error ? cause.message.split("\n")[0] : String(cause)
      })`
  })

/** The SDK's stdio transports, for the proxy (server side to the client, client side to the upstream). */
export const stdioTransports = Effect.tryPromise({
  try: async () => {
    const [client, server] = await Promise.all([
      import("@modelcontextprotocol/sdk/client/stdio.js"),
      import("@modelcontextprotocol/sdk/server/stdio.js")
    ])
    return { StdioClientTransport: client.StdioClientTransport, StdioServerTransport: server.StdioServerTransport }
  },
  catch: missing
})

/** The SDK's client and its stdio transport, for the scripted client of `demo --mcp`. */
export const stdioClient = Effect.tryPromise({
  try: async () => {
    const [client, transport] = await Promise.all([
      import("@modelcontextprotocol/sdk/client/index.js"),
      import("@modelcontextprotocol/sdk/client/stdio.js")
    ])
    return { Client: client.Client, StdioClientTransport: transport.StdioClientTransport }
  },
  catch: missing
})

/**
 * The SDK's web-standard Streamable HTTP server transport and its stdio and Streamable HTTP client
 * transports, for the MCP endpoints of `serve` (`McpEndpoints.Sdk`): clients reach `serve` through the
 * first, `serve` reaches stdio upstreams through the second and remote ones through the third.
 */
export const streamableHttpServer = Effect.tryPromise({
  try: async () => {
    const [server, client, remote] = await Promise.all([
      import("@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js"),
      import("@modelcontextprotocol/sdk/client/stdio.js"),
      import("@modelcontextprotocol/sdk/client/streamableHttp.js")
    ])
    return {
      WebStandardStreamableHTTPServerTransport: server.WebStandardStreamableHTTPServerTransport,
      StdioClientTransport: client.StdioClientTransport,
      StreamableHTTPClientTransport: remote.StreamableHTTPClientTransport
    }
  },
  catch: missing
})
