/**
 * `agent-ledger serve --db DB --policy FILE --tokens FILE [--config FILE] [--listen HOST:PORT]`: the guard as a
 * long-running HTTP service (src/serve): Claude Code's hooks at `POST /v1/hooks/claude-code`, the MCP
 * upstreams of `--config` over Streamable HTTP at `/mcp/NAME`, `/healthz`, `/readyz` and Prometheus
 * `/metrics`. Agents are the bearer tokens' (`agent-ledger token new`) or, over HTTPS (`--tls-cert`,
 * `--tls-key`) with `--client-ca`, the client certificates' pinned in `--client-certs`; every client must
 * then present a certificate from that CA (the TLS handshake fails otherwise).
 *
 * SIGINT/SIGTERM: the server stops taking requests and finishes those in flight, every open session is
 * sealed (calls in flight end as interrupted), the audit queue is flushed into the ledger (bounded by
 * `--shutdown-timeout`; what does not make it goes to the dead letters, else LOST lines), and the process
 * exits 130.
 */
import { Command, Options } from "@effect/cli"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServer from "@effect/platform/HttpServer"
import { Console, Context, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as AuditLedger from "../AuditLedger.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as BearerTokens from "../serve/BearerTokens.js"
import * as ClaudeCodeHooks from "../serve/ClaudeCodeHooks.js"
import * as ClientCertificates from "../serve/ClientCertificates.js"
import * as GuardServer from "../serve/GuardServer.js"
import * as McpEndpoints from "../serve/McpEndpoints.js"
import * as McpRemote from "../serve/McpRemote.js"
import * as McpUpstreams from "../serve/McpUpstreams.js"
import * as Serve from "../serve/Serve.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { upstreamEnvironment } from "./mcpProxy.js"
import * as McpSdk from "./McpSdk.js"
import { requireWritableFile } from "./shared.js"

export const DEFAULT_LISTEN = "127.0.0.1:8787"

/** How long a connection may stay idle once shutdown has begun. */
const SHUTDOWN_KEEP_ALIVE_MILLIS = 100

/** `HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` (host 127.0.0.1). */
export const parseListen = (text: string): Effect.Effect<{ host: string; port: number }, InputError> => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*))?:?(\d{1,5})$/.exec(text)
  const port = match === null ? NaN : Number(match[3])
  if (match === null || !Number.isInteger(port) || port > 65535) {
    return Effect.fail(new InputError({ message: `bad --listen '${text}': expected HOST:PORT (e.g. 127.0.0.1:8787)` }))
  }
  const host = match[1] ?? (match[2] === undefined || match[2] === "" ? "127.0.0.1" : match[2])
  return Effect.succeed({ host, port })
}

/**
 * `--config FILE`: JSON, `{ "mcp": { "NAME": UPSTREAM, … }, "aggregate": false }`, each UPSTREAM either
 * `{ "command": …, "args": […], "env": {…} }` (stdio) or `{ "url": "https://…", "headers": {…} }` (remote
 * Streamable HTTP; header values may reference `${ENV_VAR}`).
 */
export const loadConfig = (file: string): Effect.Effect<McpEndpoints.Config, InputError> =>
  Effect.try({
    try: () => JSON.parse(fs.readFileSync(file, "utf8")) as unknown,
    catch: (error) => new InputError({ message: `${file}: cannot read it as JSON (${String(error)})` })
  }).pipe(
    Effect.flatMap(Schema.decodeUnknown(McpEndpoints.Config, { onExcessProperty: "error" })),
    Effect.mapError((error) =>
      error._tag === "InputError" ? error : new InputError({ message: `${file}: ${error.message}` })
    )
  )

/**
 * Refuses a config whose remote upstreams' headers reference environment variables that are not set (or
 * resolve to a value a header cannot carry); the message names the variables, never a value.
 */
