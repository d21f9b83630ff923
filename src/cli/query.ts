/**
 * The operator queries (`LedgerQuery`) as commands, modelled on rekor-cli `get`, `git log` and `tail -f`:
 * `show <db> <sequence|event-id>`, `log <db> [filters] [--follow]`, `sessions <db>` and
 * `sessions <db> show ID`, on SQLite files and postgres:// URLs, as text or `--json` (JSON Lines for
 * lists). Every field comes from rows anyone who could submit a call controlled, so every line goes out
 * through `printLine` / `printJson`.
 */
import { Args, Command, Options } from "@effect/cli"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option, Schema, Stream } from "effect"
import * as LedgerQuery from "../query/LedgerQuery.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { printJson, printLine } from "./TerminalText.js"

const db = Args.text({ name: "db" }).pipe(Args.withDescription("ledger database (a file or a postgres:// URL)"))
const json = Options.boolean("json").pipe(Options.withDescription("print JSON (one object per line for lists)"))

/** Runs `body` on the ledger at `path` (read-only), every failure one `InputError` line naming the path. */
const onLedger = <A>(
  path: string,
  body: (query: LedgerQuery.Service) => Effect.Effect<A, LedgerQuery.InvalidQuery | LedgerQuery.NotFound | SqlError>
): Effect.Effect<A, InputError> =>
  Effect.flatMap(LedgerQuery.LedgerQuery, body).pipe(
    Effect.provide(LedgerQuery.layer),
    Effect.provide(openLedger(path, { readonly: true })),
    Effect.mapError((error) =>
      error._tag === "InputError" ? error : new InputError({
        message: error._tag === "SqlError" ? `${path}: ${error.message}` : error.message
      })
    )
  )

const orDash = (value: string | number | null): string => value === null ? "-" : String(value)

/**
 * One log line: `#3  2026-11-24T06:03:00.000Z  agent-a  refuse  write_file@fs  rule=no-write  session=s1:3`;
 * a guard's records name their kind first (`approval write_file@fs rule=ask-write answer=accept by=… …`).
 */
export const logLine = (entry: LedgerQuery.LogEntry): string => {
  const where = entry.ledgerSequence === null ? "-" : `#${entry.ledgerSequence}`
  const session = entry.sessionId === null
    ? []
    : [`session=${entry.sessionId}${entry.journalSequence === null ? "" : `:${entry.journalSequence}`}`]
  const what = entry.kind === "seal"
    ? ["seal", ...session, `length=${orDash(entry.sealLength)}`, `head=${orDash(entry.sealHeadHash)}`]
    : [
      entry.decision ?? entry.kind,
      entry.toolName === null ? orDash(entry.action) : `${entry.toolName}@${orDash(entry.serverId)}`,
      ...(entry.ruleId === null ? [] : [`rule=${entry.ruleId}`]),
      ...(entry.kind === "approval"
        ? [`answer=${orDash(entry.answer)}`, `by=${orDash(entry.approver)}`, `call=${orDash(entry.outcome)}`]
        : []),
      ...(entry.digest === null ? [] : [`digest=${entry.digest.slice(0, 16)}`]),
      ...session,
      ...(entry.kind === "call" && entry.outcome !== null ? [`outcome=${entry.outcome}`] : []),
      ...(entry.bytesRead === null && entry.bytesWritten === null
        ? []
        : [`read=${orDash(entry.bytesRead)}`, `written=${orDash(entry.bytesWritten)}`]),
      ...(entry.problem === null ? [] : [`(${entry.problem})`])
    ]
  return [where, entry.timestamp, entry.agentId, ...what].join("  ")
}

// ---------------------------------------------------------------------------------------------------------
// show
// ---------------------------------------------------------------------------------------------------------

