/**
 * The governance audit queue: a guard's hot path hands refusal events to `submit`, which never blocks and
 * never fails, and a supervised drainer fiber appends them to an `AuditSink` in submit order.
 *
 * - The queue is unbounded: a bounded queue would have to drop on full, and a silent audit drop is a
 *   security regression.
 * - Group commit: the drainer takes whatever is waiting, up to `maxBatch` events, and hands it to the
 *   sink's `appendBatch` (one write transaction, one fsync). Nothing waits to fill a batch: under light
 *   load a batch is one event. When a batch fails or the sink dies on it, its events are appended one by
 *   one, so a poison event lands in the dead-letter store alone and the others are appended.
 * - When the sink dies (a defect) on an event, that event is accounted as a poison event (an append
 *   failure, dead-lettered where the sink can take it, else written whole as a LOST line, see
 *   `Options.lostEvents`), the drainer restarts on `restartSchedule`, and
 *   every event behind the poison one is still drained: the queue and the batch in hand belong to the
 *   service, not to the drainer fiber. `maxRestarts` consecutive restarts (reset by a successful append)
 *   make the queue `Failed`: intake closes and what is still queued is dead-lettered.
 * - Interruption of the drainer is shutdown, never a defect; a sink call that itself ends interrupted is a
 *   poison event like a defect.
 * - `closeAndFlush` stops intake and waits until every queued event has been handled (it does not use
 *   `Queue.shutdown`, which would discard them); the scope's finalizer does the same, bounded by
 *   `shutdownDrainTimeout`, and then writes what is still unhandled to the dead-letter store in one write;
 *   events that cannot land there either are written whole as LOST lines (stderr, a spill file).
 *
 * Accounting is structural: every accepted event is held by the queue or by the batch in the drainer's
 * hands until it is settled exactly once, as appended or as an append failure, whatever the sink does
 * (fails, dies, throws while building a row, or never answers). See `AuditMetrics` for the counters;
 * `drainPending` waits for "every submitted event is accounted for" and is woken by the drainer (no
 * polling), with its timeout on `Clock`.
 */
import type { Array as Arr, Metric, Scheduler, Scope } from "effect"
import {
  Cause,
  Chunk,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  MutableRef,
  Option,
  Queue,
  Ref,
  Schedule,
  Schema
} from "effect"
import type { Tracer } from "effect"
import * as fs from "node:fs"
import { eventLoopScheduler } from "../internal/eventLoopScheduler.js"
import type { AgentAction, Decision, JournalRef } from "./AuditEvent.js"
import { DeferredAuditEvent } from "./AuditEvent.js"
import * as AuditMetrics from "./AuditMetrics.js"
import type { AuditMetricsSnapshot } from "./AuditMetrics.js"
import type { AppendOutcome } from "./AuditSink.js"
import type { AuditSinkError } from "./AuditSink.js"
import { AuditSink } from "./AuditSink.js"
import type { Service as AuditSinkService } from "./AuditSink.js"

export type { AuditMetricsSnapshot } from "./AuditMetrics.js"

/**
 * The drainer's lifecycle, as string literals:
 * - `Running`: draining (or waiting for events).
 * - `Restarting`: the sink died on an event; the drainer waits on `restartSchedule` before draining again.
 * - `Stalled`: the sink cannot write at all (disk full, read-only file, I/O error, lock held too long); the
 *   drainer holds every event in order and retries on `stallSchedule` until it can, then is `Running`.
 * - `Failed`: more than `maxRestarts` consecutive restarts; intake is closed for good (sticky).
 * - `Closed`: `closeAndFlush` (or the scope's finalizer) has stopped intake and the drainer (sticky).
 */
export type QueueStatus = "Running" | "Restarting" | "Stalled" | "Failed" | "Closed"

/**
 * A durable acknowledgement: the event's row is committed in the ledger. `sequence` and `entryHash` name
 * the row; they are null only for a sink that does not report chain positions (`SqlAuditSink` does).
 */
export class AuditReceipt extends Schema.Class<AuditReceipt>("AuditReceipt")({
  eventId: Schema.String,
  sequence: Schema.NullOr(Schema.Number),
  entryHash: Schema.NullOr(Schema.String)
}) {}

/**
 * `submitAndWait` could not acknowledge the event. `reason`:
 * - `deadLettered`: the event is in the dead-letter store, NOT in the ledger (`detail` says why); replay it
 * - `notAppended`: the event reached neither the ledger nor the dead-letter store (`detail` says why)
 * - `queueClosed`: the queue was closed or failed; the event was not accepted
 */
export class AuditAckError extends Schema.TaggedError<AuditAckError>()("AuditAckError", {
  eventId: Schema.String,
  reason: Schema.Literal("deadLettered", "notAppended", "queueClosed"),
  detail: Schema.String
}) {
  override get message(): string {
    return `audit event ${this.eventId} not acknowledged (${this.reason}): ${this.detail}`
  }
}