export const checkRemoteHeaders = (
  upstreams: Readonly<Record<string, McpEndpoints.Upstream>>,
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<void, InputError> =>
  Effect.forEach(Object.entries(upstreams), ([name, upstream]) =>
    McpUpstreams.isRemote(upstream)
      ? Either.match(McpUpstreams.resolveHeaders(upstream, env), {
        onLeft: (problem) =>
          Effect.fail(new InputError({ message: `serve: MCP upstream ${name}'s headers: ${problem}` })),
        onRight: () => Effect.void
      })
      : Effect.void, { discard: true })

/**
 * The MCP SDK's pieces `serve` uses, loaded only when `--config` names upstreams. A remote upstream's
 * headers are resolved from this process's environment for each session's transport.
 */
export const mcpSdk = Effect.map(McpSdk.streamableHttpServer, (sdk): McpEndpoints.Sdk => ({
  serverTransport: (sessionId) =>
    // SSE answers (not `enableJsonResponse`): the transport drops a message related to a request in JSON
    // mode, so an elicitation about a `tools/call` could only go on the GET stream, if the client has one.
    new sdk.WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: () => sessionId }),
  upstreamTransport: (name, upstream) => {
    if (!McpUpstreams.isRemote(upstream)) {
      return new sdk.StdioClientTransport({
        command: upstream.command,
        args: [...upstream.args],
        env: upstreamEnvironment(upstream.env),
        stderr: "inherit"
      })
    }
    const headers = McpUpstreams.resolveHeaders(upstream, process.env)
    if (Either.isLeft(headers)) {
      const problem = `MCP upstream ${name}'s headers: ${headers.left}`
      return {
        start: () => Promise.reject(new Error(problem)),
        send: () => Promise.reject(new Error(problem)),
        close: () => Promise.resolve()
      }
    }
    const remote = new sdk.StreamableHTTPClientTransport(new URL(upstream.url), {
      requestInit: { headers: headers.right }
    })
    // Its `send` also takes batches (an array), which the proxy never sends.
    return McpRemote.transport(remote as unknown as McpRemote.ClientTransport)
  }
}))

/** `--tls-cert`, `--tls-key`, `--client-ca`: what the HTTPS server is given, read from the files. */
export interface TlsFiles {
  readonly cert: Buffer
  readonly key: Buffer
  /** CA certificates a client certificate must chain to; with it every client must present one. */
  readonly clientCa?: Buffer | undefined
}

const readFile = (flag: string, file: string) =>
  Effect.try({
    try: () => fs.readFileSync(file),
    catch: (error) =>
      new InputError({ message: `${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` })
  })

/**
 * The HTTP(S) server `serve` listens with: plain HTTP without `tls`; HTTPS with it, asking for and verifying
 * client certificates against `clientCa` when given (`requestCert` and `rejectUnauthorized`: a client with no
 * certificate, or one from another CA, fails the handshake and never reaches a route).
 */
export const serverFactory = (tls: TlsFiles | undefined): () => http.Server => {
  if (tls === undefined) return () => http.createServer()
  const options: https.ServerOptions = { cert: tls.cert, key: tls.key, minVersion: "TLSv1.2" }
  if (tls.clientCa !== undefined) {
    Object.assign(options, { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true })
  }
  return () => https.createServer(options)
}

