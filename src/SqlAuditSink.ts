/**
 * The SQL ledger sink: each refusal becomes one row of the `signed_events` hash chain (docs/FORMAT.md,
 * "Ledger row v1"), signed when a signer is configured; an event that cannot be appended lands in
 * `signed_events_dlq` with the reason.
 *
 * One append reads the chain head, computes the row and inserts it inside one write transaction (SQLite:
 * `BEGIN IMMEDIATE`, so two writers cannot read the same head). The head is cached between appends, so
 * another writer on the same database (another connection or process) can make it stale; the unique index
 * on `sequence` then refuses the insert and the sink re-reads the head and retries on a `Schedule`, as it
 * does when the database stays busy. Failures are classified by driver error code (internal/sqlDialect.ts).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as SqlSchema from "@effect/sql/SqlSchema"
import type { ParseResult } from "effect"
import { Context, Data, DateTime, Duration, Effect, Either, Layer, Option, Ref, Schedule, Schema } from "effect"
import type { DeferredAuditEvent } from "./AuditEvent.js"
import { canonicalJson, formatTimestamp, GOVERNANCE_REFUSAL_EVENT_TYPE, payloadHash } from "./AuditEvent.js"
import type { AuditSigner } from "./AuditSigner.js"
import type { AppendOutcome } from "./AuditSink.js"
import { Appended, AuditSink, AuditSinkError, DlqLanded } from "./AuditSink.js"
import { ZERO_HASH } from "./internal/encoding.js"
import { rowEntryHashBytes } from "./internal/rowFormat.js"
import type { ClassifiedFailure, SqlDialect, Synchronous } from "./internal/sqlDialect.js"
import { forClient, withWriteTransaction } from "./internal/sqlDialect.js"

/** The last row of the chain: the next row gets `sequence + 1` and `prev_hash = entryHash`. */
export interface ChainHead {
  readonly sequence: number
  readonly entryHash: string
}

/** An event in the chain: appended now, or found there already (`alreadyInChain`, no second row). */
export interface ChainAppend {
  readonly alreadyInChain: boolean
  readonly uniqueRaceRetries: number
}

export class SqlAuditSink extends Context.Tag("agent-ledger/SqlAuditSink")<SqlAuditSink, {
  /** The `AuditSink` contract: `Appended`, `DlqLanded`, or `AuditSinkError` when even the DLQ insert failed. */
  readonly append: (event: DeferredAuditEvent) => Effect.Effect<AppendOutcome, AuditSinkError>
  readonly deadLetter: (event: DeferredAuditEvent, reason: string) => Effect.Effect<void, AuditSinkError>
  /**
   * Appends to the chain with the same retries as `append` but no dead-letter fallback: fails with
   * `AuditSinkError` (the reason) when the event cannot be appended. For replaying dead letters.
   */
  readonly appendOnly: (event: DeferredAuditEvent) => Effect.Effect<ChainAppend, AuditSinkError>
  /** Events waiting in `signed_events_dlq` (rows not yet replayed). */
  readonly dlqSize: Effect.Effect<number, SqlError>
  /** The chain head as stored now (not the cache); `None` for an empty chain. */
  readonly head: Effect.Effect<Option.Option<ChainHead>, SqlError | ParseResult.ParseError>
  /** Rows of `signed_events` with this `event_type`. */
  readonly countByEventType: (eventType: string) => Effect.Effect<number, SqlError>
}>() {}

export interface Options {
  /** Signs every row (`attest_level` "ed25519"); without one rows are "unsigned". */
  readonly signer?: AuditSigner | undefined
  /** SQLite `synchronous` pragma; default FULL: an event counts as appended only once it is durable. */
  readonly synchronous?: Synchronous | undefined
  /** How long a write waits for another writer's lock (SQLite `busy_timeout`); default 5 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /**
   * When to retry a lost sequence race or a busy database; default `defaultRetrySchedule`. Each retry
   * re-reads the chain head; when the schedule ends, the event goes to the dead-letter table.
   */
  readonly retrySchedule?: Schedule.Schedule<unknown, unknown> | undefined
}

/** Up to 5 retries, exponential from 2 ms (about 60 ms in all), jittered so racing writers spread out. */
export const defaultRetrySchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("2 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(5))
)

export const DEFAULT_BUSY_TIMEOUT: Duration.Duration = Duration.seconds(5)

const HeadRow = Schema.Struct({
  sequence: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  entry_hash: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))
})

/** The parts of a row that do not depend on its position in the chain. */
interface PreparedEvent {
  readonly event: DeferredAuditEvent
  readonly payload: string
  readonly payloadHash: string
  readonly timestamp: string
}

/** A failed append attempt that the retry schedule may try again. */
class Retryable extends Data.TaggedError("Retryable")<{ readonly failure: ClassifiedFailure }> {}