export class AuditQueue extends Context.Tag("agent-ledger/AuditQueue")<AuditQueue, {
  /**
   * Queue an event for the sink. Never blocks, never fails, and runs as one synchronous step: `false` (and
   * one more `sendFailures`) once the queue is closed or failed. Fire-and-forget: `true` means accepted,
   * not durable; a fail-closed guard uses `submitAndWait`.
   */
  readonly submit: (event: DeferredAuditEvent) => Effect.Effect<boolean>
  /**
   * Build the event with `DeferredAuditEvent.fromRefusal` and submit it; `false`, uncounted, for
   * Allow/Warn. `journal` names the journal entry of the refused call (refusal payload v2); `mode` `shadow`
   * records a refusal that was not enforced (payload v3).
   */
  readonly submitRefusal: (
    agentId: string,
    action: AgentAction,
    decision: Decision,
    journal?: JournalRef,
    mode?: "shadow"
  ) => Effect.Effect<boolean>
  /**
   * Submit and wait for the durable acknowledgement: succeeds once the event's row is committed (with the
   * sink's synchronous FULL, durable on disk; with NORMAL, committed but possibly lost on power failure),
   * fails with `AuditAckError` when it was dead-lettered, could not be appended at all, or the queue is
   * closed. It rides the same batches as `submit` (many waiters, one commit). Interrupting the wait does
   * not withdraw the event.
   */
  readonly submitAndWait: (event: DeferredAuditEvent) => Effect.Effect<AuditReceipt, AuditAckError>
  /** `submitRefusal` with the acknowledgement of `submitAndWait`; `None` (nothing submitted) for Allow/Warn. */
  readonly submitRefusalAndWait: (
    agentId: string,
    action: AgentAction,
    decision: Decision,
    journal?: JournalRef,
    mode?: "shadow"
  ) => Effect.Effect<Option.Option<AuditReceipt>, AuditAckError>
  /**
   * Wait until every submitted event is accounted for (appended + appendFailures + sendFailures ≥
   * submitted): `true` then, `false` when `timeout` (on `Clock`) passes first. Leaves the queue open.
   *
   * `true` does NOT mean "in the ledger": dead-lettered and failed events are accounted too. Read
   * `metrics` for what happened, or use `submitAndWait` for a per-event durable answer.
   */
  readonly drainPending: (timeout: Duration.DurationInput) => Effect.Effect<boolean>
  /** Stop intake (later submits are send failures), wait until every queued event is handled, stop the drainer. */
  readonly closeAndFlush: Effect.Effect<void>
  /**
   * `closeAndFlush` bounded by `timeout`: `true` when everything was handled. At the timeout the drainer is
   * stopped and every event still unhandled is written to the dead-letter store in one write (bounded by
   * `timeout` again); events that cannot land there are written as LOST lines (`Options.lostEvents`).
   * Returns `false`.
   */
  readonly closeAndFlushWithin: (timeout: Duration.DurationInput) => Effect.Effect<boolean>
  /** `true` while submits are accepted (not closed, not failed). */
  readonly isOpen: Effect.Effect<boolean>
  readonly status: Effect.Effect<QueueStatus>
  /** All counters of this queue, read as one consistent snapshot. */
  readonly metrics: Effect.Effect<AuditMetricsSnapshot>
}>() {}

/** The `AuditQueue` service itself (what `yield* AuditQueue` gives). */
export type Service = Context.Tag.Service<AuditQueue>

export interface Options {
  /**
   * Consecutive drainer restarts allowed (the count resets when an event is appended); one more defect
   * makes the queue `Failed`. Default: unlimited.
   */
  readonly maxRestarts?: number
  /** How long the scope's finalizer waits for queued events to drain. Default: 5 seconds. */
  readonly shutdownDrainTimeout?: Duration.DurationInput
  /**
   * The delay before each restart of the drainer (and, if it ends, the queue fails). Reset when an event
   * is appended. Default: `defaultRestartSchedule`.
   */
  readonly restartSchedule?: Schedule.Schedule<unknown, unknown>
  /**
   * The delay between attempts while the sink is unavailable (`Stalled`); reset when it recovers. It never
   * gives up: the events are held until the sink can take them or the queue shuts down. Default:
   * `defaultStallSchedule`.
   */
  readonly stallSchedule?: Schedule.Schedule<unknown, unknown>
  /**
   * The queue's id: the `queue_id` tag of its metrics, the `queue_id` annotation of its log lines and the
   * `agent_ledger.queue_id` attribute of its spans. Default `DEFAULT_QUEUE_ID`, stable across restarts;
   * give each queue of one process its own.
   */
  readonly queueId?: string
  /**
   * The most events one drain step hands the sink (one write transaction). Default `DEFAULT_MAX_BATCH`;
   * `1` appends every event in its own transaction. Also bounds how long one step holds the thread.
   */
  readonly maxBatch?: number
  /**
   * The scheduler the drainer runs on. Default: one that yields to the Node event loop between batches, so
   * a backlog never starves the host's own I/O. `"inherit"` runs it on the scheduler of the fiber that
   * builds the queue: in an `@effect/vitest` test, `Effect.yieldNow()` and `TestClock.adjust` then move the
   * drainer along with the test (README "Testing with the ledger").
   */
  readonly scheduler?: Scheduler.Scheduler | "inherit"
  /**
   * Where events that reach neither the ledger nor the dead-letter store go, so none is lost silently:
   * each as one complete JSON line (`lostLine`: the whole event, marked LOST) on stderr (default true) and,
   * when `spillFile` is given, appended to that file (and fsync'd). The ids are logged as well.
   */
  readonly lostEvents?: LostEvents | undefined
}

/** See `Options.lostEvents`. */
export interface LostEvents {
  readonly stderr?: boolean | undefined
  readonly spillFile?: string | undefined
}

/** The `lost` field of a LOST line. */
export const LOST_MARK = "agent-ledger audit event LOST"

/**
 * One LOST line (without its newline): `{"lost":LOST_MARK,"reason":…,"event":…}`, the event as
 * `DeferredAuditEvent` encodes it (decode it with `Schema.decodeUnknown(DeferredAuditEvent)` to replay it).
 */
export const lostLine = (event: DeferredAuditEvent, reason: string): string => {
  let encoded: unknown
  try {
    encoded = Schema.encodeSync(DeferredAuditEvent)(event)
  } catch (error) {
    encoded = { id: event.id, agentId: event.agentId, unencodable: String(error) }
  }
  return JSON.stringify({ lost: LOST_MARK, reason, event: encoded })
}

/** Exponential backoff from 10 ms, capped at 1 second, never giving up (`maxRestarts` bounds restarts). */
export const defaultRestartSchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("10 millis").pipe(
  Schedule.union(Schedule.spaced("1 second"))
)

/** Exponential backoff from 50 ms, capped at 5 seconds, forever. */
export const defaultStallSchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("50 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds"))
)

/** The default bound on the shutdown drain. */
export const DEFAULT_SHUTDOWN_DRAIN_TIMEOUT: Duration.Duration = Duration.seconds(5)

/** The default `maxBatch`. */
export const DEFAULT_MAX_BATCH = 512

/** The default `queueId`. */
export const DEFAULT_QUEUE_ID = "default"

/** Span names (docs/OPERATIONS.md, "Traces"). */
export const SPAN_APPEND = "agent_ledger.audit.append"
export const SPAN_DEAD_LETTER = "agent_ledger.audit.dead_letter"
export const SPAN_SUBMIT_AND_WAIT = "agent_ledger.audit.submit_and_wait"

/** The most submitter spans one append span links to. */
const MAX_SPAN_LINKS = 128

interface State {
  /** Intake: submits are accepted only while open. */
  readonly open: boolean
  readonly status: QueueStatus
  /** Defects since the last successful append. */
  readonly consecutiveRestarts: number
  /** A close has stopped the drainer: nothing more will be handled. */
  readonly drainerStopped: boolean
  readonly metrics: AuditMetricsSnapshot
}

