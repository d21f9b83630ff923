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
import { Effect, Metric, MetricBoundaries } from "effect"

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

/** All counters at zero: a fresh queue. Frozen: it is shared. */
export const empty: AuditMetricsSnapshot = Object.freeze({
  submitted: 0,
  appended: 0,
  sendFailures: 0,
  appendFailures: 0,
  drainerDefects: 0,
  dlqLanded: 0,
  uniqueRaceRetries: 0
})

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

/**
 * Effect `Metric` counter names, one per snapshot field; every series carries a `queue_id` tag. Named as
 * OpenTelemetry semantic conventions name instruments: dotted namespaces, no unit and no `_total` in the
 * name (a Prometheus exporter writes `agent_ledger_audit_submitted_total` itself).
 */
export const metricNames: { readonly [K in keyof AuditMetricsSnapshot]: string } = {
  submitted: "agent_ledger.audit.submitted",
  appended: "agent_ledger.audit.appended",
  sendFailures: "agent_ledger.audit.send_failures",
  appendFailures: "agent_ledger.audit.append_failures",
  drainerDefects: "agent_ledger.audit.drainer.defects",
  dlqLanded: "agent_ledger.audit.dlq.landed",
  uniqueRaceRetries: "agent_ledger.audit.race_retries"
}

/**
 * Each instrument's unit (UCUM, as OpenTelemetry asks: `s`, `1`, and `{annotation}` for counts of things).
 * Effect metrics carry it as the `unit` tag, which @effect/opentelemetry reads as the instrument's unit.
 */
export const metricUnits: { readonly [K in keyof AuditMetricsSnapshot]: string } = {
  submitted: "{event}",
  appended: "{event}",
  sendFailures: "{event}",
  appendFailures: "{event}",
  drainerDefects: "{restart}",
  dlqLanded: "{event}",
  uniqueRaceRetries: "{transaction}"
}

/** The tag @effect/opentelemetry reads as an instrument's unit. */
export const UNIT_TAG = "unit"

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

/**
 * The counters for the queue `queueId`, each registered at 0 so that every series exists from the start
 * (an alert on `increase(...)` needs the zero). Counters are global by name; the tag keeps queues apart.
 */
export const counters = (queueId: string): AuditCounters => {
  const make = (field: keyof AuditMetricsSnapshot) =>
    Metric.counter(metricNames[field], { description: descriptions[field], incremental: true }).pipe(
      Metric.tagged(UNIT_TAG, metricUnits[field]),
      Metric.tagged(QUEUE_ID_TAG, queueId)
    ).register()
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
export const STALLED_GAUGE = "agent_ledger.audit.stalled"

/** The stalled gauge of the queue `queueId` (registered at 0). */
export const stalledGauge = (queueId: string): Metric.Metric.Gauge<number> =>
  Metric.gauge(STALLED_GAUGE, { description: "1 while the audit sink cannot write and events are held" }).pipe(
    Metric.tagged(UNIT_TAG, "1"),
    Metric.tagged(QUEUE_ID_TAG, queueId)
  ).register()

/**
 * Effect `Metric` gauge: events accepted and not yet handled (queued, or in the batch being appended), set
 * at every submit and every settled batch. A backlog alert watches it.
 */
export const QUEUE_DEPTH_GAUGE = "agent_ledger.audit.queue.depth"

/** The queue-depth gauge of the queue `queueId` (registered at 0). */
export const queueDepthGauge = (queueId: string): Metric.Metric.Gauge<number> =>
  Metric.gauge(QUEUE_DEPTH_GAUGE, { description: "Audit events accepted and not yet appended or dead-lettered" })
    .pipe(Metric.tagged(UNIT_TAG, "{event}"), Metric.tagged(QUEUE_ID_TAG, queueId)).register()

/** Effect `Metric` histogram: seconds one append of a batch took in the sink (one write transaction). */
export const APPEND_DURATION_HISTOGRAM = "agent_ledger.audit.append.duration"

/** Bucket bounds of the append histogram: 0.5 ms to about 16 s, doubling. */
export const appendDurationBoundaries: Array<number> = Array.from({ length: 16 }, (_, i) => 0.0005 * 2 ** i)

/** The append-duration histogram of the queue `queueId`. */
export const appendDuration = (queueId: string): Metric.Metric.Histogram<number> =>
  Metric.histogram(
    APPEND_DURATION_HISTOGRAM,
    MetricBoundaries.fromIterable(appendDurationBoundaries),
    "Seconds one batch append took in the audit sink (one write transaction)"
  ).pipe(Metric.tagged(UNIT_TAG, "s"), Metric.tagged(QUEUE_ID_TAG, queueId)).register()

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
