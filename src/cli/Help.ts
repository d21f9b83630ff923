/**
 * Help text the way operators expect it: a description, then EXAMPLES and EXIT CODES sections in every
 * command's `--help` (rendered by @effect/cli, without its type boilerplate: see `cliConfig`), and no colour
 * codes when the output is not a terminal or `NO_COLOR` is set.
 */
import { CliConfig, HelpDoc } from "@effect/cli"
import { Console, Effect, Layer } from "effect"

/** What every command may exit with (Cli.ts maps errors to them). */
export const EXIT_CODES: ReadonlyArray<readonly [number, string]> = [
  [0, "success"],
  [1, "a verification failed (the report says what)"],
  [2, "usage error or unusable input (one line on stderr)"],
  [70, "internal error (a bug in agent-ledger: please report it)"],
  [130, "interrupted (Ctrl-C); what was queued is flushed first"]
]

/** A command's help: its description, examples (`agent-ledger ...` lines) and its exit codes. */
export const commandHelp = (
  description: string,
  examples: ReadonlyArray<string>,
  exitCodes: ReadonlyArray<number> = [0, 2, 70, 130]
): HelpDoc.HelpDoc =>
  HelpDoc.blocks([
    HelpDoc.p(description),
    HelpDoc.h1("EXAMPLES"),
    ...examples.map((example) => HelpDoc.p(`  ${example}`)),
    HelpDoc.h1("EXIT CODES"),
    ...EXIT_CODES.filter(([code]) => exitCodes.includes(code)).map(([code, what]) =>
      HelpDoc.p(`  ${String(code).padEnd(4)}${what}`)
    )
  ])

/** No built-in options (wizard, completions, log level) and no type blurbs in help; "did you mean" on. */
export const cliConfig = CliConfig.layer({ showBuiltIns: false, showTypes: false, autoCorrectLimit: 2 })

const ANSI = /\u001b\[[0-9;]*m/g

/** Whether colour codes may be written: a terminal, and `NO_COLOR` unset (https://no-color.org). */
export const colourAllowed = (stream: { readonly isTTY?: boolean | undefined } = process.stdout): boolean =>
  stream.isTTY === true && (process.env.NO_COLOR === undefined || process.env.NO_COLOR === "")

/**
 * The type blurbs @effect/cli writes under every option in `--help` ("A user-defined piece of text.");
 * the option's own description follows them.
 */
const TYPE_BLURBS = new Set([
  "A user-defined piece of text.",
  "A true or false value.",
  "An integer.",
  "A floating point number.",
  "A date without a time-zone in the ISO-8601 format, such as 2007-12-03T10:15:30.",
  "A file without a time-zone in the ISO-8601 format, such as 2007-12-03T10:15:30."
])

/** Drops colour codes (unless allowed) and the type blurbs from a help text. */
const cleanText = (text: string, colour: boolean): string => {
  const plain = colour ? text : text.replace(ANSI, "")
  return plain.split("\n").filter((line) => {
    const bare = line.replace(ANSI, "").trim()
    return !TYPE_BLURBS.has(bare) && !/^(A|An) (path|file|directory) /.test(bare)
  }).join("\n").replace(/\n{3,}/g, "\n\n")
}

/**
 * Every stderr line of the CLI names it (`agent-ledger: ...`), the argument parser's errors included: they
 * arrive as a multi-line help text, and become one line.
 */
const errorLine = (text: string): string => {
  const line = text.split("\n").map((part) => part.trim()).filter((part) => part.length > 0).join(" ")
  return line.startsWith("agent-ledger") ? line : `agent-ledger: ${line}`
}

const clean = (args: ReadonlyArray<unknown>, colour: boolean): ReadonlyArray<unknown> =>
  args.map((arg) => typeof arg === "string" ? cleanText(arg, colour) : arg)

/** The CLI's console: help without type blurbs, colour only on a terminal without `NO_COLOR`. */
export const cliConsole = (colour: boolean) =>
  Effect.map(Console.consoleWith(Effect.succeed), (console): Console.Console => ({
    ...console,
    log: (...args) => console.log(...clean(args, colour)),
    error: (...args) => console.error(errorLine(clean(args, false).map(String).join(" "))),
    unsafe: {
      ...console.unsafe,
      log: (...args) => console.unsafe.log(...clean(args, colour)),
      error: (...args) => console.unsafe.error(errorLine(clean(args, false).map(String).join(" ")))
    }
  }))

export const consoleLayer: Layer.Layer<never> = Layer.unwrapEffect(
  Effect.map(cliConsole(colourAllowed()), (console) => Console.setConsole(console))
)

/** Edit distance, for "did you mean". */
export const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length]!
}

/** The closest of `candidates` to `given`, when it is close enough to be a typo. */
const closest = (given: string, candidates: Iterable<string>): string | undefined => {
  const [best] = [...candidates].sort((x, y) => distance(given, x) - distance(given, y))
  return best !== undefined && distance(given, best) <= 2 ? best : undefined
}

/**
 * The first `--option` of `args` (a command's arguments, before any `--`) that is not one of `known`, as
 * `unknown option '--pinn' for verify; did you mean '--pin'?`.
 */
export const unknownOption = (
  command: string,
  args: ReadonlyArray<string>,
  known: ReadonlySet<string>
): string | undefined => {
  for (const arg of args) {
    if (arg === "--") return undefined
    if (!arg.startsWith("--")) continue
    const name = arg.split("=", 1)[0]!
    if (known.has(name)) continue
    const suggestion = closest(name, known)
    return `agent-ledger: unknown option '${name}' for ${command}${
      suggestion === undefined ? "" : `; did you mean '${suggestion}'?`
    } (see agent-ledger ${command} --help)`
  }
  return undefined
}

/** The `--options` a command's help lists (its own and, for a command group, its subcommands'). */
export const optionsOf = (help: HelpDoc.HelpDoc): ReadonlySet<string> =>
  new Set([
    "--help",
    "--version",
    ...Array.from(HelpDoc.toAnsiText(help).replace(ANSI, "").matchAll(/(^|[\s[(,])(--[a-z][a-z0-9-]*)/gm), (m) => m[2]!)
  ])

/** `unknown command 'verfy'; did you mean 'verify'?` (the suggestion only when one is close). */
export const unknownCommand = (given: string, commands: ReadonlyArray<string>): string => {
  const best = closest(given, commands)
  const suggestion = best !== undefined ? `; did you mean '${best}'?` : ""
  return `agent-ledger: unknown command '${given}'${suggestion} (commands: ${commands.join(", ")})`
}
