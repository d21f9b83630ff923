/**
 * McpGuard with many calls in flight in one session: every decision is one that some sequential order of
 * the same calls would make (call limits, rates and sequences count calls in flight; a read or total budget
 * waits for them to end), checked on the fixed cases of issue 19, by a fast-check property over random
 * interleavings of checks, completions and clock steps against a sequential reference model written here
 * from the rules' documentation, and through the real `mcp-proxy` in front of the official filesystem server.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import type { Context } from "effect"
import { Effect, Exit, Fiber, Option, TestClock, TestContext } from "effect"
import * as fc from "fast-check"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import { Appended, AuditSink } from "../src/audit/AuditSink.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

/** A sink that accepts everything (the ledger side is covered elsewhere). */
const acceptingSink = (() => {
  let sequence = 0
  return AuditSink.of({
    append: () =>
      Effect.sync(() =>
        new Appended({ uniqueRaceRetries: 0, position: { sequence: sequence++, entryHash: "0".repeat(64) } })
      ),
    deadLetter: () => Effect.void
  })
})()

const guardOf = (rules: ReadonlyArray<unknown>, options: Partial<McpGuard.Options> = {}) =>
  Effect.gen(function*() {
    const policy = yield* GuardPolicy.decode({ version: 1, rules })
    const queue = yield* AuditQueue.make({ sink: acceptingSink as Context.Tag.Service<typeof AuditSink> })
    return yield* McpGuard.McpGuard.pipe(
      Effect.provide(
        McpGuard.layer({ policy: GuardPolicy.engine(policy, { salt: "salt" }), sealEvery: 0, ...options })
      ),
      Effect.provideService(AuditQueue.AuditQueue, queue)
    )
  }).pipe(Effect.orDie)

const call = (toolName: string, args: unknown = { path: "/data/x" }): McpGuard.GuardCall => ({
  sessionId: "sess-1",
  agentId: "agent-1",
  serverId: "fs",
  toolName,
  arguments: args
})

