/**
 * The audit queue's counters: one `AuditMetricsSnapshot` per queue instance (the source of truth, read in
 * one piece from the queue's `Ref`), also published as Effect `Metric` counters tagged with the queue's id
 * so an OpenTelemetry (or any other) metrics exporter sees them without mixing two queues.
 *
 * Counting rules (kept by `AuditQueue`): every submitted event ends in exactly one of `appended`,
 * `appendFailures` (dead-letter landings, sink errors and poison events all count there) or
 * `sendFailures` (refused because the queue was closed or failed). `dlqLanded` counts dead-letter
 * landings a second time, and `drainerDefects` counts the times the sink died under the drainer.
 */
import { Effect, Metric } from "effect"

export interface AuditMetricsSnapshot {
  /** Events handed to `submit`, accepted or not. */
  readonly submitted: number
  /** Events the sink appended to the ledger. */
  readonly appended: number
  /** Submits refused because the queue was closed (or had failed): the event never entered the queue. */
  readonly sendFailures: number
  /** Queued events that did not reach the ledger: dead-letter landings, sink errors and poison events. */
  readonly appendFailures: number
  /** Times the sink died (a defect) while the drainer was appending; each one restarted the drainer. */
  readonly drainerDefects: number
  /** Events that landed in the sink's dead-letter store (also counted in `appendFailures`). */
  readonly dlqLanded: number
  /** Retries the sink reported after losing a race for the next sequence number (or a busy database). */
  readonly uniqueRaceRetries: number
}

/** A change to some counters; missing keys are zero. */
export type AuditMetricsDelta = Partial<AuditMetricsSnapshot>

/** All counters at zero: a fresh queue. */
export const empty: AuditMetricsSnapshot = {
  submitted: 0,
  appended: 0,
  sendFailures: 0,
  appendFailures: 0,
  drainerDefects: 0,
  dlqLanded: 0,
  uniqueRaceRetries: 0
}

/** `snapshot` with `delta` added. */
export const add = (snapshot: AuditMetricsSnapshot, delta: AuditMetricsDelta): AuditMetricsSnapshot => ({
  submitted: snapshot.submitted + (delta.submitted ?? 0),
  appended: snapshot.appended + (delta.appended ?? 0),
  sendFailures: snapshot.sendFailures + (delta.sendFailures ?? 0),
  appendFailures: snapshot.appendFailures + (delta.appendFailures ?? 0),
  drainerDefects: snapshot.drainerDefects + (delta.drainerDefects ?? 0),
  dlqLanded: snapshot.dlqLanded + (delta.dlqLanded ?? 0),
  uniqueRaceRetries: snapshot.uniqueRaceRetries + (delta.uniqueRaceRetries ?? 0)
})

/** Submitted events that have reached their final bucket: appended, append failure or send failure. */
export const accounted = (snapshot: AuditMetricsSnapshot): number =>
  snapshot.appended + snapshot.appendFailures + snapshot.sendFailures

/** Accepted events not yet handled by the drainer (queued or being appended). */
export const inFlight = (snapshot: AuditMetricsSnapshot): number =>
  Math.max(0, snapshot.submitted - accounted(snapshot))

/** True when every submitted event has been accounted for (what `drainPending` waits for). */
export const isDrained = (snapshot: AuditMetricsSnapshot): boolean => accounted(snapshot) >= snapshot.submitted

// ---------------------------------------------------------------------------------------------------------
// Effect Metric counters
// ---------------------------------------------------------------------------------------------------------

/** Effect `Metric` names, one per snapshot field; every series carries a `queue_id` tag. */
export const metricNames: { readonly [K in keyof AuditMetricsSnapshot]: string } = {
  submitted: "agent_ledger_audit_submitted_total",
  appended: "agent_ledger_audit_appended_total",
  sendFailures: "agent_ledger_audit_send_failures_total",
  appendFailures: "agent_ledger_audit_append_failures_total",
  drainerDefects: "agent_ledger_audit_drainer_defects_total",
  dlqLanded: "agent_ledger_audit_dlq_landed_total",
  uniqueRaceRetries: "agent_ledger_audit_unique_race_retries_total"
}

const descriptions: { readonly [K in keyof AuditMetricsSnapshot]: string } = {
  submitted: "Audit events submitted to the queue, accepted or not",
  appended: "Audit events appended to the ledger",
  sendFailures: "Audit submits refused because the queue was closed or failed",
  appendFailures: "Queued audit events that did not reach the ledger (dead-lettered, sink error or poison event)",
  drainerDefects: "Times the audit sink died under the drainer and the drainer restarted",
  dlqLanded: "Audit events landed in the dead-letter store",
  uniqueRaceRetries: "Sequence-number race retries reported by the audit sink"
}

/** The tag that tells two queues' series apart. */
export const QUEUE_ID_TAG = "queue_id"

/** The `Metric` counters of one queue instance (tagged with its id). */
export type AuditCounters = { readonly [K in keyof AuditMetricsSnapshot]: Metric.Metric.Counter<number> }

const fields = Object.keys(empty) as ReadonlyArray<keyof AuditMetricsSnapshot>

/** The counters for the queue `queueId`. Counters are global by name; the tag keeps queues apart. */
export const counters = (queueId: string): AuditCounters => {
  const make = (field: keyof AuditMetricsSnapshot) =>
    Metric.counter(metricNames[field], { description: descriptions[field], incremental: true }).pipe(
      Metric.tagged(QUEUE_ID_TAG, queueId)
    )
  return {
    submitted: make("submitted"),
    appended: make("appended"),
    sendFailures: make("sendFailures"),
    appendFailures: make("appendFailures"),
    drainerDefects: make("drainerDefects"),
    dlqLanded: make("dlqLanded"),
    uniqueRaceRetries: make("uniqueRaceRetries")
  }
}

/** Effect `Metric` gauge: 1 while the queue is `Stalled` (its sink cannot write; events are held), else 0. */
export const STALLED_GAUGE = "agent_ledger_audit_stalled"

/** The stalled gauge of the queue `queueId`. */
export const stalledGauge = (queueId: string): Metric.Metric.Gauge<number> =>
  Metric.gauge(STALLED_GAUGE, { description: "1 while the audit sink cannot write and events are held" }).pipe(
    Metric.tagged(QUEUE_ID_TAG, queueId)
  )

/**
 * Adds `delta` to the published counters, synchronously (the queue's intake is one synchronous step).
 * The snapshot is updated separately, by the queue.
 */
export const unsafePublish = (counters: AuditCounters, delta: AuditMetricsDelta): void => {
  for (const field of fields) {
    const amount = delta[field] ?? 0
    if (amount > 0) counters[field].unsafeUpdate(amount, [])
  }
}

/** Adds `delta` to the published counters (the snapshot is updated separately, by the queue). */
export const publish = (counters: AuditCounters, delta: AuditMetricsDelta): Effect.Effect<void> =>
  Effect.sync(() => unsafePublish(counters, delta))
