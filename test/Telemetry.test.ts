/**
 * What an operator sees through OpenTelemetry (@effect/opentelemetry with the SDK's in-memory exporters):
 * the spans named in docs/OPERATIONS.md, the append span linked to the spans the events were submitted in,
 * every counter from the start, the queue-depth gauge and the append histogram, and metric names that a
 * Prometheus exporter serialises without a doubled `_total`.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { describe, expect, it } from "@effect/vitest"
import { SpanKind } from "@opentelemetry/api"
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { ResourceMetrics } from "@opentelemetry/sdk-metrics"
import { MetricReader } from "@opentelemetry/sdk-metrics"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Logger, LogLevel, Schedule } from "effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditSink from "../src/audit/AuditSink.js"
import * as MemorySink from "../src/audit/MemorySink.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import * as LedgerWriter from "../src/ledger/LedgerWriter.js"
import { repoRoot } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-otel-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

/** A reader the test collects from on demand. */
class TestReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
}

/** Keeps the finished spans when the SDK shuts down with the layer (the base class forgets them then). */
class KeptSpans extends InMemorySpanExporter {
  override shutdown(): Promise<void> {
    return Promise.resolve()
  }
}

const QUEUE_ID = "otel-test"

const collect = (reader: TestReader) =>
  Effect.promise(() => reader.collect()).pipe(Effect.map(({ resourceMetrics }) => resourceMetrics))

/** The data points of metric `name` tagged with this test's queue id. */
const pointsOf = (metrics: ResourceMetrics, name: string) =>
  metrics.scopeMetrics.flatMap((scope) => scope.metrics)
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as ReadonlyArray<{ attributes: Record<string, unknown>; value: unknown }>)
    .filter((point) => point.attributes[AuditMetrics.QUEUE_ID_TAG] === QUEUE_ID)

const valueOf = (metrics: ResourceMetrics, name: string): unknown => {
  const points = pointsOf(metrics, name)
  expect(points, name).toHaveLength(1)
  return points[0]!.value
}

const spansNamed = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((span) => span.name === name)

