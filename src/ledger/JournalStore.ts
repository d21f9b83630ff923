/**
 * Session journal entries made durable in the ledger's database (`journal_entries`, docs/FORMAT.md
 * "Journal entry row"), with group commit: a journal hands each entry over in the same synchronous step
 * that appends it (`enqueue`, so entries reach the store in each session's order), one drainer fiber takes
 * whatever has queued (up to `maxBatch`) and stores it in one write transaction through the ledger's sink
 * (`SqlAuditSink.insertJournalEntries`: the writer thread when the ledger has one), and each entry's
 * `onStored` callback then says whether it is durable. Concurrent calls therefore share one commit.
 *
 * While the database cannot be written (`unavailable`), the batch is held and retried on
 * `stallSchedule` (nothing is dropped and the chain keeps its order); its entries' callbacks are told of the
 * failure at once, so a fail-closed guard need not wait. A batch refused for its own content (an entry
 * stored before with another hash: a session id reused) is retried one entry at a time, and the entries that
 * still fail are logged and counted as lost.
 *
 * Loss window: an entry is durable once its batch commits. A crash loses what was enqueued and not yet
 * committed: the batch being written and what queued behind it (under a steady load, about one commit's
 * worth of entries). A fail-closed guard waits for the call entry, so what it forwarded is never in it.
 */
import type { SqlError } from "@effect/sql/SqlError"
import type { Array as Arr, Duration, Scope } from "effect"
import { Chunk, Context, Data, Deferred, Effect, Either, Exit, FiberId, Layer, Queue, Schedule } from "effect"
import type { AuditSinkError } from "../audit/AuditSink.js"
import * as JournalRow from "./JournalRow.js"
import * as LedgerSql from "./LedgerSql.js"
import { SqlAuditSink } from "./SqlAuditSink.js"

export type { JournalRow } from "./JournalRow.js"

/** Told once an entry is durable (`undefined`), or each time storing it failed (the failure). */
export type OnStored = (failure: AuditSinkError | undefined) => void

export interface Stats {
  /** Entries committed. */
  readonly stored: number
  /** Write transactions committed. */
  readonly batches: number
  /** Failed attempts (each retried, or its entries lost). */
  readonly failedAttempts: number
  /** Entries given up on (refused for their own content); logged. */
  readonly lost: number
  /** Entries enqueued and not yet committed or lost. */
  readonly outstanding: number
}

export class JournalStore extends Context.Tag("agent-ledger/JournalStore")<JournalStore, {
  /**
   * Queue an entry for the next group commit. Synchronous on purpose: a journal calls it inside the step
   * that appends the entry, so entries reach the store in the order the journal made them.
   */
  readonly enqueue: (row: JournalRow.JournalRow, onStored?: OnStored) => void
  /** False since the last failed write and until the next one succeeds. */
  readonly available: Effect.Effect<boolean>
  /** Waits until every entry enqueued so far is committed (or lost); false if `timeout` passed first. */
  readonly flush: (timeout: Duration.DurationInput) => Effect.Effect<boolean>
  readonly stats: Effect.Effect<Stats>
}>() {}

export type Service = Context.Tag.Service<JournalStore>

export interface Options {
  /** The most entries one write transaction takes; default 512. */
  readonly maxBatch?: number | undefined
  /** The delay between attempts while the database cannot be written; default 10 ms doubling to 1 s. */
  readonly stallSchedule?: Schedule.Schedule<unknown, unknown> | undefined
  /** How long closing waits for queued entries to commit; default 5 seconds. */
  readonly shutdownDrainTimeout?: Duration.DurationInput | undefined
}

interface Queued {
  readonly row: JournalRow.JournalRow
  readonly onStored: OnStored | undefined
}

const defaultStall: Schedule.Schedule<unknown, unknown> = Schedule.exponential("10 millis").pipe(
  Schedule.union(Schedule.spaced("1 second"))
)

/** Calls every callback, none of which may stop the others. */
const tell = (batch: ReadonlyArray<Queued>, failure: AuditSinkError | undefined) => {
  for (const item of batch) {
    try {
      item.onStored?.(failure)
    } catch {
      // A callback's fault is its owner's; the store goes on.
    }
  }
}