/** A failed append attempt that no retry can fix. */
class Unrecoverable extends Data.TaggedError("Unrecoverable")<{ readonly reason: string }> {}

const nowRfc3339 = Effect.map(DateTime.now, DateTime.formatIso)

/**
 * The sink on the `SqlClient` in context. Applies the ledger's connection settings (SQLite: WAL,
 * `synchronous`, foreign keys, `busy_timeout`); the schema must already be migrated (`runMigrations`).
 */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    const dialect: SqlDialect = yield* forClient(client)
    // Column names are the ledger's format: a client configured with name transforms must not rename them.
    const sql = client.withoutTransforms()
    yield* dialect.configure(sql, {
      synchronous: options.synchronous ?? "FULL",
      busyTimeout: Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT)
    })
    const signer = Option.fromNullable(options.signer)
    const retrySchedule = options.retrySchedule ?? defaultRetrySchedule
    // None: unknown, read it from the table inside the next write transaction.
    const cachedHead = yield* Ref.make(Option.none<ChainHead>())

    const findHead = SqlSchema.findOne({
      Request: Schema.Void,
      Result: HeadRow,
      execute: () => sql`SELECT sequence, entry_hash FROM signed_events ORDER BY sequence DESC LIMIT 1`
    })
    const readHead = Effect.map(
      findHead(undefined),
      Option.map((row): ChainHead => ({ sequence: row.sequence, entryHash: row.entry_hash }))
    )

    const isAppended = (id: string) =>
      Effect.map(sql`SELECT 1 AS found FROM signed_events WHERE id = ${id}`, (rows) => rows.length > 0)

    /** Runs inside the write transaction: the row after `head`, inserted. */
    const insertAfterHead = (prepared: PreparedEvent) =>
      Effect.gen(function*() {
        const cached = yield* Ref.get(cachedHead)
        const head = Option.isSome(cached) ? cached : yield* readHead
        const sequence = Option.match(head, { onNone: () => 0, onSome: (h) => h.sequence + 1 })
        const prevHash = Option.match(head, { onNone: () => ZERO_HASH, onSome: (h) => h.entryHash })
        const { event } = prepared
        const entryHashBytes = rowEntryHashBytes({
          sequence,
          prevHash,
          id: event.id,
          agentId: event.agentId,
          eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
          payloadHash: prepared.payloadHash,
          timestamp: prepared.timestamp
        })
        const entryHash = entryHashBytes.toString("hex")
        const appendedAt = yield* nowRfc3339
        yield* sql`INSERT INTO signed_events ${
          sql.insert({
            id: event.id,
            sequence,
            agent_id: event.agentId,
            event_type: GOVERNANCE_REFUSAL_EVENT_TYPE,
            payload: prepared.payload,
            payload_hash: prepared.payloadHash,
            prev_hash: prevHash,
            entry_hash: entryHash,
            signature: Option.match(signer, { onNone: () => null, onSome: (s) => s.sign(entryHashBytes) }),
            key_id: Option.match(signer, { onNone: () => null, onSome: (s) => s.keyId }),
            attest_level: Option.isSome(signer) ? "ed25519" : "unsigned",
            timestamp: prepared.timestamp,
            appended_at: appendedAt
          })
        }`
        return { sequence, entryHash } satisfies ChainHead
      })

    /**
     * One attempt. Succeeds when the event is in the chain: appended now (`false`), or before (`true`, a
     * duplicate id); fails with `Retryable` for a lost sequence race or a busy database, else `Unrecoverable`.
     */
    const attemptAppend = (prepared: PreparedEvent): Effect.Effect<boolean, Retryable | Unrecoverable> =>
      withWriteTransaction(sql, dialect, insertAfterHead(prepared)).pipe(
        Effect.matchEffect({
          onSuccess: (head) =>
            Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (callerTransaction) =>
              // In the caller's transaction the row is not committed yet and may still be rolled back: a
              // cached head must never be ahead of the table (the next row would leave a gap).
              Effect.as(
                Ref.set(cachedHead, Option.isSome(callerTransaction) ? Option.none() : Option.some(head)),
                false
              )),
          onFailure: (error) =>
            Effect.zipRight(
              Ref.set(cachedHead, Option.none()),
              error._tag === "ParseError"
                ? Effect.fail(new Unrecoverable({ reason: `the chain head row is malformed: ${error.message}` }))
                : classifyInsertFailure(prepared, dialect.classify(error))
            )
        })
      )

    const classifyInsertFailure = (
      prepared: PreparedEvent,
      failure: ClassifiedFailure
    ): Effect.Effect<boolean, Retryable | Unrecoverable> => {
      switch (failure.kind) {
        case "uniqueViolation":
          // The id (primary key) or the sequence (unique index): an already appended event is a success.
          return isAppended(prepared.event.id).pipe(
            Effect.mapError((error) =>
              new Unrecoverable({
                reason: `${failure.description}; then checking for a duplicate id failed: ${
                  dialect.classify(error).description
                }`
              })
            ),
            Effect.flatMap((appended) => appended ? Effect.succeed(true) : Effect.fail(new Retryable({ failure })))
          )
        case "busy":
          return Effect.fail(new Retryable({ failure }))
        case "storageFull":
        case "other":
          return Effect.fail(new Unrecoverable({ reason: failure.description }))
      }
    }

    const insertDeadLetter = (prepared: PreparedEvent, reason: string): Effect.Effect<void, AuditSinkError> =>
      Effect.gen(function*() {
        const failedAt = yield* nowRfc3339
        yield* sql`INSERT INTO signed_events_dlq ${
          sql.insert({
            id: prepared.event.id,
            agent_id: prepared.event.agentId,
            event_type: GOVERNANCE_REFUSAL_EVENT_TYPE,
            payload: prepared.payload,
            payload_hash: prepared.payloadHash,
            timestamp: prepared.timestamp,
            failure_reason: reason,
            failed_at: failedAt
          })
        }`
      }).pipe(
        Effect.retry({ schedule: retrySchedule, while: (error) => dialect.classify(error).kind === "busy" }),
        Effect.mapError((error) =>
          new AuditSinkError({
            eventId: prepared.event.id,
            reason: `dead-letter insert failed (${dialect.classify(error).description}) for: ${reason}`
          })
        )
      )

    const prepare = (event: DeferredAuditEvent): PreparedEvent => ({
      event,
      payload: canonicalJson(event),
      payloadHash: payloadHash(event),
      timestamp: formatTimestamp(event)
    })

    /** Attempts with retries; `Right` with `alreadyInChain`, or `Left` with the reason it cannot be appended. */
    const appendWithRetries = (prepared: PreparedEvent) =>
      Effect.gen(function*() {
        const attempts = yield* Ref.make(0)
        const result = yield* Ref.update(attempts, (n) => n + 1).pipe(
          Effect.zipRight(attemptAppend(prepared)),
          Effect.retry({ schedule: retrySchedule, while: (failure) => failure._tag === "Retryable" }),
          Effect.either
        )
        const uniqueRaceRetries = (yield* Ref.get(attempts)) - 1
        return {
          uniqueRaceRetries,
          result: Either.mapLeft(result, (failure) =>
            failure._tag === "Retryable"
              ? `retry budget exhausted after ${uniqueRaceRetries} retries: ${failure.failure.description}`
              : failure.reason)
        }
      })

    const append = (event: DeferredAuditEvent): Effect.Effect<AppendOutcome, AuditSinkError> =>
      Effect.gen(function*() {
        const prepared = prepare(event)
        const { result, uniqueRaceRetries } = yield* appendWithRetries(prepared)
        if (Either.isRight(result)) return new Appended({ uniqueRaceRetries })
        const reason = result.left
        yield* insertDeadLetter(prepared, reason)
        yield* Effect.logWarning("agent-ledger: event landed in signed_events_dlq; the chain did not advance").pipe(
          Effect.annotateLogs({ eventId: event.id, agentId: event.agentId, reason })
        )
        return new DlqLanded({ reason, uniqueRaceRetries })
      })

    const appendOnly = (event: DeferredAuditEvent): Effect.Effect<ChainAppend, AuditSinkError> =>
      Effect.flatMap(appendWithRetries(prepare(event)), ({ result, uniqueRaceRetries }) =>
        Either.match(result, {
          onLeft: (reason) => Effect.fail(new AuditSinkError({ eventId: event.id, reason })),
          onRight: (alreadyInChain) => Effect.succeed({ alreadyInChain, uniqueRaceRetries })
        }))

    const deadLetter = (event: DeferredAuditEvent, reason: string): Effect.Effect<void, AuditSinkError> =>
      insertDeadLetter(prepare(event), reason)

    const count = (rows: Effect.Effect<ReadonlyArray<{ readonly [column: string]: unknown }>, SqlError>) =>
      Effect.map(rows, (found) => Number(found[0]?.n ?? 0))

    const dlqSize = count(sql`SELECT COUNT(*) AS n FROM signed_events_dlq WHERE replayed_at IS NULL`)

    const countByEventType = (eventType: string) =>
      count(sql`SELECT COUNT(*) AS n FROM signed_events WHERE event_type = ${eventType}`)

    return SqlAuditSink.of({ append, deadLetter, appendOnly, dlqSize, head: readHead, countByEventType })
  })

/** `SqlAuditSink` and, backed by it, `AuditSink`. */
export const layer = (options: Options = {}): Layer.Layer<SqlAuditSink | AuditSink, SqlError, SqlClient.SqlClient> =>
  Layer.effectContext(
    Effect.map(make(options), (sink) =>
      Context.make(SqlAuditSink, sink).pipe(
        Context.add(AuditSink, AuditSink.of({ append: sink.append, deadLetter: sink.deadLetter }))
      ))
  )