/** The credentials `serve` accepts and its TLS files, from the flags, with the combinations checked. */
export const loadCredentials = (
  options: Pick<ServeOptions, "tokens" | "tlsCert" | "tlsKey" | "clientCa" | "clientCerts">
) =>
  Effect.gen(function*() {
    const given = (value: Option.Option<string> | undefined) =>
      value !== undefined && Option.isSome(value) ? value.value : undefined
    const tokensFile = given(options.tokens)
    const [cert, key, clientCa, clientCerts] = [
      given(options.tlsCert),
      given(options.tlsKey),
      given(options.clientCa),
      given(options.clientCerts)
    ]
    const fail = (message: string) => Effect.fail(new InputError({ message: `serve: ${message}` }))
    if ((cert === undefined) !== (key === undefined)) return yield* fail("--tls-cert and --tls-key go together")
    if (clientCa !== undefined && cert === undefined) return yield* fail("--client-ca needs --tls-cert and --tls-key")
    if ((clientCa === undefined) !== (clientCerts === undefined)) {
      return yield* fail("--client-ca and --client-certs go together (the CA verifies, the pins name the agents)")
    }
    if (tokensFile === undefined && clientCerts === undefined) {
      return yield* fail("give --tokens, or --client-ca with --client-certs (or both)")
    }
    const tokens: BearerTokens.Tokens = tokensFile === undefined
      ? { entries: [] }
      : yield* BearerTokens.load(tokensFile).pipe(
        Effect.mapError((error) => new InputError({ message: error.message }))
      )
    const clientCertificates = clientCerts === undefined ? undefined : yield* ClientCertificates.load(clientCerts).pipe(
      Effect.mapError((error) => new InputError({ message: error.message }))
    )
    const tls: TlsFiles | undefined = cert === undefined || key === undefined ? undefined : {
      cert: yield* readFile("--tls-cert", cert),
      key: yield* readFile("--tls-key", key),
      clientCa: clientCa === undefined ? undefined : yield* readFile("--client-ca", clientCa)
    }
    return { tokens, clientCertificates, tls }
  })

export interface ServeOptions {
  readonly db: string
  readonly policy: string
  readonly tokens: Option.Option<string>
  readonly tlsCert?: Option.Option<string> | undefined
  readonly tlsKey?: Option.Option<string> | undefined
  readonly clientCa?: Option.Option<string> | undefined
  readonly clientCerts?: Option.Option<string> | undefined
  readonly config?: Option.Option<string> | undefined
  readonly listen: string
  readonly privateKey: Option.Option<string>
  readonly failClosed: boolean
  readonly sealEvery: number
  readonly allowedDecision: "none" | "allow"
  readonly askOnWarn: boolean
  readonly callTimeout: number
  readonly decisionTimeout: number
  readonly maxBodyBytes: number
  readonly rate: number
  readonly shutdownTimeout: number
  readonly spill: Option.Option<string>
}

