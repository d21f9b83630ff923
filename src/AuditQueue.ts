/**
 * The governance audit queue: a guard's hot path hands refusal events to `submit`, which never blocks and
 * never fails, and a supervised drainer fiber appends them to an `AuditSink` in submit order.
 *
 * - The queue is unbounded: a bounded queue would have to drop on full, and a silent audit drop is a
 *   security regression.
 * - When the sink dies (a defect) on an event, that event is accounted as a poison event (an append
 *   failure, dead-lettered where the sink can take it), the drainer restarts on `restartSchedule`, and
 *   every event behind the poison one is still drained: the `Queue` belongs to the service, not to the
 *   drainer fiber. `maxRestarts` consecutive restarts (reset by a successful append) make the queue
 *   `Failed`: intake closes and what is still queued is dead-lettered.
 * - Interruption of the drainer is shutdown, never a defect; a sink call that itself ends interrupted is a
 *   poison event like a defect.
 * - `closeAndFlush` stops intake and waits until every queued event has been handled (it does not use
 *   `Queue.shutdown`, which would discard them); the scope's finalizer does the same, bounded by
 *   `shutdownDrainTimeout`, and logs the residual if it times out.
 *
 * Accounting: see `AuditMetrics`. `drainPending` waits for "every submitted event is accounted for" and
 * is woken by the drainer (no polling), with its timeout on `Clock`.
 */
import type { Scope } from "effect"
import {
  Cause,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Queue,
  Ref,
  Schedule
} from "effect"
import type { AgentAction, Decision } from "./AuditEvent.js"
import { DeferredAuditEvent } from "./AuditEvent.js"
import * as AuditMetrics from "./AuditMetrics.js"
import type { AuditMetricsSnapshot } from "./AuditMetrics.js"
import { AuditSink } from "./AuditSink.js"
import { eventLoopScheduler } from "./internal/eventLoopScheduler.js"
import { uuidV7 } from "./internal/uuid.js"

export type { AuditMetricsSnapshot } from "./AuditMetrics.js"

/**
 * The drainer's lifecycle, as string literals:
 * - `Running`: draining (or waiting for events).
 * - `Restarting`: the sink died on an event; the drainer waits on `restartSchedule` before draining again.
 * - `Failed`: more than `maxRestarts` consecutive restarts; intake is closed for good (sticky).
 * - `Closed`: `closeAndFlush` (or the scope's finalizer) has stopped intake and the drainer (sticky).
 */
export type QueueStatus = "Running" | "Restarting" | "Failed" | "Closed"

export class AuditQueue extends Context.Tag("agent-ledger/AuditQueue")<AuditQueue, {
  /**
   * Queue an event for the sink. Never blocks, never fails: `false` (and one more `sendFailures`) once the
   * queue is closed or failed.
   */
  readonly submit: (event: DeferredAuditEvent) => Effect.Effect<boolean>
  /** Build the event with `DeferredAuditEvent.fromRefusal` and submit it; `false`, uncounted, for Allow/Warn. */
  readonly submitRefusal: (agentId: string, action: AgentAction, decision: Decision) => Effect.Effect<boolean>
  /**
   * Wait until every submitted event is accounted for (appended + appendFailures + sendFailures ≥
   * submitted): `true` then, `false` when `timeout` (on `Clock`) passes first. Leaves the queue open.
   */
  readonly drainPending: (timeout: Duration.DurationInput) => Effect.Effect<boolean>
  /** Stop intake (later submits are send failures), wait until every queued event is handled, stop the drainer. */
  readonly closeAndFlush: Effect.Effect<void>
  /**
   * `closeAndFlush` bounded by `timeout`: `true` when everything was handled; `false` at the timeout, with
   * the residual count logged as a warning and the drainer stopped (the residual stays unhandled).
   */
  readonly closeAndFlushWithin: (timeout: Duration.DurationInput) => Effect.Effect<boolean>
  /** `true` while submits are accepted (not closed, not failed). */
  readonly isOpen: Effect.Effect<boolean>
  readonly status: Effect.Effect<QueueStatus>
  /** All counters of this queue, read as one consistent snapshot. */
  readonly metrics: Effect.Effect<AuditMetricsSnapshot>
}>() {}

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
  /** The `queue_id` tag of this queue's `Metric` counters. Default: a fresh UUID v7. */
  readonly queueId?: string
}

/** Exponential backoff from 10 ms, capped at 1 second, never giving up (`maxRestarts` bounds restarts). */
export const defaultRestartSchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("10 millis").pipe(
  Schedule.union(Schedule.spaced("1 second"))
)