export const runShow = (options: { readonly db: string; readonly id: string; readonly json: boolean }) =>
  Effect.gen(function*() {
    const id = yield* LedgerQuery.parseRowId(options.id).pipe(
      Effect.mapError((error) => new InputError({ message: error.message }))
    )
    const shown = yield* onLedger(options.db, (query) => query.show(id))
    if (options.json) return yield* printJson(shown)
    const { row, entry, seal, session } = shown
    const lines = [
      `row ${row.sequence}  ${row.id}`,
      `  type:       ${row.event_type}`,
      `  agent:      ${row.agent_id}`,
      `  time:       ${row.timestamp} (appended ${row.appended_at})`,
      ...(entry.kind === "refusal"
        ? [
          `  decision:   refuse by rule ${orDash(entry.ruleId)}: ${orDash(entry.reason)}`,
          `  action:     ${orDash(entry.action)}${
            entry.toolName === null ? "" : ` ${entry.toolName} on ${orDash(entry.serverId)}`
          }`
        ]
        : []),
      ...(entry.kind === "would-refuse"
        ? [`  decision:   would refuse (shadow mode) by rule ${orDash(entry.ruleId)}: ${orDash(entry.reason)}`]
        : []),
      ...(entry.kind === "approval"
        ? [
          `  asked:      ${entry.toolName ?? "-"} on ${orDash(entry.serverId)}, rule ${orDash(entry.ruleId)}: ${
            orDash(entry.reason)
          }`,
          `  answer:     ${orDash(entry.answer)} by ${orDash(entry.approver)}; the call was ${orDash(entry.outcome)}`
        ]
        : []),
      ...(entry.kind === "tool-pinned" || entry.kind === "tool-changed"
        ? [
          `  tool:       ${orDash(entry.toolName)} on ${orDash(entry.serverId)}, ${
            entry.kind === "tool-pinned" ? "pinned" : "changed to"
          } definition ${orDash(entry.digest)}`
        ]
        : []),
      ...(entry.kind === "seal"
        ? [`  seals:      ${orDash(entry.sealLength)} entries, head ${orDash(entry.sealHeadHash)}`]
        : []),
      `  session:    ${
        session === null ? "-" : `${session.sessionId}${session.sequence === null ? "" : ` entry ${session.sequence}`}`
      }`,
      `  sealed by:  ${
        seal === null
          ? session === null ? "-" : "no seal covers it yet"
          : `row ${seal.ledgerSequence} (${seal.length} entries, head ${seal.headHash}, ${seal.timestamp})`
      }`,
      `  entry hash: ${row.entry_hash}`,
      `  prev hash:  ${row.prev_hash}`,
      `  signed:     ${row.attest_level === "ed25519" ? `ed25519, key ${orDash(row.key_id)}` : "no"}`,
      ...(entry.problem === null ? [] : [`  problem:    ${entry.problem}`]),
      `  payload:    ${row.payload}`
    ]
    for (const line of lines) yield* printLine(line)
  })

export const showCommand = Command.make(
  "show",
  {
    db,
    id: Args.text({ name: "sequence|event-id" }).pipe(Args.withDescription("the row's sequence or event id")),
    json
  },
  runShow
).pipe(Command.withDescription(commandHelp(
  "print one ledger row, decoded, with its session entry and the seal that covers it (an unknown id exits 2)",
  [
    "agent-ledger show ./agent-ledger.db 17",
    "agent-ledger show ./agent-ledger.db 01936f2a-5c00-7a3b-8c4d-9e0f1a2b3c4d --json",
    "agent-ledger show postgres://ledger@db/audit 17"
  ]
)))

// ---------------------------------------------------------------------------------------------------------
// log
// ---------------------------------------------------------------------------------------------------------

export interface LogOptions {
  readonly db: string
  readonly agent: Option.Option<string>
  readonly rule: Option.Option<string>
  readonly session: Option.Option<string>
  readonly tool: Option.Option<string>
  readonly decision: Option.Option<string>
  readonly kind: Option.Option<string>
  readonly since: Option.Option<string>
  readonly until: Option.Option<string>
  readonly limit: Option.Option<number>
  readonly json: boolean
  readonly follow: boolean
}

/** What `log --follow` prints before it follows, when no `--limit` says: the last 10, like `tail -f`. */
const FOLLOW_BACKLOG = 10

