/**
 * Where the audit pipeline writes: the `AuditSink` service interface, its outcomes and its error.
 * The SQL ledger (`SqlAuditSink`) is one implementation; tests use in-memory ones.
 *
 * Contract: `append` either appends the event (`Appended`), or lands it in the sink's dead-letter store
 * (`DlqLanded`), or fails with `AuditSinkError` when the event could reach neither. A sink may also die
 * (a defect); the `AuditQueue` drainer survives that and restarts.
 */
import type { Effect } from "effect"
import { Context, Data, Schema } from "effect"
import type { DeferredAuditEvent } from "./AuditEvent.js"

/** The event is in the ledger (now, or already before: appends are idempotent by event id). */
export class Appended extends Data.TaggedClass("Appended")<{
  /** Times the sink lost a race for the next sequence number (or hit a busy database) and retried. */
  readonly uniqueRaceRetries: number
}> {}

/** The event could not be appended and sits in the dead-letter store, with the reason. */
export class DlqLanded extends Data.TaggedClass("DlqLanded")<{
  readonly reason: string
  readonly uniqueRaceRetries: number
}> {}

export type AppendOutcome = Appended | DlqLanded

/** The event reached neither the ledger nor the dead-letter store. */
export class AuditSinkError extends Schema.TaggedError<AuditSinkError>()("AuditSinkError", {
  eventId: Schema.String,
  reason: Schema.String
}) {}

export class AuditSink extends Context.Tag("agent-ledger/AuditSink")<AuditSink, {
  readonly append: (event: DeferredAuditEvent) => Effect.Effect<AppendOutcome, AuditSinkError>
  /**
   * Put an event straight into the dead-letter store with `reason` (used for a poison event that made
   * the sink die). Fails when the store cannot take it.
   */
  readonly deadLetter: (event: DeferredAuditEvent, reason: string) => Effect.Effect<void, AuditSinkError>
}>() {}
