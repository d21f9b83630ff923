import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Metric, Option } from "effect"
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { Refuse, ToolCall } from "../src/audit/AuditEvent.js"
import * as AuditMetrics from "../src/audit/AuditMetrics.js"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as JournalStore from "../src/ledger/JournalStore.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import { SqlAuditSink } from "../src/ledger/SqlAuditSink.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-ledger-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (): string => join(tempRoot, `ledger-${++fileCounter}.db`)

const submitRefusals = (count: number, agentId: string) =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue
    for (let n = 0; n < count; n++) {
      const accepted = yield* queue.submitRefusal(
        agentId,
        new ToolCall({ toolName: "shell.exec", serverId: "local", arguments: { n } }),
        new Refuse({ ruleId: "no-shell", reason: `refusal ${n}` })
      )
      expect(accepted).toBe(true)
    }
  })

/** Reads the file back on a fresh connection, after the ledger layer has been released. */
const inspect = <A, E>(filename: string, effect: Effect.Effect<A, E, SqlClient.SqlClient | LedgerSql.LedgerSql>) =>
  Effect.provide(effect, sqliteWithClient({ filename }))

const rowCount = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => Effect.map(sql<{ n: number }>`SELECT COUNT(*) AS n FROM signed_events`, (rows) => rows[0]!.n)
)

const openError = (filename: string) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(Effect.scoped(Layer.build(AuditLedger.layerSqlite({ filename }))))
    expect(error).toBeInstanceOf(AuditLedger.LedgerOpenError)
    return error as AuditLedger.LedgerOpenError
  })

describe("AuditLedger.layerSqlite", () => {
  it.live("end to end: 50 refusals submitted, the scope closed, 50 signed rows that verify", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const signer = yield* AuditSigner.generate
      // No drainPending: closing the scope must flush the queue before the SQL client closes.
      yield* Effect.provide(submitRefusals(50, "agent-e2e"), AuditLedger.layerSqlite({ filename, signer }))
      const report = yield* inspect(filename, verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([signer]) }))
      expect(Option.getOrUndefined(report.firstFailure)).toBeUndefined()
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(50)
      expect(report.attestLevels).toEqual({ unsigned: 0, ed25519: 50 })
      expect(report.signatures.valid).toBe(50)
    }))

  it.live("a re-opened ledger continues its chain", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const ledger = AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })
      yield* Effect.provide(submitRefusals(3, "first-run"), ledger)
      yield* Effect.provide(
        Effect.gen(function*() {
          const head = yield* Effect.flatMap(SqlAuditSink, (sink) => sink.head)
          expect(Option.map(head, (h) => h.sequence)).toEqual(Option.some(2))
          yield* submitRefusals(4, "second-run")
        }),
        ledger
      )
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(7)
    }))

  it.live("the queue counts DLQ landings and append failures, and the drainer keeps going", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const program = Effect.gen(function*() {
        const queue = yield* AuditQueue
        const sql = (yield* LedgerSql.LedgerSql).client
        const sink = yield* SqlAuditSink
        yield* queue.submit(refusalEvent("agent", 0))
        expect(yield* queue.drainPending("5 seconds")).toBe(true)

        yield* sql.unsafe("ALTER TABLE signed_events RENAME COLUMN agent_id TO x")
        yield* queue.submit(refusalEvent("agent", 1))
        expect(yield* queue.drainPending("5 seconds")).toBe(true)
        expect(yield* queue.metrics).toMatchObject({ appended: 1, dlqLanded: 1, appendFailures: 1 })
        expect(yield* sink.dlqSize).toBe(1)

        yield* sql.unsafe("ALTER TABLE signed_events_dlq RENAME TO signed_events_dlq_gone")
        yield* queue.submit(refusalEvent("agent", 2))
        expect(yield* queue.drainPending("5 seconds")).toBe(true)
        expect(yield* queue.metrics).toMatchObject({ appended: 1, dlqLanded: 1, appendFailures: 2 })

        yield* sql.unsafe("ALTER TABLE signed_events RENAME COLUMN x TO agent_id")
        yield* sql.unsafe("ALTER TABLE signed_events_dlq_gone RENAME TO signed_events_dlq")
        yield* queue.submit(refusalEvent("agent", 3))
        expect(yield* queue.drainPending("5 seconds")).toBe(true)
        expect(yield* queue.metrics).toMatchObject({ submitted: 4, appended: 2, dlqLanded: 1, appendFailures: 2 })
        expect(yield* queue.status).toBe("Running")
      })
      yield* Effect.provide(program, AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })).pipe(quietly)
      expect(yield* inspect(filename, rowCount)).toBe(2)
      expect((yield* inspect(filename, verifyLedger())).ok).toBe(true)
    }))

  it.effect("one Layer provides the ledger's own database, the sink (both tags) and the queue, not a SqlClient", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(AuditLedger.layerSqlite({ filename: freshFile() }))
      expect(Context.getOption(context, SqlClient.SqlClient)._tag).toBe("None")
      expect(Context.getOption(context, LedgerSql.LedgerSql)._tag).toBe("Some")
      expect(Context.getOption(context, SqlAuditSink)._tag).toBe("Some")
      expect(Context.getOption(context, AuditQueue)._tag).toBe("Some")
      const migrations = yield* Effect.provide(
        Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => client`SELECT migration_id FROM agent_ledger_migrations`),
        context
      )
      expect(migrations).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9].map((migration_id) => ({ migration_id })))
      expect(Context.getOption(context, JournalStore.JournalStore)._tag).toBe("Some")
    }).pipe(Effect.scoped))
})

