/**
 * The ledger's schema, as @effect/sql migrations, so an existing database upgrades in place.
 * Migration ids are append-only: never edit a released migration, add the next one.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"

export const MIGRATIONS_TABLE = "agent_ledger_migrations"

const createLedger = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE signed_events (
      id           TEXT PRIMARY KEY,
      sequence     INTEGER NOT NULL,
      agent_id     TEXT NOT NULL,
      event_type   TEXT NOT NULL,
      payload      TEXT NOT NULL,
      payload_hash TEXT NOT NULL,
      prev_hash    TEXT NOT NULL,
      entry_hash   TEXT NOT NULL,
      signature    TEXT,
      key_id       TEXT,
      attest_level TEXT NOT NULL,
      timestamp    TEXT NOT NULL,
      appended_at  TEXT NOT NULL
    )`
  yield* sql`CREATE UNIQUE INDEX idx_signed_events_sequence ON signed_events(sequence)`
  yield* sql`
    CREATE TABLE signed_events_dlq (
      dlq_id         INTEGER PRIMARY KEY,
      id             TEXT NOT NULL,
      agent_id       TEXT NOT NULL,
      event_type     TEXT NOT NULL,
      payload        TEXT NOT NULL,
      payload_hash   TEXT NOT NULL,
      timestamp      TEXT NOT NULL,
      failure_reason TEXT NOT NULL,
      failed_at      TEXT NOT NULL,
      replayed_at    TEXT
    )`
  yield* sql`CREATE INDEX idx_signed_events_dlq_pending ON signed_events_dlq(replayed_at, dlq_id)`
})

/** Per-ledger settings, e.g. the salt of argument hashes (`LedgerSql.argumentSalt`). */
const createSettings = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`
    CREATE TABLE agent_ledger_settings (
      key   TEXT PRIMARY KEY,
      value TEXT NOT NULL
    )`)

const loader = Migrator.fromRecord({
  "0001_create_ledger": createLedger,
  "0002_create_settings": createSettings
})

/** Brings the connected database up to the current schema; returns the migrations it applied. */
export const runMigrations = Migrator.make({})({ loader, table: MIGRATIONS_TABLE })