/**
 * Events taken from the queue and not yet all settled. `settled` counts the leading events already
 * accounted; `claimed` is set when shutdown (or a failed queue) takes the rest away from the drainer, so a
 * sink call that still returns afterwards cannot account them a second time.
 */
interface Batch {
  readonly events: ReadonlyArray<DeferredAuditEvent>
  settled: number
  claimed: boolean
  /** What the settlements of the current attempt came to, for its append span. */
  firstSequence: number | undefined
  lastSequence: number | undefined
  retries: number
  notAppended: number
}

const newBatch = (events: ReadonlyArray<DeferredAuditEvent>): Batch => ({
  events,
  settled: 0,
  claimed: false,
  firstSequence: undefined,
  lastSequence: undefined,
  retries: 0,
  notAppended: 0
})

/** Notes the settlements' positions and retries on the batch (read by the append span). */
const observe = (batch: Batch, settlements: ReadonlyArray<Settlement>): void => {
  for (const s of settlements) {
    if (s._tag === "Appended") {
      const sequence = s.position?.sequence
      if (sequence !== undefined) {
        if (batch.firstSequence === undefined) batch.firstSequence = sequence
        batch.lastSequence = sequence
      }
    } else {
      batch.notAppended++
    }
    if (s._tag !== "Failed") batch.retries += s.uniqueRaceRetries
  }
}

/** How one event ended, as the drainer accounts it. */
type Settlement =
  | AppendOutcome
  | {
    readonly _tag: "Failed"
    readonly reason: string
    /** The sink died (or ended interrupted) on it. */
    readonly defect: boolean
    readonly deadLettered: boolean
  }

const failed = (reason: string, defect: boolean, deadLettered: boolean): Settlement => ({
  _tag: "Failed",
  reason,
  defect,
  deadLettered
})

/** What appending a batch through `appendBatch` came to. */
type BatchResult =
  | { readonly _tag: "appended" | "oneByOne" }
  | { readonly _tag: "unavailable"; readonly reason: string }

/** The drain loop ended because the sink died on an event (already accounted); the supervisor restarts it. */
class SinkDied extends Data.TaggedError("SinkDied")<{ readonly eventId: string }> {}

/** The pause between attempts while stalled once a custom `stallSchedule` has ended. */
const STALL_FLOOR = Duration.millis(50)

/** Ids per log line when events are logged as lost. */
const LOST_IDS_PER_LINE = 1000

const toNonEmpty = <A>(items: ReadonlyArray<A>): Option.Option<Arr.NonEmptyReadonlyArray<A>> =>
  items.length > 0 ? Option.some(items as Arr.NonEmptyReadonlyArray<A>) : Option.none()

/** The settlement's delta to the counters. */
const deltaOf = (settlements: ReadonlyArray<Settlement>): AuditMetrics.AuditMetricsDelta => {
  let appended = 0
  let appendFailures = 0
  let dlqLanded = 0
  let drainerDefects = 0
  let uniqueRaceRetries = 0
  for (const s of settlements) {
    switch (s._tag) {
      case "Appended":
        appended++
        uniqueRaceRetries += s.uniqueRaceRetries
        break
      case "DlqLanded":
        appendFailures++
        dlqLanded++
        uniqueRaceRetries += s.uniqueRaceRetries
        break
      case "Failed":
        appendFailures++
        if (s.deadLettered) dlqLanded++
        if (s.defect) drainerDefects++
    }
  }
  return { appended, appendFailures, dlqLanded, drainerDefects, uniqueRaceRetries }
}

/** What a waiting `submitAndWait` gets for a settlement. */
const ackOf = (event: DeferredAuditEvent, s: Settlement): Exit.Exit<AuditReceipt, AuditAckError> => {
  switch (s._tag) {
    case "Appended":
      return Exit.succeed(
        new AuditReceipt({
          eventId: event.id,
          sequence: s.position?.sequence ?? null,
          entryHash: s.position?.entryHash ?? null
        }, true)
      )
    case "DlqLanded":
      return Exit.fail(new AuditAckError({ eventId: event.id, reason: "deadLettered", detail: s.reason }))
    case "Failed":
      return Exit.fail(
        new AuditAckError({
          eventId: event.id,
          reason: s.deadLettered ? "deadLettered" : "notAppended",
          detail: s.reason
        })
      )
  }
}

// ---------------------------------------------------------------------------------------------------------
// Accounting: the counters, the waiters, and settling events exactly once
// ---------------------------------------------------------------------------------------------------------

type Waiter = Deferred.Deferred<AuditReceipt, AuditAckError>

