/**
 * Durable journals (`journalStore.*`): entries per second made durable in a SQLite ledger file (the writer
 * thread, synchronous FULL) by 64 concurrent calls each waiting for its entry (`awaitDurable`, so group
 * commit shares commits), beside the raw bound: better-sqlite3 inserting the same rows in one transaction
 * per 512 in a loop, same file system. And the bytes each entry takes on disk (file growth per entry).
 */
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import * as AuditLedger from "../src/AuditLedger.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as JournalRow from "../src/ledger/JournalRow.js"
import * as JournalStore from "../src/ledger/JournalStore.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, perSecond, sideBySide } from "./harness.js"

const call = (i: number): SessionJournal.RecordParams => ({
  toolName: `tool-${i % 7}`,
  serverId: "server-a",
  agentId: "agent-7",
  bytesRead: 0,
  bytesWritten: 120,
  delegationDepth: 0,
  allowed: i % 5 !== 0,
  intent: { arguments: { sha256: "ab".repeat(32), bytes: 120 } }
})

let files = 0

/** Entries/s durable through the store, 64 callers at once; and the file's bytes per entry. */
const durable = (dir: string, n: number) => {
  const filename = join(dir, `durable-${files++}.db`)
  return Effect.runPromise(Effect.scoped(
    Effect.gen(function*() {
      const store = yield* JournalStore.JournalStore
      const journals = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => `bench-${i}`),
        (id) => SessionJournal.make(id, { store })
      )
      const before = fs.statSync(filename).size
      const start = performance.now()
      yield* Effect.forEach(Array.from({ length: 64 }, (_, w) => w), (w) =>
        Effect.gen(function*() {
          const journal = journals[w % journals.length]!
          for (let i = w; i < n; i += 64) {
            const p = call(i)
            yield* journal.awaitDurable(yield* journal.record({ ...p, outcome: p.allowed ? "result" : "refused" }))
          }
        }), { concurrency: "unbounded", discard: true })
      const rate = perSecond(n, performance.now() - start)
      const wal = `${filename}-wal`
      const after = fs.statSync(filename).size + (fs.existsSync(wal) ? fs.statSync(wal).size : 0)
      return { rate, bytesPerEntry: (after - before) / n }
    }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
  ))
}

/** The raw bound: the same rows inserted by better-sqlite3, 512 per transaction. */
const raw = async (dir: string, n: number, rows: ReadonlyArray<JournalRow.JournalRow>) => {
  const filename = join(dir, `raw-${files++}.db`)
  // The schema by the ledger's own migrations.
  await Effect.runPromise(Effect.scoped(Effect.provide(Effect.void, AuditLedger.layerSqlite({ filename }))))
  const db = new Database(filename)
  db.pragma("journal_mode = WAL")
  db.pragma("synchronous = FULL")
  const insert = db.prepare(
    `INSERT INTO journal_entries (${JournalRow.COLUMNS.join(", ")}) VALUES (${
      JournalRow.COLUMNS.map(() => "?").join(", ")
    })`
  )
  const batch = db.transaction((some: ReadonlyArray<JournalRow.JournalRow>) => {
    for (const row of some) insert.run(...JournalRow.toParams(row, "2026-01-01T00:00:00.000Z"))
  })
  const start = performance.now()
  for (let i = 0; i < n; i += 512) batch(rows.slice(i, i + 512))
  const rate = perSecond(n, performance.now() - start)
  db.close()
  return rate
}

/** `n` rows as a durable journal makes them (the same shapes the store writes). */
const rowsOf = (n: number): Promise<ReadonlyArray<JournalRow.JournalRow>> => {
  const rows: Array<JournalRow.JournalRow> = []
  const store: JournalStore.Service = {
    enqueue: (row) => void rows.push(row),
    available: Effect.succeed(true),
    flush: () => Effect.succeed(true),
    stats: Effect.succeed({ stored: 0, batches: 0, failedAttempts: 0, lost: 0, outstanding: 0 })
  }
  return Effect.runPromise(Effect.gen(function*() {
    const journal = yield* SessionJournal.make("raw", { store })
    for (let i = 0; i < n; i++) {
      const p = call(i)
      yield* journal.record({ ...p, outcome: p.allowed ? "result" : "refused" })
    }
    return rows
  }))
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const dir = fs.mkdtempSync(join(mode.dir, "journal-store-"))
  const n = mode.size(20_000, 500)
  const rows = await rowsOf(n)
  let bytesPerEntry = 0
  const measured = await sideBySide(
    mode.rounds,
    async () => {
      const one = await durable(dir, n)
      bytesPerEntry = one.bytesPerEntry
      return one.rate
    },
    () => raw(dir, n, rows)
  )
  return {
    "journalStore.durableEntriesPerSec": bounded(measured.value, "entries/s", measured.bound),
    "journalStore.bytesPerEntry": figure(bytesPerEntry, "bytes")
  }
}
