/**
 * One Claude Code hook event decided without serve (`agent-ledger hook --db`): each event is its own
 * process, so the session's state is rebuilt from its journal stored in the ledger (`journal_entries`),
 * decided by the same `ClaudeCodeHooks` on the same `McpGuard` as serve's, and what it appends is durable
 * before the answer is given (fail-closed).
 *
 * Resuming a session: its stored rows are verified first (`JournalRow.checkSession`, with its seals); a
 * chain that does not verify is never appended to, and the event is refused (`journal-unverified`). The
 * verified entries become the session's journal (`SessionJournal.fromExport` on the ledger's store), which
 * continues the chain from its head; the guard reads the policy's history (allowed calls, bytes) from those
 * entries, so counting rules see the calls earlier processes decided. A `PostToolUse` ends the pending call
 * whose `call` row's `intent` names its `tool_use_id` (`requestId`); a `PreToolUse` of a `tool_use_id`
 * already decided is refused as a duplicate; `SessionEnd` ends the session's pending calls as interrupted
 * and seals the journal.
 *
 * The caller serialises events of one ledger (the CLI holds a lock across read, decide and append), so no
 * decision is made on stale state. A call decided by an earlier process and not yet ended does not count as
 * in flight here (its bytes are not known yet): a budget rule decides on the bytes recorded so far.
 */
import type { SqlError } from "@effect/sql/SqlError"
import type { Scope } from "effect"
import { Duration, Effect, Either, Option, Schema } from "effect"
import * as AuditQueue from "../audit/AuditQueue.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as McpGuard from "../guard/McpGuard.js"
import { decodeEntryBody } from "../internal/journalEntryFormat.js"
import * as SessionJournal from "../journal/SessionJournal.js"
import * as SessionJournals from "../journal/SessionJournals.js"
import * as JournalRow from "../ledger/JournalRow.js"
import * as JournalStore from "../ledger/JournalStore.js"
import { sealsBySession } from "../ledger/JournalVerifier.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as ClaudeCodeHooks from "./ClaudeCodeHooks.js"

/** The rule of an event refused because the session's stored journal does not verify. */
export const UNVERIFIED_JOURNAL_RULE = "journal-unverified"
/** The rule of an event refused because the session was started by another agent. */
export const OTHER_AGENT_RULE = "session-of-another-agent"

export interface Options {
  readonly policy: GuardPolicy.GuardPolicy
  /** The agent the events are decided and recorded for. */
  readonly agentId: string
  /** See `McpGuard.Options.sealEvery`. */
  readonly sealEvery?: number | undefined
  readonly hooks?: ClaudeCodeHooks.Options | undefined
  /** How long the answer waits for what was appended to be durable; default 10 seconds. */
  readonly durableTimeout?: Duration.DurationInput | undefined
}

/** The hook output to print, or why there is none (a `PreToolUse` is then denied by the caller). */
export type Answer =
  | { readonly _tag: "Output"; readonly output: Record<string, unknown> }
  | { readonly _tag: "Failed"; readonly reason: string }

const Event = Schema.Struct({
  hook_event_name: Schema.String,
  session_id: Schema.String.pipe(Schema.minLength(1)),
  tool_use_id: Schema.optional(Schema.String),
  tool_name: Schema.optional(Schema.String)
})
const decodeEvent = Schema.decodeUnknownEither(Event, { onExcessProperty: "ignore" })

const denied = (ruleId: string, reason: string) => ({
  hookSpecificOutput: {
    hookEventName: "PreToolUse",
    permissionDecision: "deny",
    permissionDecisionReason: ClaudeCodeHooks.denialText(ruleId, reason)
  }
})

/** A refusal that appends nothing: `deny` for a `PreToolUse`, a failure for any other event. */
const refuse = (event: string, ruleId: string, reason: string): Answer =>
  event === "PreToolUse" ? { _tag: "Output", output: denied(ruleId, reason) } : { _tag: "Failed", reason }

/** The `requestId` a `call` row's `intent` names, if any. */
const requestIdOf = (intent: string | null): string | undefined => {
  if (intent === null) return undefined
  try {
    const parsed = JSON.parse(intent) as { requestId?: unknown }
    return typeof parsed.requestId === "string" ? parsed.requestId : undefined
  } catch {
    return undefined
  }
}

/** The verified stored rows as a journal export (what `SessionJournal.fromExport` restores). */
const exportOf = (sessionId: string, rows: ReadonlyArray<JournalRow.StoredRow>, headHash: string) => ({
  format: SessionJournal.EXPORT_FORMAT,
  sessionId,
  headHash,
  entries: rows.map((row) => {
    const entry = decodeEntryBody(row.body)
    if (typeof entry === "string") throw new Error(entry) // checkSession decoded it already
    return {
      sequence: entry.sequence,
      prevHash: entry.prevHash,
      entryHash: row.entry_hash,
      timestampMillis: entry.timestampMillis,
      toolName: entry.toolName,
      serverId: entry.serverId,
      agentId: entry.agentId,
      bytesRead: entry.bytesRead,
      bytesWritten: entry.bytesWritten,
      delegationDepth: entry.delegationDepth,
      allowed: entry.allowed,
      ...(entry.version === 2
        ? { kind: entry.kind, outcome: entry.outcome, callSequence: entry.callSequence }
        : {})
    }
  })
})

