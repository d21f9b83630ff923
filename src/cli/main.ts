#!/usr/bin/env node
/** Entry point of the `agent-ledger` binary: runs the CLI and exits with its code (see Cli.ts). */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Exit, Layer } from "effect"
import { cliLogger, run } from "./Cli.js"
import { EXIT_INTERNAL } from "./CliError.js"

NodeRuntime.runMain(run(process.argv).pipe(Effect.provide(Layer.merge(NodeContext.layer, cliLogger))), {
  disableErrorReporting: true,
  teardown: (exit, onExit) =>
    onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : EXIT_INTERNAL)
})
