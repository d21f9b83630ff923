/**
 * Help text the way operators expect it (git's, cosign's): a usage line with placeholders (`--pin SEQ:HASH`,
 * `--db FILE`), optional options in brackets, a description, then EXAMPLES and EXIT CODES sections in every
 * command's `--help` (rendered by @effect/cli, rewritten here without its type boilerplate), a top-level help
 * that lists every command with one line, and colour only where the terminal takes it.
 */
import { CliConfig, HelpDoc } from "@effect/cli"
import { Console, Effect, Layer } from "effect"
import * as tty from "node:tty"
import { stripVTControlCharacters } from "node:util"

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

/**
 * No built-in options (wizard, completions, log level); types shown, so that `cleanText` can turn them into
 * placeholders; "did you mean" on.
 */
export const cliConfig = CliConfig.layer({ showBuiltIns: false, showTypes: true, autoCorrectLimit: 2 })

/**
 * Whether colour codes may be written, as Node decides it for a terminal (`hasColors()`: `NO_COLOR`,
 * `NODE_DISABLE_COLORS` and `TERM=dumb` turn colour off), and `FORCE_COLOR` (other than `0`/`false`) turning
 * it on even through a pipe.
 */
export const colourAllowed = (
  stream: { readonly isTTY?: boolean | undefined } = process.stdout,
  env: NodeJS.ProcessEnv = process.env
): boolean => {
  const force = env.FORCE_COLOR
  if (force !== undefined) return force !== "0" && force !== "false"
  if (stream.isTTY !== true) return false
  return tty.WriteStream.prototype.hasColors.call(stream as tty.WriteStream, 16, env)
}

/**
 * The placeholder an option's value is shown with (`--pin SEQ:HASH`); options not listed here get one from
 * their type (`integer` → `N`, `file` → `FILE`, `directory` → `DIR`, `text` → `VALUE`).
 */
export const PLACEHOLDERS: Readonly<Record<string, string>> = {
  "keygen --out": "DIR",
  "--pin": "SEQ:HASH",
  "--db": "FILE",
  "--policy": "FILE",
  "--public-key": "FILE",
  "--private-key": "FILE",
  "--out": "FILE",
  "--bundle": "FILE",
  "--checkpoint": "FILE",
  "--stored-checkpoint": "SIZE|latest",
  "--max-failures": "N",
  "--checkpoint-key": "VKEY",
  "--key": "VKEY",
  "--ledger": "DB",
  "--export-session": "FILE",
  "--session-out": "FILE",
  "--consistency": "FILE",
  "--event-id": "ID",
  "--agent": "ID",
  "--session": "ID",
  "--server-id": "ID",
  "--origin": "ORIGIN",
  "--key-dir": "DIR",
  "--sequence": "SEQ",
  "--signed-from": "SEQ",
  "--from": "SEQ",
  "--to": "SEQ",
  "--sessions": "N",
  "--calls": "N",
  "--seed": "N",
  "--seal-every": "N",
  "--tokens": "FILE",
  "--listen": "HOST:PORT",
  "--spill": "FILE",
  "--url": "URL"
}

const TYPE_PLACEHOLDERS: Readonly<Record<string, string>> = {
  text: "VALUE",
  integer: "N",
  file: "FILE",
  directory: "DIR"
}

const placeholderOf = (option: string, type: string, command = ""): string =>
  PLACEHOLDERS[`${command} ${option}`] ?? PLACEHOLDERS[option] ?? TYPE_PLACEHOLDERS[type] ?? type.toUpperCase()

/** The options a command help's OPTIONS section says are optional, and which of those repeat. */
const optionalOptions = (lines: ReadonlyArray<string>) => {
  const optional = new Set<string>()
  const repeated = new Set<string>()
  let current: string | undefined
  for (const line of lines) {
    const bare = line.trim()
    const header = /^(--[a-z][a-z0-9-]*)(\s|$)/.exec(bare)
    if (header !== null) current = header[1]
    else if (current !== undefined && bare === "This setting is optional.") optional.add(current)
    else if (current !== undefined && bare === "This option may be repeated zero or more times.") {
      optional.add(current)
      repeated.add(current)
    }
  }
  return { optional, repeated }
}

/**
 * @effect/cli's help, as operators read help: `$ agent-ledger verify [--pin SEQ:HASH] ... <target>`, every
 * option with its placeholder and `(optional)` / `(optional, repeatable)` on its own line instead of a
 * "This setting is optional." paragraph under each.
 */
const rewriteHelp = (text: string): string => {
  const lines = text.split("\n")
  const { optional, repeated } = optionalOptions(lines)
  const command = /^\s*\$ (?:agent-ledger )?([a-z][a-z-]*)/m.exec(text)?.[1] ?? ""
  const typed = /(\[?)(--[a-z][a-z0-9-]*) (text|integer|file|directory)(\.\.\.)?(\]?)/g
  return lines.flatMap((line) => {
    const bare = line.trim()
    if (bare === "This setting is optional." || bare === "This option may be repeated zero or more times.") {
      return []
    }
    const header = /^(\s*)(--[a-z][a-z0-9-]*)(?: (text|integer|file|directory))?(\.\.\.)?\s*$/.exec(line)
    if (header !== null) {
      const [, indent, option, type] = header
      const value = type === undefined ? "" : ` ${placeholderOf(option!, type, command)}`
      const note = repeated.has(option!) ? " (optional, repeatable)" : optional.has(option!) ? " (optional)" : ""
      return [`${indent}${option}${value}${note}`]
    }
    return [
      line.replace(
        typed,
        (_all, open: string, option: string, type: string, dots: string | undefined, close: string) =>
          repeated.has(option) || (open === "" && optional.has(option))
            ? `[${option} ${placeholderOf(option, type)}]${dots ?? ""}`
            : `${open}${option} ${placeholderOf(option, type)}${close}`
      ).replace(/^(\s*\$ )(?!agent-ledger)/, "$1agent-ledger ")
    ]
  }).join("\n")
}

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

