/**
 * `agent-ledger hook`: Claude Code's command hook. Reads the hook's JSON on stdin and prints the answer on
 * stdout for Claude Code, in one of two modes:
 *
 * - `[--url URL]`: posts it to a running `agent-ledger serve` with the bearer token in `AGENT_LEDGER_TOKEN`
 *   and prints serve's answer. With `--cert FILE --key FILE` (PEM) it presents that client certificate, for a
 *   serve with `--client-ca` (the token is then optional: the certificate's pin names the agent); `--ca FILE`
 *   trusts that CA for serve's own certificate (else the system's and `NODE_EXTRA_CA_CERTS`).
 * - `--db FILE --policy FILE [--agent ID]` (no server): decides it alone (`StandaloneHook`) against the
 *   session's journal stored in the ledger, appends the journal entries and ledger rows, and answers once
 *   they are durable. Events of one ledger are serialised by an exclusive SQLite lock on `FILE.hook-lock`
 *   (`BEGIN IMMEDIATE`, held from before the ledger is read until it is closed; released by the OS if the
 *   process dies), taken with a bounded, jittered retry. SQLite files only.
 *
 * Fail-closed: when serve cannot be reached, refuses the request or answers something that is not a hook
 * output (or the standalone decision cannot be made and made durable), a `PreToolUse` is answered `deny`
 * (exit 0, the reason names the problem) so the tool does not run unguarded; any other event exits 2 with
 * one line on stderr.
 */
import { Command, Options } from "@effect/cli"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Cause, Console, Context, Duration, Effect, Either, Layer, Option, Schedule } from "effect"
import * as fs from "node:fs"
import * as https from "node:https"
import * as AuditLedger from "../AuditLedger.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import { sqlite as sqliteDialect } from "../internal/sqlDialect.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as StandaloneHook from "../serve/StandaloneHook.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"

export const DEFAULT_URL = "http://127.0.0.1:8787/v1/hooks/claude-code"

/** The longest hook input read from stdin (a `PostToolUse` carries the tool's whole result). */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024

export const TOKEN_VARIABLE = "AGENT_LEDGER_TOKEN"

/** Claude Code's answer that denies a `PreToolUse`, with `reason` shown to the model. */
export const failClosedAnswer = (reason: string) => ({
  hookSpecificOutput: {
    hookEventName: "PreToolUse",
    permissionDecision: "deny",
    permissionDecisionReason: `agent-ledger hook: ${reason}; the call is refused (fail-closed)`
  }
})

const readStdin = Effect.async<Buffer, InputError>((resume) => {
  const chunks: Array<Buffer> = []
  let size = 0
  const onData = (chunk: Buffer) => {
    size += chunk.length
    if (size > MAX_INPUT_BYTES) {
      cleanup()
      resume(Effect.fail(new InputError({ message: `hook: the input is larger than ${MAX_INPUT_BYTES} bytes` })))
    } else chunks.push(chunk)
  }
  const onEnd = () => {
    cleanup()
    resume(Effect.succeed(Buffer.concat(chunks)))
  }
  const onError = (error: Error) => {
    cleanup()
    resume(Effect.fail(new InputError({ message: `hook: cannot read stdin (${error.message})` })))
  }
  const cleanup = () => {
    process.stdin.off("data", onData)
    process.stdin.off("end", onEnd)
    process.stdin.off("error", onError)
    process.stdin.pause()
  }
  process.stdin.on("data", onData)
  process.stdin.once("end", onEnd)
  process.stdin.once("error", onError)
})

/** The event of a hook input; a `PreToolUse` when it cannot be told (so a failure denies). */
const eventOf = (input: Buffer): string => {
  try {
    const parsed = JSON.parse(input.toString("utf8")) as unknown
    if (typeof parsed === "object" && parsed !== null && "hook_event_name" in parsed) {
      const name = (parsed as { hook_event_name: unknown }).hook_event_name
      if (typeof name === "string") return name
    }
  } catch {
    // Not JSON: serve will say so; a failure is treated as a PreToolUse's.
  }
  return "PreToolUse"
}

