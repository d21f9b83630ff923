/**
 * `agent-ledger mcp-proxy --db FILE --policy FILE [--agent ID] [--fail-closed] [--env KEY=VALUE]...
 * [--call-timeout SECONDS] [--spill FILE] [--mode enforce|shadow] -- <server command...>`: a
 * stdio MCP proxy. To the MCP client it is the server; it spawns the real server and is its client. Every
 * message passes through unchanged except `tools/call`, which `McpGuard` decides on: a refused call gets a
 * tool result with `isError: true` naming the rule and the reason, and the upstream never sees it.
 *
 * Identities: the session id is one per proxy process (`--session` to choose it); the agent id is the
 * client's self-declared `clientInfo.name` from `initialize` unless `--agent` sets it (a client can claim
 * any name: set `--agent` where it matters); the server id is `--server-id`, else the server command's
 * base name.
 *
 * The upstream is started with the proxy's environment plus `--env KEY=VALUE`; `--call-timeout` bounds
 * each forwarded call (McpProxy answers the client with an error and completes the call as timed out).
 *
 * Nothing but MCP messages goes to stdout; diagnostics go to stderr. When the client disconnects, stdin
 * ends, the upstream exits, or the process gets SIGINT/SIGTERM, calls in flight are completed (inside
 * `McpProxy.run`), then the session is sealed into the ledger, the journal is written to
 * `--export-session` if asked, and the audit queue is flushed, all bounded to fit the 2 s an SDK client
 * waits between SIGTERM and SIGKILL; events that cannot be made durable are dead-lettered, else written
 * as LOST lines to stderr and `--spill`. An upstream that ends the session exits 2 with one line.
 */
import { Args, Command, Options } from "@effect/cli"
import { Duration, Effect, Option } from "effect"
import * as path from "node:path"
import type { TransformCallback } from "node:stream"
import { Transform } from "node:stream"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as AuditLedger from "../AuditLedger.js"
import * as Approvals from "../guard/Approvals.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as McpGuard from "../guard/McpGuard.js"
import * as McpGuardHooks from "../guard/McpGuardHooks.js"
import * as McpProxy from "../guard/McpProxy.js"
import * as ToolPins from "../guard/ToolPins.js"
import { uuidV7 } from "../internal/uuid.js"
import * as SessionJournals from "../journal/SessionJournals.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import { writeText } from "./AtomicFile.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import * as McpSdk from "./McpSdk.js"
import { requireWritableFile } from "./shared.js"
import * as StdStreams from "./StdStreams.js"

export interface McpProxyOptions {
  readonly db: string
  readonly policy: string
  readonly agent: Option.Option<string>
  readonly session: Option.Option<string>
  readonly serverId: Option.Option<string>
  readonly failClosed: boolean
  /** Overrides the policy's `mode`: `shadow` decides and records every call but blocks and hides nothing. */
  readonly mode?: Option.Option<McpGuard.Mode> | undefined
  readonly sealEvery: number
  readonly privateKey: Option.Option<string>
  readonly exportSession: Option.Option<string>
  readonly env: ReadonlyArray<string>
  readonly callTimeout: number
  readonly spill: Option.Option<string>
  readonly server: ReadonlyArray<string>
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** The longest line the proxy reads from the client; a longer one is answered with an error and skipped. */
export const MAX_CLIENT_LINE_BYTES = 10 * 1024 * 1024

/**
 * Passes stdin on line by line, replacing a line longer than `limit` bytes by `replacement` (a line the
 * SDK transport rejects, so the proxy answers it with a JSON-RPC error): the transport itself would close
 * on it, ending the session.
 */
export class LineLimiter extends Transform {
  private pending: Array<Buffer> = []
  private size = 0
  private skipping = false

  constructor(private readonly limit: number, private readonly replacement: string) {
    super()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let start = 0
    while (start < chunk.length) {
      const newline = chunk.indexOf(10, start)
      const piece = chunk.subarray(start, newline === -1 ? chunk.length : newline)
      if (!this.skipping) {
        if (this.size + piece.length > this.limit) {
          this.skipping = true
          this.pending = []
          this.size = 0
        } else if (piece.length > 0) {
          this.pending.push(piece)
          this.size += piece.length
        }
      }
      if (newline === -1) break
      if (this.skipping) this.push(this.replacement + "\n")
      else this.push(Buffer.concat([...this.pending, NEWLINE]))
      this.skipping = false
      this.pending = []
      this.size = 0
      start = newline + 1
    }
    done()
  }

