/**
 * Long reads yield and are interruptible (verify, export, evidence bundles, the stored tree, checkpoints):
 * on a ledger that takes far longer to read than the timeouts here, `Effect.timeout` and `Fiber.interrupt`
 * stop them between pages, and the host's own timers keep firing while they run. "Stopped early" is
 * asserted by counting what was read (pages, lines, stored nodes), never by wall-clock bounds.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, Stream } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll } from "vitest"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { yieldToEventLoop } from "../src/internal/eventLoopScheduler.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import * as EvidenceBundle from "../src/transparency/EvidenceBundle.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import { MerkleTree } from "../src/transparency/MerkleTree.js"
import { buildLedger } from "./fixtures/bigLedger.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { withDb } from "./fixtures/cliWorkspace.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

/** Rows in the test ledger: reading them all takes hundreds of milliseconds at least, far past the timeouts. */
const ROWS = 40_000
const PAGE_SIZE = 200
const PAGES = ROWS / PAGE_SIZE
/** Far shorter than reading ROWS rows on any machine: the reads below must stop well before their end. */
const SHORT = "30 millis"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-long-reads-"))
const ledgerFile = join(dir, "big.db")
let copies = 0

beforeAll(() => buildLedger(ledgerFile, ROWS))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** A copy of the big ledger, for a test that writes (the stored tree, checkpoints). */
const copyOfLedger = (): string => {
  const file = join(dir, `copy-${++copies}.db`)
  fs.copyFileSync(ledgerFile, file)
  return file
}

const onLedger = (file: string = ledgerFile) => LedgerSql.layerSqlite({ filename: file })

/** Counts the host's timer ticks (a 1 ms `setInterval`, as a host's sockets and timers would need). */
const hostTimer = Effect.acquireRelease(
  Effect.sync(() => {
    const ticks = { count: 0 }
    const interval = setInterval(() => ticks.count++, 1)
    return { ticks, interval }
  }),
  ({ interval }) => Effect.sync(() => clearInterval(interval))
).pipe(Effect.map(({ ticks }) => ticks))

/** After `effect` returned, nothing it started runs on: a few event-loop turns add no more progress. */
const settles = (progress: () => number) =>
  Effect.gen(function*() {
    const before = progress()
    for (let i = 0; i < 5; i++) yield* yieldToEventLoop
    expect(progress()).toBe(before)
  })

describe("verifyLedger", () => {
  it.live("Effect.timeout stops it between pages, long before its end", () =>
    Effect.gen(function*() {
      let pages = 0
      const result = yield* LedgerVerifier.verifyLedger({
        pageSize: PAGE_SIZE,
        onProgress: () => Effect.sync(() => void pages++)
      }).pipe(Effect.timeoutOption(SHORT), Effect.provide(onLedger()))
      expect(Option.isNone(result)).toBe(true)
      expect(pages).toBeLessThan(PAGES)
      yield* settles(() => pages)
    }))

  it.live("Fiber.interrupt after page 5 stops it at page 5", () =>
    Effect.gen(function*() {
      let pages = 0
      const fifth = yield* Deferred.make<void>()
      const fiber = yield* LedgerVerifier.verifyLedger({
        pageSize: PAGE_SIZE,
        onProgress: () => Effect.suspend(() => ++pages === 5 ? Deferred.succeed(fifth, undefined) : Effect.void)
      }).pipe(Effect.provide(onLedger()), Effect.fork)
      yield* Deferred.await(fifth)
      yield* Fiber.interrupt(fiber)
      expect(pages).toBe(5)
      yield* settles(() => pages)
    }))

  it.scopedLive("the host's timers fire between its pages", () =>
    Effect.gen(function*() {
      const ticks = yield* hostTimer
      let pages = 0
      let pagesAfterATick = 0
      let ticksAtLastPage = ticks.count
      const report = yield* LedgerVerifier.verifyLedger({
        pageSize: PAGE_SIZE,
        onProgress: () =>
          Effect.sync(() => {
            pages++
            if (ticks.count > ticksAtLastPage) pagesAfterATick++
            ticksAtLastPage = ticks.count
          })
      }).pipe(Effect.provide(onLedger()))
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(ROWS)
      // Each page takes a millisecond or more, so the 1 ms timer is due at nearly every page boundary; a loop
      // that never yields lets it fire only once the verification is over.
      expect(pagesAfterATick).toBeGreaterThan(pages / 2)
    }))
})