/**
 * Decides one hook event (`raw`: the JSON Claude Code wrote on stdin) against the session's stored journal,
 * appends its entries and ledger rows, and waits until they are durable.
 */
export const handle = (
  options: Options,
  raw: unknown
): Effect.Effect<
  Answer,
  SqlError | JournalStore.RowError,
  AuditQueue.AuditQueue | LedgerSql.LedgerSql | JournalStore.JournalStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const decoded = decodeEvent(raw)
    if (Either.isLeft(decoded)) {
      return { _tag: "Failed", reason: "bad hook input: expected a JSON object with hook_event_name and session_id" }
    }
    const event = decoded.right
    const sessionId = event.session_id
    const rows = yield* JournalStore.readSession(sessionId)
    const seals = (yield* LedgerSql.use(sealsBySession)).get(sessionId) ?? []
    const check = JournalRow.checkSession(sessionId, rows, seals)
    const broken = check.failures[0]
    if (broken !== undefined) {
      yield* Effect.logError("agent-ledger hook: the session's stored journal does not verify").pipe(
        Effect.annotateLogs({ sessionId, sequence: broken.sequence, check: broken.check, detail: broken.detail })
      )
      return refuse(
        event.hook_event_name,
        UNVERIFIED_JOURNAL_RULE,
        `the session's stored journal does not verify at entry ${broken.sequence} (${broken.check}: ${broken.detail}); nothing is appended to it`
      )
    }
    const owner = rows[0]?.agent_id
    if (owner !== undefined && owner !== options.agentId) {
      return refuse(event.hook_event_name, OTHER_AGENT_RULE, `session ${sessionId} belongs to agent ${owner}`)
    }

    const store = yield* JournalStore.JournalStore
    const resumed = rows.length === 0 ? [] : [
      yield* SessionJournal.fromExport(exportOf(sessionId, rows, check.headHash), { store }).pipe(Effect.orDie)
    ]
    const journals = yield* SessionJournals.makeWith({ store }, resumed)
    const salt = yield* LedgerSql.argumentSalt
    const guard = yield* McpGuard.make({
      policy: GuardPolicy.engine(options.policy, { salt }),
      failClosed: true,
      sealEvery: options.sealEvery
    }).pipe(Effect.provideService(SessionJournals.SessionJournals, journals))
    const hooks = yield* ClaudeCodeHooks.make(options.hooks).pipe(Effect.provideService(McpGuard.McpGuard, guard))

    let output: Record<string, unknown>
    if (event.hook_event_name === "SessionEnd") {
      // Calls decided and never ended end as interrupted, as serve ends them; then the journal is sealed.
      if (resumed.length > 0) {
        const journal = resumed[0]!
        yield* Effect.forEach(yield* journal.pendingCalls, (sequence) => guard.resume(sessionId, sequence), {
          discard: true
        })
        yield* guard.endSession(sessionId)
      }
      output = {}
    } else {
      const toolUseId = event.tool_use_id
      if (toolUseId !== undefined) {
        // `intent` is not hashed: the call must also be of the event's tool (which the hash covers), so an
        // edited `requestId` can at most swap two pending calls of one tool.
        const decided = rows.find((row) =>
          row.kind === "call" && requestIdOf(row.intent) === toolUseId && row.tool_name === event.tool_name
        )
        if (decided !== undefined) {
          const ticket = event.hook_event_name === "PreToolUse"
            ? Option.none()
            : yield* guard.resume(sessionId, Number(decided.seq))
          yield* hooks.adopt(options.agentId, sessionId, toolUseId, ticket)
        }
      }
      const answer = yield* hooks.handle(options.agentId, raw)
      if (answer.status !== 200) {
        const error = answer.body.error
        return refuse(event.hook_event_name, "bad-hook-input", typeof error === "string" ? error : "bad hook input")
      }
      output = answer.body
    }

    // Fail-closed: the answer is given only once everything this event appended is durable.
    const timeout = options.durableTimeout ?? Duration.seconds(10)
    const queue = yield* AuditQueue.AuditQueue
    const durable = (yield* store.flush(timeout)) && (yield* queue.drainPending(timeout))
    if (!durable) {
      return refuse(
        event.hook_event_name,
        McpGuard.AUDIT_UNAVAILABLE_RULE,
        `what this event recorded was not durable within ${Duration.format(timeout)}`
      )
    }
    return { _tag: "Output", output }
  })