/** Posts the input; the answer's text when serve answered 2xx with a JSON object, else why not. */
/** serve's answer as the hook output to print: a 2xx with a JSON object, else an error saying why not. */
const hookOutput = (status: number, text: string): string => {
  if (status < 200 || status > 299) {
    let detail = ""
    try {
      const error = (JSON.parse(text) as { error?: unknown }).error
      if (typeof error === "string") detail = `: ${error}`
    } catch {
      // No JSON error to add.
    }
    throw new Error(`serve answered ${status}${detail}`)
  }
  const parsed = JSON.parse(text) as unknown
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error("serve did not answer a hook output object")
  }
  return JSON.stringify(parsed)
}

/** A client certificate and key to present, and/or a CA to trust for serve's certificate (all PEM). */
interface ClientTls {
  readonly certificate?: { readonly cert: Buffer; readonly key: Buffer } | undefined
  readonly ca?: Buffer | undefined
}

/** One POST over HTTPS presenting `tls`'s client certificate; the status and body text. */
const postWithCertificate = (
  url: string,
  headers: Record<string, string>,
  input: Buffer,
  signal: AbortSignal,
  tls: ClientTls
) =>
  new Promise<{ status: number; text: string }>((resolve, reject) => {
    const request = https.request(url, {
      method: "POST",
      headers,
      signal,
      agent: false,
      ...tls.certificate,
      ...(tls.ca === undefined ? {} : { ca: tls.ca })
    }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }))
      response.on("error", reject)
    })
    request.on("error", reject)
    request.end(input)
  })

/** Posts the input; the answer's text when serve answered 2xx with a JSON object, else why not. */
const postToServe = (
  url: string,
  token: string | undefined,
  input: Buffer,
  timeoutSeconds: number,
  tls: ClientTls | undefined
) =>
  Effect.tryPromise({
    try: async () => {
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (token !== undefined) headers.authorization = `Bearer ${token}`
      const signal = AbortSignal.timeout(timeoutSeconds * 1000)
      if (tls !== undefined) {
        if (!url.startsWith("https:")) throw new Error("--cert and --ca need an https:// --url")
        const { status, text } = await postWithCertificate(url, headers, input, signal, tls)
        return hookOutput(status, text)
      }
      const response = await fetch(url, { method: "POST", headers, body: input, signal })
      return hookOutput(response.status, await response.text())
    },
    catch: (error) => {
      const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : ""
      return error instanceof Error ? `${error.message}${cause}` : String(error)
    }
  })