describe("AuditLedger: a bad filename fails the layer with LedgerOpenError naming the path", () => {
  it.effect("missing directory (and nothing is created)", () =>
    Effect.gen(function*() {
      const directory = join(tempRoot, "does-not-exist")
      const filename = join(directory, "ledger.db")
      const error = yield* openError(filename)
      expect(error).toMatchObject({ _tag: "LedgerOpenError", path: filename, reason: "missingDirectory" })
      expect(existsSync(directory)).toBe(false)
    }))

  it.effect("the path is a directory", () =>
    Effect.gen(function*() {
      const directory = join(tempRoot, "a-directory")
      mkdirSync(directory)
      expect(yield* openError(directory)).toMatchObject({ path: directory, reason: "isADirectory" })
    }))

  it.effect("a component of the path is a file", () =>
    Effect.gen(function*() {
      const file = join(tempRoot, "plain-file")
      writeFileSync(file, "not a directory")
      const filename = join(file, "ledger.db")
      expect(yield* openError(filename)).toMatchObject({ path: filename, reason: "notADirectory" })
    }))

  it.effect("the file is not a SQLite database", () =>
    Effect.gen(function*() {
      const filename = join(tempRoot, "garbage.db")
      writeFileSync(filename, "this is not a database, just enough text to fill the header page ".repeat(100))
      const error = yield* openError(filename)
      expect(error).toMatchObject({ path: filename, reason: "openFailed" })
      expect(error.detail).toContain("SQLITE_NOTADB")
    }))

  it.effect("checkDatabasePath accepts a new file in an existing directory and :memory:", () =>
    Effect.gen(function*() {
      yield* AuditLedger.checkDatabasePath(freshFile())
      yield* AuditLedger.checkDatabasePath(":memory:")
      const error = yield* Effect.flip(AuditLedger.checkDatabasePath(join(tempRoot, "missing", "x.db")))
      expect(error.message).toContain(join(tempRoot, "missing", "x.db"))
    }))
})

