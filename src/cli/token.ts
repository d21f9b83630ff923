/**
 * `agent-ledger token new --agent ID`: a fresh bearer token for `serve`, and the line to add to its
 * `--tokens` file (the token's SHA-256 only: the file holds no secret). The token is printed once; give it
 * to the agent (e.g. `AGENT_LEDGER_TOKEN` for `agent-ledger hook`, or an HTTP hook's `Authorization` header).
 *
 * `agent-ledger token pin --agent ID --cert FILE`: the `--client-certs` line that makes a client certificate
 * (PEM) that agent's, with the certificate's subject, issuer and validity to check before adding it.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as BearerTokens from "../serve/BearerTokens.js"
import * as ClientCertificates from "../serve/ClientCertificates.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"

export const runToken = (
  options: { readonly action: "new" | "pin"; readonly agent: string; readonly cert?: Option.Option<string> }
) =>
  Effect.gen(function*() {
    if (!BearerTokens.AGENT_ID.test(options.agent)) {
      return yield* new InputError({
        message: `token ${options.action}: --agent '${options.agent}': 1 to 128 of A-Z a-z 0-9 . _ : @ / + -`
      })
    }
    if (options.action === "pin") {
      const file = options.cert === undefined ? undefined : Option.getOrUndefined(options.cert)
      if (file === undefined) return yield* new InputError({ message: "token pin: --cert FILE is required" })
      const bytes = yield* Effect.try({
        try: () => fs.readFileSync(file),
        catch: (error) =>
          new InputError({
            message: `token pin: --cert ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`
          })
      })
      const certificate = yield* Effect.try({
        try: () => new crypto.X509Certificate(bytes),
        catch: () => new InputError({ message: `token pin: --cert ${file}: not a PEM or DER X.509 certificate` })
      })
      yield* Console.log(`subject:          ${certificate.subject.replaceAll("\n", ", ")}`)
      yield* Console.log(`issuer:           ${certificate.issuer.replaceAll("\n", ", ")}`)
      yield* Console.log(`valid:            ${certificate.validFrom} to ${certificate.validTo}`)
      yield* Console.log(`client-certs line: ${ClientCertificates.lineFor(options.agent, certificate.raw)}`)
      return
    }
    const { line, token } = BearerTokens.generate(options.agent)
    yield* Console.log(`token:       ${token}`)
    yield* Console.log(`tokens line: ${line}`)
  })

export const command = Command.make(
  "token",
  {
    action: Args.choice([["new", "new" as const], ["pin", "pin" as const]], { name: "action" }).pipe(
      Args.withDescription("new: make a fresh token; pin: the --client-certs line for a client certificate")
    ),
    agent: Options.text("agent").pipe(Options.withDescription("the agent id the token or certificate stands for")),
    cert: Options.text("cert").pipe(
      Options.optional,
      Options.withDescription("pin: the client certificate (PEM or DER) to pin to --agent")
    )
  },
  runToken
).pipe(Command.withDescription(commandHelp(
  "make a bearer token for serve and its line for the --tokens file, or pin a client certificate to an agent",
  ["agent-ledger token new --agent claude-code-alice", "agent-ledger token pin --agent ci-runner --cert ci-runner.crt"]
)))
