#!/usr/bin/env node
/** Entry point of the `agent-ledger` binary: runs the CLI and exits with its code (see Cli.ts). */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit, Layer } from "effect"
import { cliLogger, run } from "./Cli.js"
import { EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE } from "./CliError.js"

// `agent-ledger … | head`: once the reader closes the pipe, further output is dropped and the command still
// ends with its own exit code (a tampered ledger still exits 1). Any other output error (a full disk) is
// one line on stderr and makes an otherwise successful run exit 2.
let outputFailed = false
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE" || outputFailed) return
  outputFailed = true
  process.stderr.write(`agent-ledger: cannot write the output (${error.code ?? error.message})\n`)
})

NodeRuntime.runMain(run(process.argv).pipe(Effect.provide(Layer.merge(NodeContext.layer, cliLogger))), {
  disableErrorReporting: true,
  // cliLogger is the only logger: library warnings once, on stderr.
  disablePrettyLogger: true,
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit)
        ? typeof exit.value !== "number" ? EXIT_INTERNAL : exit.value === 0 && outputFailed ? EXIT_USAGE : exit.value
        : Cause.isInterruptedOnly(exit.cause)
        ? EXIT_INTERRUPTED
        : EXIT_INTERNAL
    )
})