/** The default bound on the shutdown drain. */
export const DEFAULT_SHUTDOWN_DRAIN_TIMEOUT: Duration.Duration = Duration.seconds(5)

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

/** The drain loop ended because the sink died on an event (already accounted); the supervisor restarts it. */
class SinkDied extends Data.TaggedError("SinkDied")<{ readonly eventId: string }> {}

export const make = (
  options: Options & { readonly sink: Context.Tag.Service<AuditSink> }
): Effect.Effect<Context.Tag.Service<AuditQueue>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const sink = options.sink
    const maxRestarts = options.maxRestarts ?? Number.POSITIVE_INFINITY
    const shutdownDrainTimeout = options.shutdownDrainTimeout ?? DEFAULT_SHUTDOWN_DRAIN_TIMEOUT
    const queueId = options.queueId ?? uuidV7(yield* Clock.currentTimeMillis)
    const counters = AuditMetrics.counters(queueId)

    const queue = yield* Queue.unbounded<DeferredAuditEvent>()
    const state = yield* Ref.make<State>({
      open: true,
      status: "Running",
      consecutiveRestarts: 0,
      drainerStopped: false,
      metrics: AuditMetrics.empty
    })
    // Completed (and replaced) after every accounting change, so waiters re-check without polling.
    const progress = yield* Ref.make(yield* Deferred.make<void>())
    const restartDriver = yield* Schedule.driver(options.restartSchedule ?? defaultRestartSchedule)

    const annotate = Effect.annotateLogs({ auditQueue: queueId })

    /** Record the final outcome of queued events, then wake whoever waits for the drain. */
    const account = (delta: AuditMetrics.AuditMetricsDelta) =>
      Effect.gen(function*() {
        yield* Ref.update(state, (s) => ({ ...s, metrics: AuditMetrics.add(s.metrics, delta) }))
        yield* AuditMetrics.publish(counters, delta)
        const next = yield* Deferred.make<void>()
        yield* Deferred.succeed(yield* Ref.getAndSet(progress, next), undefined)
      })

    const awaitDrained: Effect.Effect<void> = Effect.gen(function*() {
      while (true) {
        // Read the signal before the counters: a change after the read completes this very signal.
        const signal = yield* Ref.get(progress)
        if (AuditMetrics.isDrained((yield* Ref.get(state)).metrics)) return
        yield* Deferred.await(signal)
      }
    })

    // ---------------------------------------------------------------------------------------------------
    // Intake
    // ---------------------------------------------------------------------------------------------------

    // Uninterruptible: an accepted event is counted as submitted and must then really be offered, or
    // the drain would wait for it forever.
    const submit = (event: DeferredAuditEvent): Effect.Effect<boolean> =>
      Effect.uninterruptible(Effect.gen(function*() {
        const accepted = yield* Ref.modify(state, (s): [boolean, State] =>
          s.open
            ? [true, { ...s, metrics: AuditMetrics.add(s.metrics, { submitted: 1 }) }]
            : [false, { ...s, metrics: AuditMetrics.add(s.metrics, { submitted: 1, sendFailures: 1 }) }])
        if (accepted) {
          yield* AuditMetrics.publish(counters, { submitted: 1 })
          yield* Queue.offer(queue, event)
          return true
        }
        yield* AuditMetrics.publish(counters, { submitted: 1, sendFailures: 1 })
        yield* Effect.logWarning("audit queue closed: submit refused, audit row LOST for this refusal").pipe(
          Effect.annotateLogs({ eventId: event.id, agentId: event.agentId }),
          annotate
        )
        return false
      }))

    const submitRefusal = (agentId: string, action: AgentAction, decision: Decision): Effect.Effect<boolean> =>
      Effect.flatMap(
        DeferredAuditEvent.fromRefusal(agentId, action, decision),
        (event) => event._tag === "Some" ? submit(event.value) : Effect.succeed(false)
      )

    // ---------------------------------------------------------------------------------------------------
    // Drainer
    // ---------------------------------------------------------------------------------------------------

    /**
     * A sink call's exit. When the drainer itself is interrupted, Effect skips failure handlers, so the
     * interruption ends the drainer right here; an interruption that comes back as an exit is one the
     * sink's own effect ended with (it interrupted itself, or joined an interrupted fiber): a sink
     * failure like any other, which must never silently stop the drainer.
     */
    const callSink = <A, E>(call: Effect.Effect<A, E>): Effect.Effect<Exit.Exit<A, E>> => Effect.exit(call)

    /** Dead-letter `event` with `reason`; `true` when it landed. */
    const deadLetter = (event: DeferredAuditEvent, reason: string): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        const exit = yield* callSink(sink.deadLetter(event, reason))
        if (Exit.isSuccess(exit)) return true
        yield* Effect.logError("audit sink could not dead-letter the event", exit.cause).pipe(
          Effect.annotateLogs({ eventId: event.id })
        )
        return false
      })

    /** Append one event and account it; fails with `SinkDied` after accounting a poison event. */
    const appendOne = (event: DeferredAuditEvent): Effect.Effect<void, SinkDied> =>
      Effect.gen(function*() {
        const exit = yield* callSink(sink.append(event))
        if (Exit.isSuccess(exit)) {
          const outcome = exit.value
          if (outcome._tag === "Appended") {
            yield* account({ appended: 1, uniqueRaceRetries: outcome.uniqueRaceRetries })
            const hadRestarts = yield* Ref.modify(
              state,
              (s): [boolean, State] => [s.consecutiveRestarts > 0, { ...s, consecutiveRestarts: 0 }]
            )
            if (hadRestarts) yield* restartDriver.reset
            return
          }
          yield* account({ appendFailures: 1, dlqLanded: 1, uniqueRaceRetries: outcome.uniqueRaceRetries })
          yield* Effect.logWarning(
            "audit event landed in the dead-letter store (ledger row NOT appended; replay needed)"
          ).pipe(Effect.annotateLogs({ eventId: event.id, reason: outcome.reason }))
          return
        }
        const cause = exit.cause
        if (!Cause.isDie(cause) && !Cause.isInterrupted(cause)) {
          yield* account({ appendFailures: 1 })
          yield* Effect.logError("audit sink could not append the event, nor dead-letter it", cause).pipe(
            Effect.annotateLogs({ eventId: event.id })
          )
          return
        }
        // The sink died (or ended interrupted) on this event: it is a poison event. Account it (after trying the dead-letter
        // store, so a drain never completes before the landing), then let the supervisor restart.
        const landed = yield* deadLetter(event, `drainer defect: ${Cause.pretty(cause)}`)
        yield* account({ appendFailures: 1, drainerDefects: 1, dlqLanded: landed ? 1 : 0 })
        yield* Effect.logError("audit sink died on an event; restarting the drainer", cause).pipe(
          Effect.annotateLogs({ eventId: event.id, deadLettered: landed })
        )
        return yield* new SinkDied({ eventId: event.id })
      })

    // The take and the append of one event form one iteration, so a restart never loses a taken event:
    // the loop only ends after the event that killed it has been accounted.
    const drainLoop: Effect.Effect<never, SinkDied> = Effect.forever(Effect.flatMap(Queue.take(queue), appendOne))

    /** After the last restart: close intake and dead-letter everything that was accepted but not handled. */
    const fail = (reason: string) =>
      Effect.gen(function*() {
        const residual = yield* Ref.modify(state, (s): [number, State] => [
          AuditMetrics.inFlight(s.metrics),
          { ...s, open: false, status: s.status === "Closed" ? "Closed" : "Failed" }
        ])
        yield* Effect.logError(
          `audit queue FAILED (${reason}); intake closed, ${residual} queued events go to the dead-letter store`
        )
        // `open` is false now, so `residual` is final: exactly that many events are (or are about to be)
        // in the queue.
        for (let i = 0; i < residual; i++) {
          const event = yield* Queue.take(queue)
          const landed = yield* deadLetter(event, `audit queue failed: ${reason}`)
          yield* account({ appendFailures: 1, dlqLanded: landed ? 1 : 0 })
        }
      })

    const setStatus = (from: QueueStatus, to: QueueStatus) =>
      Ref.update(state, (s) => s.status === from ? { ...s, status: to } : s)

    const supervisor: Effect.Effect<void> = Effect.gen(function*() {
      while (true) {
        const exit = yield* Effect.exit(drainLoop)
        if (Exit.isSuccess(exit)) return
        // Interruption is shutdown; anything else (the sink died, or a bug in the loop) is a restart.
        if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
        const restarts = yield* Ref.modify(state, (s): [number, State] => [
          s.consecutiveRestarts + 1,
          {
            ...s,
            consecutiveRestarts: s.consecutiveRestarts + 1,
            status: s.status === "Running" ? "Restarting" : s.status
          }
        ])
        if (restarts > maxRestarts) {
          return yield* fail(`${restarts} consecutive drainer defects, maxRestarts is ${maxRestarts}`)
        }
        const next = yield* Effect.either(restartDriver.next(exit.cause))
        if (next._tag === "Left") return yield* fail(`restart schedule ended after ${restarts - 1} restarts`)
        yield* setStatus("Restarting", "Running")
        yield* Effect.logInfo(`audit drainer restarted (consecutive restart ${restarts})`)
      }
    }).pipe(annotate)

    // Interruptible whatever the caller's region (layers may be built uninterruptibly): shutdown interrupts it.
    // It yields to the event loop between batches of work: appends are synchronous I/O, and the default
    // scheduler's microtask yields would let a backlog starve the host's own I/O (the guard's hot path).
    const drainer = yield* Effect.forkScoped(Effect.withScheduler(Effect.interruptible(supervisor), eventLoopScheduler))

    // ---------------------------------------------------------------------------------------------------
    // Drain and shutdown
    // ---------------------------------------------------------------------------------------------------

    const drainPending = (timeout: Duration.DurationInput): Effect.Effect<boolean> =>
      // Interruptible even inside a finalizer (which runs uninterruptibly): otherwise the timeout could not
      // cut the wait short and a wedged sink would hang the shutdown.
      Effect.timeoutTo(Effect.interruptible(awaitDrained), {
        duration: timeout,
        onSuccess: () => true,
        onTimeout: () => false
      })

    /** Close intake; `true` when an earlier close already stopped the drainer (nothing can drain then). */
    const stopIntake = Ref.modify(state, (s): [boolean, State] => [s.drainerStopped, { ...s, open: false }])

    // `Closed` is set before the interruption, so a restart in flight cannot flip the status back.
    const stopDrainer = (awaitStop: boolean) =>
      Effect.gen(function*() {
        yield* Ref.update(
          state,
          (s): State => ({ ...s, drainerStopped: true, status: s.status === "Failed" ? s.status : "Closed" })
        )
        // A wedged sink may never notice the interruption; only wait when the drainer is known to be idle.
        yield* awaitStop ? Fiber.interrupt(drainer) : Fiber.interruptFork(drainer)
      })

    const closeAndFlush: Effect.Effect<void> = Effect.gen(function*() {
      if (yield* stopIntake) return
      yield* awaitDrained
      // Everything is handled, so the drainer is idle on `take`; stopping it loses nothing.
      yield* stopDrainer(true)
    })

    const closeAndFlushWithin = (timeout: Duration.DurationInput): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        if (yield* stopIntake) return AuditMetrics.isDrained((yield* Ref.get(state)).metrics)
        const flushed = yield* drainPending(timeout)
        if (flushed) {
          yield* stopDrainer(true)
          return true
        }
        const residual = AuditMetrics.inFlight((yield* Ref.get(state)).metrics)
        yield* Effect.logWarning(
          `audit queue shutdown drain timed out after ${Duration.format(Duration.decode(timeout))}: ` +
            `${residual} queued events were not handled (audit rows LOST unless replayed)`
        ).pipe(Effect.annotateLogs({ residual }), annotate)
        yield* stopDrainer(false)
        return false
      })

    // Added after the drainer's fork, so it runs first when the scope closes: drain, then stop.
    yield* Effect.addFinalizer(() => closeAndFlushWithin(shutdownDrainTimeout))

    return AuditQueue.of({
      submit,
      submitRefusal,
      drainPending,
      closeAndFlush,
      closeAndFlushWithin,
      isOpen: Effect.map(Ref.get(state), (s) => s.open),
      status: Effect.map(Ref.get(state), (s) => s.status),
      metrics: Effect.map(Ref.get(state), (s) => s.metrics)
    })
  })

/**
 * The queue as a scoped layer, draining into `sink` (a layer providing `AuditSink`, or a sink value).
 * Closing the layer's scope stops intake and drains what is queued, bounded by `shutdownDrainTimeout`.
 */
export const layer = <E = never, R = never>(
  options: Options & { readonly sink: Layer.Layer<AuditSink, E, R> | Context.Tag.Service<AuditSink> }
): Layer.Layer<AuditQueue, E, R> => {
  const { sink, ...rest } = options
  if (Layer.isLayer(sink)) {
    return Layer.scoped(AuditQueue, Effect.flatMap(AuditSink, (sink) => make({ ...rest, sink }))).pipe(
      Layer.provide(sink as Layer.Layer<AuditSink, E, R>)
    )
  }
  return Layer.scoped(AuditQueue, make({ ...rest, sink: sink as Context.Tag.Service<AuditSink> }))
}