describe("OpenTelemetry", () => {
  it.live("spans link the append to its submitters; counters, depth gauge and histogram are exported", () =>
    Effect.gen(function*() {
      const exporter = new KeptSpans()
      const reader = new TestReader()
      const otel = NodeSdk.layer(() => ({
        resource: { serviceName: "agent-ledger-test" },
        spanProcessor: new SimpleSpanProcessor(exporter),
        metricReader: reader
      }))
      const filename = join(tempRoot, "otel.db")

      const submitterSpans = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        // Before any event: every counter and the depth gauge exist, at 0.
        const before = yield* collect(reader)
        for (const name of Object.values(AuditMetrics.metricNames)) expect(valueOf(before, name), name).toBe(0)
        expect(valueOf(before, AuditMetrics.QUEUE_DEPTH_GAUGE)).toBe(0)
        expect(valueOf(before, AuditMetrics.STALLED_GAUGE)).toBe(0)

        const submitted: Array<{ traceId: string; spanId: string }> = []
        for (let n = 0; n < 3; n++) {
          const span = yield* Effect.withSpan(
            Effect.zipRight(queue.submit(refusalEvent("agent-otel", n)), Effect.currentSpan),
            `tool-call-${n}`
          )
          submitted.push({ traceId: span.traceId, spanId: span.spanId })
        }
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        const report = yield* LedgerVerifier.verifyLedger()
        expect(report.rowsChecked).toBe(3)
        yield* DeadLetters.replayDeadLetters()

        // Journal spans only at debug level.
        const journal = yield* SessionJournal.make("session-otel")
        const call = {
          toolName: "read_file",
          serverId: "fs",
          agentId: "agent-otel",
          bytesRead: 10,
          bytesWritten: 2,
          delegationDepth: 0,
          allowed: true
        }
        yield* journal.record(call)
        yield* journal.record({ ...call, toolName: "write_file" }).pipe(
          Logger.withMinimumLogLevel(LogLevel.Debug)
        )
        yield* journal.export.pipe(Logger.withMinimumLogLevel(LogLevel.Debug))

        const after = yield* collect(reader)
        expect(valueOf(after, AuditMetrics.metricNames.submitted)).toBe(3)
        expect(valueOf(after, AuditMetrics.metricNames.appended)).toBe(3)
        expect(valueOf(after, AuditMetrics.metricNames.dlqLanded)).toBe(0)
        expect(valueOf(after, AuditMetrics.QUEUE_DEPTH_GAUGE)).toBe(0)
        const histogram = valueOf(after, AuditMetrics.APPEND_DURATION_HISTOGRAM) as { count: number; sum: number }
        expect(histogram.count).toBeGreaterThanOrEqual(1)
        expect(histogram.sum).toBeGreaterThan(0)

        // OpenTelemetry conventions: dotted names, UCUM units (`s`, `1`, `{event}`), never the unit "1" on a
        // count of things or on a duration.
        const units = Object.fromEntries(
          after.scopeMetrics.flatMap((scope) => scope.metrics).map((metric) => [
            metric.descriptor.name,
            metric.descriptor.unit
          ])
        )
        for (const [field, name] of Object.entries(AuditMetrics.metricNames)) {
          expect(name).toMatch(/^agent_ledger\.audit\.[a-z_.]+[a-z]$/)
          expect(units[name], name).toBe(AuditMetrics.metricUnits[field as keyof typeof AuditMetrics.metricUnits])
          expect(units[name], name).toMatch(/^\{[a-z]+\}$/)
        }
        expect(units[AuditMetrics.APPEND_DURATION_HISTOGRAM]).toBe("s")
        expect(units[AuditMetrics.QUEUE_DEPTH_GAUGE]).toBe("{event}")
        expect(units[AuditMetrics.STALLED_GAUGE]).toBe("1")

        // A Prometheus scrape: dots become underscores, each counter once with `_total`, never `_total_total`.
        const text = new PrometheusSerializer().serialize(after)
        const scraped = (name: string) => name.replaceAll(".", "_")
        expect(text).not.toContain("_total_total")
        for (const name of Object.values(AuditMetrics.metricNames)) {
          expect(text).toMatch(new RegExp(`^${scraped(name)}_total\\{.*queue_id="${QUEUE_ID}".*\\} \\d+$`, "m"))
        }
        expect(text).toMatch(
          new RegExp(`^${scraped(AuditMetrics.QUEUE_DEPTH_GAUGE)}\\{.*queue_id="${QUEUE_ID}"`, "m")
        )
        expect(text).toMatch(new RegExp(`^${scraped(AuditMetrics.APPEND_DURATION_HISTOGRAM)}_bucket\\{`, "m"))
        return submitted
      }).pipe(
        Effect.provide(AuditLedger.layerSqlite({ filename, queueId: QUEUE_ID, synchronous: "NORMAL" })),
        Effect.provide(otel)
      )

      yield* Effect.promise(() => reader.forceFlush())
      const spans = exporter.getFinishedSpans()

      // The append spans: roots, covering sequences 0..2, linked to every submitter's span.
      const appends = spansNamed(spans, AuditQueue.SPAN_APPEND)
      expect(appends.length).toBeGreaterThanOrEqual(1)
      for (const span of appends) {
        expect(span.parentSpanContext).toBeUndefined()
        // The drainer consumes what submitters produced.
        expect(span.kind).toBe(SpanKind.CONSUMER)
        expect(span.attributes["agent_ledger.outcome"]).toBe("appended")
        expect(span.attributes["agent_ledger.queue_id"]).toBe(QUEUE_ID)
        expect(span.attributes["agent_ledger.retries"]).toBe(0)
      }
      expect(appends.reduce((n, span) => n + Number(span.attributes["agent_ledger.batch.size"]), 0)).toBe(3)
      expect(Math.min(...appends.map((span) => Number(span.attributes["agent_ledger.sequence.first"])))).toBe(0)
      expect(Math.max(...appends.map((span) => Number(span.attributes["agent_ledger.sequence.last"])))).toBe(2)
      const linked = appends.flatMap((span) =>
        span.links.map((link) => ({ traceId: link.context.traceId, spanId: link.context.spanId }))
      )
      expect(linked).toEqual(expect.arrayContaining(submitterSpans))
      expect(linked).toHaveLength(3)
      // Each submitter span was exported in its own trace, apart from the drainer's work.
      for (const submitter of submitterSpans) {
        expect(appends.some((span) => span.spanContext().traceId === submitter.traceId)).toBe(false)
      }

      // The append's write transaction, in the writer thread, is a child of the append span.
      const appendIds = new Set(appends.map((span) => span.spanContext().spanId))
      const writes = spans.filter((span) =>
        span.name === LedgerWriter.SPAN_WRITE && appendIds.has(span.parentSpanContext?.spanId ?? "")
      )
      expect(writes.length).toBeGreaterThanOrEqual(1)
      expect(writes.reduce((n, span) => n + Number(span.attributes["agent_ledger.rows"]), 0)).toBe(3)

      const [verify] = spansNamed(spans, LedgerVerifier.SPAN_VERIFY)
      expect(verify?.attributes["agent_ledger.rows_checked"]).toBe(3)
      expect(verify?.attributes["agent_ledger.ok"]).toBe(true)
      const [replay] = spansNamed(spans, DeadLetters.SPAN_REPLAY)
      expect(replay?.attributes["agent_ledger.pending"]).toBe(0)
      const records = spansNamed(spans, SessionJournal.SPAN_RECORD)
      expect(records.map((span) => span.attributes["agent_ledger.tool_name"])).toEqual(["write_file"])
      expect(spansNamed(spans, SessionJournal.SPAN_EXPORT)).toHaveLength(1)
    }))

  it.live("a poison event: the append span fails, the dead-letter span is its child, the outcome is partial", () =>
    Effect.gen(function*() {
      const exporter = new KeptSpans()
      const otel = NodeSdk.layer(() => ({
        resource: { serviceName: "agent-ledger-test" },
        spanProcessor: new SimpleSpanProcessor(exporter)
      }))
      const deadLettered: Array<string> = []
      const sink = AuditSink.AuditSink.of({
        append: (event) =>
          event.agentId === "poison"
            ? Effect.dieMessage("the sink cannot take this event")
            : Effect.succeed(new AuditSink.Appended({ uniqueRaceRetries: 0 })),
        deadLetter: (event) => Effect.sync(() => void deadLettered.push(event.id))
      })
      yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* AuditQueue.make({ sink, queueId: QUEUE_ID, restartSchedule: Schedule.spaced("1 millis") })
        yield* queue.submit(refusalEvent("poison", 0))
        yield* queue.submit(refusalEvent("agent-otel", 1))
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        expect(yield* queue.metrics).toMatchObject({ appended: 1, dlqLanded: 1, drainerDefects: 1 })
      })).pipe(Effect.provide(otel), Logger.withMinimumLogLevel(LogLevel.None))
      expect(deadLettered).toHaveLength(1)
      const spans = exporter.getFinishedSpans()
      const appends = spansNamed(spans, AuditQueue.SPAN_APPEND)
      const failedAppend = appends.find((span) => span.status.code === 2) // ERROR
      expect(failedAppend).toBeDefined()
      const [deadLetter] = spansNamed(spans, AuditQueue.SPAN_DEAD_LETTER)
      expect(deadLetter?.parentSpanContext?.spanId).toBe(failedAppend!.spanContext().spanId)
      expect(deadLetter?.attributes["agent_ledger.event_count"]).toBe(1)
      expect(appends.some((span) => span.attributes["agent_ledger.outcome"] === "appended")).toBe(true)
    }))

  it.live("submitAndWait has a span of its own, linked from the append that made its event durable", () =>
    Effect.gen(function*() {
      const exporter = new KeptSpans()
      const otel = NodeSdk.layer(() => ({
        resource: { serviceName: "agent-ledger-test" },
        spanProcessor: new SimpleSpanProcessor(exporter)
      }))
      const receipts = yield* Effect.scoped(Effect.gen(function*() {
        const memory = yield* MemorySink.make()
        const queue = yield* AuditQueue.make({ sink: memory.sink, queueId: QUEUE_ID })
        return yield* Effect.all([0, 1].map((n) => queue.submitAndWait(refusalEvent("agent-otel", n))))
      })).pipe(Effect.provide(otel))
      const spans = exporter.getFinishedSpans()
      const waits = spansNamed(spans, AuditQueue.SPAN_SUBMIT_AND_WAIT)
      expect(waits).toHaveLength(2)
      for (const [n, wait] of waits.entries()) {
        expect(wait.kind).toBe(SpanKind.INTERNAL)
        expect(wait.attributes["agent_ledger.outcome"]).toBe("appended")
        expect(wait.attributes["agent_ledger.sequence"]).toBe(receipts[n]!.sequence)
      }
      const linked = spansNamed(spans, AuditQueue.SPAN_APPEND).flatMap((span) =>
        span.links.map((l) => l.context.spanId)
      )
      for (const wait of waits) expect(linked).toContain(wait.spanContext().spanId)
    }))

  it.live("opening a ledger is one trace: every span of the opening descends from one open span", () =>
    Effect.gen(function*() {
      const exporter = new KeptSpans()
      const otel = NodeSdk.layer(() => ({
        resource: { serviceName: "agent-ledger-test" },
        spanProcessor: new SimpleSpanProcessor(exporter)
      }))
      const signer = yield* AuditSigner.generate
      const filename = join(tempRoot, "open.db")
      // Opened twice: creating the file (migrations) and reopening it; with dead-letter replay and
      // checkpoints, so every step of the opening is there.
      for (let n = 0; n < 2; n++) {
        yield* Effect.scoped(Layer.build(AuditLedger.layerSqlite({
          filename,
          signer,
          queueId: QUEUE_ID,
          replayDeadLettersOnStart: true,
          checkpoints: { origin: "otel-test/log", every: "1 hour" }
        }))).pipe(Effect.provide(otel), Logger.withMinimumLogLevel(LogLevel.None))
      }
      const spans = exporter.getFinishedSpans()
      const opens = spansNamed(spans, AuditLedger.SPAN_OPEN)
      expect(opens).toHaveLength(2)
      for (const open of opens) {
        expect(open.parentSpanContext).toBeUndefined()
        expect(open.kind).toBe(SpanKind.INTERNAL)
        expect(open.attributes["agent_ledger.queue_id"]).toBe(QUEUE_ID)
      }
      // Every other root is a span the layer's own fibers make (the last checkpoint, on close).
      const roots = spans.filter((span) => span.parentSpanContext === undefined).map((span) => span.name)
      expect(roots.filter((name) => name !== AuditLedger.SPAN_OPEN).sort()).toEqual([
        AuditLedger.SPAN_CHECKPOINT,
        AuditLedger.SPAN_CHECKPOINT
      ])
      const openTraces = new Set(opens.map((open) => open.spanContext().traceId))
      const inOpening = spans.filter((span) => openTraces.has(span.spanContext().traceId))
      // The migrations, the settings, the head read and the replay: children, not traces of their own.
      expect(inOpening.length).toBeGreaterThan(opens.length + 5)
      expect(spansNamed(inOpening, DeadLetters.SPAN_REPLAY)).toHaveLength(2)
      // The opening span ends when the layer is built, before the layer is released.
      const [checkpoint] = spansNamed(spans, AuditLedger.SPAN_CHECKPOINT)
      expect(checkpoint!.attributes["agent_ledger.origin"]).toBe("otel-test/log")
      expect(typeof checkpoint!.attributes["agent_ledger.tree_size"]).toBe("number")
    }))

  it("docs/OPERATIONS.md lists exactly the span and metric names the code makes", () => {
    const operations = readFileSync(join(repoRoot, "docs/OPERATIONS.md"), "utf8")
    const tableNames = (heading: string) => {
      const section = operations.slice(operations.indexOf(`## ${heading}\n`))
      const body = section.slice(0, section.indexOf("\n## ", 4))
      return new Set(Array.from(body.matchAll(/^\| `(agent_ledger\.[a-z_.]+)` \|/gm), (m) => m[1]!))
    }
    const spans = [
      AuditLedger.SPAN_OPEN,
      AuditLedger.SPAN_CHECKPOINT,
      AuditQueue.SPAN_APPEND,
      AuditQueue.SPAN_SUBMIT_AND_WAIT,
      AuditQueue.SPAN_DEAD_LETTER,
      DeadLetters.SPAN_REPLAY,
      LedgerVerifier.SPAN_VERIFY,
      SessionJournal.SPAN_RECORD,
      SessionJournal.SPAN_EXPORT
    ]
    expect([...tableNames("Traces")].sort()).toEqual([...spans].sort())
    // The writer thread's span is described below the table.
    expect(operations).toContain(`\`${LedgerWriter.SPAN_WRITE}\` span`)
    const metrics = [
      ...Object.values(AuditMetrics.metricNames),
      AuditMetrics.QUEUE_DEPTH_GAUGE,
      AuditMetrics.STALLED_GAUGE,
      AuditMetrics.APPEND_DURATION_HISTOGRAM
    ]
    expect([...tableNames("Metrics")].sort()).toEqual([...metrics].sort())
  })
})