  override _flush(done: TransformCallback): void {
    if (this.skipping) this.push(this.replacement + "\n")
    else if (this.size > 0) this.push(Buffer.concat(this.pending))
    done()
  }
}

const NEWLINE = Buffer.from("\n")

/** How long the session's seal may wait to be made durable when the session ends. */
const SEAL_TIMEOUT = Duration.millis(500)
/**
 * How long closing the ledger waits for queued events (then as long again for the dead-letter write):
 * with the seal's bound, the whole shutdown fits the 2 seconds an SDK client gives between SIGTERM and
 * SIGKILL.
 */
const SHUTDOWN_DRAIN_TIMEOUT = Duration.millis(500)

/** `--env KEY=VALUE` options as an environment; an entry without `=` or with an empty key is an input error. */
export const parseEnv = (entries: ReadonlyArray<string>): Effect.Effect<Record<string, string>, InputError> =>
  Effect.suspend(() => {
    const env: Record<string, string> = {}
    for (const entry of entries) {
      const at = entry.indexOf("=")
      if (at <= 0) return Effect.fail(new InputError({ message: `mcp-proxy: --env ${entry}: expected KEY=VALUE` }))
      env[entry.slice(0, at)] = entry.slice(at + 1)
    }
    return Effect.succeed(env)
  })

/** The upstream server's environment: the proxy's own, then `--env` on top. */
export const upstreamEnvironment = (extra: Record<string, string>): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined) env[key] = value
  return { ...env, ...extra }
}