const queryOf = (options: LogOptions): Effect.Effect<LedgerQuery.LogQuery, InputError> =>
  Effect.gen(function*() {
    const time = (text: Option.Option<string>, field: string) =>
      Option.match(text, {
        onNone: () => Effect.succeed(undefined),
        onSome: (t) => LedgerQuery.parseTime(t, `--${field}`)
      })
    const decision = Option.getOrUndefined(options.decision)
    if (decision !== undefined && decision !== "allow" && decision !== "refuse") {
      return yield* new InputError({ message: `--decision: expected allow or refuse, not '${decision.slice(0, 32)}'` })
    }
    const kindText = Option.getOrUndefined(options.kind)
    const isKind = Schema.is(LedgerQuery.EntryKind)
    if (kindText !== undefined && !isKind(kindText)) {
      return yield* new InputError({
        message: `--kind: expected one of ${LedgerQuery.EntryKind.literals.join(", ")}, not '${kindText.slice(0, 32)}'`
      })
    }
    const kind = kindText !== undefined && isKind(kindText) ? kindText : undefined
    const since = yield* time(options.since, "since")
    const until = yield* time(options.until, "until")
    const query: { -readonly [K in keyof LedgerQuery.LogQuery]: LedgerQuery.LogQuery[K] } = {}
    if (Option.isSome(options.agent)) query.agent = options.agent.value
    if (Option.isSome(options.rule)) query.rule = options.rule.value
    if (Option.isSome(options.session)) query.session = options.session.value
    if (Option.isSome(options.tool)) query.tool = options.tool.value
    if (decision !== undefined) query.decision = decision
    if (kind !== undefined) query.kind = kind
    if (since !== undefined) query.since = since
    if (until !== undefined) query.until = until
    return query
  }).pipe(Effect.mapError((error) => error._tag === "InputError" ? error : new InputError({ message: error.message })))

export const runLog = (options: LogOptions) =>
  Effect.gen(function*() {
    const query = yield* queryOf(options)
    const print = (entry: LedgerQuery.LogEntry) => options.json ? printJson(entry) : printLine(logLine(entry))
    if (Option.isSome(options.limit) && options.limit.value < 1) {
      return yield* new InputError({ message: "--limit: must be at least 1" })
    }
    yield* onLedger(options.db, (ledger) =>
      Effect.gen(function*() {
        if (!options.follow && Option.isNone(options.limit)) {
          return yield* Stream.runForEach(ledger.log(query), print)
        }
        // The end first, then the backlog: a row appended in between is in both, and printed once.
        const end = yield* ledger.end
        const backlog = yield* ledger.recent(query, Option.getOrElse(options.limit, () => FOLLOW_BACKLOG))
        for (const entry of backlog) yield* print(entry)
        if (!options.follow) return
        const printed = new Set(backlog.map(LedgerQuery.entryKey))
        // Until Ctrl-C: the interruption ends the stream between polls (Cli.ts prints it, main.ts exits 130).
        yield* Stream.runForEach(
          ledger.follow(query, { after: end }).pipe(
            Stream.filter((entry) => !printed.has(LedgerQuery.entryKey(entry)))
          ),
          print
        )
      }))
  })

const filter = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

export const logCommand = Command.make(
  "log",
  {
    db,
    agent: filter("agent", "only this agent's entries"),
    rule: filter("rule", "only refusals (and approvals) by this rule"),
    session: filter("session", "only this session's entries"),
    tool: filter("tool", "only calls of this tool"),
    decision: filter("decision", "only allowed or only refused calls: allow|refuse"),
    kind: filter(
      "kind",
      `only entries of this kind: ${LedgerQuery.EntryKind.literals.join("|")} (approval: who approved what)`
    ),
    since: filter("since", "from this time on: RFC 3339, a date (UTC), or an age such as 2h or 7d"),
    until: filter("until", "up to this time (inclusive), as --since"),
    limit: Options.integer("limit").pipe(
      Options.optional,
      Options.withDescription("only the last N matches (with --follow: before following; default 10)")
    ),
    json,
    follow: Options.boolean("follow").pipe(
      Options.withDescription("after the matches so far, print new ones as they are appended, until Ctrl-C")
    )
  },
  runLog
).pipe(Command.withDescription(commandHelp(
  "print what agents did, oldest first: refusals, seals, approvals, tool pins and (with stored journals) allowed " +
    "calls; filters combine",
  [
    "agent-ledger log ./agent-ledger.db --kind approval --tool write_file",
    "agent-ledger log ./agent-ledger.db --agent agent-7 --since 2h",
    "agent-ledger log ./agent-ledger.db --decision refuse --rule no-upload --json",
    "agent-ledger log ./agent-ledger.db --session sess-42 --until 2026-11-24T07:00:00Z",
    "agent-ledger log postgres://ledger@db/audit --follow --limit 20"
  ]
)))