const makeAccounts = (queueId: string, restartDriver: Schedule.ScheduleDriver<unknown, unknown, never>) =>
  Effect.gen(function*() {
    const counters = AuditMetrics.counters(queueId)
    const depthGauge = AuditMetrics.queueDepthGauge(queueId)
    depthGauge.unsafeUpdate(0, [])
    /** The span each accepted event was submitted in (only when the submitter had one), for span links. */
    const submitSpans = new WeakMap<DeferredAuditEvent, Tracer.AnySpan>()
    // Plain mutable cells owned by this service, read and written only inside synchronous steps, so that
    // `submit` is one step that no other fiber can interleave with or preempt (a Ref would be several).
    const state = MutableRef.make<State>({
      open: true,
      status: "Running",
      consecutiveRestarts: 0,
      drainerStopped: false,
      metrics: AuditMetrics.empty
    })
    /** The batch in the drainer's hands; it outlives a restart of the drainer. */
    const inHand = MutableRef.make<Batch | undefined>(undefined)
    /** `submitAndWait` callers by event, completed when their event settles. */
    const waiters = new Map<DeferredAuditEvent, Array<Waiter>>()
    // Completed (and replaced) after every accounting change, so waiters re-check without polling.
    const progress = yield* Ref.make(yield* Deferred.make<void>())

    const get = (): State => MutableRef.get(state)
    const update = (f: (s: State) => State): void => {
      MutableRef.set(state, f(MutableRef.get(state)))
    }

    const wakeDrainWaiters = Effect.flatMap(
      Deferred.make<void>(),
      (next) => Effect.flatMap(Ref.getAndSet(progress, next), (previous) => Deferred.succeed(previous, undefined))
    )

    const answerWaiter = (event: DeferredAuditEvent, settlement: Settlement): void => {
      const waiting = waiters.get(event)
      const deferred = waiting?.shift()
      if (deferred === undefined) return
      if (waiting!.length === 0) waiters.delete(event)
      Deferred.unsafeDone(deferred, ackOf(event, settlement))
    }

    const resetRestartsAfterAppend = (delta: AuditMetrics.AuditMetricsDelta): Effect.Effect<void> => {
      if ((delta.appended ?? 0) === 0 || get().consecutiveRestarts === 0) return Effect.void
      update((s) => ({ ...s, consecutiveRestarts: 0 }))
      return restartDriver.reset
    }

    /**
     * Settle the batch's next `settlements.length` events: count them, answer their waiters, wake drain
     * waiters. A no-op once the batch was claimed by shutdown (which settles the rest itself).
     */
    const settle = (batch: Batch, settlements: ReadonlyArray<Settlement>): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (batch.claimed || settlements.length === 0) return Effect.void
        const first = batch.settled
        batch.settled += settlements.length
        const delta = deltaOf(settlements)
        observe(batch, settlements)
        const metrics = AuditMetrics.add(get().metrics, delta)
        update((s) => ({ ...s, metrics }))
        AuditMetrics.unsafePublish(counters, delta)
        depthGauge.unsafeUpdate(AuditMetrics.inFlight(metrics), [])
        if (waiters.size > 0) {
          settlements.forEach((settlement, i) => answerWaiter(batch.events[first + i]!, settlement))
        }
        return Effect.zipRight(resetRestartsAfterAppend(delta), wakeDrainWaiters)
      })

    /**
     * One synchronous step: count the event and offer it to `queue`, or count a send failure. `span` is
     * the submitter's, linked from the append span.
     */
    const admit = (
      event: DeferredAuditEvent,
      queue: Queue.Queue<DeferredAuditEvent>,
      span: Tracer.AnySpan | undefined
    ): boolean => {
      const s = get()
      const delta = s.open ? { submitted: 1 } : { submitted: 1, sendFailures: 1 }
      const metrics = AuditMetrics.add(s.metrics, delta)
      MutableRef.set(state, { ...s, metrics })
      AuditMetrics.unsafePublish(counters, delta)
      if (!s.open) return false
      if (span !== undefined) submitSpans.set(event, span)
      // Unbounded and never shut down (closing only stops intake), so the offer always succeeds.
      queue.unsafeOffer(event)
      depthGauge.unsafeUpdate(AuditMetrics.inFlight(metrics), [])
      return true
    }

    /** The distinct submitter spans of `events` as span links (at most `MAX_SPAN_LINKS`), forgotten once read. */
    const linksOf = (events: ReadonlyArray<DeferredAuditEvent>): Array<Tracer.SpanLink> => {
      const spans = new Set<Tracer.AnySpan>()
      for (const event of events) {
        const span = submitSpans.get(event)
        if (span === undefined) continue
        submitSpans.delete(event)
        if (spans.size < MAX_SPAN_LINKS) spans.add(span)
      }
      return Array.from(spans, (span) => ({ _tag: "SpanLink", span, attributes: {} }))
    }

    const awaitDrained: Effect.Effect<void> = Effect.gen(function*() {
      while (true) {
        // Read the signal before the counters: a change after the read completes this very signal.
        const signal = yield* Ref.get(progress)
        if (AuditMetrics.isDrained(get().metrics)) return
        yield* Deferred.await(signal)
      }
    })

    const stalledGauge = AuditMetrics.stalledGauge(queueId)
    const publishStalled = (stalled: boolean): void => stalledGauge.unsafeUpdate(stalled ? 1 : 0, [])

    return { get, update, inHand, waiters, answerWaiter, settle, admit, linksOf, awaitDrained, publishStalled }
  })

type Accounts = Effect.Effect.Success<ReturnType<typeof makeAccounts>>

// ---------------------------------------------------------------------------------------------------------
// Intake
// ---------------------------------------------------------------------------------------------------------

const makeIntake = (
  accounts: Accounts,
  queue: Queue.Queue<DeferredAuditEvent>,
  annotate: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
) => {
  const logRefused = (event: DeferredAuditEvent) =>
    Effect.logWarning("audit queue closed: submit refused, audit row LOST for this refusal").pipe(
      Effect.annotateLogs({ eventId: event.id, agentId: event.agentId }),
      annotate
    )

  const submit = (event: DeferredAuditEvent): Effect.Effect<boolean> =>
    Effect.withFiberRuntime((fiber) =>
      accounts.admit(event, queue, fiber.currentSpan) ? Effect.succeed(true) : Effect.as(logRefused(event), false)
    )

  const submitAndWait = (event: DeferredAuditEvent): Effect.Effect<AuditReceipt, AuditAckError> =>
    admitAndWait(event).pipe(
      Effect.tap((receipt) =>
        Effect.annotateCurrentSpan({ "agent_ledger.sequence": receipt.sequence, "agent_ledger.outcome": "appended" })
      ),
      Effect.tapError((error) => Effect.annotateCurrentSpan({ "agent_ledger.outcome": error.reason })),
      // The span is current while the event is admitted, so the append span's link leads back to it.
      Effect.withSpan(SPAN_SUBMIT_AND_WAIT, { kind: "internal", attributes: { "agent_ledger.event_id": event.id } })
    )

  const admitAndWait = (event: DeferredAuditEvent): Effect.Effect<AuditReceipt, AuditAckError> =>
    Effect.flatMap(Deferred.make<AuditReceipt, AuditAckError>(), (deferred) =>
      Effect.withFiberRuntime((fiber) => {
        // Registered before the offer, so a drainer that settles the event at once finds the waiter.
        const waiting = accounts.waiters.get(event)
        if (waiting === undefined) accounts.waiters.set(event, [deferred])
        else waiting.push(deferred)
        if (accounts.admit(event, queue, fiber.currentSpan)) return Deferred.await(deferred)
        accounts.answerWaiter(event, failed("the audit queue is closed", false, false))
        return Effect.zipRight(
          logRefused(event),
          new AuditAckError({ eventId: event.id, reason: "queueClosed", detail: "the audit queue is closed" })
        )
      }))

  const submitRefusal = (
    agentId: string,
    action: AgentAction,
    decision: Decision,
    journal?: JournalRef,
    mode?: "shadow"
  ): Effect.Effect<boolean> =>
    Effect.flatMap(
      DeferredAuditEvent.fromRefusal(agentId, action, decision, journal, mode),
      (event) => event._tag === "Some" ? submit(event.value) : Effect.succeed(false)
    )

  const submitRefusalAndWait = (
    agentId: string,
    action: AgentAction,
    decision: Decision,
    journal?: JournalRef,
    mode?: "shadow"
  ) =>
    Effect.flatMap(
      DeferredAuditEvent.fromRefusal(agentId, action, decision, journal, mode),
      (event): Effect.Effect<Option.Option<AuditReceipt>, AuditAckError> =>
        event._tag === "Some" ? Effect.asSome(submitAndWait(event.value)) : Effect.succeedNone
    )

  return { submit, submitAndWait, submitRefusal, submitRefusalAndWait }
}

