import { describe, expect, it } from "@effect/vitest"
import type { Duration } from "effect"
import {
  Context,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  Metric,
  Option,
  Ref,
  Schedule,
  Schema,
  Scope,
  TestClock
} from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { AgentAction } from "../src/audit/AuditEvent.js"
import { Allow, Custom, DeferredAuditEvent, Refuse, Warn } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import type { AppendOutcome } from "../src/audit/AuditSink.js"
import { Appended, AuditSink, AuditSinkError, DlqLanded } from "../src/audit/AuditSink.js"
import { captureLogs, waitUntil } from "./fixtures/effects.js"

// ---------------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------------

const refusalAction = (): AgentAction =>
  new Custom({ customKind: "memory_write", payload: { namespace: "secrets/api" } })
const refusalDecision = () => new Refuse({ ruleId: "R001", reason: "no writes to secrets/*" })

const refusal = (agentId: string) =>
  Effect.map(DeferredAuditEvent.fromRefusal(agentId, refusalAction(), refusalDecision()), Option.getOrThrow)

const refusals = (n: number, prefix = "agent") =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) => refusal(`${prefix}:${i}`))

/** What the test sink does on its `call`-th append (0-based, counted across restarts). */
type Behaviour = "append" | "error" | "dlq" | "die" | "interrupt"

interface SinkOptions {
  readonly behaviour?: (call: number, event: DeferredAuditEvent) => Behaviour
  /** Sleep (on Clock) before every append. */
  readonly delay?: Duration.DurationInput
  /** Never return from an append. */
  readonly wedged?: boolean
  /** `deadLetter` dies too. */
  readonly deadLetterDies?: boolean
  /** `uniqueRaceRetries` reported with every outcome. */
  readonly retries?: number
}

interface TestSink {
  readonly sink: Context.Tag.Service<AuditSink>
  readonly appended: Effect.Effect<ReadonlyArray<DeferredAuditEvent>>
  readonly deadLettered: Effect.Effect<ReadonlyArray<{ readonly event: DeferredAuditEvent; readonly reason: string }>>
  readonly calls: Effect.Effect<number>
}

/** An in-memory recording sink with injectable faults. */
const makeSink = (options: SinkOptions = {}): Effect.Effect<TestSink> =>
  Effect.gen(function*() {
    const appended = yield* Ref.make<ReadonlyArray<DeferredAuditEvent>>([])
    const deadLettered = yield* Ref.make<ReadonlyArray<{ event: DeferredAuditEvent; reason: string }>>([])
    const calls = yield* Ref.make(0)
    const retries = options.retries ?? 0
    const append = (event: DeferredAuditEvent): Effect.Effect<AppendOutcome, AuditSinkError> =>
      Effect.gen(function*() {
        const call = yield* Ref.getAndUpdate(calls, (n) => n + 1)
        if (options.delay !== undefined) yield* Effect.sleep(options.delay)
        if (options.wedged === true) return yield* Effect.never
        switch (options.behaviour?.(call, event) ?? "append") {
          case "append": {
            yield* Ref.update(appended, (es) => [...es, event])
            return new Appended({ uniqueRaceRetries: retries })
          }
          case "error":
            return yield* new AuditSinkError({ eventId: event.id, reason: `mock sink: configured error at ${call}` })
          case "dlq": {
            yield* Ref.update(deadLettered, (es) => [...es, { event, reason: "mock: sequence race budget" }])
            return new DlqLanded({ reason: "mock: sequence race budget", uniqueRaceRetries: retries })
          }
          case "die":
            return yield* Effect.dieMessage(`mock sink: configured defect at call ${call}`)
          case "interrupt":
            // The sink's own effect ends interrupted (as when it joins an interrupted fiber).
            return yield* Effect.interrupt
        }
      })
    const deadLetter = (event: DeferredAuditEvent, reason: string): Effect.Effect<void, AuditSinkError> =>
      options.deadLetterDies === true
        ? Effect.dieMessage("mock sink: dead-letter store died too")
        : Ref.update(deadLettered, (es) => [...es, { event, reason }])
    return {
      sink: AuditSink.of({ append, deadLetter }),
      appended: Ref.get(appended),
      deadLettered: Ref.get(deadLettered),
      calls: Ref.get(calls)
    }
  })