export const runMcpProxy = (options: McpProxyOptions) =>
  Effect.gen(function*() {
    const [command, ...args] = options.server
    if (command === undefined) {
      return yield* new InputError({ message: "mcp-proxy: no server command (put it after `--`)" })
    }
    const policy = yield* GuardPolicy.load(options.policy).pipe(
      Effect.mapError((error) => new InputError({ message: `${options.policy}: ${error.message}` }))
    )
    if (Option.isSome(options.exportSession) && StdStreams.isStdio(options.exportSession.value)) {
      return yield* new InputError({
        message: "mcp-proxy: --export-session - : stdout carries the MCP messages; name a file"
      })
    }
    if (Option.isSome(options.exportSession)) yield* requireWritableFile(options.exportSession.value)
    if (Option.isSome(options.spill)) yield* requireWritableFile(options.spill.value)
    if (options.callTimeout < 1) {
      return yield* new InputError({ message: "mcp-proxy: --call-timeout must be at least 1 (seconds)" })
    }
    const env = upstreamEnvironment(yield* parseEnv(options.env))
    const signer = Option.isSome(options.privateKey)
      ? yield* AuditSigner.loadPrivateKeyFile(options.privateKey.value).pipe(
        Effect.mapError((error) => new InputError({ message: error.message }))
      )
      : undefined
    const sessionId = Option.getOrElse(options.session, () => uuidV7(Date.now()))
    const serverId = Option.getOrElse(options.serverId, () => path.basename(command))
    let agentId = Option.getOrElse(options.agent, () => "unknown")
    /** Whether the client declared the `elicitation` capability (so `ask` rules can ask its user). */
    let clientCanElicit = false

    let upstreamPid: number | undefined
    const stopUpstream = Effect.sync(() => {
      if (upstreamPid === undefined) return
      try {
        process.kill(upstreamPid, "SIGTERM")
      } catch {
        // It has exited.
      }
    })

    const proxy = Effect.gen(function*() {
      const salt = yield* LedgerSql.argumentSalt
      // Pins of earlier sessions and processes, from the ledger (tool pinning is on unless the policy opts out).
      const pins = policy.pinTools === false
        ? undefined
        : yield* ToolPins.make({
          initial: yield* ToolPins.load.pipe(
            Effect.mapError((error) =>
              new InputError({ message: `mcp-proxy: cannot read the tool pins: ${error.message}` })
            )
          )
        })
      const clientRequests = McpProxy.makeClientRequests()
      const guard = yield* McpGuard.make({
        approver: (request) => Approvals.askClient(clientRequests, clientCanElicit, agentId, request),
        approverName: "the client, through MCP elicitation",
        policy: GuardPolicy.engine(policy, { salt }),
        failClosed: options.failClosed,
        sealEvery: options.sealEvery,
        mode: Option.getOrUndefined(options.mode ?? Option.none()),
        tools: pins
      }).pipe(Effect.provideServiceEffect(SessionJournals.SessionJournals, McpGuard.journalsInContext))
      // The agent is read at each call: `initialize` may name it (below) after the hooks are made.
      const callOf = McpGuardHooks.toolCallOf({
        sessionId,
        serverId,
        get agentId() {
          return agentId
        }
      })
      const hooks = McpGuardHooks.make({
        guard,
        serverId,
        callOf,
        onInitialize: (params) =>
          Effect.sync(() => {
            clientCanElicit = Approvals.declaresElicitation(params)
            if (Option.isNone(options.agent) && isRecord(params) && isRecord(params.clientInfo)) {
              const name = params.clientInfo.name
              if (typeof name === "string" && name.length > 0) agentId = name
            }
          }),
        observeTools: (tools) => pins === undefined ? Effect.void : pins.observe(serverId, agentId, tools)
      })
      const { StdioClientTransport, StdioServerTransport } = yield* McpSdk.stdioTransports
      const stdin = process.stdin.pipe(
        new LineLimiter(
          MAX_CLIENT_LINE_BYTES,
          JSON.stringify({ "agent-ledger": `a message over ${MAX_CLIENT_LINE_BYTES} bytes, not read` })
        )
      )
      const client = new StdioServerTransport(stdin, process.stdout, { maxBufferSize: 2 * MAX_CLIENT_LINE_BYTES })
      const upstream = new StdioClientTransport({ command, args, env, stderr: "inherit" })
      // McpProxy.run closes the upstream's stdin at the end but does not wait for it to exit (a server that
      // ignores it must not hold up the seal); one still running when the proxy is done gets SIGTERM.
      const startUpstream = upstream.start.bind(upstream)
      upstream.start = () => startUpstream().then(() => void (upstreamPid = upstream.pid ?? undefined))
      // The server transport does not notice stdin ending (the client went away) by itself. The limiter's
      // end comes after the last line it passed on; a stdin that fails never ends it.
      const clientGone = () => void client.close()
      stdin.once("end", clientGone)
      process.stdin.once("error", clientGone)

      /** Seals the journal (bounded: a ledger that cannot write must not hold up the end) and exports it. */
      const endSession = Effect.gen(function*() {
        // Interruptible: this runs in a finalizer (uninterruptible), where a timeout could not cut the wait.
        const sealed = yield* Effect.interruptible(guard.endSession(sessionId)).pipe(
          Effect.timeout(SEAL_TIMEOUT),
          Effect.catchTag("TimeoutException", () =>
            Effect.zipRight(
              Effect.logError(
                `agent-ledger mcp-proxy: the session seal was not durable within ${Duration.format(SEAL_TIMEOUT)}; ` +
                  "it stays queued for the ledger, else the dead letters, else a LOST line"
              ),
              Effect.asSome(Effect.flatMap(guard.journal(sessionId), (journal) => journal.export))
            ))
        )
        if (Option.isSome(options.exportSession) && Option.isSome(sealed)) {
          const file = options.exportSession.value
          yield* writeText(file, JSON.stringify(sealed.value, null, 2) + "\n").pipe(
            Effect.catchAll((error) => Effect.logError(`agent-ledger mcp-proxy: ${error.message}`))
          )
        }
      })
      // Calls in flight are completed inside `run` (before it returns, also when interrupted by a signal),
      // so the seal below covers them.
      const ending = yield* McpProxy.run({
        client,
        upstream,
        hooks,
        callTimeout: Duration.seconds(options.callTimeout),
        relistOnChange: pins !== undefined,
        clientRequests
      }).pipe(
        Effect.mapError((error) =>
          new InputError({
            message: `mcp-proxy: the ${error.side === "upstream" ? "server" : "client connection"} ${error.message}`
          })
        ),
        Effect.ensuring(Effect.zipRight(
          Effect.sync(() => {
            stdin.off("end", clientGone)
            process.stdin.off("error", clientGone)
          }),
          endSession
        ))
      )
      if (ending.side === "upstream") {
        return yield* new InputError({
          message: `mcp-proxy: ${ending.detail} while the client was connected` +
            ` (${ending.inFlight} call${ending.inFlight === 1 ? "" : "s"} in flight ended UpstreamGone)`
        })
      }
    })
    yield* proxy.pipe(
      Effect.provide(AuditLedger.layerFor(options.db, {
        signer,
        shutdownDrainTimeout: SHUTDOWN_DRAIN_TIMEOUT,
        lostEvents: { stderr: true, spillFile: Option.getOrUndefined(options.spill) }
      })),
      Effect.catchTag("LedgerOpenError", (error) => new InputError({ message: error.message })),
      Effect.ensuring(stopUpstream)
    )
  })

