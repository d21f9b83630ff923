/** `agent-ledger stats <db>`: rows, head, dead-letter backlog, refusals by agent and rule, attest levels, time span. */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import * as LedgerStats from "../ledger/LedgerStats.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { printJson, printLine } from "./TerminalText.js"

const table = (counts: Readonly<Record<string, number>>): ReadonlyArray<string> =>
  Object.entries(counts).sort(([, a], [, b]) => b - a).map(([key, n]) => `    ${key.padEnd(24)} ${n}`)

export const runStats = (options: { readonly db: string; readonly json: boolean }) =>
  Effect.gen(function*() {
    const stats = yield* LedgerStats.stats().pipe(
      Effect.provide(openLedger(options.db, { readonly: true })),
      Effect.catchTag("SqlError", (error) => new InputError({ message: `${options.db}: ${error.message}` }))
    )
    if (options.json) {
      return yield* printJson({
        ...stats,
        head: Option.getOrNull(stats.head),
        firstTimestamp: Option.getOrNull(stats.firstTimestamp),
        lastTimestamp: Option.getOrNull(stats.lastTimestamp)
      })
    }
    const lines = [
      `ledger ${options.db}`,
      `  rows:          ${stats.rows}`,
      `  head:          ${
        Option.match(stats.head, { onNone: () => "(empty)", onSome: (h) => `sequence ${h.sequence} ${h.entryHash}` })
      }`,
      `  dead letters:  ${stats.deadLetters.pending} pending, ${stats.deadLetters.replayed} replayed`,
      `  time span:     ${Option.getOrElse(stats.firstTimestamp, () => "-")} .. ${
        Option.getOrElse(stats.lastTimestamp, () => "-")
      }`,
      `  attest levels:`,
      ...table(stats.attestLevels),
      `  refusals by agent:`,
      ...table(stats.refusalsByAgent),
      `  refusals by rule:`,
      ...table(stats.refusalsByRule),
      ...(Object.keys(stats.wouldRefuseByRule).length === 0 ? [] : [
        `  would refuse by rule (shadow mode, not enforced):`,
        ...table(stats.wouldRefuseByRule)
      ])
    ]
    for (const line of lines) yield* printLine(line)
  })

export const command = Command.make(
  "stats",
  {
    db: Args.text({ name: "db" }).pipe(Args.withDescription("ledger database")),
    json: Options.boolean("json").pipe(Options.withDescription("print the statistics as one JSON object"))
  },
  runStats
).pipe(Command.withDescription(commandHelp("summarize a ledger database", [
  "agent-ledger stats ./agent-ledger.db",
  "agent-ledger stats ./agent-ledger.db --json"
])))
