/**
 * `agent-ledger console <db> [--listen HOST:PORT]`: the auditor's console (src/console) on a ledger opened
 * read-only, until Ctrl-C. On a loopback address it needs no token; anywhere else every request must carry
 * one (`AGENT_LEDGER_CONSOLE_TOKEN`, or a random one made at start), and the printed URL carries it.
 */
import { Args, Command, Options } from "@effect/cli"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { Effect, Either, Layer, Option } from "effect"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import * as ConsoleAssets from "../console/ConsoleAssets.js"
import * as ConsoleServer from "../console/ConsoleServer.js"
import * as ConsoleVerifier from "../console/ConsoleVerifier.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerQuery from "../query/LedgerQuery.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { loadKeyring } from "./shared.js"
import { printLine } from "./TerminalText.js"

export const DEFAULT_LISTEN = "127.0.0.1:7411"

/** `HOST:PORT` (`[::1]:PORT` for IPv6); port 0 takes any free port. */
export const parseListen = (
  text: string
): Effect.Effect<{ readonly host: string; readonly port: number }, InputError> => {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text)
  const port = Number(match?.[2])
  return match !== null && port <= 65535
    ? Effect.succeed({ host: match[1]!.replace(/^\[(.*)\]$/, "$1"), port })
    : Effect.fail(new InputError({ message: `bad --listen '${text}': expected HOST:PORT, e.g. ${DEFAULT_LISTEN}` }))
}

/** Whether `host` is a loopback address (only this machine can connect). */
export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)

export const command = Command.make(
  "console",
  {
    db: Args.text({ name: "db" }).pipe(Args.withDescription("ledger database (file or postgres:// URL)")),
    listen: Options.text("listen").pipe(
      Options.withDefault(DEFAULT_LISTEN),
      Options.withDescription(
        `where to listen (default ${DEFAULT_LISTEN}); off loopback a bearer token is required ` +
          "(AGENT_LEDGER_CONSOLE_TOKEN, or a random one printed in the URL)"
      )
    ),
    publicKeys: Options.text("public-key").pipe(
      Options.repeated,
      Options.withDescription(
        "SPKI PEM public key that \"verify now\" checks row signatures with (repeat for rotated keys)"
      )
    ),
    key: Options.text("key").pipe(
      Options.optional,
      Options.withDescription(
        "the checkpoints' verifier key (agent-ledger checkpoint --key): their signatures are checked"
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const listen = yield* parseListen(options.listen)
      const keyring = yield* loadKeyring(options.publicKeys)
      const verifier = yield* Option.match(options.key, {
        onNone: () => Effect.succeed(Option.none<SignedNote.Verifier>()),
        onSome: (text) =>
          Either.match(SignedNote.parseVerifierKey(text), {
            onLeft: (error) => Effect.fail(new InputError({ message: `--key: ${error.message}` })),
            onRight: (v) => Effect.succeed(Option.some(v))
          })
      })
      const assets = yield* ConsoleAssets.load.pipe(
        Effect.mapError((error) => new InputError({ message: `the console's assets are missing: ${error.detail}` }))
      )
      const loopback = isLoopback(listen.host)
      const token = loopback
        ? Option.none<string>()
        : Option.some(process.env.AGENT_LEDGER_CONSOLE_TOKEN ?? randomBytes(24).toString("base64url"))
      const ledger = LedgerSql.isPostgresUrl(options.db) ? LedgerSql.redactUrl(options.db) : options.db
      const server = ConsoleServer.layer({ ledger, token, loopbackOnly: loopback, verifier, assets }).pipe(
        Layer.provideMerge(Layer.merge(ConsoleVerifier.layer({ keyring, verifier }), LedgerQuery.layer)),
        Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { host: listen.host, port: listen.port })),
        Layer.provideMerge(openLedger(options.db, { readonly: true })),
        Layer.catchAll((error) =>
          Layer.fail(
            error._tag === "InputError"
              ? error
              : new InputError({ message: `cannot listen on ${options.listen}: ${String(error.cause)}` })
          )
        )
      )
      return yield* Effect.scoped(
        Effect.gen(function*() {
          // What the overview shows first: one verification at start, in the background.
          yield* Effect.forkScoped(
            Effect.ignore(Effect.flatMap(ConsoleVerifier.ConsoleVerifier, (v) => v.run(() => Effect.void)))
          )
          const url = yield* HttpServer.addressWith((address) =>
            Effect.succeed(
              address._tag === "TcpAddress"
                ? `http://${
                  address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname
                }:${address.port}/`
                : HttpServer.formatAddress(address)
            )
          )
          yield* printLine(
            `agent-ledger console: ${ledger} (read-only) at ${url}${
              Option.match(token, { onNone: () => "", onSome: (t) => `?token=${encodeURIComponent(t)}` })
            }`
          )
          return yield* Effect.never
        }).pipe(Effect.provide(server))
      )
    })
).pipe(Command.withDescription(commandHelp(
  "serve a read-only web console over a ledger: overview, verify now, refusals over time, rows and their receipts",
  [
    "agent-ledger console ./agent-ledger.db",
    "agent-ledger console ./agent-ledger.db --listen 127.0.0.1:8080 --public-key ./keys/agent-ledger-ed25519.pub.pem",
    "AGENT_LEDGER_CONSOLE_TOKEN=s3cret agent-ledger console postgres://ledger@db/ledger --listen 0.0.0.0:7411"
  ]
)))