/** Run `effect` to completion while TestClock moves forward in `step`s (at most `limit` steps). */
const withClockSteps = <A, E>(effect: Effect.Effect<A, E>, step: Duration.DurationInput, limit = 10_000) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < limit && Option.isNone(yield* Fiber.poll(fiber)); i++) {
      yield* TestClock.adjust(step)
    }
    return yield* Fiber.join(fiber)
  })

/** Move TestClock forward in `step`s until `condition` holds (at most `limit` steps). */
const stepClockUntil = (condition: Effect.Effect<boolean>, step: Duration.DurationInput, what: string, limit = 1000) =>
  Effect.gen(function*() {
    for (let i = 0; i < limit; i++) {
      if (yield* condition) return
      yield* TestClock.adjust(step)
    }
    return yield* Effect.dieMessage(`clock ran ${limit} steps without ${what}`)
  })

const silent = Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))

const total = (m: AuditMetrics.AuditMetricsSnapshot) => m.appended + m.appendFailures + m.sendFailures

const agentIds = (events: ReadonlyArray<DeferredAuditEvent>) => events.map((e) => e.agentId)

// ---------------------------------------------------------------------------------------------------------
// Intake
// ---------------------------------------------------------------------------------------------------------

describe("AuditQueue intake", () => {
  it.scoped("a new queue is open, Running, with every counter at zero", () =>
    Effect.gen(function*() {
      const { sink } = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink })
      expect(yield* queue.isOpen).toBe(true)
      expect(yield* queue.status).toBe("Running")
      expect(yield* queue.metrics).toEqual(AuditMetrics.empty)
    }))

  it.scoped("submit queues the event, counts it, and the sink receives it", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const event = yield* refusal("agent:t")
      expect(yield* queue.submit(event)).toBe(true)
      expect((yield* queue.metrics).submitted).toBe(1)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* test.appended).toEqual([event])
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1, appended: 1 })
    }))

  it.scoped("submit after close is a send failure and never reaches the sink", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      yield* queue.closeAndFlush
      expect(yield* queue.isOpen).toBe(false)
      expect(yield* queue.status).toBe("Closed")
      expect(yield* queue.submit(yield* refusal("agent:late"))).toBe(false)
      expect(yield* queue.submitRefusal("agent:late", refusalAction(), refusalDecision())).toBe(false)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 2, sendFailures: 2 })
      expect(yield* test.appended).toEqual([])
      expect(yield* test.calls).toBe(0)
      // Every submitted event is accounted (as a send failure), so a drain completes at once.
      expect(yield* queue.drainPending("1 second")).toBe(true)
    }))

  it.scoped("submitRefusal skips Allow and Warn without counting, and queues a Refuse", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      expect(yield* queue.submitRefusal("agent:t", refusalAction(), new Allow())).toBe(false)
      expect(yield* queue.submitRefusal("agent:t", refusalAction(), new Warn({ ruleId: "W1", reason: "w" }))).toBe(
        false
      )
      expect(yield* queue.metrics).toEqual(AuditMetrics.empty)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* test.calls).toBe(0)

      expect(yield* queue.submitRefusal("agent:t", refusalAction(), refusalDecision())).toBe(true)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      const [event] = yield* test.appended
      expect(event?.agentId).toBe("agent:t")
      expect(event?.decision).toEqual(refusalDecision())
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1, appended: 1 })
    }))

  it.scoped("two handles on one queue share its channel and counters", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const context = yield* Layer.build(AuditQueue.layer({ sink: test.sink }))
      const first = Context.get(context, AuditQueue.AuditQueue)
      const second = Context.get(context, AuditQueue.AuditQueue)
      expect(yield* first.submit(yield* refusal("agent:a"))).toBe(true)
      expect(yield* second.submit(yield* refusal("agent:b"))).toBe(true)
      expect(yield* first.drainPending("1 second")).toBe(true)
      expect([...agentIds(yield* test.appended)].sort()).toEqual(["agent:a", "agent:b"])
      expect((yield* first.metrics).submitted).toBe(2)
      expect((yield* second.metrics).submitted).toBe(2)
    }))

  it.scoped("two queues keep separate counters", () =>
    Effect.gen(function*() {
      const one = yield* AuditQueue.make({ sink: (yield* makeSink()).sink })
      const two = yield* AuditQueue.make({ sink: (yield* makeSink()).sink })
      yield* one.submit(yield* refusal("agent:1"))
      yield* one.submit(yield* refusal("agent:2"))
      yield* two.submit(yield* refusal("agent:3"))
      expect(yield* one.drainPending("1 second")).toBe(true)
      expect(yield* two.drainPending("1 second")).toBe(true)
      expect(yield* one.metrics).toEqual({ ...AuditMetrics.empty, submitted: 2, appended: 2 })
      expect(yield* two.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1, appended: 1 })
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Drainer
// ---------------------------------------------------------------------------------------------------------

describe("AuditQueue drainer", () => {
  it.scoped("a recording sink receives every event in submit order", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(5)
      for (const event of events) expect(yield* queue.submit(event)).toBe(true)
      yield* queue.closeAndFlush
      expect(yield* test.appended).toEqual(events)
      expect(agentIds(yield* test.appended)).toEqual(["agent:0", "agent:1", "agent:2", "agent:3", "agent:4"])
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 5, appended: 5 })
    }))

  it.scoped("a sink error counts an append failure and the loop continues", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 1 ? "error" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of yield* refusals(3)) yield* queue.submit(event)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(agentIds(yield* test.appended)).toEqual(["agent:0", "agent:2"])
      expect(yield* test.deadLettered).toEqual([])
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 3, appended: 2, appendFailures: 1 })
      // An error is not a defect: no restart.
      expect(yield* queue.status).toBe("Running")
    }))

  it.scoped("a sink that always errors still accounts every event, so the drain completes", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: () => "error" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      yield* queue.submit(yield* refusal("agent:err"))
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1, appendFailures: 1 })
      expect(yield* test.appended).toEqual([])
    }))

  it.scoped("a DLQ outcome counts in both dlqLanded and appendFailures, with the sink's race retries", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 0 ? "dlq" : "append", retries: 2 })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(3)
      for (const event of events) yield* queue.submit(event)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 3,
        appended: 2,
        appendFailures: 1,
        dlqLanded: 1,
        uniqueRaceRetries: 6
      })
      expect((yield* test.deadLettered).map((d) => d.event)).toEqual([events[0]])
      expect(agentIds(yield* test.appended)).toEqual(["agent:1", "agent:2"])
    }))

  it.scoped("publishes the counters as Effect Metric counters tagged with the queue id", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 1 ? "dlq" : "append", retries: 1 })
      const queue = yield* AuditQueue.make({ sink: test.sink, queueId: "metrics-test-queue" })
      const other = yield* AuditQueue.make({ sink: (yield* makeSink()).sink, queueId: "metrics-test-other" })
      for (const event of yield* refusals(3)) yield* queue.submit(event)
      yield* other.submit(yield* refusal("agent:other"))
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* other.drainPending("1 second")).toBe(true)
      yield* queue.closeAndFlush
      yield* queue.submit(yield* refusal("agent:late"))

      const published = (id: string) =>
        Effect.gen(function*() {
          const counters = AuditMetrics.counters(id)
          const values: Record<string, number> = {}
          for (const key of Object.keys(AuditMetrics.empty) as Array<keyof AuditMetrics.AuditMetricsSnapshot>) {
            values[key] = (yield* Metric.value(counters[key])).count
          }
          return values
        })
      const snapshot = yield* queue.metrics
      expect(snapshot).toEqual({
        ...AuditMetrics.empty,
        submitted: 4,
        appended: 2,
        appendFailures: 1,
        dlqLanded: 1,
        sendFailures: 1,
        uniqueRaceRetries: 3
      })
      expect(yield* published("metrics-test-queue")).toEqual(snapshot)
      expect(yield* published("metrics-test-other")).toEqual(yield* other.metrics)
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Restart on defect
// ---------------------------------------------------------------------------------------------------------