/** The store on `insert` (the sink's `insertJournalEntries`); its drainer lives in the scope. */
export const makeWith = (
  insert: (rows: Arr.NonEmptyReadonlyArray<JournalRow.JournalRow>) => Effect.Effect<void, AuditSinkError>,
  options: Options = {}
): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxBatch = Math.max(1, options.maxBatch ?? 512)
    const queue = yield* Queue.unbounded<Queued>()
    const counts = { stored: 0, batches: 0, failedAttempts: 0, lost: 0, outstanding: 0 }
    let available = true
    let idle: Array<Deferred.Deferred<void>> = []

    const finished = (n: number) => {
      counts.outstanding -= n
      if (counts.outstanding === 0 && idle.length > 0) {
        for (const waiter of idle) Deferred.unsafeDone(waiter, Exit.void)
        idle = []
      }
    }

    const attempt = (batch: ReadonlyArray<Queued>) =>
      Effect.either(
        insert(batch.map((item) => item.row) as unknown as Arr.NonEmptyReadonlyArray<JournalRow.JournalRow>)
      )

    /** Stores one batch: held and retried while the database is unavailable; poison entries isolated. */
    const storeBatch = (batch: ReadonlyArray<Queued>): Effect.Effect<void> =>
      Effect.gen(function*() {
        const stall = yield* Schedule.driver(options.stallSchedule ?? defaultStall)
        while (true) {
          const result = yield* attempt(batch)
          if (Either.isRight(result)) {
            available = true
            counts.stored += batch.length
            counts.batches++
            tell(batch, undefined)
            return finished(batch.length)
          }
          counts.failedAttempts++
          available = false
          tell(batch, result.left)
          if (result.left.unavailable !== true) {
            if (batch.length > 1) {
              for (const item of batch) yield* storeBatch([item])
              return
            }
            counts.lost++
            yield* Effect.logError("agent-ledger: a journal entry could not be stored").pipe(
              Effect.annotateLogs({
                sessionId: batch[0]!.row.sessionId,
                sequence: batch[0]!.row.sequence,
                reason: result.left.reason
              })
            )
            return finished(1)
          }
          yield* Effect.logWarning("agent-ledger: journal entries wait for the database").pipe(
            Effect.annotateLogs({ entries: batch.length, reason: result.left.reason })
          )
          yield* Effect.orElse(stall.next(undefined), () => Effect.sleep("1 second"))
        }
      })

    const drain = Effect.forever(
      Effect.flatMap(Queue.takeBetween(queue, 1, maxBatch), (items) => storeBatch(Chunk.toReadonlyArray(items)))
    )
    yield* Effect.forkScoped(
      drain.pipe(
        Effect.sandbox,
        Effect.tapError((cause) =>
          Effect.logError("agent-ledger: the journal store's drainer failed; restarting", cause)
        ),
        Effect.retry(Schedule.spaced("100 millis"))
      )
    )

    const flush = (timeout: Duration.DurationInput) =>
      Effect.suspend(() => {
        if (counts.outstanding === 0) return Effect.succeed(true)
        const waiter = Deferred.unsafeMake<void>(FiberId.none)
        idle.push(waiter)
        return Deferred.await(waiter).pipe(
          Effect.as(true),
          Effect.timeoutTo({ duration: timeout, onTimeout: () => false, onSuccess: (ok) => ok })
        )
      })

    // Released before the drainer's fiber is interrupted (finalizers run in reverse): queued entries commit.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(flush(options.shutdownDrainTimeout ?? "5 seconds"), (flushed) =>
        flushed ? Effect.void : Effect.logError("agent-ledger: journal entries not stored at shutdown").pipe(
          Effect.annotateLogs({ entries: counts.outstanding })
        ))
    )

    return JournalStore.of({
      enqueue: (row, onStored) => {
        counts.outstanding++
        queue.unsafeOffer({ row, onStored })
      },
      available: Effect.sync(() =>
        available
      ),
      flush,
      stats: Effect.sync(() => ({ ...counts }))
    })
  })

/** The store writing through the ledger's `SqlAuditSink`. */
export const make = (options: Options = {}): Effect.Effect<Service, never, SqlAuditSink | Scope.Scope> =>
  Effect.flatMap(SqlAuditSink, (sink) => makeWith(sink.insertJournalEntries, options))

export const layer = (options: Options = {}): Layer.Layer<JournalStore, never, SqlAuditSink> =>
  Layer.scoped(JournalStore, make(options))

// ---------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------

/** The stored entries of `sessionId` in `seq` order, decoded (a malformed row fails with its reason). */
export const readSession = (
  sessionId: string
): Effect.Effect<ReadonlyArray<JournalRow.StoredRow>, SqlError | RowError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(
    Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      client.withoutTransforms()`
        SELECT ${client.literal(JournalRow.COLUMNS.join(", "))} FROM journal_entries
        WHERE session_id = ${sessionId} ORDER BY seq`),
    (rows) => decodeRows(rows)
  ))

/** The ids of the sessions with stored entries, sorted. */
export const sessionIds: Effect.Effect<ReadonlyArray<string>, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.map(
      client.withoutTransforms()<{ session_id: string }>`
        SELECT DISTINCT session_id FROM journal_entries ORDER BY session_id`,
      (rows) => rows.map((row) => row.session_id)
    ))
)

/** A stored row that is not a journal entry row (a column of the wrong type). */
export class RowError extends Data.TaggedError("JournalRowError")<{ readonly reason: string }> {
  override get message(): string {
    return `a journal_entries row is malformed: ${this.reason}`
  }
}

const decodeRows = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<JournalRow.StoredRow>, RowError> => {
  const out: Array<JournalRow.StoredRow> = []
  for (const row of rows) {
    const decoded = JournalRow.decodeStoredRow(row)
    if (Either.isLeft(decoded)) return Effect.fail(new RowError({ reason: decoded.left.message }))
    out.push(decoded.right)
  }
  return Effect.succeed(out)
}