export const runServe = (options: ServeOptions) =>
  Effect.gen(function*() {
    const policy = yield* GuardPolicy.load(options.policy).pipe(
      Effect.mapError((error) => new InputError({ message: `${options.policy}: ${error.message}` }))
    )
    const { clientCertificates, tls, tokens } = yield* loadCredentials(options)
    const { host, port } = yield* parseListen(options.listen)
    for (
      const [name, value, least] of [
        ["--call-timeout", options.callTimeout, 1],
        ["--decision-timeout", options.decisionTimeout, 1],
        ["--max-body-bytes", options.maxBodyBytes, 1024],
        ["--rate", options.rate, 1]
      ] as const
    ) {
      if (value < least) return yield* new InputError({ message: `serve: ${name} must be at least ${least}` })
    }
    if (Option.isSome(options.spill)) yield* requireWritableFile(options.spill.value)
    const signer = Option.isSome(options.privateKey)
      ? yield* AuditSigner.loadPrivateKeyFile(options.privateKey.value).pipe(
        Effect.mapError((error) => new InputError({ message: error.message }))
      )
      : undefined
    const config = options.config !== undefined && Option.isSome(options.config)
      ? yield* loadConfig(options.config.value)
      : undefined
    const upstreams = config?.mcp ?? {}
    yield* checkRemoteHeaders(upstreams)
    const mcp = Object.keys(upstreams).length === 0 ? undefined : {
      upstreams,
      aggregate: config?.aggregate,
      sdk: yield* mcpSdk
    }
    let nodeServer: http.Server | undefined
    const makeServer = serverFactory(tls)
    const server = NodeHttpServer.layer(() => (nodeServer = makeServer()), { host, port }).pipe(
      Layer.mapError((error) =>
        new InputError({ message: `serve: cannot listen on ${options.listen} (${String(error.cause)})` })
      )
    )
    const services = Serve.layer({
      policy,
      tokens,
      clientCertificates,
      failClosed: options.failClosed,
      sealEvery: options.sealEvery,
      maxBodyBytes: options.maxBodyBytes,
      rateLimit: { perSecond: options.rate, burst: options.rate * 2 },
      mcp,
      hooks: {
        allowedDecision: options.allowedDecision,
        askOnWarn: options.askOnWarn,
        callTimeout: Duration.seconds(options.callTimeout),
        decisionTimeout: Duration.seconds(options.decisionTimeout)
      }
    }, server).pipe(
      // No span per request: serve exports no traces, and the platform's request span (URL parsed, headers
      // copied and redacted into attributes) was a measurable part of a hook's CPU (docs/PERFORMANCE.md, "serve").
      HttpMiddleware.withTracerDisabledWhen(() => true),
      Layer.provide(AuditLedger.layerFor(options.db, {
        signer,
        shutdownDrainTimeout: Duration.seconds(options.shutdownTimeout),
        lostEvents: { stderr: true, spillFile: Option.getOrUndefined(options.spill) }
      }))
    )
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(services)
      const address = Context.get(context, HttpServer.HttpServer).address
      const where = address._tag === "TcpAddress"
        ? `${tls === undefined ? "http" : "https"}://${
          address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname
        }:${address.port}`
        : address.path
      if (tls?.clientCa !== undefined) {
        yield* Console.error(
          `agent-ledger serve: client certificates required (${clientCertificates?.agents.size ?? 0} pinned)`
        )
      }
      yield* Console.error(
        `agent-ledger serve: listening on ${where} (Claude Code hooks: ${where}${GuardServer.CLAUDE_CODE_HOOK_PATH})`
      )
      for (const [name, upstream] of Object.entries(upstreams)) {
        // A remote's URL only by its origin: a path or query may carry a key.
        const to = McpUpstreams.isRemote(upstream) ? ` (remote, ${new URL(upstream.url).origin})` : ""
        yield* Console.error(
          `agent-ledger serve: MCP upstream ${name}${to} at ${where}${McpEndpoints.MCP_PATH}/${name}`
        )
      }
      if (mcp?.aggregate === true) {
        yield* Console.error(
          `agent-ledger serve: every MCP upstream at ${where}${McpEndpoints.AGGREGATE_PATH} (tools named NAME__tool)`
        )
      }
      const hooks = Context.get(context, ClaudeCodeHooks.ClaudeCodeHooks)
      const endpoints = Context.get(context, McpEndpoints.McpEndpoints)
      // The first step of shutdown. The server's graceful close ends idle connections once, when it starts;
      // one that falls idle after (an answer in flight at the time) would be kept for the keep-alive timeout.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (nodeServer !== undefined) nodeServer.keepAliveTimeout = SHUTDOWN_KEEP_ALIVE_MILLIS
        })
      )
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(
          Effect.zipWith(hooks.openSessions, endpoints.openSessions, (a, b) => a + b),
          (open) => Console.error(`agent-ledger serve: stopping; sealing ${open} open session${open === 1 ? "" : "s"}`)
        )
      )
      return yield* Effect.never
    })).pipe(
      Effect.catchTag("LedgerOpenError", (error) => new InputError({ message: error.message }))
    )
  })