// ---------------------------------------------------------------------------------------------------------
// sessions
// ---------------------------------------------------------------------------------------------------------

const summaryLine = (s: LedgerQuery.SessionSummary): string =>
  [
    s.sessionId,
    s.agentId,
    `${s.start} .. ${s.end}`,
    `calls=${s.calls}`,
    `refusals=${s.refusals}`,
    s.sealed ? `sealed(${orDash(s.sealedLength)})` : "unsealed"
  ].join("  ")

export const runSessions = (options: {
  readonly db: string
  readonly action: Option.Option<string>
  readonly id: Option.Option<string>
  readonly agent: Option.Option<string>
  readonly json: boolean
}) =>
  Effect.gen(function*() {
    if (Option.isSome(options.action)) {
      if (options.action.value !== "show" || Option.isNone(options.id)) {
        return yield* new InputError({
          message: `sessions: expected 'sessions <db>' or 'sessions <db> show ID' (see agent-ledger sessions --help)`
        })
      }
      const id = options.id.value
      const detail = yield* onLedger(options.db, (query) => query.session(id))
      if (options.json) return yield* printJson(detail)
      const s = detail.summary
      const lines = [
        `session ${s.sessionId}`,
        `  agent:      ${s.agentId}`,
        `  time:       ${s.start} .. ${s.end}`,
        `  calls:      ${detail.totals.calls} (${detail.totals.refusals} refused)`,
        `  data:       ${detail.totals.bytesRead} bytes read, ${detail.totals.bytesWritten} bytes written${
          detail.journalStored ? "" : " (the journal is not stored: only refusals and seals)"
        }`,
        `  seals:      ${
          detail.seals.length === 0
            ? "none"
            : detail.seals.map((seal) => `row ${seal.ledgerSequence} (${seal.length} entries)`).join(", ")
        }`,
        `  by tool:`,
        ...detail.byTool.map((t) =>
          `    ${
            `${t.toolName}@${t.serverId}`.padEnd(32)
          } calls=${t.calls} refused=${t.refusals} read=${t.bytesRead} written=${t.bytesWritten}`
        ),
        `  journal:`,
        ...detail.entries.map((entry) => `    ${logLine(entry)}`),
        ...(detail.truncated ? [`    … (first ${detail.entries.length} entries)`] : [])
      ]
      for (const line of lines) yield* printLine(line)
      return
    }
    if (Option.isSome(options.id)) {
      return yield* new InputError({ message: `sessions: unexpected '${options.id.value.slice(0, 64)}'` })
    }
    const sessions = yield* onLedger(options.db, (query) =>
      query.sessions({ agent: Option.getOrUndefined(options.agent) }))
    for (const s of sessions) {
      yield* options.json ? printJson(s) : printLine(summaryLine(s))
    }
  })

export const sessionsCommand = Command.make(
  "sessions",
  {
    db,
    action: Args.text({ name: "show" }).pipe(Args.optional, Args.withDescription("show one session: show ID")),
    id: Args.text({ name: "ID" }).pipe(Args.optional, Args.withDescription("the session id")),
    agent: filter("agent", "only this agent's sessions"),
    json
  },
  runSessions
).pipe(Command.withDescription(commandHelp(
  "list sessions (agent, start, end, calls, refusals, sealed?), or show one session's journal with data-flow totals",
  [
    "agent-ledger sessions ./agent-ledger.db",
    "agent-ledger sessions ./agent-ledger.db --agent agent-7 --json",
    "agent-ledger sessions ./agent-ledger.db show sess-42"
  ]
)))