describe("AuditQueue restart on defect", () => {
  it.scoped("a sink dying on event 37 of 100: the poison event is dead-lettered, the other 99 appended", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 37 ? "die" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(100)
      for (const event of events) expect(yield* queue.submit(event)).toBe(true)

      yield* waitUntil(Effect.map(queue.status, (s) => s === "Restarting"), "the drainer restarts")
      // The restart waits 10 ms on the Clock; nothing else is appended meanwhile.
      expect(yield* test.appended).toHaveLength(37)
      expect(yield* queue.isOpen).toBe(true)
      yield* TestClock.adjust("10 millis")
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.status).toBe("Running")

      const poison = events[37]!
      expect(yield* test.appended).toEqual(events.filter((e) => e !== poison))
      const deadLettered = yield* test.deadLettered
      expect(deadLettered.map((d) => d.event)).toEqual([poison])
      expect(deadLettered[0]!.reason).toMatch(/^drainer defect: /)
      expect(deadLettered[0]!.reason).toContain("mock sink: configured defect at call 37")
      const metrics = yield* queue.metrics
      expect(metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 100,
        appended: 99,
        appendFailures: 1,
        drainerDefects: 1,
        dlqLanded: 1
      })
      expect(total(metrics)).toBe(100)
      // The queue survived its drainer: new events still land.
      expect(yield* queue.submit(yield* refusal("agent:after"))).toBe(true)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect((yield* test.appended).at(-1)?.agentId).toBe("agent:after")
    }))

  it.scoped("a sink whose effect ends interrupted is a poison event, not a silent stop of the drainer", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 1 ? "interrupt" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(5)
      for (const event of events) expect(yield* queue.submit(event)).toBe(true)
      yield* waitUntil(Effect.map(queue.status, (s) => s === "Restarting"), "the drainer restarts")
      yield* TestClock.adjust("10 millis")
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.status).toBe("Running")
      expect(yield* test.appended).toEqual(events.filter((_, i) => i !== 1))
      expect((yield* test.deadLettered).map((d) => d.event)).toEqual([events[1]])
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 5,
        appended: 4,
        appendFailures: 1,
        drainerDefects: 1,
        dlqLanded: 1
      })
    }))

  it.scoped("a poison event the dead-letter store cannot take still counts as an append failure", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call === 0 ? "die" : "append", deadLetterDies: true })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of yield* refusals(3)) yield* queue.submit(event)
      yield* waitUntil(Effect.map(queue.status, (s) => s === "Restarting"), "the drainer restarts")
      yield* TestClock.adjust("10 millis")
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 3,
        appended: 2,
        appendFailures: 1,
        drainerDefects: 1
      })
      expect(yield* test.deadLettered).toEqual([])
      expect(agentIds(yield* test.appended)).toEqual(["agent:1", "agent:2"])
    }))

  it.scoped("restarts back off exponentially from 10 ms on the Clock, and an append resets the backoff", () =>
    Effect.gen(function*() {
      // Dies on calls 0, 1, 2 (three consecutive defects), appends 3, dies on 4, appends the rest.
      const test = yield* makeSink({ behaviour: (call) => [0, 1, 2, 4].includes(call) ? "die" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of yield* refusals(6)) yield* queue.submit(event)
      const restarting = (calls: number) =>
        waitUntil(
          Effect.zipWith(queue.status, test.calls, (s, c) => s === "Restarting" && c === calls),
          `restarting after ${calls} calls`
        )

      yield* restarting(1)
      yield* TestClock.adjust("9 millis")
      expect(yield* test.calls).toBe(1)
      yield* TestClock.adjust("1 millis") // 10 ms
      yield* restarting(2)
      yield* TestClock.adjust("19 millis")
      expect(yield* test.calls).toBe(2)
      yield* TestClock.adjust("1 millis") // 20 ms
      yield* restarting(3)
      yield* TestClock.adjust("39 millis")
      expect(yield* test.calls).toBe(3)
      yield* TestClock.adjust("1 millis") // 40 ms
      // Call 3 appends (resetting the backoff), call 4 dies: back to 10 ms.
      yield* restarting(5)
      yield* TestClock.adjust("10 millis")
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.status).toBe("Running")
      expect(agentIds(yield* test.appended)).toEqual(["agent:3", "agent:5"])
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 6,
        appended: 2,
        appendFailures: 4,
        drainerDefects: 4,
        dlqLanded: 4
      })
    }))

  it.scoped("repeated defects past maxRestarts: 3 fail the queue; later submits return false", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: () => "die" })
      const queue = yield* AuditQueue.make({ sink: test.sink, maxRestarts: 3 })
      for (const event of yield* refusals(10)) expect(yield* queue.submit(event)).toBe(true)

      yield* stepClockUntil(Effect.map(queue.status, (s) => s === "Failed"), "10 millis", "the queue failing")
      expect(yield* queue.isOpen).toBe(false)
      // Defects 1-3 restarted the drainer, the 4th failed it; the 6 still queued went to the DLQ.
      expect(yield* test.calls).toBe(4)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* test.deadLettered).toHaveLength(10)
      expect((yield* test.deadLettered).slice(4).every((d) => d.reason.startsWith("audit queue failed:"))).toBe(true)

      expect(yield* queue.submit(yield* refusal("agent:late"))).toBe(false)
      expect(yield* queue.submitRefusal("agent:late", refusalAction(), refusalDecision())).toBe(false)
      const metrics = yield* queue.metrics
      expect(metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 12,
        appendFailures: 10,
        drainerDefects: 4,
        dlqLanded: 10,
        sendFailures: 2
      })
      expect(total(metrics)).toBe(12)
      expect(yield* test.appended).toEqual([])
      expect(yield* queue.status).toBe("Failed")
      // Close on a failed queue returns and keeps the status.
      yield* queue.closeAndFlush
      expect(yield* queue.status).toBe("Failed")
    }).pipe(silent))

  it.scoped("the failure is logged at error level", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const test = yield* makeSink({ behaviour: () => "die" })
        const queue = yield* AuditQueue.make({ sink: test.sink, maxRestarts: 0 })
        yield* queue.submit(yield* refusal("agent:0"))
        yield* waitUntil(Effect.map(queue.status, (s) => s === "Failed"), "the queue fails")
        expect(yield* test.calls).toBe(1)
      }).pipe(Effect.provide(logs.layer))
      const failure = logs.lines.find((l) => l.message.includes("audit queue FAILED"))
      expect(failure?.level).toBe("ERROR")
      expect(failure?.message).toContain("1 consecutive drainer defects, maxRestarts is 0")
    }))

  it.scoped("consecutive counting: a defect on every other event never exhausts maxRestarts: 1", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call % 2 === 0 ? "die" : "append" })
      const queue = yield* AuditQueue.make({ sink: test.sink, maxRestarts: 1 })
      for (const event of yield* refusals(20)) yield* queue.submit(event)
      const drained = yield* withClockSteps(queue.drainPending("1 hour"), "10 millis")
      expect(drained).toBe(true)
      expect(yield* queue.status).toBe("Running")
      expect(yield* queue.isOpen).toBe(true)
      expect(yield* queue.metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 20,
        appended: 10,
        appendFailures: 10,
        drainerDefects: 10,
        dlqLanded: 10
      })
    }))

  it.scoped("a restart schedule that ends fails the queue", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ behaviour: (call) => call < 3 ? "die" : "append" })
      const queue = yield* AuditQueue.make({
        sink: test.sink,
        restartSchedule: Schedule.recurs(1).pipe(Schedule.addDelay(() => "10 millis"))
      })
      for (const event of yield* refusals(3)) yield* queue.submit(event)
      yield* stepClockUntil(Effect.map(queue.status, (s) => s === "Failed"), "10 millis", "the queue failing")
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* queue.metrics).toMatchObject({ submitted: 3, appended: 0, appendFailures: 3, drainerDefects: 2 })
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Drain and shutdown
// ---------------------------------------------------------------------------------------------------------

