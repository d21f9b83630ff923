/**
 * `agent-ledger export <db>`: the ledger (or a range of it) as JSON Lines for offline verification
 * (docs/FORMAT.md, "Ledger export v1"), streamed page by page so memory stays flat.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option, Stream } from "effect"
import * as LedgerExport from "../LedgerExport.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import * as Progress from "./Progress.js"
import { writeLines } from "./shared.js"

export interface ExportOptions {
  readonly db: string
  readonly from: Option.Option<number>
  readonly to: Option.Option<number>
  readonly out: Option.Option<string>
}

const checkSequence = (name: string, value: Option.Option<number>) =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (n) =>
      Number.isSafeInteger(n) && n >= 0
        ? Effect.succeed(n)
        : Effect.fail(new InputError({ message: `--${name} must be a non-negative integer, got ${n}` }))
  })

export const runExport = (options: ExportOptions) =>
  Effect.gen(function*() {
    const from = yield* checkSequence("from", options.from)
    const to = yield* checkSequence("to", options.to)
    if (from !== undefined && to !== undefined && from > to) {
      return yield* new InputError({ message: `--from ${from} is after --to ${to}` })
    }
    const out = Option.getOrUndefined(options.out)
    const progress = Progress.make("exported rows")
    let header: LedgerExport.ExportHeader | undefined
    const lines = LedgerExport.exportLines({ from, to }).pipe(
      Stream.zipWithIndex,
      Stream.tap(([line, i]) =>
        i === 0 ? Effect.sync(() => header = JSON.parse(line) as LedgerExport.ExportHeader) : progress.update(i)
      ),
      Stream.map(([line]) => line)
    )
    const written = yield* writeLines(lines, out).pipe(
      Effect.provide(openLedger(options.db, { readonly: true })),
      Effect.catchTags({
        SqlError: (error) => new InputError({ message: `${options.db}: ${error.message}` }),
        ExportAnchorMissing: (error) => new InputError({ message: `${options.db}: ${error.message}` })
      })
    )
    yield* progress.finish
    if (from !== undefined && header !== undefined && header.row_count === 0) {
      yield* Console.error(
        `agent-ledger: warning: --from ${from} is past the head of ${options.db}; nothing was exported`
      )
    }
    if (out !== undefined) yield* Console.error(`agent-ledger: exported ${written - 1} rows to ${out}`)
  })

export const command = Command.make(
  "export",
  {
    db: Args.text({ name: "db" }).pipe(Args.withDescription("ledger database")),
    from: Options.integer("from").pipe(Options.optional, Options.withDescription("first sequence (inclusive)")),
    to: Options.integer("to").pipe(Options.optional, Options.withDescription("last sequence (inclusive)")),
    out: Options.text("out").pipe(Options.optional, Options.withDescription("output file (default: stdout)"))
  },
  runExport
).pipe(Command.withDescription(commandHelp(
  "export ledger rows as JSON Lines for offline verification (a header anchors a mid-chain range)",
  [
    "agent-ledger export ./agent-ledger.db --out rows.jsonl",
    "agent-ledger export ./agent-ledger.db --from 100 --to 199"
  ]
)))