export const command = Command.make(
  "mcp-proxy",
  {
    db: Options.text("db").pipe(Options.withDescription("the ledger database (SQLite file, created if missing)")),
    policy: Options.text("policy").pipe(Options.withDescription("the guard policy (JSON, see examples/policy.json)")),
    agent: Options.text("agent").pipe(
      Options.optional,
      Options.withDescription("the agent id to record (default: the client's self-declared clientInfo.name)")
    ),
    session: Options.text("session").pipe(
      Options.optional,
      Options.withDescription("the session id (default: a new UUID v7 per proxy process)")
    ),
    serverId: Options.text("server-id").pipe(
      Options.optional,
      Options.withDescription("the server id to record (default: the server command's base name)")
    ),
    failClosed: Options.boolean("fail-closed").pipe(
      Options.withDescription("refuse every call while refusals cannot be made durable in the ledger")
    ),
    mode: Options.choice("mode", ["enforce", "shadow"]).pipe(
      Options.optional,
      Options.withDescription(
        "shadow: decide and record every call (governance.would-refuse rows) but block and hide nothing; " +
          "overrides the policy's mode"
      )
    ),
    sealEvery: Options.integer("seal-every").pipe(
      Options.withDefault(100),
      Options.withDescription("seal the session journal into the ledger every N entries (0: only at the end)")
    ),
    privateKey: Options.text("private-key").pipe(
      Options.optional,
      Options.withDescription("sign ledger rows with this Ed25519 private key (PKCS#8 PEM, see keygen)")
    ),
    exportSession: Options.text("export-session").pipe(
      Options.optional,
      Options.withDescription("write the session journal here when the session ends")
    ),
    env: Options.text("env").pipe(
      Options.repeated,
      Options.withDescription("KEY=VALUE added to the server's environment (repeatable); it inherits the proxy's")
    ),
    callTimeout: Options.integer("call-timeout").pipe(
      Options.withDefault(60),
      Options.withDescription("seconds a forwarded tools/call may wait for its answer; then the client gets an error")
    ),
    spill: Options.text("spill").pipe(
      Options.optional,
      Options.withDescription(
        "append audit events that reach neither the ledger nor its dead letters here (LOST lines)"
      )
    ),
    server: Args.text({ name: "server command" }).pipe(
      Args.atLeast(1),
      Args.withDescription(
        "the MCP server to start and guard, after `--` (e.g. -- npx @modelcontextprotocol/server-filesystem /data)"
      )
    )
  },
  runMcpProxy
).pipe(Command.withDescription(commandHelp(
  "guard an MCP server: a stdio proxy that journals every tool call and ledgers refusals (README, \"Guarding an MCP server\")",
  [
    "agent-ledger mcp-proxy --db ledger.db --policy policy.json -- npx -y @modelcontextprotocol/server-filesystem ~/projects",
    "agent-ledger mcp-proxy --db ledger.db --policy policy.json --agent claude-desktop --fail-closed -- <server command...>"
  ]
)))
