/**
 * `agent-ledger dlq list <db>` and `agent-ledger dlq replay <db>`: inspect and replay the dead-letter
 * table. Replay appends through the same SQL sink as the pipeline (signing with `--private-key` when
 * given, and then only dead letters that key signed) and is idempotent. A dead letter that cannot be
 * replayed is listed and skipped; the command then exits 1.
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as DeadLetters from "../ledger/DeadLetters.js"
import * as SqlAuditSink from "../ledger/SqlAuditSink.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import * as Progress from "./Progress.js"
import { printJson, printLine } from "./TerminalText.js"

const db = Args.text({ name: "db" }).pipe(Args.withDescription("ledger database"))

const readFailure = (path: string) => (error: { readonly message: string }) =>
  new InputError({ message: `${path}: cannot read the dead-letter table (${error.message})` })

export const runList = (options: { readonly db: string; readonly json: boolean }) =>
  Effect.gen(function*() {
    const letters = yield* DeadLetters.list().pipe(
      Effect.provide(openLedger(options.db, { readonly: true })),
      Effect.mapError(readFailure(options.db))
    )
    if (options.json) return yield* printJson({ deadLetters: letters })
    const pending = letters.filter((l) => l.replayed_at === null).length
    yield* printLine(`dead letters in ${options.db}: ${pending} pending, ${letters.length - pending} replayed`)
    for (const l of letters) {
      yield* printLine(
        `  #${l.dlq_id} ${
          l.replayed_at === null ? "pending " : "replayed"
        } event ${l.id} agent ${l.agent_id} failed ${l.failed_at}: ${l.failure_reason}`
      )
    }
  })

export interface ReplayOptions {
  readonly db: string
  readonly dryRun: boolean
  readonly privateKey: Option.Option<string>
  readonly trustUnsignedDeadLetters: boolean
}

export const runReplay = (options: ReplayOptions) =>
  Effect.gen(function*() {
    const signer = yield* Option.match(options.privateKey, {
      onNone: () => Effect.succeed(undefined),
      onSome: (file) =>
        AuditSigner.loadPrivateKeyFile(file).pipe(Effect.mapError((e) => new InputError({ message: e.message })))
    })
    const ledger = SqlAuditSink.layer({ signer }).pipe(
      Layer.provideMerge(openLedger(options.db, { readonly: options.dryRun }))
    )
    const progress = Progress.make("replayed dead letters")
    const result = yield* DeadLetters.replayDeadLetters({
      dryRun: options.dryRun,
      onProgress: progress.update,
      trustUnsignedDeadLetters: options.trustUnsignedDeadLetters
    }).pipe(
      Effect.ensuring(progress.finish),
      Effect.provide(ledger),
      Effect.mapError((error) =>
        error._tag === "InputError" ? error : new InputError({ message: `${options.db}: ${error.message}` })
      )
    )
    if (result.dryRun) {
      yield* printLine(
        `dry run: ${
          result.pending - result.failed.length
        } dead letters would be replayed, ${result.failed.length} refused; nothing was written`
      )
    } else {
      yield* printLine(
        `replayed ${result.replayed} of ${result.pending} pending dead letters (${result.alreadyInChain} were already in the chain)`
      )
    }
    for (const f of result.failed) {
      yield* printLine(`  #${f.dlqId} event ${f.eventId} still pending: ${f.reason}`)
    }
    if (result.dryRun) return
    if (result.failed.length > 0) {
      return yield* new VerificationFailed({ message: `${result.failed.length} dead letters could not be replayed` })
    }
  })

const list = Command.make(
  "list",
  { db, json: Options.boolean("json").pipe(Options.withDescription("print the dead letters as JSON")) },
  runList
).pipe(
  Command.withDescription(commandHelp("list dead-lettered events", ["agent-ledger dlq list ./agent-ledger.db --json"]))
)

const replay = Command.make(
  "replay",
  {
    db,
    dryRun: Options.boolean("dry-run").pipe(Options.withDescription("show what would be replayed, write nothing")),
    privateKey: Options.text("private-key").pipe(
      Options.optional,
      Options.withDescription(
        "PKCS#8 PEM Ed25519 key to sign the replayed rows with; only dead letters this key signed are replayed"
      )
    ),
    trustUnsignedDeadLetters: Options.boolean("trust-unsigned-dead-letters").pipe(
      Options.withDescription(
        "with --private-key, also sign dead letters that carry no signature (written before dead letters were signed)"
      )
    )
  },
  runReplay
).pipe(Command.withDescription(commandHelp(
  "re-append pending dead letters to the chain, in order (idempotent); with a key, only dead letters it signed; exits 1 when some stay pending (each listed)",
  ["agent-ledger dlq replay ./agent-ledger.db --dry-run", "agent-ledger dlq replay ./agent-ledger.db"],
  [0, 1, 2, 70, 130]
)))

export const command = Command.make("dlq").pipe(
  Command.withDescription(commandHelp("inspect and replay the dead-letter table", [
    "agent-ledger dlq list ./agent-ledger.db",
    "agent-ledger dlq replay ./agent-ledger.db --dry-run"
  ], [0, 1, 2, 70, 130])),
  Command.withSubcommands([list, replay])
)
