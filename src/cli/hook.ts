/**
 * `agent-ledger hook [--url URL]`: Claude Code's command hook. Reads the hook's JSON on stdin, posts it to a
 * running `agent-ledger serve` with the bearer token in `AGENT_LEDGER_TOKEN`, and prints serve's answer on
 * stdout for Claude Code.
 *
 * Fail-closed: when serve cannot be reached, refuses the request or answers something that is not a hook
 * output, a `PreToolUse` is answered `deny` (exit 0, the reason names the problem) so the tool does not
 * run unguarded; any other event exits 2 with one line on stderr.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
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
const postToServe = (url: string, token: string, input: Buffer, timeoutSeconds: number) =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: input,
        signal: AbortSignal.timeout(timeoutSeconds * 1000)
      })
      const text = await response.text()
      if (response.status < 200 || response.status > 299) {
        let detail = ""
        try {
          const error = (JSON.parse(text) as { error?: unknown }).error
          if (typeof error === "string") detail = `: ${error}`
        } catch {
          // No JSON error to add.
        }
        throw new Error(`serve answered ${response.status}${detail}`)
      }
      const parsed = JSON.parse(text) as unknown
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
        throw new Error("serve did not answer a hook output object")
      }
      return JSON.stringify(parsed)
    },
    catch: (error) => {
      const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : ""
      return error instanceof Error ? `${error.message}${cause}` : String(error)
    }
  })

export const runHook = (options: { readonly url: string; readonly timeout: number }) =>
  Effect.gen(function*() {
    const input = yield* readStdin
    const token = process.env[TOKEN_VARIABLE]
    const answer = token === undefined || token === ""
      ? { _tag: "Left" as const, left: `${TOKEN_VARIABLE} is not set` }
      : yield* Effect.either(postToServe(options.url, token, input, Math.max(1, options.timeout)))
    if (answer._tag === "Right") return yield* Console.log(answer.right)
    if (eventOf(input) === "PreToolUse") {
      return yield* Console.log(JSON.stringify(failClosedAnswer(`serve at ${options.url}: ${answer.left}`)))
    }
    return yield* new InputError({ message: `hook: serve at ${options.url}: ${answer.left}` })
  })

export const command = Command.make(
  "hook",
  {
    url: Options.text("url").pipe(
      Options.withDefault(DEFAULT_URL),
      Options.withDescription("serve's Claude Code hook endpoint")
    ),
    timeout: Options.integer("timeout").pipe(
      Options.withDefault(10),
      Options.withDescription("seconds to wait for serve; then a PreToolUse is denied")
    )
  },
  runHook
).pipe(Command.withDescription(commandHelp(
  "command hook for Claude Code: post the hook's stdin to a running serve (token in AGENT_LEDGER_TOKEN), print its answer; fail-closed",
  [`AGENT_LEDGER_TOKEN=al_... agent-ledger hook --url ${DEFAULT_URL} < input.json`]
)))