describe("AuditQueue drain and shutdown", () => {
  it.scoped("drainPending completes while the queue stays open", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of yield* refusals(50)) yield* queue.submit(event)
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      expect(yield* queue.isOpen).toBe(true)
      expect(yield* queue.status).toBe("Running")
      expect(yield* test.appended).toHaveLength(50)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 50, appended: 50 })
      // Still usable after the drain.
      expect(yield* queue.submit(yield* refusal("agent:more"))).toBe(true)
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      expect(yield* test.appended).toHaveLength(51)
    }))

  it.scoped("drainPending returns true at once when nothing was submitted", () =>
    Effect.gen(function*() {
      const queue = yield* AuditQueue.make({ sink: (yield* makeSink()).sink })
      expect(yield* queue.drainPending("0 millis")).toBe(true)
    }))

  it.effect("drainPending is false at its timeout when nothing progresses (TestClock, no real wait)", () =>
    Effect.scoped(Effect.gen(function*() {
      const test = yield* makeSink({ wedged: true })
      const queue = yield* AuditQueue.make({ sink: test.sink, shutdownDrainTimeout: "1 second" })
      for (const event of yield* refusals(3)) yield* queue.submit(event)
      const fiber = yield* Effect.fork(queue.drainPending("5 seconds"))
      yield* TestClock.adjust("4999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toBe(false)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 3 })
      expect(yield* queue.isOpen).toBe(true)
      // Let the scope's bounded shutdown drain time out too.
      const closing = yield* Effect.fork(queue.closeAndFlushWithin("1 second"))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(closing)).toBe(false)
    })).pipe(silent))

  it.scoped("closeAndFlush with zero events returns and closes", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      yield* queue.closeAndFlush
      expect(yield* queue.status).toBe("Closed")
      expect(yield* queue.metrics).toEqual(AuditMetrics.empty)
      expect(yield* test.calls).toBe(0)
      // Closing again is harmless.
      yield* queue.closeAndFlush
      expect(yield* queue.closeAndFlushWithin("1 second")).toBe(true)
    }))

  it.scoped("a 200-event burst into a slow sink (1 ms per append on the Clock) all lands", () =>
    Effect.gen(function*() {
      const test = yield* makeSink({ delay: "1 millis" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(200)
      for (const event of events) expect(yield* queue.submit(event)).toBe(true)
      const metrics = yield* queue.metrics
      expect(metrics.submitted).toBe(200)
      expect(metrics.sendFailures).toBe(0)
      expect(metrics.appended).toBe(0)
      yield* withClockSteps(queue.closeAndFlush, "1 millis", 1000)
      expect(yield* test.appended).toEqual(events)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 200, appended: 200 })
    }))

  it.scoped("a slow sink behind a short bound: closeAndFlushWithin returns false and dead-letters the residual", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const test = yield* makeSink({ delay: "1 millis" })
      const queue = yield* AuditQueue.make({ sink: test.sink })
      for (const event of yield* refusals(200)) yield* queue.submit(event)
      const flushed = yield* withClockSteps(queue.closeAndFlushWithin("50 millis"), "1 millis", 1000).pipe(
        Effect.provide(logs.layer)
      )
      expect(flushed).toBe(false)
      const metrics = yield* queue.metrics
      expect(metrics.appended).toBeGreaterThan(0)
      expect(metrics.appended).toBeLessThan(200)
      const residual = 200 - metrics.appended
      expect(logs.lines.some((l) => l.level === "WARN" && l.message.includes(`${residual} unhandled events`))).toBe(
        true
      )
      // Nothing vanishes: every event not appended is in the dead-letter store, in submit order.
      expect(metrics).toEqual({
        ...AuditMetrics.empty,
        submitted: 200,
        appended: 200 - residual,
        appendFailures: residual,
        dlqLanded: residual
      })
      const appendedIds = (yield* test.appended).map((e) => e.id)
      const deadIds = (yield* test.deadLettered).map((d) => d.event.id)
      expect(deadIds).toHaveLength(residual)
      expect(new Set([...appendedIds, ...deadIds]).size).toBe(200)
      expect(yield* queue.status).toBe("Closed")
      expect(yield* queue.submit(yield* refusal("agent:late"))).toBe(false)
    }))

  it.effect("closing the layer's scope drains every one of 50 submitted events into the sink", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const sinkLayer = Layer.succeed(AuditSink, test.sink)
      const submitted = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const events = yield* refusals(50)
        for (const event of events) expect(yield* queue.submit(event)).toBe(true)
        return events
      }).pipe(Effect.provide(AuditQueue.layer({ sink: sinkLayer })))
      // The layer's scope is closed now.
      expect(yield* test.appended).toEqual(submitted)
    }))

  it.effect("the layer also takes a sink value", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const ids = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue.AuditQueue
        const events = yield* refusals(50)
        for (const event of events) yield* queue.submit(event)
        return events.map((e) => e.id)
      }).pipe(Effect.provide(AuditQueue.layer({ sink: test.sink })))
      expect((yield* test.appended).map((e) => e.id)).toEqual(ids)
    }))

  it.effect("a sink layer's failure fails the queue layer", () =>
    Effect.gen(function*() {
      const sinkLayer = Layer.fail(new AuditSinkError({ eventId: "-", reason: "cannot open ledger" }))
      const exit = yield* Effect.exit(
        Effect.provide(AuditQueue.AuditQueue, AuditQueue.layer({ sink: sinkLayer }))
      )
      expect(Exit.isFailure(exit)).toBe(true)
      expect(exit).toStrictEqual(Exit.fail(new AuditSinkError({ eventId: "-", reason: "cannot open ledger" })))
    }))

  it.effect("a wedged sink: scope close returns at shutdownDrainTimeout and dead-letters the residual", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const test = yield* makeSink({ wedged: true })
      const scope = yield* Scope.make()
      const queue = yield* AuditQueue.make({ sink: test.sink, shutdownDrainTimeout: "2 seconds" }).pipe(
        Scope.extend(scope)
      )
      const events = yield* refusals(3)
      for (const event of events) yield* queue.submit(event)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("1999 millis")
      expect(Option.isNone(yield* Fiber.poll(closing))).toBe(true)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(closing)

      const warning = logs.lines.find((l) => l.message.includes("shutdown drain timed out"))
      expect(warning?.level).toBe("WARN")
      expect(warning?.message).toContain("3 unhandled events go to the dead-letter store")
      expect(yield* queue.status).toBe("Closed")
      expect(yield* queue.isOpen).toBe(false)
      // The event wedged in the sink and the two still queued all land in the dead-letter store, in order.
      expect((yield* test.deadLettered).map((d) => d.event)).toEqual(events)
      expect((yield* test.deadLettered)[0]?.reason).toContain("shutdown drain timed out")
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 3, appendFailures: 3, dlqLanded: 3 })
      expect(logs.lines.filter((l) => l.message.includes("LOST"))).toEqual([])
      expect(yield* queue.submit(yield* refusal("agent:late"))).toBe(false)
      expect(yield* test.calls).toBe(1)
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("a wedged sink whose dead-letter store is wedged too: the residual is logged as LOST with its ids", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const test = yield* makeSink({ wedged: true })
      const sink = AuditSink.of({ ...test.sink, deadLetter: () => Effect.never })
      const scope = yield* Scope.make()
      const queue = yield* AuditQueue.make({ sink, shutdownDrainTimeout: "2 seconds" }).pipe(Scope.extend(scope))
      const events = yield* refusals(3)
      for (const event of events) yield* queue.submit(event)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // The drain bound, then the same bound again for the dead-letter write.
      yield* TestClock.adjust("2 seconds")
      expect(Option.isNone(yield* Fiber.poll(closing))).toBe(true)
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(closing)

      const lost = logs.lines.filter((l) => l.level === "ERROR" && l.message.includes("LOST"))
      expect(lost).toHaveLength(1)
      for (const event of events) expect(lost[0]?.message).toContain(event.id)
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 3, appendFailures: 3 })
      expect(yield* queue.drainPending("1 millis")).toBe(true)
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("events lost at shutdown are written whole, one LOST line each, to the spill file: they decode back", () => {
    const logs = captureLogs()
    const spillFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "agent-ledger-spill-")), "spill.jsonl")
    return Effect.gen(function*() {
      const test = yield* makeSink({ wedged: true })
      const sink = AuditSink.of({ ...test.sink, deadLetter: () => Effect.never })
      const scope = yield* Scope.make()
      const queue = yield* AuditQueue.make({
        sink,
        shutdownDrainTimeout: "1 second",
        lostEvents: { stderr: false, spillFile }
      }).pipe(Scope.extend(scope))
      const events = yield* refusals(3)
      for (const event of events) yield* queue.submit(event)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(closing)
      const lines = fs.readFileSync(spillFile, "utf8").split("\n").filter((line) => line.length > 0)
      expect(lines).toHaveLength(3)
      const decoded = lines.map((line) => JSON.parse(line))
      for (const line of decoded) {
        expect(line.lost).toBe(AuditQueue.LOST_MARK)
        expect(line.reason).toContain("shutdown drain timed out")
      }
      const back = yield* Effect.forEach(decoded, (line) => Schema.decodeUnknown(DeferredAuditEvent)(line.event))
      expect(back).toEqual(events)
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("a scope close within the bound logs no residual", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      const test = yield* makeSink()
      yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* AuditQueue.make({ sink: test.sink, shutdownDrainTimeout: "2 seconds" })
        for (const event of yield* refusals(3)) yield* queue.submit(event)
      })).pipe(Effect.provide(logs.layer))
      expect(yield* test.appended).toHaveLength(3)
      expect(logs.lines.filter((l) => l.message.includes("timed out"))).toEqual([])
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------------------

