/**
 * A remote MCP upstream (Streamable HTTP) as the proxy's upstream transport. The SDK's
 * `StreamableHTTPClientTransport` resolves a `send` only once the server has answered the POST (for a JSON
 * answer, once the whole answer is in), and the proxy sends the client's messages one at a time: a slow
 * `tools/call` would hold up every message behind it, and a POST that fails would fail the proxy's send.
 * So a request other than `initialize` is sent without waiting, and a POST that fails is answered here
 * with a JSON-RPC error for its id (the call ends as the upstream's error; the session goes on).
 * `initialize` and notifications are still sent in order: the session id comes with `initialize`'s answer.
 * If `initialize` cannot be sent the session ends (a remote that is down or refuses the credentials), and
 * so it does when the remote answers 404 (it ended its session: the spec's signal to initialize again, which
 * the client does once its serve session is gone too).
 *
 * Closing ends the remote session (`DELETE`, bounded) before the transport closes.
 */
import type * as McpProxy from "../guard/McpProxy.js"

/** The part of the SDK's `StreamableHTTPClientTransport` used here. */
export interface ClientTransport extends McpProxy.Transport {
  /** Ends the remote session (an HTTP `DELETE` with its `Mcp-Session-Id`). */
  terminateSession(): Promise<void>
}

/** How long closing waits for the remote to acknowledge the end of its session. */
const TERMINATE_TIMEOUT_MILLIS = 2000

/** The longest part of a remote's error text put into an answer (it may be a whole HTML page). */
const MAX_ERROR_TEXT = 200

/** JSON-RPC internal error: the answer to a request the remote could not be sent. */
const INTERNAL_ERROR = -32603

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** An error's message, one line, bounded. Header values never reach it (they are checked before use). */
/** The HTTP status of the SDK's `StreamableHTTPError` (its `code`), if the error is one. */
const statusOf = (error: unknown): number | undefined =>
  isRecord(error) && typeof error.code === "number" && error.code >= 100 ? error.code : undefined

const describe = (error: unknown): string => {
  const text = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, " ").trim()
  const bounded = text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}…` : text
  const status = statusOf(error)
  return status === undefined ? bounded : `HTTP ${status}: ${bounded}`
}

/** `inner` (a new SDK client transport to the remote, not started) as the proxy's upstream transport. */
export const transport = (inner: ClientTransport): McpProxy.Transport => {
  let closed = false
  let closing: Promise<void> | undefined
  const outer: McpProxy.Transport = {
    start: () => inner.start(),
    send: async (message) => {
      const raw: Record<string, unknown> = message
      const id = raw.id
      const isRequest = typeof raw.method === "string" && (typeof id === "string" || typeof id === "number")
      const answerError = (error: unknown, what: string) => {
        if (closed || !isRequest) return
        outer.onmessage?.({
          jsonrpc: "2.0",
          id,
          error: { code: INTERNAL_ERROR, message: `${what}: ${describe(error)}` }
        })
      }
      if (raw.method === "initialize") {
        await inner.send(message).catch((error) => {
          answerError(error, "the remote MCP server could not be reached")
          void outer.close()
        })
        return
      }
      if (!isRequest) return inner.send(message)
      void inner.send(message).catch((error) => {
        answerError(error, "the remote MCP server did not answer")
        if (statusOf(error) === 404) void outer.close()
      })
    },
    close: () => {
      if (closing !== undefined) return closing
      closed = true
      let timer: ReturnType<typeof setTimeout> | undefined
      const terminated = Promise.race([
        inner.terminateSession().catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, TERMINATE_TIMEOUT_MILLIS)))
      ]).finally(() => clearTimeout(timer))
      closing = terminated.then(() => inner.close()).catch(() => undefined)
      return closing
    }
  }
  inner.onmessage = (message) => {
    if (!closed && isRecord(message)) outer.onmessage?.(message)
  }
  inner.onclose = () => outer.onclose?.()
  inner.onerror = (error) => outer.onerror?.(error)
  return outer
}