/** Drops colour codes (unless allowed) and the type blurbs from a help text, and gives it placeholders. */
const cleanText = (text: string, colour: boolean): string => {
  const plain = colour ? text : stripVTControlCharacters(text)
  return rewriteHelp(
    plain.split("\n").filter((line) => {
      const bare = stripVTControlCharacters(line).trim()
      return !TYPE_BLURBS.has(bare) && !/^(A|An) (path|file|directory) /.test(bare)
    }).join("\n")
  ).replace(/\n{3,}/g, "\n\n")
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
    ...Array.from(
      stripVTControlCharacters(HelpDoc.toAnsiText(help)).matchAll(/(^|[\s[(,])(--[a-z][a-z0-9-]*)/gm),
      (m) => m[2]!
    )
  ])

/** `unknown command 'verfy'; did you mean 'verify'?` (the suggestion only when one is close). */
export const unknownCommand = (given: string, commands: ReadonlyArray<string>): string => {
  const best = closest(given, commands)
  const suggestion = best !== undefined ? `; did you mean '${best}'?` : ""
  return `agent-ledger: unknown command '${given}'${suggestion} (commands: ${commands.join(", ")})`
}

/** The value type of each `--option` a command's help shows (`text`, `integer`, `file`, `directory`). */
export const optionTypes = (help: HelpDoc.HelpDoc): ReadonlyMap<string, string> =>
  new Map(
    Array.from(
      stripVTControlCharacters(HelpDoc.toAnsiText(help)).matchAll(
        /(?:^|[\s[(,])(--[a-z][a-z0-9-]*) (text|integer|file|directory)\b/gm
      ),
      (m) => [m[1]!, m[2]!] as const
    )
  )

/**
 * The first mistake in how `args` give option values, as one line: an option that needs a value given none
 * (`--pin` last, or followed by another option), or a whole-number option given something else.
 */
export const badOptionValue = (
  command: string,
  args: ReadonlyArray<string>,
  types: ReadonlyMap<string, string>
): string | undefined => {
  const see = `(see agent-ledger ${command} --help)`
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") return undefined
    if (!arg.startsWith("--")) continue
    const [name, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [
      arg,
      undefined
    ]
    const type = types.get(name!)
    if (type === undefined) continue
    const value = inline ?? args[i + 1]
    if (value === undefined || (inline === undefined && value.startsWith("--"))) {
      return `agent-ledger: option '${name}' needs a value: ${name} ${placeholderOf(name!, type, command)} ${see}`
    }
    if (type === "integer" && !/^-?\d+$/.test(value)) {
      return `agent-ledger: option '${name}' takes a whole number, not '${value}' ${see}`
    }
    if (inline === undefined) i++
  }
  return undefined
}

/** Two options of one group given together: `--sequence and --event-id cannot be used together`. */
export const conflictingOptions = (
  command: string,
  args: ReadonlyArray<string>,
  groups: ReadonlyArray<ReadonlyArray<string>>
): string | undefined => {
  const end = args.indexOf("--")
  const given = new Set((end === -1 ? args : args.slice(0, end)).map((arg) => arg.split("=", 1)[0]!))
  for (const group of groups) {
    const both = group.filter((option) => given.has(option))
    if (both.length > 1) {
      return `agent-ledger: ${both.join(" and ")} cannot be used together (see agent-ledger ${command} --help)`
    }
  }
  return undefined
}

/** The first line of a command's DESCRIPTION section, for the top-level help's list. */
export const summaryOf = (help: HelpDoc.HelpDoc): string => {
  const lines = stripVTControlCharacters(HelpDoc.toAnsiText(help)).split("\n").map((line) => line.trim())
  const at = lines.indexOf("DESCRIPTION")
  const first = (at === -1 ? undefined : lines.slice(at + 1).find((line) => line.length > 0)) ?? ""
  // One line: the description up to its first aside (`; ...`, ` (...)`), when it has one.
  return first.split(/; | \(/, 1)[0]!
}

/** The top-level help: what agent-ledger is, its usage line, and every command with one line. */
export const topLevelHelp = (
  version: string,
  commands: ReadonlyArray<{ readonly name: string; readonly summary: string }>
): string => {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2
  return [
    `agent-ledger ${version}: tamper-evident audit ledgers for AI-agent guards`,
    "",
    "USAGE",
    "  agent-ledger <command> [options]",
    "",
    "COMMANDS",
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Run 'agent-ledger <command> --help' for a command's options, examples and exit codes.",
    "Exit codes: 0 success, 1 a verification failed, 2 usage error, 70 internal error, 130 interrupted."
  ].join("\n")
}