export const command = Command.make(
  "serve",
  {
    db: Options.text("db").pipe(Options.withDescription("the ledger database (SQLite file, or a postgres:// URL)")),
    policy: Options.text("policy").pipe(Options.withDescription("the guard policy (JSON, see examples/policy.json)")),
    tokens: Options.text("tokens").pipe(
      Options.optional,
      Options.withDescription("the bearer tokens file: one `AGENT_ID sha256:<hex>` line per token (token new)")
    ),
    tlsCert: Options.text("tls-cert").pipe(
      Options.optional,
      Options.withDescription("serve HTTPS with this certificate (PEM, the chain after it); needs --tls-key")
    ),
    tlsKey: Options.text("tls-key").pipe(
      Options.optional,
      Options.withDescription("the private key of --tls-cert (PEM)")
    ),
    clientCa: Options.text("client-ca").pipe(
      Options.optional,
      Options.withDescription(
        "require a client certificate issued by this CA (PEM) on every connection; needs --tls-cert, --client-certs"
      )
    ),
    clientCerts: Options.text("client-certs").pipe(
      Options.optional,
      Options.withDescription(
        "the client certificates' agents: one `AGENT_ID cert-sha256:<SHA-256 of the DER certificate>` line each"
      )
    ),
    config: Options.text("config").pipe(
      Options.optional,
      Options.withDescription(
        "JSON: MCP upstreams to serve at /mcp/NAME, {\"mcp\": {\"NAME\": {\"command\": …, \"args\": […]} or {\"url\": …, \"headers\": {…}}}, \"aggregate\": true}"
      )
    ),
    listen: Options.text("listen").pipe(
      Options.withDefault(DEFAULT_LISTEN),
      Options.withDescription("HOST:PORT to listen on (default 127.0.0.1:8787; port 0 picks a free one)")
    ),
    privateKey: Options.text("private-key").pipe(
      Options.optional,
      Options.withDescription("sign ledger rows with this Ed25519 private key (PKCS#8 PEM, see keygen)")
    ),
    failClosed: Options.boolean("fail-closed").pipe(
      Options.withDescription("refuse every call while refusals cannot be made durable in the ledger")
    ),
    sealEvery: Options.integer("seal-every").pipe(
      Options.withDefault(100),
      Options.withDescription("seal each session journal into the ledger every N entries (0: only at the end)")
    ),
    allowedDecision: Options.choice("allowed-decision", ["none", "allow"]).pipe(
      Options.withDefault("none" as const),
      Options.withDescription(
        "what an allowed PreToolUse answers: none (Claude Code's own permissions decide) or allow (skip its prompt)"
      )
    ),
    askOnWarn: Options.boolean("ask-on-warn").pipe(
      Options.withDescription("answer ask (the user decides) for calls the policy allows with a warning")
    ),
    callTimeout: Options.integer("call-timeout").pipe(
      Options.withDefault(600),
      Options.withDescription("seconds an allowed call may wait for its PostToolUse; then it is journaled timedOut")
    ),
    decisionTimeout: Options.integer("decision-timeout").pipe(
      Options.withDefault(10),
      Options.withDescription("seconds a PreToolUse decision may take; then it is answered deny")
    ),
    maxBodyBytes: Options.integer("max-body-bytes").pipe(
      Options.withDefault(GuardServer.DEFAULT_MAX_BODY_BYTES),
      Options.withDescription("the largest request body accepted (413 above it)")
    ),
    rate: Options.integer("rate").pipe(
      Options.withDefault(50),
      Options.withDescription("requests per second per agent (bursts of twice that; 429 above it)")
    ),
    shutdownTimeout: Options.integer("shutdown-timeout").pipe(
      Options.withDefault(5),
      Options.withDescription("seconds the shutdown waits for queued events to reach the ledger")
    ),
    spill: Options.text("spill").pipe(
      Options.optional,
      Options.withDescription("append audit events that reach neither the ledger nor its dead letters here")
    )
  },
  runServe
).pipe(Command.withDescription(commandHelp(
  "run the guard as an HTTP service for Claude Code's hooks (README, \"Guarding Claude Code\")",
  [
    "agent-ledger serve --db ledger.db --policy policy.json --tokens tokens.txt",
    "agent-ledger serve --db ledger.db --policy policy.json --tokens tokens.txt --listen 127.0.0.1:9000 --fail-closed",
    "agent-ledger serve --db ledger.db --policy policy.json --listen 0.0.0.0:8443 --tls-cert server.crt --tls-key server.key --client-ca clients-ca.crt --client-certs client-certs.txt"
  ]
)))
