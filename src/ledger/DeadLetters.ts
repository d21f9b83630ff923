/**
 * The dead-letter table (`signed_events_dlq`) as an operator sees it: list what is waiting, and replay it.
 *
 * Replay re-appends every not-yet-replayed dead letter, oldest first, through the SQL sink: a new
 * sequence at the chain head, the same event id and the same payload. A dead letter is marked
 * `replayed_at` only once its event is in the chain, so replay is idempotent: a second run appends nothing,
 * and an event whose id is already in the chain is marked without a second row. A dead letter that still
 * cannot be appended stays pending, with no new dead-letter row, and is reported.
 *
 * The key signs only what it signed before: when the sink signs, a dead letter is replayed only if it
 * carries that key's dead-letter signature over its stored columns (docs/FORMAT.md, "Dead-letter
 * signature"), which the sink wrote when it dead-lettered the event. A row planted in the table by a
 * writer without the key (or edited since) is refused, named, and stays pending. One dead letter that
 * cannot be read, authenticated or rebuilt never stops the others: each is reported and skipped.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { DateTime, Effect, Either, Option, ParseResult, Schema } from "effect"
import * as AuditEvent from "../audit/AuditEvent.js"
import { verifyMessageSignature } from "../audit/AuditSigner.js"
import { deadLetterMessage } from "../internal/deadLetterFormat.js"
import * as LedgerSql from "./LedgerSql.js"
import type { SigningKey } from "./SqlAuditSink.js"
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
  replayed_at: Schema.NullOr(Schema.String),
  /** The writer's dead-letter signature (docs/FORMAT.md); NULL from a keyless writer or an older version. */
  signature: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  key_id: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null })
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
  mode: Schema.optional(Schema.Literal("shadow")),
  timestamp: Schema.String
}))

/**
 * The event a dead letter holds, rebuilt from its payload. The rebuilt event must reproduce the stored
 * payload byte for byte (and so its payload_hash), else replay would append something else than what
 * was refused.
 */
export const eventOf = (
  letter: Pick<DeadLetter, "id" | "payload">
): Either.Either<AuditEvent.DeferredAuditEvent, string> => {
  try {
    return rebuild(letter)
  } catch (error) {
    // e.g. a payload that decodes to a string RFC 8785 refuses (a lone surrogate): not an event the chain takes.
    return Either.left(`payload cannot be re-encoded: ${error instanceof Error ? error.message : String(error)}`)
  }
}

const rebuild = (letter: Pick<DeadLetter, "id" | "payload">): Either.Either<AuditEvent.DeferredAuditEvent, string> =>
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
                }),
              ...(p.mode === undefined ? {} : { mode: p.mode })
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

/**
 * Why `letter` must not be signed by `key`, or `undefined` when it may: a sink with a key replays only dead
 * letters that key signed, over exactly their stored columns. Without a key (an unsigned ledger) nothing is
 * signed and every dead letter passes. `trustUnsigned` lets dead letters with no signature at all through
 * (those written before dead letters were signed); never one with a wrong signature or another key's.
 */
export const authenticationFailure = (
  letter: DeadLetter,
  key: Option.Option<SigningKey>,
  trustUnsigned = false
): string | undefined => {
  if (Option.isNone(key)) return undefined
  if (letter.signature === null) {
    return trustUnsigned ? undefined : "not authenticated: the dead letter carries no signature (written by a " +
      "writer without the ledger's key, or before dead letters were signed); refusing to sign it"
  }
  if (letter.key_id !== key.value.keyId) {
    return `not authenticated: signed by key ${String(letter.key_id)}, not by the replaying key ${key.value.keyId}`
  }
  const message = deadLetterMessage({
    id: letter.id,
    agentId: letter.agent_id,
    eventType: letter.event_type,
    payload: letter.payload,
    payloadHash: letter.payload_hash,
    timestamp: letter.timestamp,
    failureReason: letter.failure_reason,
    failedAt: letter.failed_at
  })
  return verifyMessageSignature(key.value.publicKey, message, letter.signature)
    ? undefined
    : "not authenticated: the dead-letter signature does not verify (planted or edited); refusing to sign it"
}

/** A stored dead-letter row as read, before it is known to be well formed. */
interface StoredRow {
  readonly [column: string]: unknown
}

const decodeDeadLetter = Schema.decodeUnknownEither(DeadLetter)

/** The row's dead letter, or a failure naming it (a row of the wrong shape is skipped, not fatal). */
const readRow = (row: StoredRow): Either.Either<DeadLetter, ReplayResult["failed"][number]> =>
  Either.mapLeft(decodeDeadLetter(row), (error) => ({
    dlqId: typeof row.dlq_id === "number" ? row.dlq_id : Number(row.dlq_id),
    eventId: typeof row.id === "string" ? row.id : String(row.id),
    reason: `malformed dead-letter row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
  }))

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
    /**
     * Replay dead letters that carry no signature at all (written before dead letters were signed) with
     * the sink's key. Only for a table the operator has checked by other means; default false.
     */
    readonly trustUnsignedDeadLetters?: boolean
  } = {}
): Effect.Effect<ReplayResult, SqlError | ParseResult.ParseError, LedgerSql.LedgerSql | SqlAuditSink> =>
  LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const sink = yield* SqlAuditSink
    const pending = yield* sql<StoredRow>`SELECT * FROM signed_events_dlq WHERE replayed_at IS NULL ORDER BY dlq_id`
    const dryRun = options.dryRun === true
    yield* Effect.annotateCurrentSpan({ "agent_ledger.pending": pending.length, "agent_ledger.dry_run": dryRun })
    let replayed = 0
    let alreadyInChain = 0
    const failed: Array<ReplayResult["failed"][number]> = []
    const onProgress = options.onProgress ?? (() => Effect.void)
    for (const [done, row] of pending.entries()) {
      yield* onProgress(done, pending.length)
      const checked = checkDeadLetter(row, sink.signingKey, options.trustUnsignedDeadLetters === true)
      if (Either.isLeft(checked)) {
        failed.push(checked.left)
        continue
      }
      if (dryRun) continue
      const { event, letter } = checked.right
      const outcome = yield* Effect.either(sink.appendOnly(event))
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

/** A stored row as a replayable event: well formed, authenticated for `key`, and rebuilt byte for byte. */
const checkDeadLetter = (
  row: StoredRow,
  key: Option.Option<SigningKey>,
  trustUnsigned: boolean
): Either.Either<
  { readonly letter: DeadLetter; readonly event: AuditEvent.DeferredAuditEvent },
  ReplayResult["failed"][number]
> =>
  Either.flatMap(readRow(row), (letter) => {
    const refused = authenticationFailure(letter, key, trustUnsigned)
    if (refused !== undefined) return Either.left({ dlqId: letter.dlq_id, eventId: letter.id, reason: refused })
    return Either.match(eventOf(letter), {
      onLeft: (reason) => Either.left({ dlqId: letter.dlq_id, eventId: letter.id, reason }),
      onRight: (event) => Either.right({ letter, event })
    })
  })
