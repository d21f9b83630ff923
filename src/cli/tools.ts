/**
 * `agent-ledger tools list <db>` and `agent-ledger tools approve <db> --server S --tool T`: the tool
 * definitions a guard pinned in the ledger (`tool.pinned` rows), the changes it saw since (`tool.changed`),
 * and an operator's approval of a change: a new `tool.pinned` row (signed with `--private-key`), after which
 * guards started on the ledger allow the tool again.
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"
import { DeferredAuditEvent, TOOL_PINNED_EVENT_TYPE } from "../audit/AuditEvent.js"
import * as AuditSigner from "../audit/AuditSigner.js"
import { AuditSink } from "../audit/AuditSink.js"
import * as ToolPins from "../guard/ToolPins.js"
import * as SqlAuditSink from "../ledger/SqlAuditSink.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { printJson, printLine } from "./TerminalText.js"

const db = Args.text({ name: "db" }).pipe(Args.withDescription("ledger database"))

const readFailure = (path: string) => (error: { readonly message: string }) =>
  new InputError({ message: `${path}: cannot read the tool pins (${error.message})` })

const short = (digest: string) => digest.slice(0, 16)

export const runList = (options: { readonly db: string; readonly json: boolean }) =>
  Effect.gen(function*() {
    const tools = yield* ToolPins.ledgerTools.pipe(
      Effect.provide(openLedger(options.db, { readonly: true })),
      Effect.mapError(readFailure(options.db))
    )
    if (options.json) return yield* printJson({ tools })
    const changed = tools.filter((tool) => tool.changes.length > 0).length
    yield* printLine(`tools pinned in ${options.db}: ${tools.length}, ${changed} changed (refused until approved)`)
    for (const tool of tools) {
      const pin = tool.pinned === undefined
        ? "not pinned"
        : `pinned ${short(tool.pinned.digest)} (row ${tool.pinned.sequence})`
      yield* printLine(`  ${tool.serverId} ${tool.toolName}: ${pin}`)
      for (const change of tool.changes) {
        yield* printLine(`    CHANGED to ${short(change.digest)} (row ${change.sequence}, ${change.timestamp})`)
        const description = typeof change.definition === "object" && change.definition !== null &&
            !Array.isArray(change.definition)
          ? (change.definition as Record<string, unknown>).description
          : undefined
        if (typeof description === "string") yield* printLine(`      description: ${description.slice(0, 500)}`)
      }
    }
  })

export interface ApproveOptions {
  readonly db: string
  readonly server: string
  readonly tool: string
  readonly digest: Option.Option<string>
  readonly by: string
  readonly privateKey: Option.Option<string>
}

export const runApprove = (options: ApproveOptions) =>
  Effect.gen(function*() {
    const signer = yield* Option.match(options.privateKey, {
      onNone: () => Effect.succeed(undefined),
      onSome: (file) =>
        AuditSigner.loadPrivateKeyFile(file).pipe(Effect.mapError((e) => new InputError({ message: e.message })))
    })
    const ledger = SqlAuditSink.layer({ signer }).pipe(Layer.provideMerge(openLedger(options.db, { readonly: false })))
    const sequence = yield* Effect.gen(function*() {
      const tools = yield* ToolPins.ledgerTools.pipe(Effect.mapError(readFailure(options.db)))
      const tool = tools.find((t) => t.serverId === options.server && (t.toolName === options.tool))
      if (tool === undefined) {
        return yield* new InputError({
          message: `no tool ${options.tool} of server ${options.server} in ${options.db}`
        })
      }
      const approval = ToolPins.approvalOf(tool, Option.getOrUndefined(options.digest))
      if ("problem" in approval) return yield* new InputError({ message: approval.problem })
      const event = yield* DeferredAuditEvent.record(options.by, TOOL_PINNED_EVENT_TYPE, approval.payload)
      const sink = yield* AuditSink
      const appended = yield* sink.append(event).pipe(
        Effect.mapError((error) =>
          new InputError({ message: `${options.db}: cannot append the approval (${error.reason})` })
        )
      )
      if (appended._tag !== "Appended") {
        return yield* new InputError({ message: `${options.db}: the approval was dead-lettered, not appended` })
      }
      return appended.position?.sequence ?? "?"
    }).pipe(
      Effect.provide(ledger),
      Effect.mapError((error) =>
        error._tag === "InputError" ? error : new InputError({ message: `${options.db}: ${error.message}` })
      )
    )
    yield* printLine(`approved: ${options.server} ${options.tool} pinned to its new definition (row ${sequence})`)
  })

const list = Command.make(
  "list",
  { db, json: Options.boolean("json").pipe(Options.withDescription("print the pins and changes as JSON")) },
  runList
).pipe(Command.withDescription(commandHelp(
  "list the tool definitions guards pinned, and the changes they saw since (refused until approved)",
  ["agent-ledger tools list ./agent-ledger.db", "agent-ledger tools list ./agent-ledger.db --json"]
)))

const approve = Command.make(
  "approve",
  {
    db,
    server: Options.text("server").pipe(Options.withDescription("the server id (as mcp-proxy --server-id records it)")),
    tool: Options.text("tool").pipe(Options.withDescription("the tool's name")),
    digest: Options.text("digest").pipe(
      Options.optional,
      Options.withDescription("the changed definition's digest to pin (default: the latest change)")
    ),
    by: Options.text("by").pipe(
      Options.withDefault("operator"),
      Options.withDescription("who approves (the row's agent_id)")
    ),
    privateKey: Options.text("private-key").pipe(
      Options.optional,
      Options.withDescription("sign the row with this Ed25519 private key (PKCS#8 PEM, see keygen)")
    )
  },
  runApprove
).pipe(Command.withDescription(commandHelp(
  "pin a changed tool's new definition (a tool.pinned row), so guards allow it again",
  ["agent-ledger tools approve ./agent-ledger.db --server filesystem --tool write_file"]
)))

export const command = Command.make("tools").pipe(
  Command.withDescription(commandHelp("tool pins: list them and approve changed definitions", [
    "agent-ledger tools list ./agent-ledger.db",
    "agent-ledger tools approve ./agent-ledger.db --server filesystem --tool write_file"
  ])),
  Command.withSubcommands([list, approve])
)
