/**
 * `agent-ledger serve --db DB --policy FILE --tokens FILE [--config FILE] [--listen HOST:PORT]`: the guard as a
 * long-running HTTP service (src/serve): Claude Code's hooks at `POST /v1/hooks/claude-code`, the MCP
 * upstreams of `--config` over Streamable HTTP at `/mcp/NAME`, `/healthz`, `/readyz` and Prometheus
 * `/metrics`. Agents are the bearer tokens' (`agent-ledger token new`).
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
import { Console, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as AuditLedger from "../AuditLedger.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as BearerTokens from "../serve/BearerTokens.js"
import * as ClaudeCodeHooks from "../serve/ClaudeCodeHooks.js"
import * as GuardServer from "../serve/GuardServer.js"
import * as McpEndpoints from "../serve/McpEndpoints.js"
import * as Serve from "../serve/Serve.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { upstreamEnvironment } from "./mcpProxy.js"
import * as McpSdk from "./McpSdk.js"
import { requireWritableFile } from "./shared.js"

export const DEFAULT_LISTEN = "127.0.0.1:8787"

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

/** `--config FILE`: JSON, `{ "mcp": { "NAME": { "command": …, "args": […], "env": {…} } } }`. */
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

/** The MCP SDK's pieces `serve` uses, loaded only when `--config` names upstreams. */
export const mcpSdk = Effect.map(McpSdk.streamableHttpServer, (sdk): McpEndpoints.Sdk => ({
  serverTransport: (sessionId) =>
    new sdk.WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => sessionId,
      enableJsonResponse: true
    }),
  upstreamTransport: (_name, upstream) =>
    new sdk.StdioClientTransport({
      command: upstream.command,
      args: [...upstream.args],
      env: upstreamEnvironment(upstream.env),
      stderr: "inherit"
    })
}))

export interface ServeOptions {
  readonly db: string
  readonly policy: string
  readonly tokens: string
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
    const tokens = yield* BearerTokens.load(options.tokens).pipe(
      Effect.mapError((error) => new InputError({ message: error.message }))
    )
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
    const mcp = Object.keys(upstreams).length === 0 ? undefined : {
      upstreams,
      sdk: yield* mcpSdk
    }
    const server = NodeHttpServer.layer(() => http.createServer(), { host, port }).pipe(
      Layer.mapError((error) =>
        new InputError({ message: `serve: cannot listen on ${options.listen} (${String(error.cause)})` })
      )
    )
    const services = Serve.layer({
      policy,
      tokens,
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
        ? `http://${address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname}:${address.port}`
        : address.path
      yield* Console.error(
        `agent-ledger serve: listening on ${where} (Claude Code hooks: ${where}${GuardServer.CLAUDE_CODE_HOOK_PATH})`
      )
      for (const name of Object.keys(upstreams)) {
        yield* Console.error(`agent-ledger serve: MCP upstream ${name} at ${where}${McpEndpoints.MCP_PATH}/${name}`)
      }
      const hooks = Context.get(context, ClaudeCodeHooks.ClaudeCodeHooks)
      const endpoints = Context.get(context, McpEndpoints.McpEndpoints)
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
      Options.withDescription("the bearer tokens file: one `AGENT_ID sha256:<hex>` line per token (token new)")
    ),
    config: Options.text("config").pipe(
      Options.optional,
      Options.withDescription(
        "JSON: MCP upstreams to serve at /mcp/NAME, {\"mcp\": {\"NAME\": {\"command\": …, \"args\": […]}}}"
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
      Options.withDescription("requests per second per token (bursts of twice that; 429 above it)")
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
    "agent-ledger serve --db ledger.db --policy policy.json --tokens tokens.txt --listen 127.0.0.1:9000 --fail-closed"
  ]
)))
