/**
 * The dead-letter table (`signed_events_dlq`) as an operator sees it: list what is waiting, and replay it.
 *
 * Replay re-appends every not-yet-replayed dead letter, oldest first, through the SQL sink: a new
 * sequence at the chain head, the same event id and the same payload. A dead letter is marked
 * `replayed_at` only once its event is in the chain, so replay is idempotent: a second run appends nothing,
 * and an event whose id is already in the chain is marked without a second row. A dead letter that still
 * cannot be appended stays pending, with no new dead-letter row, and is reported.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { DateTime, Effect, Either, Option, ParseResult, Schema } from "effect"
import * as AuditEvent from "../audit/AuditEvent.js"
import * as LedgerSql from "./LedgerSql.js"
import { SqlAuditSink } from "./SqlAuditSink.js"

export const DeadLetter = Schema.Struct({
  dlq_id: Schema.Number,
  id: Schema.String,
  agent_id: Schema.String,
  event_type: Schema.String,
  payload: Schema.String,
  payload_hash: Schema.String,
  timestamp: Schema.String,
  failure_reason: Schema.String,
  failed_at: Schema.String,
  replayed_at: Schema.NullOr(Schema.String)
}).annotations({ identifier: "DeadLetter" })
export type DeadLetter = typeof DeadLetter.Type

const decodeDeadLetters = Schema.decodeUnknown(Schema.Array(DeadLetter))

/** Dead letters in arrival order; `pendingOnly` leaves out the replayed ones. */
export const list = (
  options: { readonly pendingOnly?: boolean } = {}
): Effect.Effect<ReadonlyArray<DeadLetter>, SqlError | ParseResult.ParseError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = options.pendingOnly === true
      ? yield* sql`SELECT * FROM signed_events_dlq WHERE replayed_at IS NULL ORDER BY dlq_id`
      : yield* sql`SELECT * FROM signed_events_dlq ORDER BY dlq_id`
    return yield* decodeDeadLetters(rows)
  }))

const PayloadJson = Schema.parseJson(Schema.Struct({
  action: AuditEvent.AgentAction,
  agent_id: Schema.String,
  decision: AuditEvent.Decision,
  event_id: Schema.String,
  journal: Schema.optional(Schema.Struct({ session_id: Schema.String, sequence: Schema.Number })),
  timestamp: Schema.String
}))

/**
 * The event a dead letter holds, rebuilt from its payload. The rebuilt event must reproduce the stored
 * payload byte for byte (and so its payload_hash), else replay would append something else than what
 * was refused.
 */
export const eventOf = (letter: DeadLetter): Either.Either<AuditEvent.DeferredAuditEvent, string> =>
  Schema.decodeUnknownEither(PayloadJson)(letter.payload).pipe(
    Either.mapLeft((error) => `payload does not decode: ${ParseResult.TreeFormatter.formatErrorSync(error)}`),
    Either.flatMap((p) =>
      Option.match(DateTime.make(p.timestamp), {
        onNone: () => Either.left(`payload timestamp ${p.timestamp} is not a date`),
        onSome: (timestamp) =>
          Either.right(
            new AuditEvent.DeferredAuditEvent({
              id: p.event_id,
              agentId: p.agent_id,
              action: p.action,
              decision: p.decision,
              timestamp: DateTime.toUtc(timestamp),
              ...(p.journal === undefined
                ? {}
                : {
                  journal: new AuditEvent.JournalRef({ sessionId: p.journal.session_id, sequence: p.journal.sequence })
                })
            })
          )
      })
    ),
    Either.flatMap((event) =>
      AuditEvent.canonicalJson(event) === letter.payload && event.id === letter.id
        ? Either.right(event)
        : Either.left("payload does not re-encode to the stored bytes (edited dead letter?)")
    )
  )

export interface ReplayResult {
  /** Dead letters now in the chain (appended now, or found there already) and marked replayed. */
  readonly replayed: number
  /** Of those, the ones whose event id was already in the chain (marked without a second row). */
  readonly alreadyInChain: number
  /** Dead letters left pending, with why. */
  readonly failed: ReadonlyArray<{ readonly dlqId: number; readonly eventId: string; readonly reason: string }>
  /** With `dryRun`: the dead letters that would be replayed; nothing was written. */
  readonly dryRun: boolean
  readonly pending: number
}

/** The span around `replayDeadLetters` (docs/OPERATIONS.md, "Traces"). */
export const SPAN_REPLAY = "agent_ledger.dlq.replay"

/** Replays the pending dead letters in order (see the module comment). */
export const replayDeadLetters = (
  options: {
    readonly dryRun?: boolean
    /** Called before each dead letter and once at the end, with how many of the pending ones are handled. */
    readonly onProgress?: (done: number, total: number) => Effect.Effect<void>
  } = {}
): Effect.Effect<ReplayResult, SqlError | ParseResult.ParseError, LedgerSql.LedgerSql | SqlAuditSink> =>
  LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const sink = yield* SqlAuditSink
    const pending = yield* list({ pendingOnly: true })
    const dryRun = options.dryRun === true
    yield* Effect.annotateCurrentSpan({ "agent_ledger.pending": pending.length, "agent_ledger.dry_run": dryRun })
    if (dryRun) return { replayed: 0, alreadyInChain: 0, failed: [], dryRun, pending: pending.length }
    let replayed = 0
    let alreadyInChain = 0
    const failed: Array<ReplayResult["failed"][number]> = []
    const onProgress = options.onProgress ?? (() => Effect.void)
    for (const [done, letter] of pending.entries()) {
      yield* onProgress(done, pending.length)
      const event = eventOf(letter)
      if (Either.isLeft(event)) {
        failed.push({ dlqId: letter.dlq_id, eventId: letter.id, reason: event.left })
        continue
      }
      const outcome = yield* Effect.either(sink.appendOnly(event.right))
      if (Either.isLeft(outcome)) {
        failed.push({ dlqId: letter.dlq_id, eventId: letter.id, reason: outcome.left.reason })
        continue
      }
      if (outcome.right.alreadyInChain) alreadyInChain++
      const now = DateTime.formatIso(yield* DateTime.now)
      yield* sql`UPDATE signed_events_dlq SET replayed_at = ${now} WHERE dlq_id = ${letter.dlq_id}`
      replayed++
    }
    yield* onProgress(pending.length, pending.length)
    yield* Effect.annotateCurrentSpan({
      "agent_ledger.replayed": replayed,
      "agent_ledger.already_in_chain": alreadyInChain,
      "agent_ledger.failed": failed.length
    })
    return { replayed, alreadyInChain, failed, dryRun, pending: pending.length }
  })).pipe(Effect.withSpan(SPAN_REPLAY))
