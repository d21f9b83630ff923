/**
 * The verifier's figures (`ledger.*`): rows verified per second over a large unsigned ledger, beside raw
 * better-sqlite3 iterating the same table plus one SHA-256 per row (the bound: the least any verifier must
 * do), and the process's resident memory while it runs (flat: rows are read in pages).
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import { join } from "node:path"
import { performance } from "node:perf_hooks"
import { GOVERNANCE_REFUSAL_EVENT_TYPE } from "../src/AuditEvent.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { ZERO_HASH } from "../src/internal/encoding.js"
import { rowEntryHash, sha256 } from "../src/internal/rowFormat.js"
import { uuidV7 } from "../src/internal/uuid.js"
import * as LedgerRow from "../src/LedgerRow.js"
import * as LedgerVerifier from "../src/LedgerVerifier.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, gc, perSecond, sideBySide } from "./harness.js"

const BASE_MILLIS = Date.UTC(2026, 10, 24, 6, 52, 3, 120)

/**
 * A valid unsigned chain of `rows` rows, written straight into a migrated file in large transactions
 * (setup, not measured). Payloads have the size and shape of refusal payloads.
 */
const buildLedger = async (file: string, rows: number): Promise<void> => {
  await Effect.runPromise(Effect.provide(Effect.void, AuditLedger.layerSqliteClient({ filename: file })))
  const db = new Database(file)
  try {
    db.pragma("journal_mode = WAL")
    db.pragma("synchronous = OFF")
    const insert = db.prepare(
      `INSERT INTO signed_events (${LedgerRow.COLUMNS.join(", ")}) VALUES (${
        LedgerRow.COLUMNS.map(() => "?").join(", ")
      })`
    )
    let prevHash = ZERO_HASH
    const batch = db.transaction((from: number, to: number) => {
      for (let sequence = from; sequence < to; sequence++) {
        const id = uuidV7(BASE_MILLIS + sequence)
        const agentId = `agent-${sequence % 97}`
        const timestamp = new Date(BASE_MILLIS + sequence).toISOString()
        const payload = JSON.stringify({
          action: {
            _tag: "ToolCall",
            arguments: { n: sequence, path: "/etc/passwd" },
            serverId: "local",
            toolName: "shell.exec"
          },
          agent_id: agentId,
          decision: { _tag: "Refuse", reason: `refusal ${sequence}`, ruleId: "no-shell" },
          event_id: id,
          timestamp
        })
        const payloadHash = sha256(payload).toString("hex")
        const entryHash = rowEntryHash({
          sequence,
          prevHash,
          id,
          agentId,
          eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
          payloadHash,
          timestamp
        })
        insert.run(
          id,
          sequence,
          agentId,
          GOVERNANCE_REFUSAL_EVENT_TYPE,
          payload,
          payloadHash,
          prevHash,
          entryHash,
          null,
          null,
          "unsigned",
          timestamp,
          timestamp
        )
        prevHash = entryHash
      }
    })
    for (let from = 0; from < rows; from += 50_000) batch(from, Math.min(rows, from + 50_000))
    db.pragma("wal_checkpoint(TRUNCATE)")
  } finally {
    db.close()
  }
}

/** The bound: raw better-sqlite3 iteration over every row, in sequence order, with one SHA-256 each. */
const rawIterationPerSecond = (file: string): number => {
  const db = new Database(file, { readonly: true })
  try {
    const statement = db.prepare(`SELECT ${LedgerRow.COLUMNS.join(", ")} FROM signed_events ORDER BY sequence`)
    const hash = typeof crypto.hash === "function"
      ? (text: string) => crypto.hash("sha256", text, "buffer")
      : (text: string) => crypto.createHash("sha256").update(text).digest()
    let rows = 0
    const start = performance.now()
    for (const row of statement.iterate() as Iterable<{ payload: string }>) {
      hash(row.payload)
      rows++
    }
    return perSecond(rows, performance.now() - start)
  } finally {
    db.close()
  }
}

/** `verifyLedger` through the library, as the CLI runs it; rows/s and peak RSS (sampled per page). */
const verify = (file: string, rows: number) =>
  Effect.runPromise(
    Effect.gen(function*() {
      gc()
      const rssBefore = process.memoryUsage().rss
      let peak = rssBefore
      const start = performance.now()
      const report = yield* LedgerVerifier.verifyLedger({
        onProgress: () => Effect.sync(() => void (peak = Math.max(peak, process.memoryUsage().rss)))
      })
      const ms = performance.now() - start
      if (!report.ok || report.rowsChecked !== rows) {
        throw new Error(`bench ledger did not verify: ${JSON.stringify(report.firstFailure)}`)
      }
      return { perSecond: perSecond(rows, ms), peakMb: peak / 2 ** 20, growthMb: (peak - rssBefore) / 2 ** 20 }
    }).pipe(Effect.provide(SqliteClient.layer({ filename: file, readonly: true })))
  )

export const run = async (mode: BenchMode): Promise<Figures> => {
  const rows = mode.size(1_000_000, 5_000)
  const file = join(mode.dir, "verify.db")
  await buildLedger(file, rows)
  const runs: Array<{ readonly peakMb: number; readonly growthMb: number }> = []
  const result = await sideBySide(
    mode.rounds,
    async () => {
      const v = await verify(file, rows)
      runs.push(v)
      return v.perSecond
    },
    () => Promise.resolve(rawIterationPerSecond(file))
  )
  return {
    "ledger.verify": bounded(result.value, "rows/s", result.bound),
    "ledger.verifyPeakRssMb": figure(Math.max(...runs.map((r) => r.peakMb)), "MB"),
    "ledger.verifyRssGrowthMb": figure(Math.max(...runs.map((r) => r.growthMb)), "MB")
  }
}
