/**
 * The MCP upstreams `serve --config` names: each is either a stdio command (started for each session) or
 * a remote Streamable HTTP server (`url`, with optional `headers`; each session opens its own client
 * session to it). Header values may reference `serve`'s environment as `${ENV_VAR}`, so a config file
 * need not hold a secret; the resolved values go only into the requests to the remote, never into a log,
 * an error message or the ledger.
 */
import { Either, Schema } from "effect"

/** One upstream MCP server, started over stdio for each session. */
export const StdioUpstream = Schema.Struct({
  command: Schema.String.pipe(Schema.minLength(1)),
  args: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  /** Added to `serve`'s own environment. */
  env: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) })
})
export type StdioUpstream = typeof StdioUpstream.Type

/** An `http:` or `https:` URL. */
const HttpUrl = Schema.String.pipe(
  Schema.filter((text) => {
    try {
      const url = new URL(text)
      return url.protocol === "http:" || url.protocol === "https:" ? undefined : "must be an http: or https: URL"
    } catch {
      return "must be an absolute http: or https: URL"
    }
  })
)

/** A header name (RFC 9110 token). */
const HeaderName = Schema.String.pipe(Schema.pattern(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/))

/** One remote MCP server over Streamable HTTP; each session opens its own client session to it. */
export const RemoteUpstream = Schema.Struct({
  url: HttpUrl,
  /** Sent with every request to the remote; `${ENV_VAR}` is replaced by that variable of `serve`'s environment. */
  headers: Schema.optionalWith(Schema.Record({ key: HeaderName, value: Schema.String }), { default: () => ({}) })
})
export type RemoteUpstream = typeof RemoteUpstream.Type

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Says which of the two kinds an entry is meant to be before it is decoded as that kind. */
const OneKind = Schema.Unknown.pipe(Schema.filter((value) => {
  if (!isRecord(value)) return "an MCP upstream must be an object"
  const command = Object.hasOwn(value, "command")
  const url = Object.hasOwn(value, "url")
  if (command && url) {
    return "an MCP upstream is either a stdio server (\"command\") or a remote one (\"url\"), not both"
  }
  if (!command && !url) return "an MCP upstream needs a \"command\" (stdio) or a \"url\" (Streamable HTTP)"
  return undefined
}))

/** A stdio command or a remote URL: exactly one of `command` and `url`. */
export const Upstream = Schema.compose(OneKind, Schema.Union(StdioUpstream, RemoteUpstream), { strict: false })
export type Upstream = StdioUpstream | RemoteUpstream

export const isRemote = (upstream: Upstream): upstream is RemoteUpstream => "url" in upstream

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g

/** The environment variables a remote's headers reference. */
export const referencedVariables = (upstream: RemoteUpstream): ReadonlyArray<string> => {
  const names = new Set<string>()
  for (const value of Object.values(upstream.headers)) {
    for (const match of value.matchAll(REFERENCE)) names.add(match[1]!)
  }
  return [...names]
}

/**
 * The headers with every `${ENV_VAR}` replaced from `env`; `Left` with what is wrong, naming variables
 * and headers only, never a value (a variable that is not set, a value a header cannot carry).
 */
export const resolveHeaders = (
  upstream: RemoteUpstream,
  env: Readonly<Record<string, string | undefined>>
): Either.Either<Record<string, string>, string> => {
  const missing = referencedVariables(upstream).filter((name) => env[name] === undefined)
  if (missing.length > 0) {
    return Either.left(
      `the environment variable${missing.length === 1 ? "" : "s"} ${missing.join(", ")} ${
        missing.length === 1 ? "is" : "are"
      } not set`
    )
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(upstream.headers)) {
    const resolved = value.replace(REFERENCE, (_, variable: string) => env[variable]!)
    // Checked here: the fetch that sends it would put the bad value into its error message.
    if (/[\r\n\0]/.test(resolved)) return Either.left(`header ${name} would hold a line break or NUL`)
    headers[name] = resolved
  }
  return Either.right(headers)
}
