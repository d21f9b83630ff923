/**
 * The ledger on PostgreSQL, against the real server (`AGENT_LEDGER_PG_URL`; skipped, visibly, without it):
 * the same sink, migrations, verifier, dead letters, stats and export as on SQLite; many writers on one
 * chain; and the CLI taking a `postgres://` URL wherever it takes a file.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Logger, LogLevel, Option, Schedule, Stream } from "effect"
import { execFile, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

/** Files the CLI tests write (session exports, keys, receipts). */
const scratch = mkdtempSync(join(tmpdir(), "agent-ledger-pg-"))

const withDatabase = <A, E>(use: (url: string) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(Effect.sync(freshDatabase), (db) => use(db.url), (db) => Effect.sync(db.drop))

const rowsOf = (url: string) =>
  Effect.provide(
    Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      client<{ id: string; sequence: number; event_type: string }>`
        SELECT id, sequence, event_type FROM signed_events ORDER BY sequence`),
    LedgerSql.layerPg({ url })
  )

const quietLogs = Logger.minimumLogLevel(LogLevel.None)

describe.skipIf(noPostgres)("the ledger on PostgreSQL", () => {
  it.live(
    "group commit: 2,000 signed refusals in batches, a dense chain that verifies, stats and export",
    () =>
      withDatabase((url) =>
        Effect.gen(function*() {
          const signer = yield* AuditSigner.generate
          const receipts = yield* Effect.gen(function*() {
            const queue = yield* AuditQueue
            for (let n = 0; n < 1999; n++) yield* queue.submit(refusalEvent("agent-pg", n))
            const last = yield* queue.submitAndWait(refusalEvent("agent-pg", 1999))
            return last
          }).pipe(Effect.provide(AuditLedger.layerPg({ url, signer })))
          expect(receipts.sequence).toBe(1999)
          const { report, stats, lines } = yield* Effect.gen(function*() {
            const report = yield* verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([signer]) })
            const stats = yield* LedgerStats.stats()
            const lines = yield* Stream.runCollect(LedgerExport.exportLines({ from: 1000 }))
            return { report, stats, lines: Chunk.toReadonlyArray(lines) }
          }).pipe(Effect.provide(LedgerSql.layerPg({ url })))
          expect(report.ok).toBe(true)
          expect(report.rowsChecked).toBe(2000)
          expect(report.signatures.valid).toBe(2000)
          expect(stats.rows).toBe(2000)
          expect(Option.map(stats.head, (head) => head.sequence)).toEqual(Option.some(1999))
          expect(stats.deadLetters).toEqual({ pending: 0, replayed: 0 })
          expect(lines).toHaveLength(1001)
          expect(JSON.parse(lines[0]!)).toMatchObject({ from_sequence: 1000, to_sequence: 1999, row_count: 1000 })
        })
      ),
    120_000
  )

  it.live(
    "an event that cannot be appended is dead-lettered, listed and replayed",
    () =>
      withDatabase((url) =>
        Effect.gen(function*() {
          yield* Effect.gen(function*() {
            const queue = yield* AuditQueue
            const good = refusalEvent("agent-pg", 0)
            // A lone surrogate cannot be canonicalized: the sink dead-letters the event (with its data).
            const bad = new AuditEvent.DeferredAuditEvent({ ...refusalEvent("agent-pg", 1), agentId: "x\uD800" })
            yield* queue.submit(good)
            yield* queue.submit(bad)
            expect(yield* queue.drainPending("10 seconds")).toBe(true)
            expect(yield* queue.metrics).toMatchObject({ appended: 1, dlqLanded: 1 })
            const letters = yield* DeadLetters.list()
            expect(letters.map((letter) => letter.id)).toEqual([bad.id])
            expect(typeof letters[0]!.dlq_id).toBe("number")
          }).pipe(Effect.provide(AuditLedger.layerPg({ url })), Effect.provide(quietLogs))
          const report = yield* Effect.provide(verifyLedger(), LedgerSql.layerPg({ url }))
          expect(report.ok).toBe(true)
        })
      ),
    60_000
  )

  it.live(
    "4 writer processes × 2,500 events: 10,000 rows, no gaps, no duplicate ids, the chain verifies",
    () =>
      withDatabase((url) =>
        Effect.gen(function*() {
          const writers = Array.from({ length: 4 }, (_, w) =>
            Effect.promise(() =>
              promisify(execFile)(process.execPath, [
                "--import",
                "tsx",
                join(repoRoot, "test/fixtures/pgWriter.ts"),
                url,
                `writer-${w}`,
                "2500"
              ], { cwd: repoRoot, timeout: 120_000 })
            ))
          yield* Effect.all(writers, { concurrency: "unbounded" })
          const rows = yield* rowsOf(url)
          expect(rows).toHaveLength(10_000)
          expect(rows.map((row) => row.sequence)).toEqual(Array.from({ length: 10_000 }, (_, i) => i))
          expect(new Set(rows.map((row) => row.id)).size).toBe(10_000)
          const report = yield* Effect.provide(verifyLedger(), LedgerSql.layerPg({ url }))
          expect(report.ok).toBe(true)
        })
      ),
    180_000
  )

  it.live(
    "the CLI takes a postgres:// URL: demo, then verify, stats and export on the same URL",
    () =>
      withDatabase((url) =>
        Effect.promise(async () => {
          const run = (...args: Array<string>) => promisify(execFile)(process.execPath, [cliBundle, ...args])
          const demo = await run(
            "demo",
            "--db",
            url,
            "--sessions",
            "3",
            "--calls",
            "20",
            "--session-out",
            join(scratch, "pg-session.json")
          )
          expect(demo.stdout).toContain("verify:          OK")
          const verify = await run("verify", url, "--json")
          expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true })
          const stats = JSON.parse((await run("stats", url, "--json")).stdout)
          expect(stats.rows).toBeGreaterThan(0)
          const exported = await run("export", url)
          expect(exported.stdout.trim().split("\n")).toHaveLength(stats.rows + 1)
          // The transparency commands on the same URL: checkpoint, receipt, evidence bundle.
          const keys = join(scratch, `pg-keys-${process.pid}-${Date.now()}`)
          await run("keygen", "--out", keys)
          const key = join(keys, "agent-ledger-ed25519.pem")
          const vkey = (await run("checkpoint", url, "--private-key", key, "--key")).stdout.trim()
          // The demo's ledger is not signed: the key signs over its rows only once the operator adopts them.
          const checkpoint = (await run("checkpoint", url, "--private-key", key, "--adopt-unsigned-rows")).stdout
          expect(checkpoint.split("\n")[1]).toBe(String(stats.rows))
          const receipt = join(keys, "receipt.json")
          await run("prove", url, "--private-key", key, "--sequence", "2", "--out", receipt)
          // The receipt's row carries no signature by the key.
          expect((await run("verify-receipt", receipt, "--key", vkey, "--allow-unsigned")).stdout).toContain("OK")
          const bundle = join(keys, "bundle.json")
          await run("export", url, "--from", "1", "--to", "5", "--bundle", bundle, "--private-key", key)
          const verified = JSON.parse(
            (await run("verify", bundle, "--checkpoint-key", vkey, "--allow-mixed", "--json")).stdout
          )
          expect(verified).toMatchObject({ ok: true, proven: 5, complete: true })
          rmSync(keys, { recursive: true, force: true })
        })
      ),
    240_000
  )

  it.live(
    "a writer SIGKILLed mid-batch: the ledger verifies and every acknowledged event is in it",
    () =>
      withDatabase((url) =>
        Effect.gen(function*() {
          const acked = yield* Effect.async<ReadonlyArray<string>>((resume) => {
            const child = spawn(process.execPath, [
              "--import",
              "tsx",
              join(repoRoot, "test/fixtures/pgAckWriter.ts"),
              url
            ], {
              cwd: repoRoot,
              stdio: ["ignore", "pipe", "ignore"]
            })
            const ids: Array<string> = []
            let buffered = ""
            child.stdout.on("data", (chunk: Buffer) => {
              buffered += chunk.toString("utf8")
              const lines = buffered.split("\n")
              buffered = lines.pop() ?? ""
              for (const line of lines) if (line.startsWith("ack ")) ids.push(line.slice(4))
              // Killed while batches are in flight: many fibers are waiting for their commit right now.
              if (ids.length >= 1500 && child.exitCode === null && !child.killed) child.kill("SIGKILL")
            })
            child.on("exit", () => resume(Effect.succeed(ids)))
          })
          expect(acked.length).toBeGreaterThanOrEqual(1500)
          const rows = yield* rowsOf(url)
          const stored = new Set(rows.map((row) => row.id))
          expect(acked.filter((id) => !stored.has(id))).toEqual([])
          expect(rows.map((row) => row.sequence)).toEqual(rows.map((_, i) => i))
          const report = yield* Effect.provide(verifyLedger(), LedgerSql.layerPg({ url }))
          expect(report.ok).toBe(true)
        })
      ),
    120_000
  )

  it.live(
    "connections killed under the writer: the events wait and land in order, none is dead-lettered",
    () =>
      withDatabase((url) =>
        Effect.gen(function*() {
          const events = Array.from({ length: 300 }, (_, i) => refusalEvent("agent-pg", i))
          const terminate = Effect.sync(() =>
            execFileSync("psql", [
              url,
              "-qAtc",
              "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity " +
              "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ])
          )
          yield* Effect.gen(function*() {
            const queue = yield* AuditQueue
            for (const [i, event] of events.entries()) {
              yield* queue.submit(event)
              if (i % 50 === 25) {
                yield* terminate
                yield* Effect.sleep("5 millis")
              }
            }
            expect(yield* queue.drainPending("60 seconds")).toBe(true)
            expect(yield* queue.metrics).toMatchObject({ appended: 300, dlqLanded: 0, appendFailures: 0 })
          }).pipe(
            Effect.provide(AuditLedger.layerPg({ url, stallSchedule: Schedule.spaced("20 millis") })),
            Effect.provide(quietLogs)
          )
          const rows = yield* rowsOf(url)
          expect(rows.map((row) => row.id)).toEqual(events.map((event) => event.id))
          expect((yield* Effect.provide(verifyLedger(), LedgerSql.layerPg({ url }))).ok).toBe(true)
        })
      ),
    120_000
  )
})
