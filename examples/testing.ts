// A TestClock test of a guard's audit pipeline, on the in-memory sink (README "Testing with the ledger").
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { AuditEvent, AuditQueue, MemorySink } from "../src/index.js"

const refusal = (n: number) =>
  [
    "agent-7",
    new AuditEvent.ToolCall({ toolName: "upload_blob", serverId: "exfil-relay" }),
    new AuditEvent.Refuse({ ruleId: "R-BLOCKED-SERVER", reason: `attempt ${n}` })
  ] as const

describe("the guard's audit while the disk is full", () => {
  it.scoped("holds every refusal, in order, and writes them all once the disk recovers", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      // scheduler "inherit": the drainer runs on the test's scheduler, so the test's yields move it.
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit" })
      yield* memory.unavailable("disk full")
      for (let n = 0; n < 3; n++) yield* queue.submitRefusal(...refusal(n))
      yield* Effect.yieldNow()
      expect(yield* queue.status).toBe("Stalled")
      expect(yield* memory.rows).toHaveLength(0)

      yield* memory.heal
      yield* TestClock.adjust("5 seconds") // the stall schedule's next retry, without waiting for it
      expect(yield* queue.drainPending("1 second")).toBe(true)
      const rows = yield* memory.rows
      expect(rows.map((row) => row.event.action)).toHaveLength(3)
      expect(yield* memory.deadLetters).toHaveLength(0)
    }))

  it.scoped("an event the sink keeps failing on is dead-lettered, and the rest still get through", () =>
    Effect.gen(function*() {
      const memory = yield* MemorySink.make()
      const queue = yield* AuditQueue.make({ sink: memory.sink, scheduler: "inherit" })
      yield* memory.dieNext(2) // the batch, then the event alone: a poison event
      for (let n = 0; n < 3; n++) yield* queue.submitRefusal(...refusal(n))
      yield* TestClock.adjust("1 second") // the drainer's restart backoff
      expect(yield* queue.drainPending("1 second")).toBe(true)
      expect(yield* memory.deadLetters).toHaveLength(1)
      expect(yield* memory.rows).toHaveLength(2)
    }))
})