/** Lets every runnable fiber run (no clock involved). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 64; i++) yield* Effect.yieldNow()
})

const ruleOf = (check: McpGuard.Check) => check._tag === "Allowed" ? "allow" : check.ruleId

describe("McpGuard: the fixed cases of issue 19, many calls in flight", () => {
  it.scoped("20 concurrent 20 kB reads against a 64 kB read budget: exactly the 4 a sequential order allows", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([{ id: "read-budget", kind: "budget", read: 64 * 1024 }])
      const checks = yield* Effect.forEach(
        Array.from({ length: 20 }, () => call("read_text_file")),
        (c) =>
          Effect.tap(guard.check(c), (checked) =>
            checked._tag === "Allowed"
              ? Effect.zipRight(settle, guard.complete(checked.ticket, { _tag: "Result", bytesRead: 20_000 }))
              : Effect.void),
        { concurrency: "unbounded" }
      )
      expect(checks.filter((c) => c._tag === "Allowed")).toHaveLength(4)
      expect(checks.filter((c) => ruleOf(c) === "read-budget")).toHaveLength(16)
      // Sequential: the allowed ones are the first four decisions.
      const allowedOrder = checks.flatMap((c) => c._tag === "Allowed" ? [c.ticket.decisionIndex] : [])
      expect(allowedOrder.sort((a, b) => a - b)).toEqual([0, 1, 2, 3])
      const entries = yield* (yield* guard.journal("sess-1")).entries
      const read = entries.filter((e) => e.kind === "outcome").reduce((sum, e) => sum + e.bytesRead, 0)
      expect(read).toBe(80_000) // crossed by one call, as sequentially
    }))

  it.scoped("50 calls in flight against callLimit 10: 10 allowed", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([{ id: "limit", kind: "callLimit", tools: ["write_file"], max: 10 }])
      const checks = yield* Effect.forEach(
        Array.from({ length: 50 }, () => call("write_file")),
        guard.check,
        { concurrency: "unbounded" }
      )
      expect(checks.filter((c) => c._tag === "Allowed")).toHaveLength(10)
      expect(checks.filter((c) => ruleOf(c) === "limit")).toHaveLength(40)
    }))

  it.scoped("20 calls in flight against rateLimit 3 per 60 s: 3 allowed, and 3 more once the window moves", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([{ id: "rate", kind: "rateLimit", max: 3, windowSeconds: 60 }])
      const burst = () =>
        Effect.forEach(Array.from({ length: 20 }, () => call("search")), guard.check, { concurrency: "unbounded" })
      expect((yield* burst()).filter((c) => c._tag === "Allowed")).toHaveLength(3)
      yield* TestClock.adjust("61 seconds")
      expect((yield* burst()).filter((c) => c._tag === "Allowed")).toHaveLength(3)
    }))

  it.scoped("read-then-write sequence: the write is refused while the read is still in flight", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([
        { id: "no-read-then-write", kind: "sequence", after: ["read_*"], then: ["write_file"], within: 3 }
      ])
      const read = yield* guard.check(call("read_text_file"))
      expect(read._tag).toBe("Allowed")
      const write = yield* guard.check(call("write_file", { path: "/data/out", content: "x" }))
      expect(ruleOf(write)).toBe("no-read-then-write")
    }))

  it.scoped("a decision waiting on calls in flight is interruptible and frees the session", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([
        { id: "no-move", kind: "blockTools", tools: ["move_file"] },
        { id: "read-budget", kind: "budget", read: 100 }
      ])
      const first = yield* guard.check(call("read_text_file"))
      if (first._tag !== "Allowed") return expect.unreachable()
      const waiting = yield* Effect.fork(guard.check(call("read_text_file")))
      yield* settle
      expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true) // held: the first call's read is unknown
      yield* Fiber.interrupt(waiting)
      // The lock is free again: a call an earlier rule refuses is decided at once.
      expect(ruleOf(yield* guard.check(call("move_file")))).toBe("no-move")
      const next = yield* Effect.fork(guard.check(call("read_text_file")))
      yield* settle
      yield* guard.complete(first.ticket, { _tag: "Result", bytesRead: 150 })
      expect(ruleOf(yield* Fiber.join(next))).toBe("read-budget")
    }))

  it.scoped("complete is idempotent per ticket; endSession ends calls in flight first and releases waiters", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([{ id: "read-budget", kind: "budget", read: 1000 }])
      const a = yield* guard.check(call("read_text_file"))
      if (a._tag !== "Allowed") return expect.unreachable()
      yield* guard.complete(a.ticket, { _tag: "Result", bytesRead: 10 })
      yield* guard.complete(a.ticket, { _tag: "Result", bytesRead: 10 })
      expect(yield* (yield* guard.journal("sess-1")).length).toBe(2) // the decision and one outcome
      const b = yield* guard.check(call("read_text_file"))
      if (b._tag !== "Allowed") return expect.unreachable()
      const waiting = yield* Effect.fork(guard.check(call("read_text_file")))
      yield* settle
      const ended = yield* guard.endSession("sess-1")
      const exit = yield* Fiber.await(waiting)
      expect(Exit.isSuccess(exit)).toBe(true)
      // The late completion from the transport is a no-op.
      yield* guard.complete(b.ticket, { _tag: "Result", bytesRead: 999 })
      const entries = Option.getOrThrow(ended).entries
      expect(entries.map((e) => [e.kind, e.outcome, e.callSequence])).toContainEqual([
        "outcome",
        "interrupted",
        b.ticket.sequence
      ])
      expect(entries.some((e) => e.bytesRead === 999)).toBe(false)
    }))
})

describe("McpGuard: a session ending while decisions wait", () => {
  it.scoped("endSession with decisions queued behind a budget neither hangs nor leaves a call pending", () =>
    Effect.gen(function*() {
      const guard = yield* guardOf([{ id: "read-budget", kind: "budget", read: 1_000_000 }])
      const first = yield* guard.check(call("read_text_file"))
      if (first._tag !== "Allowed") return expect.unreachable()
      // Three more decisions queue: each waits for the calls in flight before it.
      const queued = yield* Effect.forEach([1, 2, 3], () => Effect.fork(guard.check(call("read_text_file"))))
      yield* settle
      const ended = Option.getOrThrow(yield* guard.endSession("sess-1"))
      const decided = yield* Effect.forEach(queued, Fiber.join)
      // Whatever each decision's session was (the ended one or the next), every allowed call ends once.
      for (const checked of decided) {
        if (checked._tag === "Allowed") yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: 1 })
      }
      const next = yield* guard.endSession("sess-1")
      for (const exported of [ended, ...Option.toArray(next)]) {
        const verified = yield* SessionJournal.verifyExport(JSON.parse(JSON.stringify(exported)))
        const calls = verified.entries.filter((e) => e.kind === "call" && e.outcome === "pending")
        const endings = verified.entries.filter((e) => e.kind === "outcome")
        expect(endings.map((e) => e.callSequence).sort()).toEqual(calls.map((e) => e.sequence).sort())
      }
      expect(ended.entries.some((e) => e.kind === "outcome" && e.outcome === "interrupted")).toBe(true)
    }))
})

// ---------------------------------------------------------------------------------------------------------
// The property: random interleavings against a sequential reference model
// ---------------------------------------------------------------------------------------------------------

interface Limits {
  readonly read: number
  readonly written: number
  readonly total: number
  readonly writeLimit: number
  readonly rate: number
  readonly windowSeconds: number
  readonly within: number
}

const rulesOf = (l: Limits) => [
  { id: "no-move", kind: "blockTools", tools: ["move_file"] },
  { id: "budget", kind: "budget", read: l.read, written: l.written, total: l.total },
  { id: "write-limit", kind: "callLimit", tools: ["write_*"], max: l.writeLimit },
  { id: "rate", kind: "rateLimit", max: l.rate, windowSeconds: l.windowSeconds },
  { id: "exfil", kind: "sequence", after: ["read_*"], then: ["write_*"], within: l.within }
]

const TOOLS = ["read_a", "read_b", "write_x", "list", "move_file"] as const

type Op =
  | { readonly _tag: "call"; readonly tool: number; readonly argBytes: number; readonly size: number }
  | { readonly _tag: "complete"; readonly pick: number }
  | { readonly _tag: "tick"; readonly seconds: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      _tag: fc.constant("call" as const),
      tool: fc.nat(TOOLS.length - 1),
      argBytes: fc.nat(40),
      size: fc.nat(60)
    })
  },
  { weight: 4, arbitrary: fc.record({ _tag: fc.constant("complete" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("tick" as const), seconds: fc.integer({ min: 1, max: 8 }) }) }
)

const limitsArb: fc.Arbitrary<Limits> = fc.record({
  read: fc.integer({ min: 0, max: 300 }),
  written: fc.integer({ min: 0, max: 600 }),
  total: fc.integer({ min: 0, max: 800 }),
  writeLimit: fc.nat(4),
  rate: fc.integer({ min: 1, max: 12 }),
  windowSeconds: fc.integer({ min: 1, max: 20 }),
  within: fc.integer({ min: 1, max: 3 })
})

/** One call of a run, as the harness saw it. */
interface Observed {
  readonly tool: string
  readonly argBytes: number
  readonly size: number
  readonly fiber: Fiber.RuntimeFiber<McpGuard.Check>
  result?: McpGuard.Check
  decidedAtMillis?: number
  completed: boolean
}

