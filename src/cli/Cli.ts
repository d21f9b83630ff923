/**
 * The `agent-ledger` command tree and its exit-code contract. Exit codes: 0 success, 1 a verification failed, 2 usage error or
 * unusable input (one line on stderr, never a stack trace), 70 an internal error (a bug: please report).
 */
import { CliConfig, Command, ValidationError } from "@effect/cli"
import type * as NodeContext from "@effect/platform-node/NodeContext"
import { Cause, Console, Effect, Layer, Logger, LogLevel } from "effect"
import { eventLoopScheduler } from "../internal/eventLoopScheduler.js"
import * as CliError from "./CliError.js"
import * as demo from "./demo.js"
import * as dlq from "./dlq.js"
import * as exportCommand from "./exportCommand.js"
import * as Help from "./Help.js"
import * as hook from "./hook.js"
import * as keygen from "./keygen.js"
import * as mcpProxy from "./mcpProxy.js"
import * as serve from "./serve.js"
import * as stats from "./stats.js"
import * as token from "./token.js"
import * as transparency from "./transparency.js"
import * as verify from "./verify.js"

export const VERSION = "0.1.0"

export const root = Command.make("agent-ledger").pipe(
  Command.withDescription("tamper-evident audit ledgers for AI-agent guards"),
  Command.withSubcommands([
    demo.command,
    verify.command,
    exportCommand.command,
    dlq.command,
    stats.command,
    keygen.command,
    mcpProxy.command,
    serve.command,
    hook.command,
    token.command,
    transparency.checkpointCommand,
    transparency.checkpointsCommand,
    transparency.proveCommand,
    transparency.verifyReceiptCommand,
    transparency.verifyConsistencyCommand
  ])
)

const cli = Command.run(root, { name: "agent-ledger", version: VERSION })

const SUBCOMMANDS = [
  { name: "demo", command: demo.command },
  { name: "verify", command: verify.command },
  { name: "export", command: exportCommand.command },
  { name: "dlq", command: dlq.command },
  { name: "stats", command: stats.command },
  { name: "keygen", command: keygen.command },
  { name: "mcp-proxy", command: mcpProxy.command },
  { name: "serve", command: serve.command },
  { name: "hook", command: hook.command },
  { name: "token", command: token.command },
  { name: "checkpoint", command: transparency.checkpointCommand },
  { name: "checkpoints", command: transparency.checkpointsCommand },
  { name: "prove", command: transparency.proveCommand },
  { name: "verify-receipt", command: transparency.verifyReceiptCommand },
  { name: "verify-consistency", command: transparency.verifyConsistencyCommand }
] as const

/** The subcommands' names. */
export const COMMANDS: ReadonlyArray<string> = SUBCOMMANDS.map((c) => c.name)

const helpOf = (entry: (typeof SUBCOMMANDS)[number]) =>
  Command.getHelp(entry.command as Command.Command<string, never, never, unknown>, CliConfig.defaultConfig)

const knownOptions = (entry: (typeof SUBCOMMANDS)[number]): ReadonlySet<string> => Help.optionsOf(helpOf(entry))

/** Options of one command that contradict each other: given together, the command refuses to guess. */
const CONFLICTS: Readonly<Record<string, ReadonlyArray<ReadonlyArray<string>>>> = {
  prove: [["--sequence", "--event-id", "--consistency"], ["--checkpoint", "--stored-checkpoint"]],
  verify: [["--checkpoint-key", "--trust-embedded-key"]]
}

/** `agent-ledger --help`: every command with the first line of its description. */
export const topLevelHelp = (): string =>
  Help.topLevelHelp(VERSION, SUBCOMMANDS.map((entry) => ({ name: entry.name, summary: Help.summaryOf(helpOf(entry)) })))

/** Runs the CLI on `argv` (as `process.argv`) and returns the process exit code. */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<number, never, NodeContext.NodeContext> => {
  const first = argv[2]
  const usageError = (message: string) =>
    Effect.as(Console.error(message), CliError.EXIT_USAGE).pipe(Effect.provide(Help.consoleLayer))
  // No command: the help, on stderr, as a usage error (a script that forgot its arguments must not pass).
  if (first === undefined) {
    return Effect.as(Effect.sync(() => process.stderr.write(`${topLevelHelp()}\n`)), CliError.EXIT_USAGE)
  }
  if ((first === "--help" || first === "-h") && argv.length === 3) {
    return Effect.as(Console.log(topLevelHelp()), CliError.EXIT_OK)
  }
  if (!first.startsWith("-") && !COMMANDS.includes(first)) {
    return usageError(Help.unknownCommand(first, COMMANDS))
  }
  const command = SUBCOMMANDS.find((c) => c.name === first)
  if (command !== undefined) {
    const args = argv.slice(3)
    const mistake = Help.unknownOption(command.name, args, knownOptions(command)) ??
      Help.badOptionValue(command.name, args, Help.optionTypes(helpOf(command))) ??
      Help.conflictingOptions(command.name, args, CONFLICTS[command.name] ?? [])
    if (mistake !== undefined) return usageError(mistake)
  }
  return cli(argv).pipe(
    // Ctrl-C (or SIGTERM) interrupts the command where it is: long reads stop between pages, never print a
    // result, and the entry point exits 130 (main.ts).
    Effect.onInterrupt(() => Console.error("agent-ledger: interrupted")),
    Effect.provide(Layer.merge(Help.cliConfig, Help.consoleLayer)),
    // Long loops stay responsive to Ctrl-C (signal handlers run on the event loop).
    Effect.withScheduler(eventLoopScheduler),
    Effect.as(CliError.EXIT_OK),
    Effect.catchAll((error) => {
      if (ValidationError.isValidationError(error)) return Effect.succeed(CliError.EXIT_USAGE) // already printed
      switch (error._tag) {
        case "InputError":
          return Effect.as(Console.error(`agent-ledger: ${error.message}`), CliError.EXIT_USAGE)
        case "VerificationFailed":
          return Effect.succeed(CliError.EXIT_VERIFY_FAILED)
        default:
          return Effect.as(Console.error(`agent-ledger: ${errorMessage(error)}`), CliError.EXIT_USAGE)
      }
    }),
    Effect.catchAllDefect((defect) =>
      Effect.as(
        Console.error(`agent-ledger: internal error: ${Cause.pretty(Cause.die(defect))}`),
        CliError.EXIT_INTERNAL
      )
    )
  )
}

const errorMessage = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error && typeof error.message === "string" &&
    error.message.length > 0
    ? error.message
    : String(error)

/** CLI logging: library warnings (e.g. an event landing in the dead-letter table) go to stderr. */
export const cliLogger = Logger.replace(Logger.defaultLogger, Logger.withLeveledConsole(Logger.logfmtLogger)).pipe(
  Layer.merge(Logger.minimumLogLevel(LogLevel.Warning))
)
