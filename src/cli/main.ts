#!/usr/bin/env node
/** Entry point of the `agent-ledger` binary: runs the CLI and exits with its code (see Cli.ts). */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect, Exit, Layer } from "effect"
import { cliLogger, run } from "./Cli.js"
import { EXIT_INTERNAL, EXIT_INTERRUPTED } from "./CliError.js"

// `agent-ledger … | head`: the reader closing the pipe ends the command quietly, as for any Unix tool.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
})

NodeRuntime.runMain(run(process.argv).pipe(Effect.provide(Layer.merge(NodeContext.layer, cliLogger))), {
  disableErrorReporting: true,
  // cliLogger is the only logger: library warnings once, on stderr.
  disablePrettyLogger: true,
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit)
        ? typeof exit.value === "number" ? exit.value : EXIT_INTERNAL
        : Cause.isInterruptedOnly(exit.cause)
        ? EXIT_INTERRUPTED
        : EXIT_INTERNAL
    )
})