describe("hostile values at the boundary", () => {
  it.live("NUL bytes, a 1 MB reason and SQL-looking text are stored and verified exactly", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const agentId = "agent\u0000with-nul'; DROP TABLE signed_events; --"
      const reason = `${"é✓ ".repeat(1 << 18)}\u0000end`
      const args = {
        sql: "SELECT * FROM signed_events WHERE 1=1; --",
        nul: "a\u0000b",
        nested: { "k\u0000": [reason.slice(0, 10)] }
      }
      const action = new ToolCall({ toolName: "db.query\u0000", serverId: "srv'\"", arguments: args })
      const decision = new Refuse({ ruleId: "R'); DELETE FROM signed_events_dlq; --", reason })
      const receipt = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue
        return Option.getOrThrow(yield* queue.submitRefusalAndWait(agentId, action, decision))
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
      const rows = yield* inspect(
        filename,
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) =>
            sql<
              { agent_id: string; payload: string; sequence: number }
            >`SELECT agent_id, payload, sequence FROM signed_events`
        )
      )
      expect(rows).toHaveLength(1)
      expect(rows[0]!.sequence).toBe(receipt.sequence)
      expect(rows[0]!.agent_id).toBe(agentId)
      const payload = JSON.parse(rows[0]!.payload)
      expect(payload.agent_id).toBe(agentId)
      expect(payload.decision).toEqual({ _tag: "Refuse", ruleId: decision.ruleId, reason })
      expect(payload.action).toEqual({
        _tag: "ToolCall",
        toolName: action.toolName,
        serverId: action.serverId,
        arguments: args
      })
      const report = yield* inspect(filename, verifyLedger())
      expect(report.ok).toBe(true)
      expect(report.rowsChecked).toBe(1)
    }))
})

describe("AuditLedger.layerSqliteConfig", () => {
  const withConfig = (entries: ReadonlyArray<readonly [string, string]>) =>
    Layer.setConfigProvider(ConfigProvider.fromMap(new Map(entries), { pathDelim: "_" }))

  it.live("reads the file, key, synchronous mode, queue id and batch size from the ConfigProvider", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const signer = yield* AuditSigner.generate
      const keyFile = join(tempRoot, `key-${fileCounter}.pem`)
      writeFileSync(keyFile, AuditSigner.exportPem(signer).privateKeyPem, { mode: 0o600 })
      const metrics = yield* Effect.gen(function*() {
        const queue = yield* AuditQueue
        const sql = (yield* LedgerSql.LedgerSql).client
        yield* submitRefusals(5, "configured")
        expect(yield* queue.drainPending("10 seconds")).toBe(true)
        const [mode] = yield* sql<{ synchronous: number }>`PRAGMA synchronous`
        expect(mode?.synchronous).toBe(1) // NORMAL
        return yield* queue.metrics
      }).pipe(
        Effect.provide(AuditLedger.layerSqliteConfig()),
        Effect.provide(withConfig([
          ["AGENT_LEDGER_DB", filename],
          ["AGENT_LEDGER_PRIVATE_KEY_FILE", keyFile],
          ["AGENT_LEDGER_SYNCHRONOUS", "NORMAL"],
          ["AGENT_LEDGER_QUEUE_ID", "guard-1"],
          ["AGENT_LEDGER_MAX_BATCH", "8"],
          ["AGENT_LEDGER_SHUTDOWN_DRAIN_TIMEOUT", "2 seconds"]
        ]))
      )
      expect(metrics.appended).toBe(5)
      // The queue id tags the queue's metrics.
      expect((yield* Metric.value(AuditMetrics.counters("guard-1").appended)).count).toBe(5)
      const report = yield* inspect(filename, verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([signer]) }))
      expect(report.ok).toBe(true)
      expect(report.attestLevels.ed25519).toBe(5)
    }))

  it.live("a missing or invalid setting fails the layer naming the key", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(
        Effect.scoped(Layer.build(AuditLedger.layerSqliteConfig())).pipe(
          Effect.provide(withConfig([]))
        )
      )
      expect(String(missing)).toContain("AGENT_LEDGER_DB")
      const invalid = yield* Effect.flip(
        Effect.scoped(Layer.build(AuditLedger.layerSqliteConfig())).pipe(
          Effect.provide(withConfig([["AGENT_LEDGER_DB", freshFile()], ["AGENT_LEDGER_SYNCHRONOUS", "SOMETIMES"]]))
        )
      )
      expect(String(invalid)).toContain("AGENT_LEDGER_SYNCHRONOUS")
      const badKey = yield* Effect.flip(
        Effect.scoped(Layer.build(AuditLedger.layerSqliteConfig())).pipe(
          Effect.provide(withConfig([["AGENT_LEDGER_DB", freshFile()], ["AGENT_LEDGER_PRIVATE_KEY_FILE", "/nope.pem"]]))
        )
      )
      expect(badKey).toMatchObject({ _tag: "KeyLoadError", reason: "missingFile" })
    }))
})