// ---------------------------------------------------------------------------------------------------------
// Sink calls: one batch, one event, dead letters
// ---------------------------------------------------------------------------------------------------------

/**
 * A sink call's exit. A synchronous throw while building the call is a defect like any other. When the
 * drainer itself is interrupted, Effect skips failure handlers, so the interruption ends the drainer right
 * here; an interruption that comes back as an exit is one the sink's own effect ended with (it interrupted
 * itself, or joined an interrupted fiber): a sink failure like any other, which must never silently stop
 * the drainer.
 */
const callSink = <A, E>(call: () => Effect.Effect<A, E>): Effect.Effect<Exit.Exit<A, E>> =>
  Effect.exit(Effect.suspend(call))

const logDeadLettered = (event: DeferredAuditEvent, reason: string) =>
  Effect.logWarning("audit event landed in the dead-letter store (ledger row NOT appended; replay needed)").pipe(
    Effect.annotateLogs({ eventId: event.id, reason })
  )

const logDeadLetterFailure = (events: ReadonlyArray<DeferredAuditEvent>, cause: Cause.Cause<unknown>) =>
  Effect.logError("audit sink could not dead-letter the event(s)", cause).pipe(
    Effect.annotateLogs({ eventIds: events.slice(0, LOST_IDS_PER_LINE).map((event) => event.id) })
  )

/** The reason when `cause` is the sink saying it cannot write at all right now (`unavailable: true`). */
const unavailableReason = (cause: Cause.Cause<AuditSinkError>): Option.Option<string> =>
  Option.flatMap(
    Cause.failureOption(cause),
    (error) => error.unavailable === true ? Option.some(error.reason) : Option.none()
  )

const makeSinkCalls = (sink: AuditSinkService, accounts: Accounts, lostEvents: LostEvents) => {
  /**
   * Dead-letter `events` with `reason`: in one write where the sink has `deadLetterBatch` (all land or
   * none), else one by one. Returns, per event, whether it landed.
   */
  const deadLetter = (
    events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>,
    reason: string
  ): Effect.Effect<ReadonlyArray<boolean>> =>
    Effect.withSpan(deadLetterOnce(events, reason), SPAN_DEAD_LETTER, {
      attributes: { "agent_ledger.event_count": events.length, "agent_ledger.reason": reason }
    })

  const deadLetterOnce = (
    events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>,
    reason: string
  ): Effect.Effect<ReadonlyArray<boolean>> => {
    const deadLetterBatch = sink.deadLetterBatch
    if (deadLetterBatch !== undefined && events.length > 1) {
      return Effect.flatMap(callSink(() => deadLetterBatch(events, reason)), (exit) =>
        Exit.isSuccess(exit)
          ? Effect.succeed(events.map(() => true))
          : Effect.as(logDeadLetterFailure(events, exit.cause), events.map(() => false)))
    }
    return Effect.forEach(events, (event) =>
      Effect.flatMap(
        callSink(() => sink.deadLetter(event, reason)),
        (exit) =>
          Exit.isSuccess(exit) ? Effect.succeed(true) : Effect.as(logDeadLetterFailure([event], exit.cause), false)
      ))
  }

  /**
   * One event alone; fails with `SinkDied` after settling a poison event. `Some(reason)` when the sink is
   * unavailable: the event stays unsettled, to be tried again.
   */
  const appendOne = (batch: Batch, event: DeferredAuditEvent): Effect.Effect<Option.Option<string>, SinkDied> =>
    Effect.gen(function*() {
      const exit = yield* callSink(() => sink.append(event))
      if (Exit.isSuccess(exit)) {
        if (exit.value._tag === "DlqLanded") yield* logDeadLettered(event, exit.value.reason)
        yield* accounts.settle(batch, [exit.value])
        return Option.none()
      }
      const cause = exit.cause
      const unavailable = unavailableReason(cause)
      if (Option.isSome(unavailable)) return unavailable
      if (!Cause.isDie(cause) && !Cause.isInterrupted(cause)) {
        yield* Effect.logError("audit sink could not append the event, nor dead-letter it", cause).pipe(
          Effect.annotateLogs({ eventId: event.id })
        )
        const reason = `sink error: ${Cause.pretty(cause)}`
        yield* accounts.settle(batch, [failed(reason, false, false)])
        yield* logLost([event], reason, lostEvents)
        return Option.none()
      }
      // The sink died (or ended interrupted) on this event: it is a poison event. Settle it (after trying
      // the dead-letter store, so a drain never completes before the landing), then let the supervisor
      // restart.
      const reason = `drainer defect: ${Cause.pretty(cause)}`
      const [landed] = yield* deadLetter([event], reason)
      yield* accounts.settle(batch, [failed(reason, true, landed === true)])
      yield* Effect.logError("audit sink died on an event; restarting the drainer", cause).pipe(
        Effect.annotateLogs({ eventId: event.id, deadLettered: landed })
      )
      // Neither in the ledger nor in the dead-letter store: written out whole, never dropped silently.
      if (landed !== true) yield* logLost([event], reason, lostEvents)
      return yield* new SinkDied({ eventId: event.id })
    })

  /** The batch's unsettled events, each alone, in order; `Some(reason)` when the sink became unavailable. */
  const appendRemainingOneByOne = (batch: Batch): Effect.Effect<Option.Option<string>, SinkDied> =>
    Effect.gen(function*() {
      while (!batch.claimed && batch.settled < batch.events.length) {
        const unavailable = yield* appendOne(batch, batch.events[batch.settled]!)
        if (Option.isSome(unavailable)) return unavailable
      }
      return Option.none()
    })

  /**
   * The batch's unsettled events through `appendBatch`: `appended`, `unavailable` (nothing settled, try
   * again later), or `oneByOne` when they must be appended one at a time instead.
   */
  const appendAsBatch = (batch: Batch): Effect.Effect<BatchResult> =>
    Effect.gen(function*() {
      const appendBatch = sink.appendBatch
      const remaining = batch.events.slice(batch.settled)
      if (appendBatch === undefined || remaining.length < 2) return { _tag: "oneByOne" } as const
      const events = remaining as unknown as Arr.NonEmptyReadonlyArray<DeferredAuditEvent>
      const exit = yield* callSink(() => appendBatch(events))
      if (Exit.isSuccess(exit) && exit.value.length === events.length) {
        yield* accounts.settle(batch, exit.value)
        for (let i = 0; i < events.length; i++) {
          const outcome = exit.value[i]!
          if (outcome._tag === "DlqLanded") yield* logDeadLettered(events[i]!, outcome.reason)
        }
        return { _tag: "appended" } as const
      }
      if (Exit.isFailure(exit)) {
        const unavailable = unavailableReason(exit.cause)
        if (Option.isSome(unavailable)) return { _tag: "unavailable", reason: unavailable.value } as const
      }
      const why = Exit.isSuccess(exit)
        ? Cause.die(`appendBatch returned ${exit.value.length} outcomes for ${events.length} events`)
        : exit.cause
      yield* Effect.logWarning(`audit batch of ${events.length} not appended; appending its events one by one`, why)
      return { _tag: "oneByOne" } as const
    })

  /** Append the batch's unsettled events; `Some(reason)` when the sink is unavailable and they must wait. */
  const appendBatch = (batch: Batch): Effect.Effect<Option.Option<string>, SinkDied> =>
    Effect.flatMap(appendAsBatch(batch), (result) => {
      switch (result._tag) {
        case "appended":
          return Effect.succeedNone
        case "unavailable":
          return Effect.succeedSome(result.reason)
        case "oneByOne":
          return appendRemainingOneByOne(batch)
      }
    })

  return { deadLetter, appendBatch }
}

