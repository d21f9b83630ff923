/**
 * The testing kit: the in-memory sink's failure injection, and a drainer on the test's scheduler.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import { AuditEvent, AuditQueue, MemorySink } from "../src/index.js"

const submit = (queue: AuditQueue.Service, n: number) =>
  queue.submitRefusal(
    "agent-1",
    new AuditEvent.ToolCall({ toolName: "t", serverId: "s" }),
    new AuditEvent.Refuse({ ruleId: "R", reason: `refusal ${n}` })
  )

const yields = (n: number) => Effect.repeatN(Effect.yieldNow(), n - 1)

describe("MemorySink", () => {
  it.scoped("scheduler \"inherit\": the test's own yields move the drainer, one refusal at a time", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit" })
      for (let n = 1; n <= 10; n++) {
        yield* submit(queue, n)
        yield* yields(5)
        expect((yield* memory.rows).length).toBe(n)
      }
    }))

  it.scoped("chains what it appends; a durable acknowledgement carries the row's position", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit" })
      const receipts = yield* Effect.all(
        [1, 2, 3].map((n) =>
          queue.submitRefusalAndWait(
            "agent-1",
            new AuditEvent.ToolCall({ toolName: "t", serverId: "s" }),
            new AuditEvent.Refuse({ ruleId: "R", reason: `${n}` })
          )
        ),
        { concurrency: "unbounded" }
      )
      const rows = yield* memory.rows
      expect(rows.map((row) => row.sequence)).toEqual([0, 1, 2])
      expect(new Set(rows.map((row) => row.entryHash)).size).toBe(3)
      for (const receipt of receipts) {
        const row = rows.find((r) => r.event.id === Option.getOrThrow(receipt).eventId)!
        expect(Option.getOrThrow(receipt).entryHash).toBe(row.entryHash)
      }
      // Three waiters, fewer writes: they shared the group commit.
      expect(yield* memory.writes).toBeLessThan(3)
    }))

  it.scoped("failNext: the event's own failure is accounted as failed, not dead-lettered, and the next one gets through", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit", maxBatch: 1 })
      yield* memory.failNext(1)
      yield* submit(queue, 1)
      yield* submit(queue, 2)
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect((yield* memory.rows).map((row) => row.event.decision)).toHaveLength(1)
      expect(yield* memory.deadLetters).toHaveLength(0)
      expect((yield* queue.metrics).appendFailures).toBe(1)
    }))

  it.scoped("latency is on Clock: a write waits for TestClock, and nothing lands before it", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make({ latency: "200 millis" })
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit" })
      yield* submit(queue, 1)
      yield* yields(10)
      expect(yield* memory.writes).toBe(1)
      expect(yield* memory.rows).toHaveLength(0)
      const drained = yield* Effect.fork(queue.drainPending("1 second"))
      yield* TestClock.adjust("200 millis")
      expect(yield* Fiber.join(drained)).toBe(true)
      expect(yield* memory.rows).toHaveLength(1)
    }))

  it.effect("appends are idempotent by event id, as the SQL sink's are", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      const event = Option.getOrThrow(
        yield* AuditEvent.DeferredAuditEvent.fromRefusal(
          "agent-1",
          new AuditEvent.ToolCall({ toolName: "t", serverId: "s" }),
          new AuditEvent.Refuse({ ruleId: "R", reason: "r" })
        )
      )
      const first = yield* memory.sink.append(event)
      const again = yield* memory.sink.append(event)
      expect(again).toEqual(first)
      expect(yield* memory.rows).toHaveLength(1)
    }))
})