/**
 * The policy as the README states it, for one call at a time: the first refusing rule wins; budgets count
 * the bytes of earlier allowed calls (read: refused once reached; written and total: this call's argument
 * bytes included, refused once over); callLimit counts earlier allowed calls of matching tools, rateLimit
 * those inside the window, sequence looks at the last `within` allowed calls.
 */
const referenceDecision = (
  l: Limits,
  history: ReadonlyArray<{ tool: string; at: number; argBytes: number; size: number }>,
  c: { tool: string; argBytes: number },
  now: number
): string => {
  if (c.tool === "move_file") return "no-move"
  const read = history.reduce((s, h) => s + h.size, 0)
  const written = history.reduce((s, h) => s + h.argBytes, 0) + c.argBytes
  if (read >= l.read || written > l.written || read + written > l.total || read >= l.total) return "budget"
  if (c.tool.startsWith("write_") && history.filter((h) => h.tool.startsWith("write_")).length >= l.writeLimit) {
    return "write-limit"
  }
  if (history.filter((h) => h.at > now - l.windowSeconds * 1000).length >= l.rate) return "rate"
  if (c.tool.startsWith("write_") && history.slice(-l.within).some((h) => h.tool.startsWith("read_"))) return "exfil"
  return "allow"
}

const runInterleaving = (limits: Limits, ops: ReadonlyArray<Op>) =>
  Effect.gen(function*() {
    const guard = yield* guardOf(rulesOf(limits))
    const calls: Array<Observed> = []
    /** Records every check that has ended since the last look, with the clock time it was decided at. */
    const observe = Effect.gen(function*() {
      yield* settle
      const now = yield* TestClock.currentTimeMillis
      for (const c of calls) {
        if (c.result !== undefined) continue
        const polled = yield* Fiber.poll(c.fiber)
        if (Option.isSome(polled)) {
          c.result = Exit.isSuccess(polled.value) ? polled.value.value : expect.unreachable("a check failed")
          c.decidedAtMillis = now
        }
      }
    })
    const open = () => calls.filter((c) => c.result?._tag === "Allowed" && !c.completed)
    const completeOne = (c: Observed) =>
      Effect.gen(function*() {
        c.completed = true
        if (c.result?._tag === "Allowed") {
          yield* guard.complete(c.result.ticket, { _tag: "Result", bytesRead: c.size })
        }
      })
    for (const op of ops) {
      if (op._tag === "call") {
        const tool = TOOLS[op.tool]!
        const fiber = yield* Effect.fork(guard.check(call(tool, { p: "x".repeat(op.argBytes) })))
        calls.push({
          tool,
          argBytes: McpGuard.jsonBytes({ p: "x".repeat(op.argBytes) }),
          size: op.size,
          fiber,
          completed: false
        })
      } else if (op._tag === "complete") {
        const candidates = open()
        if (candidates.length > 0) yield* completeOne(candidates[op.pick % candidates.length]!)
      } else if (calls.every((c) => c.result !== undefined)) {
        // The clock moves only while no decision is pending, so each decision's time is the one observed.
        yield* TestClock.adjust(`${op.seconds} seconds`)
      }
      yield* observe
    }
    // Let everything end: complete what is open until every check has been decided.
    for (
      let round = 0;
      calls.some((c) => c.result === undefined || (c.result._tag === "Allowed" && !c.completed));
      round++
    ) {
      if (round > 10_000) return expect.unreachable("the checks did not all end")
      for (const c of open()) yield* completeOne(c)
      yield* observe
    }

    // Replay in the guard's order of decisions, one call at a time.
    const indexOf = (c: Observed) =>
      c.result!._tag === "Allowed" ? c.result!.ticket.decisionIndex : c.result!.decisionIndex
    const ordered = [...calls].sort((a, b) => indexOf(a) - indexOf(b))
    expect(ordered.map(indexOf)).toEqual(ordered.map((_, i) => i))
    const history: Array<{ tool: string; at: number; argBytes: number; size: number }> = []
    for (const c of ordered) {
      const expected = referenceDecision(limits, history, c, c.decidedAtMillis!)
      expect(ruleOf(c.result!), `call ${indexOf(c)} (${c.tool})`).toBe(expected)
      if (expected === "allow") {
        history.push({ tool: c.tool, at: c.decidedAtMillis!, argBytes: c.argBytes, size: c.size })
      }
    }
    // A read budget is crossed by at most one call: before the last allowed call, less than the limit was read.
    const reads = history.map((h) => h.size)
    expect(reads.slice(0, -1).reduce((s, n) => s + n, 0)).toBeLessThan(Math.max(1, limits.read))
  }).pipe(Effect.scoped)