type SinkCalls = ReturnType<typeof makeSinkCalls>

// ---------------------------------------------------------------------------------------------------------
// Residual events: what shutdown or a failed queue takes away from the drainer
// ---------------------------------------------------------------------------------------------------------

/** Writes the LOST lines where `lostEvents` says; a write that fails is skipped (stderr still has them). */
const writeLost = (events: ReadonlyArray<DeferredAuditEvent>, reason: string, where: LostEvents) =>
  Effect.sync(() => {
    const text = events.map((event) => lostLine(event, reason) + "\n").join("")
    if (where.stderr !== false) {
      try {
        process.stderr.write(text)
      } catch {
        // stderr itself is gone: the spill file is the last resort.
      }
    }
    if (where.spillFile !== undefined) {
      try {
        const fd = fs.openSync(where.spillFile, "a")
        try {
          fs.writeSync(fd, text)
          fs.fsyncSync(fd)
        } finally {
          fs.closeSync(fd)
        }
      } catch (error) {
        process.stderr.write(`agent-ledger: cannot write the spill file ${where.spillFile}: ${String(error)}\n`)
      }
    }
  })

const logLost = (events: ReadonlyArray<DeferredAuditEvent>, reason: string, where: LostEvents) =>
  Effect.zipRight(writeLost(events, reason, where), logLostIds(events, reason))

const logLostIds = (events: ReadonlyArray<DeferredAuditEvent>, reason: string) =>
  Effect.forEach(
    Array.from({ length: Math.ceil(events.length / LOST_IDS_PER_LINE) }, (_, i) => i * LOST_IDS_PER_LINE),
    (start) => {
      const ids = events.slice(start, start + LOST_IDS_PER_LINE).map((event) => event.id)
      return Effect.logError(
        `audit events LOST (reached neither the ledger nor the dead-letter store), ` +
          `${start + 1}-${start + ids.length} of ${events.length}: ${ids.join(", ")}`
      ).pipe(Effect.annotateLogs({ reason }))
    },
    { discard: true }
  )

const makeResidual = (
  accounts: Accounts,
  queue: Queue.Queue<DeferredAuditEvent>,
  calls: SinkCalls,
  lostEvents: LostEvents
) => {
  /** Take every event still unhandled away from the drainer: the batch in hand first, then the queue. */
  const claimUnhandled = Effect.gen(function*() {
    const batch = MutableRef.get(accounts.inHand)
    const fromBatch: Array<DeferredAuditEvent> = []
    if (batch !== undefined && !batch.claimed) {
      fromBatch.push(...batch.events.slice(batch.settled))
      batch.claimed = true
    }
    return fromBatch.concat(Chunk.toReadonlyArray(yield* Queue.takeAll(queue)))
  })

  /**
   * Dead-letter every unhandled event (in one write where the sink can), settling each; log the ids of
   * those that cannot land. `timeout` bounds the write (a wedged sink may never answer). Call only once
   * intake is closed (so nothing more can arrive) and the drainer is stopped or done.
   */
  const deadLetterUnhandled = (reason: string, timeout: Option.Option<Duration.DurationInput>) =>
    Effect.gen(function*() {
      const unhandled = yield* claimUnhandled
      const events = toNonEmpty(unhandled)
      if (Option.isNone(events)) return
      const write = Effect.interruptible(calls.deadLetter(events.value, reason))
      const landed = Option.isNone(timeout) ? yield* write : yield* Effect.timeoutTo(write, {
        duration: timeout.value,
        onSuccess: (landed) => landed,
        onTimeout: () => unhandled.map(() => false)
      })
      yield* accounts.settle(
        newBatch(unhandled),
        unhandled.map((_, i) => failed(reason, false, landed[i] === true))
      )
      const lost = unhandled.filter((_, i) => landed[i] !== true)
      if (lost.length > 0) yield* logLost(lost, reason, lostEvents)
    })

  return { deadLetterUnhandled }
}

// ---------------------------------------------------------------------------------------------------------
// The drainer and its supervisor
// ---------------------------------------------------------------------------------------------------------

