import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"

const fields = Object.keys(AuditMetrics.empty) as Array<keyof AuditMetrics.AuditMetricsSnapshot>

describe("AuditMetrics", () => {
  it("empty has every counter at zero and is drained", () => {
    expect(AuditMetrics.empty).toEqual({
      submitted: 0,
      appended: 0,
      sendFailures: 0,
      appendFailures: 0,
      drainerDefects: 0,
      dlqLanded: 0,
      uniqueRaceRetries: 0
    })
    expect(AuditMetrics.isDrained(AuditMetrics.empty)).toBe(true)
    expect(AuditMetrics.inFlight(AuditMetrics.empty)).toBe(0)
  })

  it("add adds only the given fields and leaves its input unchanged", () => {
    const before = AuditMetrics.add(AuditMetrics.empty, { submitted: 3 })
    const after = AuditMetrics.add(before, { appended: 1, dlqLanded: 1, appendFailures: 1, uniqueRaceRetries: 4 })
    expect(before).toEqual({ ...AuditMetrics.empty, submitted: 3 })
    expect(after).toEqual({
      ...AuditMetrics.empty,
      submitted: 3,
      appended: 1,
      appendFailures: 1,
      dlqLanded: 1,
      uniqueRaceRetries: 4
    })
  })

  it("accounted counts appended + appendFailures + sendFailures, not dlqLanded twice", () => {
    const m = { ...AuditMetrics.empty, submitted: 5, appended: 2, appendFailures: 1, dlqLanded: 1, sendFailures: 1 }
    expect(AuditMetrics.accounted(m)).toBe(4)
    expect(AuditMetrics.inFlight(m)).toBe(1)
    expect(AuditMetrics.isDrained(m)).toBe(false)
    expect(AuditMetrics.isDrained(AuditMetrics.add(m, { appended: 1 }))).toBe(true)
  })

  it.effect("publish increments the tagged counters of one queue only", () =>
    Effect.gen(function*() {
      const a = AuditMetrics.counters("audit-metrics-test-a")
      const b = AuditMetrics.counters("audit-metrics-test-b")
      yield* AuditMetrics.publish(a, { submitted: 2, appended: 1, uniqueRaceRetries: 3 })
      yield* AuditMetrics.publish(a, { submitted: 1, sendFailures: 1 })
      const values = (counters: AuditMetrics.AuditCounters) =>
        Effect.forEach(fields, (field) => Effect.map(Metric.value(counters[field]), (state) => [field, state.count]))
      expect(Object.fromEntries(yield* values(a))).toEqual({
        ...AuditMetrics.empty,
        submitted: 3,
        appended: 1,
        sendFailures: 1,
        uniqueRaceRetries: 3
      })
      expect(Object.fromEntries(yield* values(b))).toEqual(AuditMetrics.empty)
    }))

  it("every snapshot field has a distinct, dotted counter name, without the _total a Prometheus exporter adds", () => {
    const names = fields.map((field) => AuditMetrics.metricNames[field])
    expect(new Set(names).size).toBe(fields.length)
    for (const name of names) expect(name).toMatch(/^agent_ledger\.audit\.[a-z_.]+[a-z]$/)
    for (const name of names) expect(name.endsWith("_total")).toBe(false)
  })

  it("the shared empty snapshot cannot be written to", () => {
    expect(Object.isFrozen(AuditMetrics.empty)).toBe(true)
    expect(() => {
      ;(AuditMetrics.empty as { submitted: number }).submitted = 5
    }).toThrow(TypeError)
    expect(AuditMetrics.empty.submitted).toBe(0)
  })
})
