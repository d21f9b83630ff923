/**
 * `agent-ledger token new --agent ID`: a fresh bearer token for `serve`, and the line to add to its
 * `--tokens` file (the token's SHA-256 only: the file holds no secret). The token is printed once; give it
 * to the agent (e.g. `AGENT_LEDGER_TOKEN` for `agent-ledger hook`, or an HTTP hook's `Authorization` header).
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect } from "effect"
import * as BearerTokens from "../serve/BearerTokens.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"

export const runToken = (options: { readonly action: "new"; readonly agent: string }) =>
  Effect.gen(function*() {
    if (!BearerTokens.AGENT_ID.test(options.agent)) {
      return yield* new InputError({
        message: `token new: --agent '${options.agent}': 1 to 128 of A-Z a-z 0-9 . _ : @ / + -`
      })
    }
    const { line, token } = BearerTokens.generate(options.agent)
    yield* Console.log(`token:       ${token}`)
    yield* Console.log(`tokens line: ${line}`)
  })

export const command = Command.make(
  "token",
  {
    action: Args.choice([["new", "new" as const]], { name: "action" }).pipe(
      Args.withDescription("new: make a fresh token")
    ),
    agent: Options.text("agent").pipe(Options.withDescription("the agent id the token stands for"))
  },
  runToken
).pipe(Command.withDescription(commandHelp(
  "make a bearer token for serve, and its line for the --tokens file",
  ["agent-ledger token new --agent claude-code-alice"]
)))