const makeSupervisor = (
  options: {
    readonly queueId: string
    readonly appendDuration: Metric.Metric.Histogram<number>
    readonly maxBatch: number
    readonly maxRestarts: number
    readonly restartDriver: Schedule.ScheduleDriver<unknown, unknown, never>
    readonly stallDriver: Schedule.ScheduleDriver<unknown, unknown, never>
  },
  accounts: Accounts,
  queue: Queue.Queue<DeferredAuditEvent>,
  calls: SinkCalls,
  residual: ReturnType<typeof makeResidual>
): Effect.Effect<void> => {
  /** The batch in hand (left by a restart or a stall) if it has unsettled events, else the next one taken. */
  const nextBatch = Effect.gen(function*() {
    const left = MutableRef.get(accounts.inHand)
    if (left !== undefined && !left.claimed && left.settled < left.events.length) return left
    const events = Chunk.toReadonlyArray(yield* Queue.takeBetween(queue, 1, options.maxBatch))
    const batch = newBatch(events)
    MutableRef.set(accounts.inHand, batch)
    return batch
  })

  /**
   * The sink cannot write: hold the events (the batch stays in hand, the rest queued, all in order), say
   * so once, and wait on `stallDriver` before trying the same batch again.
   */
  const stall = (reason: string) =>
    Effect.gen(function*() {
      const wasStalled = accounts.get().status === "Stalled"
      accounts.update((s) => s.status === "Running" ? { ...s, status: "Stalled" } : s)
      if (!wasStalled) {
        accounts.publishStalled(true)
        yield* Effect.logError(
          `audit sink unavailable: ${AuditMetrics.inFlight(accounts.get().metrics)} events held in order ` +
            `(none dead-lettered); retrying until it recovers: ${reason}`
        )
      }
      // The schedule is not meant to end; if it does, it starts over, and never lets the retries spin.
      yield* options.stallDriver.next(reason).pipe(
        Effect.catchAll(() => Effect.zipRight(options.stallDriver.reset, Effect.sleep(STALL_FLOOR)))
      )
    })

  const resumeAfterStall = Effect.gen(function*() {
    if (accounts.get().status !== "Stalled") return
    accounts.update((s) => s.status === "Stalled" ? { ...s, status: "Running" } : s)
    accounts.publishStalled(false)
    yield* options.stallDriver.reset
    yield* Effect.logInfo("audit sink available again; draining the held events")
  })

  /**
   * The sink call for `batch`, in a root span linked to the spans its events were submitted in, timed
   * into the append-duration histogram.
   */
  const tracedAppend = (batch: Batch): Effect.Effect<Option.Option<string>, SinkDied> => {
    const pending = batch.events.length - batch.settled
    return Effect.gen(function*() {
      // The span reports this attempt only (a batch left by a restart or a stall is attempted again).
      batch.firstSequence = undefined
      batch.lastSequence = undefined
      batch.retries = 0
      batch.notAppended = 0
      const started = yield* Clock.currentTimeNanos
      const unavailable = yield* calls.appendBatch(batch).pipe(
        Effect.ensuring(
          Effect.flatMap(
            Clock.currentTimeNanos,
            (ended) => Effect.sync(() => options.appendDuration.unsafeUpdate(Number(ended - started) / 1e9, []))
          )
        )
      )
      yield* Effect.annotateCurrentSpan({
        "agent_ledger.outcome": Option.isSome(unavailable)
          ? "unavailable"
          : batch.notAppended > 0
          ? "partial"
          : "appended",
        "agent_ledger.retries": batch.retries,
        ...(batch.firstSequence === undefined ? {} : { "agent_ledger.sequence.first": batch.firstSequence }),
        ...(batch.lastSequence === undefined ? {} : { "agent_ledger.sequence.last": batch.lastSequence }),
        ...(batch.notAppended > 0 ? { "agent_ledger.not_appended": batch.notAppended } : {})
      })
      return unavailable
    }).pipe(Effect.withSpan(SPAN_APPEND, {
      root: true,
      // The drainer consumes what submitters produced (OpenTelemetry messaging conventions).
      kind: "consumer",
      links: accounts.linksOf(batch.events),
      attributes: { "agent_ledger.batch.size": pending, "agent_ledger.queue_id": options.queueId }
    }))
  }

  /** Append the next batch; the batch in hand is let go only once all its events are settled. */
  const drainStep: Effect.Effect<void, SinkDied> = Effect.gen(function*() {
    const batch = yield* nextBatch
    const unavailable = yield* tracedAppend(batch)
    if (Option.isSome(unavailable)) return yield* stall(unavailable.value)
    yield* resumeAfterStall
    MutableRef.set(accounts.inHand, undefined)
    // One batch holds the thread (a synchronous driver) for at most `maxBatch` rows; then the host runs.
    yield* Effect.yieldNow()
  })

  /** After the last restart: close intake and dead-letter everything that was accepted but not handled. */
  const fail = (reason: string) =>
    Effect.gen(function*() {
      const pending = AuditMetrics.inFlight(accounts.get().metrics)
      accounts.update((s) => ({ ...s, open: false, status: s.status === "Closed" ? "Closed" : "Failed" }))
      yield* Effect.logError(
        `audit queue FAILED (${reason}); intake closed, ${pending} queued events go to the dead-letter store`
      )
      yield* residual.deadLetterUnhandled(`audit queue failed: ${reason}`, Option.none())
    })

  /** Counts a restart; `Left` with the reason when the queue must fail instead. */
  const restart = (cause: Cause.Cause<unknown>) =>
    Effect.gen(function*() {
      const restarts = accounts.get().consecutiveRestarts + 1
      accounts.update((s) => ({
        ...s,
        consecutiveRestarts: restarts,
        status: s.status === "Running" ? "Restarting" : s.status
      }))
      if (restarts > options.maxRestarts) {
        return Option.some(`${restarts} consecutive drainer defects, maxRestarts is ${options.maxRestarts}`)
      }
      const next = yield* Effect.either(options.restartDriver.next(cause))
      if (next._tag === "Left") return Option.some(`restart schedule ended after ${restarts - 1} restarts`)
      accounts.update((s) => s.status === "Restarting" ? { ...s, status: "Running" } : s)
      yield* Effect.logInfo(`audit drainer restarted (consecutive restart ${restarts})`)
      return Option.none()
    })

  return Effect.gen(function*() {
    while (true) {
      const exit = yield* Effect.exit(Effect.forever(drainStep))
      if (Exit.isSuccess(exit)) return
      // Interruption is shutdown; anything else (the sink died, or a bug in the loop) is a restart.
      if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
      const failure = yield* restart(exit.cause)
      if (Option.isSome(failure)) return yield* fail(failure.value)
    }
  })
}

