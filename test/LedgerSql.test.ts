/**
 * The ledger next to an application that uses `@effect/sql` for its own data: each keeps its database,
 * whatever the order the two layers are merged in, and an application transaction never carries ledger
 * statements onto the application's connection.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import { verifyLedger } from "../src/ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { refusalEvent } from "./fixtures/events.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-compose-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (name: string): string => join(tempRoot, `${name}-${++fileCounter}.db`)

const tablesOf = (filename: string) =>
  Effect.provide(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.map(
        sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`,
        (rows) => rows.map((row) => row.name)
      )),
    SqliteClient.layer({ filename, readonly: true })
  )

/** What an application does with its own database and the ledger in one program. */
const appAndLedger = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE app_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`
  yield* sql`INSERT INTO app_items (name) VALUES ('first')`
  const queue = yield* AuditQueue
  for (let n = 0; n < 3; n++) yield* queue.submit(refusalEvent("agent-compose", n))
  expect(yield* queue.drainPending("10 seconds")).toBe(true)
  // The ledger's readers run on the ledger, even with the application's client in context...
  const report = yield* verifyLedger()
  expect(report.ok).toBe(true)
  expect(report.rowsChecked).toBe(3)
  expect(yield* DeadLetters.list()).toEqual([])
  expect((yield* LedgerStats.stats()).rows).toBe(3)
  // ...and inside the application's own transaction, whose connection belongs to the application's file.
  const inTransaction = yield* sql.withTransaction(Effect.gen(function*() {
    yield* sql`INSERT INTO app_items (name) VALUES ('second')`
    const lines = Chunk.size(yield* Stream.runCollect(LedgerExport.exportLines()))
    return { report: yield* verifyLedger(), lines }
  }))
  expect(inTransaction.report.rowsChecked).toBe(3)
  expect(inTransaction.lines).toBe(4) // the header and three rows
  const names = yield* sql<{ name: string }>`SELECT name FROM app_items ORDER BY id`
  expect(names.map((row) => row.name)).toEqual(["first", "second"])
})

describe("the ledger beside an application's own SqlClient", () => {
  for (const order of ["ledger merged first", "app merged first"] as const) {
    it.live(`each keeps its database (${order})`, () =>
      Effect.gen(function*() {
        const appFile = freshFile("app")
        const ledgerFile = freshFile("ledger")
        const app = SqliteClient.layer({ filename: appFile })
        const ledger = AuditLedger.layerSqlite({ filename: ledgerFile, synchronous: "NORMAL" })
        const both = order === "ledger merged first" ? Layer.merge(ledger, app) : Layer.merge(app, ledger)
        yield* Effect.provide(appAndLedger, both)
        expect(yield* tablesOf(appFile)).toEqual(["app_items"])
        const ledgerTables = yield* tablesOf(ledgerFile)
        expect(ledgerTables).toContain("signed_events")
        expect(ledgerTables).not.toContain("app_items")
        const reopened = yield* Effect.provide(verifyLedger(), LedgerSql.layerSqlite({ filename: ledgerFile }))
        expect(reopened.rowsChecked).toBe(3)
      }))
  }

  it.live("one database for both (fromSqlClient): a ledger write inside the app's transaction rolls back with it", () =>
    Effect.gen(function*() {
      const file = freshFile("shared")
      const shared = LedgerSql.fromSqlClient.pipe(Layer.provideMerge(SqliteClient.layer({ filename: file })))
      const migrated = LedgerSql.migrate.pipe(Layer.provideMerge(shared))
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const sink = yield* SqlAuditSink.SqlAuditSink
        yield* sql`CREATE TABLE app_items (id INTEGER PRIMARY KEY)`
        const failed = yield* Effect.exit(sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO app_items DEFAULT VALUES`
          yield* sink.append(refusalEvent("agent-shared", 0))
          return yield* Effect.fail("the application gives up")
        })))
        expect(failed._tag).toBe("Failure")
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO app_items DEFAULT VALUES`
          yield* sink.append(refusalEvent("agent-shared", 1))
        }))
        const [items] = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM app_items`
        expect(items?.n).toBe(1)
        const report = yield* verifyLedger()
        expect(report.rowsChecked).toBe(1)
        expect(report.ok).toBe(true)
      }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(migrated))))
    }))

  it.live("the argument salt is made once per ledger: stable across connections, different between ledgers", () =>
    Effect.gen(function*() {
      const first = freshFile("salt")
      const salt = yield* Effect.provide(LedgerSql.argumentSalt, LedgerSql.layerSqlite({ filename: first }))
      expect(salt).toMatch(/^[0-9a-f]{64}$/)
      const again = yield* Effect.provide(LedgerSql.argumentSalt, LedgerSql.layerSqlite({ filename: first }))
      expect(again).toBe(salt)
      const other = yield* Effect.provide(
        LedgerSql.argumentSalt,
        LedgerSql.layerSqlite({ filename: freshFile("salt") })
      )
      expect(other).not.toBe(salt)
    }))
})