describe("AuditQueue concurrency", () => {
  it.scoped("1,000 concurrent submitters lose nothing", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const results = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => i),
        (i) => queue.submitRefusal(`agent:${i}`, refusalAction(), refusalDecision()),
        { concurrency: "unbounded" }
      )
      expect(results.every((ok) => ok)).toBe(true)
      yield* queue.closeAndFlush
      const appended = yield* test.appended
      expect(appended).toHaveLength(1000)
      expect(new Set(appended.map((e) => e.id)).size).toBe(1000)
      expect(new Set(agentIds(appended))).toEqual(new Set(Array.from({ length: 1000 }, (_, i) => `agent:${i}`)))
      expect(yield* queue.metrics).toEqual({ ...AuditMetrics.empty, submitted: 1000, appended: 1000 })
    }))

  it.live("a backlog of synchronous appends does not starve the host's event loop", () =>
    Effect.scoped(Effect.gen(function*() {
      let appended = 0
      // Each append is synchronous work, as a better-sqlite3 write is.
      const busySink = AuditSink.of({
        append: () =>
          Effect.sync(() => {
            const until = performance.now() + 0.2
            while (performance.now() < until) { /* busy */ }
            appended++
            return new Appended({ uniqueRaceRetries: 0 })
          }),
        deadLetter: () => Effect.void
      })
      const queue = yield* AuditQueue.make({ sink: busySink })
      for (const event of yield* refusals(2_000)) yield* queue.submit(event)
      // A host timer set now must run while the drainer is still working through the backlog.
      const appendedWhenTimerRan = yield* Effect.promise(() =>
        new Promise<number>((resolve) => setTimeout(() => resolve(appended), 0))
      )
      expect(appendedWhenTimerRan).toBeLessThan(2_000)
      expect(yield* queue.drainPending("30 seconds")).toBe(true)
      expect(appended).toBe(2_000)
    })))

  it.scoped("submitters racing a close: every accepted event lands, every refused one is a send failure", () =>
    Effect.gen(function*() {
      const test = yield* makeSink()
      const queue = yield* AuditQueue.make({ sink: test.sink })
      const events = yield* refusals(1000)
      const [results] = yield* Effect.all([
        Effect.forEach(events, (event) => Effect.zipRight(Effect.yieldNow(), queue.submit(event)), {
          concurrency: "unbounded"
        }),
        Effect.zipRight(Effect.yieldNow(), queue.closeAndFlush)
      ], { concurrency: "unbounded" })
      // closeAndFlush returned only after every accepted event was handled; late submits are refused.
      expect(yield* queue.drainPending("1 second")).toBe(true)
      const accepted = events.filter((_, i) => results[i])
      const appended = yield* test.appended
      expect(new Set(appended.map((e) => e.id))).toEqual(new Set(accepted.map((e) => e.id)))
      const metrics = yield* queue.metrics
      expect(metrics.submitted).toBe(1000)
      expect(metrics.appended).toBe(accepted.length)
      expect(metrics.sendFailures).toBe(1000 - accepted.length)
      expect(total(metrics)).toBe(1000)
    }))
})