describe("exportLines and storedRows", () => {
  it.live("Effect.timeout stops an export between pages", () =>
    Effect.gen(function*() {
      let lines = 0
      const result = yield* LedgerExport.exportLines({ pageSize: PAGE_SIZE }).pipe(
        Stream.runForEach(() => Effect.sync(() => void lines++)),
        Effect.timeoutOption(SHORT),
        Effect.provide(onLedger())
      )
      expect(Option.isNone(result)).toBe(true)
      expect(lines).toBeLessThan(ROWS + 1)
      yield* settles(() => lines)
    }))

  it.scopedLive("the host's timers fire between an export's pages", () =>
    Effect.gen(function*() {
      const ticks = yield* hostTimer
      let pages = 0
      let pagesAfterATick = 0
      let ticksAtLastPage = ticks.count
      const rows = yield* LedgerVerifier.storedRows({ pageSize: PAGE_SIZE }).pipe(
        Stream.mapChunks((chunk) => {
          pages++
          if (ticks.count > ticksAtLastPage) pagesAfterATick++
          ticksAtLastPage = ticks.count
          return chunk
        }),
        Stream.map((row) => JSON.stringify(row)),
        Stream.runCount,
        Effect.provide(onLedger())
      )
      expect(rows).toBe(ROWS)
      expect(pagesAfterATick).toBeGreaterThan(pages / 2)
    }))
})

describe("the stored tree, checkpoints and bundles", () => {
  const storedNodes = (file: string) =>
    withDb(file, (db) => (db.prepare("SELECT COUNT(*) AS n FROM merkle_nodes").get() as { n: number }).n)
  const checkpoints = (file: string) =>
    withDb(file, (db) => (db.prepare("SELECT COUNT(*) AS n FROM checkpoints").get() as { n: number }).n)

  it.live("Effect.timeout stops extendStoredTree: nothing half-stored, and the next run stores the right tree", () =>
    Effect.gen(function*() {
      const file = copyOfLedger()
      const result = yield* LedgerTransparency.extendStoredTree.pipe(
        Effect.timeoutOption(SHORT),
        Effect.provide(onLedger(file))
      )
      expect(Option.isNone(result)).toBe(true)
      expect(storedNodes(file)).toBe(0)
      // Run to the end, the tree it stores is the ledger's.
      const { fresh, stored } = yield* Effect.gen(function*() {
        const size = yield* LedgerTransparency.extendStoredTree
        const stored = yield* LedgerTransparency.withStoredTree(size, (tree) => tree.rootHash(size))
        const fresh = MerkleTree.fromLeafHashes(yield* LedgerTransparency.leafHashes).rootHash(size)
        return { fresh, stored }
      }).pipe(Effect.provide(onLedger(file)))
      expect(Buffer.from(stored).equals(Buffer.from(fresh))).toBe(true)
      expect(storedNodes(file)).toBeGreaterThan(0)
    }))

  it.scopedLive("the first checkpoint of a large existing ledger lets the event loop turn at least once per 400 rows", () =>
    Effect.gen(function*() {
      const file = copyOfLedger()
      const signer = yield* AuditSigner.generate
      // Event-loop turns while the checkpoint runs: a `setImmediate` that re-arms itself runs once per turn.
      const turns = { count: 0, stopped: false }
      const turn = () => {
        if (turns.stopped) return
        turns.count++
        setImmediate(turn)
      }
      setImmediate(turn)
      yield* Effect.addFinalizer(() => Effect.sync(() => void (turns.stopped = true)))
      const checkpoint = yield* LedgerTransparency.checkpointNow("agent-ledger/long-reads", signer, {
        adoptUnsignedRows: true
      }).pipe(
        Effect.provide(onLedger(file))
      )
      turns.stopped = true
      expect(checkpoint.size).toBe(ROWS)
      // Each row is verified (hashes, chain link) before its leaf is stored: pages of that without a turn
      // in between hold every timer, socket and signal of the host (the 9.8 s freeze at 307k rows).
      expect(turns.count).toBeGreaterThanOrEqual(ROWS / 400)
    }))

  it.live("Effect.timeout stops a checkpoint and a bundle: no checkpoint is kept", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      for (
        const run of [
          // The rows are unsigned: adopted, so only the timeout stops the checkpoint.
          LedgerTransparency.checkpointNow("agent-ledger/long-reads", signer, { adoptUnsignedRows: true }),
          EvidenceBundle.make({
            origin: "agent-ledger/long-reads",
            signer,
            from: 0,
            to: ROWS - 1,
            adoptUnsignedRows: true
          })
        ]
      ) {
        const file = copyOfLedger()
        const result = yield* (run as Effect.Effect<unknown, unknown, LedgerSql.LedgerSql>).pipe(
          Effect.timeoutOption(SHORT),
          Effect.provide(onLedger(file))
        )
        expect(Option.isNone(result)).toBe(true)
        expect(checkpoints(file)).toBe(0)
        expect(storedNodes(file)).toBe(0)
      }
    }))
})