// ---------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------

export const make = (
  options: Options & { readonly sink: AuditSinkService }
): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queueId = options.queueId ?? DEFAULT_QUEUE_ID
    const annotate = Effect.annotateLogs({ [AuditMetrics.QUEUE_ID_TAG]: queueId })
    const restartDriver = yield* Schedule.driver(options.restartSchedule ?? defaultRestartSchedule)
    const queue = yield* Queue.unbounded<DeferredAuditEvent>()
    const accounts = yield* makeAccounts(queueId, restartDriver)
    const calls = makeSinkCalls(options.sink, accounts, options.lostEvents ?? {})
    const residual = makeResidual(accounts, queue, calls, options.lostEvents ?? {})
    const supervisor = makeSupervisor(
      {
        queueId,
        appendDuration: AuditMetrics.appendDuration(queueId),
        maxBatch: Math.max(1, Math.floor(options.maxBatch ?? DEFAULT_MAX_BATCH)),
        maxRestarts: options.maxRestarts ?? Number.POSITIVE_INFINITY,
        restartDriver,
        stallDriver: yield* Schedule.driver(options.stallSchedule ?? defaultStallSchedule)
      },
      accounts,
      queue,
      calls,
      residual
    )

    // Interruptible whatever the caller's region (layers may be built uninterruptibly): shutdown interrupts it.
    // It yields to the event loop between batches: appends are synchronous I/O, and the default
    // scheduler's microtask yields would let a backlog starve the host's own I/O (the guard's hot path).
    const drainLoop = Effect.interruptible(annotate(supervisor))
    const drainer = yield* Effect.forkScoped(
      options.scheduler === "inherit"
        ? drainLoop
        : Effect.withScheduler(drainLoop, options.scheduler ?? eventLoopScheduler)
    )
    const shutdown = makeShutdown(accounts, drainer, residual, annotate)
    // Added after the drainer's fork, so it runs first when the scope closes: drain, then stop.
    yield* Effect.addFinalizer(() =>
      shutdown.closeAndFlushWithin(options.shutdownDrainTimeout ?? DEFAULT_SHUTDOWN_DRAIN_TIMEOUT)
    )

    const read = <A>(f: (s: State) => A) => Effect.sync(() => f(accounts.get()))
    return AuditQueue.of({
      ...makeIntake(accounts, queue, annotate),
      ...shutdown,
      isOpen: read((s) => s.open),
      status: read((s) => s.status),
      // A copy: the caller cannot change the snapshot `drainPending` reads.
      metrics: read((s) => ({ ...s.metrics }))
    })
  })

// ---------------------------------------------------------------------------------------------------------
// Drain and shutdown
// ---------------------------------------------------------------------------------------------------------

const makeShutdown = (
  accounts: Accounts,
  drainer: Fiber.RuntimeFiber<void>,
  residual: ReturnType<typeof makeResidual>,
  annotate: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
) => {
  const drainPending = (timeout: Duration.DurationInput): Effect.Effect<boolean> =>
    // Interruptible even inside a finalizer (which runs uninterruptibly): otherwise the timeout could not
    // cut the wait short and a wedged sink would hang the shutdown.
    Effect.timeoutTo(Effect.interruptible(accounts.awaitDrained), {
      duration: timeout,
      onSuccess: () => true,
      onTimeout: () => false
    })

  /** Close intake; `true` when an earlier close already stopped the drainer (nothing can drain then). */
  const stopIntake = Effect.sync(() => {
    const stopped = accounts.get().drainerStopped
    accounts.update((s) => ({ ...s, open: false }))
    return stopped
  })

  // `Closed` is set before the interruption, so a restart in flight cannot flip the status back.
  const stopDrainer = (awaitStop: boolean) =>
    Effect.gen(function*() {
      accounts.update((s): State => ({
        ...s,
        drainerStopped: true,
        status: s.status === "Failed" ? s.status : "Closed"
      }))
      // A wedged sink may never notice the interruption; only wait when the drainer is known to be idle.
      yield* awaitStop ? Fiber.interrupt(drainer) : Fiber.interruptFork(drainer)
    })

  const closeAndFlush: Effect.Effect<void> = Effect.gen(function*() {
    if (yield* stopIntake) return
    yield* accounts.awaitDrained
    // Everything is handled, so the drainer is idle on `take`; stopping it loses nothing.
    yield* stopDrainer(true)
  })

  const closeAndFlushWithin = (timeout: Duration.DurationInput): Effect.Effect<boolean> =>
    Effect.gen(function*() {
      if (yield* stopIntake) return AuditMetrics.isDrained(accounts.get().metrics)
      if (yield* drainPending(timeout)) {
        yield* stopDrainer(true)
        return true
      }
      const pending = AuditMetrics.inFlight(accounts.get().metrics)
      yield* stopDrainer(false)
      yield* Effect.logWarning(
        `audit queue shutdown drain timed out after ${Duration.format(Duration.decode(timeout))}: ` +
          `${pending} unhandled events go to the dead-letter store`
      ).pipe(Effect.annotateLogs({ residual: pending }), annotate)
      yield* residual.deadLetterUnhandled(
        "shutdown drain timed out before the event was appended (it may also be in the ledger if the " +
          "sink finished it late; replay is idempotent)",
        Option.some(timeout)
      ).pipe(annotate)
      return false
    })

  return { drainPending, closeAndFlush, closeAndFlushWithin }
}

/**
 * The queue as a scoped layer, draining into `sink` (a layer providing `AuditSink`, or a sink value).
 * Closing the layer's scope stops intake and drains what is queued, bounded by `shutdownDrainTimeout`.
 */
export const layer = <E = never, R = never>(
  options: Options & { readonly sink: Layer.Layer<AuditSink, E, R> | AuditSinkService }
): Layer.Layer<AuditQueue, E, R> => {
  const { sink, ...rest } = options
  if (Layer.isLayer(sink)) {
    return Layer.scoped(AuditQueue, Effect.flatMap(AuditSink, (sink) => make({ ...rest, sink }))).pipe(
      Layer.provide(sink as Layer.Layer<AuditSink, E, R>)
    )
  }
  return Layer.scoped(AuditQueue, make({ ...rest, sink: sink as AuditSinkService }))
}