/** `--cert`, `--key`, `--ca` read; a string saying why when they cannot be. */
const readClientTls = (options: HookOptions): ClientTls | undefined | string => {
  const cert = Option.getOrUndefined(options.cert ?? Option.none())
  const key = Option.getOrUndefined(options.key ?? Option.none())
  const ca = Option.getOrUndefined(options.ca ?? Option.none())
  if ((cert === undefined) !== (key === undefined)) return "--cert and --key go together"
  if (cert === undefined && ca === undefined) return undefined
  const read = (flag: string, file: string) => {
    try {
      return fs.readFileSync(file)
    } catch (error) {
      throw new Error(`${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
    }
  }
  try {
    return {
      certificate: cert === undefined || key === undefined
        ? undefined
        : { cert: read("--cert", cert), key: read("--key", key) },
      ca: ca === undefined ? undefined : read("--ca", ca)
    }
  } catch (error) {
    return (error as Error).message
  }
}

/** The agent standalone events are recorded for when `--agent` is not given. */
export const DEFAULT_AGENT = "claude-code"

/** The file whose SQLite write lock serialises standalone hook processes of one ledger. */
export const lockFileOf = (db: string): string => `${db}.hook-lock`

/**
 * Holds the ledger's hook lock for the scope: `BEGIN IMMEDIATE` on `FILE.hook-lock`, retried while another
 * hook holds it (no busy wait inside SQLite: the retry is `Schedule`-driven, so `Clock` bounds it).
 */
export const ledgerLock = (db: string, wait: Duration.DurationInput) =>
  Effect.gen(function*() {
    const sql = Context.get(
      yield* Layer.build(SqliteClient.layer({ filename: lockFileOf(db), disableWAL: true })),
      SqliteClient.SqliteClient
    )
    yield* sql.unsafe("PRAGMA busy_timeout = 0")
    yield* sql.unsafe("BEGIN IMMEDIATE").pipe(
      Effect.retry({
        schedule: Schedule.exponential("2 millis", 1.5).pipe(
          Schedule.union(Schedule.spaced("50 millis")),
          Schedule.jittered
        ),
        while: (error) => sqliteDialect.classify(error).kind === "busy"
      }),
      Effect.timeoutFail({
        duration: wait,
        onTimeout: () => `another hook held the ledger's lock (${lockFileOf(db)}) for ${Duration.format(wait)}`
      })
    )
    yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe("ROLLBACK")))
  }).pipe(
    Effect.mapError((error) => typeof error === "string" ? error : `cannot lock ${lockFileOf(db)}: ${error.message}`)
  )

/** Decides the event alone against the ledger; the hook output, or why there is none. */
const decideStandalone = (
  options: { readonly db: string; readonly policy: string; readonly agent: string; readonly timeout: number },
  input: Buffer
): Effect.Effect<Either.Either<string, string>> =>
  Effect.gen(function*() {
    if (LedgerSql.isPostgresUrl(options.db)) {
      return yield* Effect.fail("a postgres:// --db is not supported in standalone mode (run serve and use --url)")
    }
    const policy = yield* GuardPolicy.load(options.policy).pipe(
      Effect.mapError((error) => `${options.policy}: ${error.message}`)
    )
    const raw = yield* Effect.try({
      try: () => JSON.parse(input.toString("utf8")) as unknown,
      catch: () => "bad hook input: not JSON"
    })
    const wait = Duration.seconds(Math.max(1, options.timeout))
    const answer = yield* Effect.scoped(Effect.gen(function*() {
      yield* ledgerLock(options.db, wait)
      // Provided inside the lock's scope: the ledger is closed (flushed) before the lock is released.
      return yield* StandaloneHook.handle({ policy, agentId: options.agent, durableTimeout: wait }, raw).pipe(
        Effect.provide(AuditLedger.layerFor(options.db, { writerThread: false })),
        Effect.mapError((error) => `ledger ${options.db}: ${error.message}`)
      )
    }))
    return answer._tag === "Output" ? JSON.stringify(answer.output) : yield* Effect.fail(answer.reason)
  }).pipe(
    Effect.catchAllDefect((defect) => Effect.fail(`the decision failed (${Cause.pretty(Cause.die(defect))})`)),
    Effect.either
  )

export interface HookOptions {
  readonly url: Option.Option<string>
  readonly timeout: number
  readonly db: Option.Option<string>
  readonly policy: Option.Option<string>
  readonly agent: Option.Option<string>
  readonly cert?: Option.Option<string> | undefined
  readonly key?: Option.Option<string> | undefined
  readonly ca?: Option.Option<string> | undefined
}