describe("agent-ledger verify and Ctrl-C", () => {
  /** Runs the CLI's verify with progress lines on; `onProgress` sees each one as it comes. */
  const verify = (onProgress: (line: string, child: ReturnType<typeof spawn>) => void) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cliBundle, "verify", ledgerFile], {
        env: { ...process.env, AGENT_LEDGER_PROGRESS: "1" }
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (data) => stdout += data)
      child.stderr.on("data", (data) => {
        stderr += data
        for (const line of String(data).split("\n")) if (line.startsWith("verified rows:")) onProgress(line, child)
      })
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })

  const rowsIn = (line: string) => Number(/^verified rows: (\d+)\//.exec(line)?.[1])

  it("SIGINT after the first progress line: `interrupted`, never OK, exit 130, the rest unread", async () => {
    let signalled = false
    const run = await verify((_, child) => {
      if (signalled) return
      signalled = true
      child.kill("SIGINT")
    })
    expect(signalled).toBe(true)
    expect(run.code).toBe(130)
    expect(run.stdout).toBe("")
    expect(run.stderr).toContain("agent-ledger: interrupted")
    expect(run.stderr).not.toContain("OK")
    const progress = run.stderr.split("\n").filter((line) => line.startsWith("verified rows:"))
    expect(rowsIn(progress[progress.length - 1]!)).toBeLessThan(ROWS)
  })

  it("uninterrupted, the same run prints plain progress lines and OK", async () => {
    const lines: Array<string> = []
    const run = await verify((line) => lines.push(line))
    expect(run.code).toBe(0)
    expect(run.stdout).toContain(`ledger ${ledgerFile}: OK`)
    expect(run.stderr).not.toContain("interrupted")
    // Not a terminal: one line per update, no carriage returns or escape sequences.
    expect(run.stderr).not.toMatch(/[\r\u001b]/)
    expect(lines.length).toBeGreaterThan(0)
    expect(lines.every((line) => rowsIn(line) <= ROWS)).toBe(true)
  })
})

describe.skipIf(noPostgres)("verifyLedger on PostgreSQL", () => {
  it.live(
    "interrupted inside its read-only transaction, it gives the connection back: the next verify runs",
    () =>
      Effect.acquireUseRelease(Effect.sync(freshDatabase), (db) =>
        Effect.gen(function*() {
          yield* Effect.gen(function*() {
            const queue = yield* AuditQueue
            for (let n = 0; n < 49; n++) yield* queue.submit(refusalEvent("agent-pg", n))
            yield* queue.submitAndWait(refusalEvent("agent-pg", 49))
          }).pipe(Effect.provide(AuditLedger.layerPg({ url: db.url })))
          const { open, pages, report } = yield* Effect.gen(function*() {
            let pages = 0
            const fifth = yield* Deferred.make<void>()
            const fiber = yield* LedgerVerifier.verifyLedger({
              pageSize: 2,
              onProgress: () => Effect.suspend(() => ++pages === 5 ? Deferred.succeed(fifth, undefined) : Effect.void)
            }).pipe(Effect.fork)
            yield* Deferred.await(fifth)
            yield* Fiber.interrupt(fiber)
            const pagesAtInterrupt = pages
            // No connection is left inside the interrupted transaction (ours included: its transaction is the
            // statement's own).
            const { client } = yield* LedgerSql.LedgerSql
            const open = yield* client<{ pid: number }>`
              SELECT pid FROM pg_stat_activity WHERE datname = current_database()
              AND (state = 'idle in transaction' OR (pid = pg_backend_pid() AND xact_start <> query_start))`
            const report = yield* LedgerVerifier.verifyLedger({ pageSize: 2 })
            return { open, pages: pagesAtInterrupt, report }
          }).pipe(Effect.provide(LedgerSql.layerPg({ url: db.url, maxConnections: 2 })))
          expect(pages).toBe(5)
          expect(open).toEqual([])
          expect(report.ok).toBe(true)
          expect(report.rowsChecked).toBe(50)
        }), (db) => Effect.sync(db.drop)),
    60_000
  )
})