describe("AuditLedger.layerConfig", () => {
  /** `ConfigProvider.fromMap` as a user writes it: the env var names, no `pathDelim`. */
  const withConfig = (entries: ReadonlyArray<readonly [string, string]>) =>
    Layer.setConfigProvider(ConfigProvider.fromMap(new Map(entries)))

  it.live("a key from the environment, checkpoints: rows signed by it, a checkpoint of the origin on close", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const signer = yield* AuditSigner.generate
      yield* submitRefusals(3, "from-config").pipe(
        Effect.provide(AuditLedger.layerConfig()),
        Effect.provide(withConfig([
          ["AGENT_LEDGER_DB", filename],
          ["AGENT_LEDGER_PRIVATE_KEY", AuditSigner.exportPem(signer).privateKeyPem],
          ["AGENT_LEDGER_CHECKPOINT_ORIGIN", "config-test/log"],
          ["AGENT_LEDGER_CHECKPOINT_EVERY", "1 hour"],
          ["AGENT_LEDGER_SYNCHRONOUS", "NORMAL"]
        ]))
      )
      const report = yield* inspect(filename, verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([signer]) }))
      expect(report.ok).toBe(true)
      expect(report.attestLevels.ed25519).toBe(3)
      const stored = yield* inspect(filename, LedgerTransparency.storedCheckpoints({ origin: "config-test/log" }))
      expect(stored[0]?.treeSize).toBe(3)
    }))

  it.live("a postgres:// URL is PostgreSQL, never a SQLite file of that name", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.scoped(Layer.build(AuditLedger.layerConfig())).pipe(
          Effect.provide(withConfig([["AGENT_LEDGER_DB", "postgres://nobody@127.0.0.1:1/none"]])),
          quietly
        )
      )
      expect(error).toMatchObject({ _tag: "LedgerOpenError" })
      expect(String(error)).toContain("127.0.0.1:1")
      expect(existsSync("postgres:")).toBe(false)
    }), 30_000)

  it.live("contradictory or incomplete settings fail naming the keys; the old pathDelim form still reads", () =>
    Effect.gen(function*() {
      const build = (entries: ReadonlyArray<readonly [string, string]>) =>
        Effect.flip(Effect.scoped(Layer.build(AuditLedger.layerConfig())).pipe(Effect.provide(withConfig(entries))))
      const db = ["AGENT_LEDGER_DB", freshFile()] as const
      expect(String(yield* build([db, ["AGENT_LEDGER_PRIVATE_KEY", "x"], ["AGENT_LEDGER_PRIVATE_KEY_FILE", "y"]])))
        .toContain("AGENT_LEDGER_PRIVATE_KEY and AGENT_LEDGER_PRIVATE_KEY_FILE")
      expect(String(yield* build([db, ["AGENT_LEDGER_CHECKPOINT_ORIGIN", "o"]]))).toContain("needs a key")
      expect(String(yield* build([db, ["AGENT_LEDGER_CHECKPOINT_EVERY", "1 minute"]]))).toContain(
        "needs AGENT_LEDGER_CHECKPOINT_ORIGIN"
      )
      expect(String(yield* build([db, ["AGENT_LEDGER_PG_MAX_CONNECTIONS", "0"]]))).toContain(
        "AGENT_LEDGER_PG_MAX_CONNECTIONS"
      )
      expect(yield* build([db, ["AGENT_LEDGER_PRIVATE_KEY", "not a pem"]])).toMatchObject({ _tag: "KeyLoadError" })
      // The same names through a provider split on "_" (as ConfigProvider.fromEnv is).
      const split = yield* Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(AuditLedger.layerConfig())
        return "opened"
      })).pipe(Effect.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([db]), { pathDelim: "_" }))))
      expect(split).toBe("opened")
    }))
})