describe("McpGuard: decisions under any interleaving (fast-check)", () => {
  it("every decision is the sequential reference model's, in the guard's order of decisions", async () => {
    await fc.assert(
      fc.asyncProperty(
        limitsArb,
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        (limits, ops) => Effect.runPromise(runInterleaving(limits, ops).pipe(Effect.provide(TestContext.TestContext)))
      ),
      { numRuns: 150 }
    )
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------------------
// Through the real proxy, in front of the official filesystem server, with many calls in flight
// ---------------------------------------------------------------------------------------------------------

const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")

describe("agent-ledger mcp-proxy with many calls in flight (official SDK client, official filesystem server)", () => {
  const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-parallel-"))
  // The CLI bundle test/globalSetup.ts builds for this checkout.
  const bundle = cliBundle
  afterAll(() => {
    rmSync(tempRoot, { recursive: true, force: true })
  })

  it("50 concurrent calls against callLimit 10, then 20 concurrent 20 kB reads against a 64 KiB budget", async () => {
    const root = join(tempRoot, "files")
    mkdirSync(root, { recursive: true })
    writeFileSync(join(root, "twenty.txt"), "t".repeat(20_000))
    const policyFile = join(tempRoot, "policy.json")
    writeFileSync(
      policyFile,
      JSON.stringify({
        version: 1,
        rules: [
          { id: "list-limit", kind: "callLimit", tools: ["list_allowed_directories"], max: 10 },
          { id: "read-budget", kind: "budget", read: 64 * 1024 }
        ]
      })
    )
    const db = join(tempRoot, "ledger.db")
    const journal = join(tempRoot, "session.json")
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [
        bundle,
        "mcp-proxy",
        "--db",
        db,
        "--policy",
        policyFile,
        "--export-session",
        journal,
        "--session",
        "sess-parallel",
        "--",
        process.execPath,
        fsServer,
        root
      ],
      stderr: process.env.AGENT_LEDGER_TEST_STDERR === "1" ? "inherit" : "ignore"
    })
    const client = new Client({ name: "parallel-agent", version: "1.0.0" })
    await client.connect(transport)

    const lists = await Promise.all(
      Array.from({ length: 50 }, () => client.callTool({ name: "list_allowed_directories", arguments: {} }))
    )
    expect(lists.filter((r) => r.isError !== true)).toHaveLength(10)
    expect(lists.filter((r) => JSON.stringify(r).includes("list-limit"))).toHaveLength(40)

    const reads = await Promise.all(
      Array.from(
        { length: 20 },
        () => client.callTool({ name: "read_text_file", arguments: { path: join(root, "twenty.txt") } })
      )
    )
    await client.close()

    const exported = await Effect.runPromise(
      SessionJournal.verifyExport(JSON.parse(readFileSync(journal, "utf8")))
    )
    // Sequentially: the listings' bytes, then reads of R bytes each (the file's 20 kB as text content, and
    // again as structured content) while less than 64 KiB has been read.
    const listed = exported.entries.filter((e) => e.kind === "outcome" && e.toolName === "list_allowed_directories")
      .reduce((sum, e) => sum + e.bytesRead, 0)
    const allowedReads = exported.entries.filter((e) => e.kind === "outcome" && e.toolName === "read_text_file")
    const perRead = allowedReads[0]!.bytesRead
    expect(perRead).toBeGreaterThan(20_000)
    expect(allowedReads.every((e) => e.bytesRead === perRead)).toBe(true)
    const sequential = Math.ceil((64 * 1024 - listed) / perRead)
    expect(allowedReads).toHaveLength(sequential)
    expect(reads.filter((r) => r.isError !== true)).toHaveLength(sequential)
    expect(reads.filter((r) => JSON.stringify(r).includes("read-budget"))).toHaveLength(20 - sequential)
    expect(allowedReads.every((e) => e.outcome === "result")).toBe(true)
    expect(exported.entries.filter((e) => !e.allowed)).toHaveLength(40 + 20 - sequential)
    expect(exported.entries.filter((e) => e.kind === "call" && e.outcome === "pending")).toHaveLength(10 + sequential)
    const report = await Effect.runPromise(
      Effect.gen(function*() {
        const { client: sql } = yield* LedgerSql.LedgerSql
        const rows = yield* sql<{ n: number }>`
          SELECT COUNT(*) AS n FROM signed_events WHERE event_type = ${AuditEvent.GOVERNANCE_REFUSAL_EVENT_TYPE}`
        return { refusals: Number(rows[0]!.n), verified: yield* verifyLedger() }
      }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename: db })))
    )
    expect(report.refusals).toBe(40 + 20 - sequential)
    expect(report.verified.ok).toBe(true)
  }, 120_000)
})
