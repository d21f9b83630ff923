/**
 * Where the audit pipeline writes: the `AuditSink` service interface, its outcomes and its error.
 * The SQL ledger (`SqlAuditSink`) is one implementation; tests use in-memory ones.
 *
 * Contract: `append` either appends the event (`Appended`), or lands it in the sink's dead-letter store
 * (`DlqLanded`), or fails with `AuditSinkError` when the event could reach neither. A sink may also die
 * (a defect); the `AuditQueue` drainer survives that and restarts.
 *
 * Group commit: a sink may also implement `appendBatch` (many events, one write transaction, one fsync)
 * and `deadLetterBatch`. A sink that implements only `append` and `deadLetter` keeps working: the queue
 * lifts it, appending each batch one event at a time.
 */
import type { Array as Arr, Effect } from "effect"
import { Context, Data, Schema } from "effect"
import type { DeferredAuditEvent } from "./AuditEvent.js"

/** Where a row stands in the ledger's hash chain. */
export interface ChainPosition {
  readonly sequence: number
  /** The row's entry_hash, 64 lowercase hex chars. */
  readonly entryHash: string
}

/** The event is in the ledger (now, or already before: appends are idempotent by event id). */
export class Appended extends Data.TaggedClass("Appended")<{
  /**
   * Write transactions the sink retried after losing a race for the next sequence number (or hitting a
   * busy database). In a batch, the retries of a transaction are reported on its first event only, so
   * summing over events counts retried transactions.
   */
  readonly uniqueRaceRetries: number
  /** The event's row in the chain, when the sink knows it (`SqlAuditSink` always does). */
  readonly position?: ChainPosition | undefined
}> {}

/** The event could not be appended and sits in the dead-letter store, with the reason. */
export class DlqLanded extends Data.TaggedClass("DlqLanded")<{
  readonly reason: string
  readonly uniqueRaceRetries: number
}> {}

export type AppendOutcome = Appended | DlqLanded

/**
 * The event reached neither the ledger nor the dead-letter store. `unavailable: true` says why in
 * general: the sink cannot write anything right now (disk full, read-only file, I/O error, a lock held
 * past the retry budget), a condition of the environment rather than of the event. The `AuditQueue` then
 * holds the events, in order, and retries until the sink recovers; any other `AuditSinkError` is the
 * event's own failure and is accounted as an append failure.
 */
export class AuditSinkError extends Schema.TaggedError<AuditSinkError>()("AuditSinkError", {
  eventId: Schema.String,
  reason: Schema.String,
  unavailable: Schema.optional(Schema.Boolean)
}) {}

export class AuditSink extends Context.Tag("agent-ledger/AuditSink")<AuditSink, {
  readonly append: (event: DeferredAuditEvent) => Effect.Effect<AppendOutcome, AuditSinkError>
  /**
   * Put an event straight into the dead-letter store with `reason` (used for a poison event that made
   * the sink die). Fails when the store cannot take it.
   */
  readonly deadLetter: (event: DeferredAuditEvent, reason: string) => Effect.Effect<void, AuditSinkError>
  /**
   * Optional group commit: append `events` in order, returning one outcome per event, in order. All or
   * nothing: when it fails (or dies), none of the events may have been appended or dead-lettered by this
   * call, and the queue falls back to `append` for each event, so one poison event lands in the
   * dead-letter store alone. (A sink whose appends are idempotent by event id, as `SqlAuditSink`'s are,
   * may also fail after committing part of a batch: the fallback then finds those events already there.)
   */
  readonly appendBatch?:
    | ((events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>) => Effect.Effect<
      ReadonlyArray<AppendOutcome>,
      AuditSinkError
    >)
    | undefined
  /** Optional: dead-letter many events with one `reason` in one write; all or nothing, like `appendBatch`. */
  readonly deadLetterBatch?:
    | ((events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>, reason: string) => Effect.Effect<void, AuditSinkError>)
    | undefined
}>() {}

/** The `AuditSink` service itself (what `yield* AuditSink` gives). */
export type Service = Context.Tag.Service<AuditSink>