export const runHook = (options: HookOptions) =>
  Effect.gen(function*() {
    if (Option.isSome(options.db) && Option.isSome(options.url)) {
      return yield* new InputError({ message: "hook: give --url (serve decides) or --db (decide alone), not both" })
    }
    if (Option.isSome(options.db) !== Option.isSome(options.policy)) {
      return yield* new InputError({ message: "hook: --db and --policy go together (standalone mode)" })
    }
    const tlsFlags = [options.cert, options.key, options.ca].some((o) => o !== undefined && Option.isSome(o))
    if (Option.isSome(options.db) && tlsFlags) {
      return yield* new InputError({ message: "hook: --cert, --key and --ca are for serve (--url), not for --db" })
    }
    if (Option.isNone(options.db) && Option.isSome(options.agent)) {
      return yield* new InputError({ message: "hook: --agent is for standalone mode (--db); serve takes the token's" })
    }
    const input = yield* readStdin
    let answer: Either.Either<string, string>
    let where: string
    if (Option.isSome(options.db) && Option.isSome(options.policy)) {
      where = `standalone (${options.db.value})`
      answer = yield* decideStandalone({
        db: options.db.value,
        policy: options.policy.value,
        agent: Option.getOrElse(options.agent, () => DEFAULT_AGENT),
        timeout: options.timeout
      }, input)
    } else {
      const url = Option.getOrElse(options.url, () => DEFAULT_URL)
      where = `serve at ${url}`
      const variable = process.env[TOKEN_VARIABLE]
      const token = variable === undefined || variable === "" ? undefined : variable
      const tls = readClientTls(options)
      answer = typeof tls === "string"
        ? Either.left(tls)
        : token === undefined && tls?.certificate === undefined
        ? Either.left(`${TOKEN_VARIABLE} is not set`)
        : yield* Effect.either(postToServe(url, token, input, Math.max(1, options.timeout), tls))
    }
    if (answer._tag === "Right") return yield* Console.log(answer.right)
    if (eventOf(input) === "PreToolUse") {
      return yield* Console.log(JSON.stringify(failClosedAnswer(`${where}: ${answer.left}`)))
    }
    return yield* new InputError({ message: `hook: ${where}: ${answer.left}` })
  })

export const command = Command.make(
  "hook",
  {
    url: Options.text("url").pipe(
      Options.optional,
      Options.withDescription(`serve's Claude Code hook endpoint (default ${DEFAULT_URL}); not with --db`)
    ),
    timeout: Options.integer("timeout").pipe(
      Options.withDefault(10),
      Options.withDescription(
        "seconds to wait for serve (standalone: for the ledger's lock, and for durability); then a PreToolUse is denied"
      )
    ),
    db: Options.text("db").pipe(
      Options.optional,
      Options.withDescription(
        "standalone mode, no server: decide against the session's journal stored in this SQLite ledger"
      )
    ),
    policy: Options.file("policy").pipe(
      Options.optional,
      Options.withDescription("standalone mode: the guard policy (JSON), as serve's --policy")
    ),
    agent: Options.text("agent").pipe(
      Options.optional,
      Options.withDescription(`standalone mode: the agent id recorded (default ${DEFAULT_AGENT})`)
    ),
    cert: Options.text("cert").pipe(
      Options.optional,
      Options.withDescription("present this client certificate (PEM) to a serve with --client-ca; needs --key")
    ),
    key: Options.text("key").pipe(Options.optional, Options.withDescription("the private key of --cert (PEM)")),
    ca: Options.text("ca").pipe(
      Options.optional,
      Options.withDescription("trust this CA (PEM) for serve's certificate (else the system's, NODE_EXTRA_CA_CERTS)")
    )
  },
  runHook
).pipe(Command.withDescription(commandHelp(
  "command hook for Claude Code: post the hook's stdin to a running serve (token in AGENT_LEDGER_TOKEN), or with --db and --policy decide it alone against the session's journal in the ledger; print the answer; fail-closed",
  [
    `AGENT_LEDGER_TOKEN=al_... agent-ledger hook --url ${DEFAULT_URL} < input.json`,
    "agent-ledger hook --url https://guard.internal:8443/v1/hooks/claude-code --cert me.crt --key me.key --ca ca.crt < input.json",
    "agent-ledger hook --db ./ledger.db --policy ./policy.json --agent alice < input.json"
  ]
)))
