/**
 * The audit ledger in one Layer: a SQLite file, migrated to the current schema, the SQL sink writing the
 * signed hash chain into it, and the `AuditQueue` draining refusals into that sink. An application needs
 * exactly one `Layer.provide(AuditLedger.layerSqlite({ filename }))`.
 *
 * Shutdown order is part of the contract: closing the layer's scope first closes the queue and flushes
 * what is queued into the ledger, and only then closes the database connection.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { ConfigError, ParseResult } from "effect"
import { Cause, Config, Duration, Effect, Layer, Option, Schema } from "effect"
import { constants as fsConstants } from "node:fs"
import { access, stat } from "node:fs/promises"
import { dirname, resolve } from "node:path"
import * as AuditQueue from "./AuditQueue.js"
import type { AuditSigner, KeyLoadError } from "./AuditSigner.js"
import { loadPrivateKeyFile } from "./AuditSigner.js"
import { AuditSink } from "./AuditSink.js"
import * as DeadLetters from "./DeadLetters.js"
import { runMigrations } from "./internal/migrations.js"
import { driverError, sqlite } from "./internal/sqlDialect.js"
import type { Synchronous } from "./internal/sqlDialect.js"
import * as SqlAuditSink from "./SqlAuditSink.js"

/**
 * The ledger database could not be opened at `path`. `reason`:
 * - `missingDirectory`: the directory that should hold the file does not exist
 * - `notADirectory`: a component of the path that should be a directory is a file
 * - `isADirectory`: the path names a directory, not a database file
 * - `notWritable`: the file, or its directory (SQLite writes `-wal` and `-shm` files next to it), is not writable
 * - `openFailed`: SQLite refused the file (e.g. not a database)
 */
export class LedgerOpenError extends Schema.TaggedError<LedgerOpenError>()("LedgerOpenError", {
  path: Schema.String,
  reason: Schema.Literal("missingDirectory", "notADirectory", "isADirectory", "notWritable", "openFailed"),
  detail: Schema.String
}) {
  override get message(): string {
    return `cannot open the audit ledger at ${this.path}: ${this.detail}`
  }
}

export interface SqliteOptions {
  /** The SQLite database file; created (with the schema) when missing, its directory must exist. */
  readonly filename: string
  /** Signs every row; without one, rows are `unsigned`. */
  readonly signer?: AuditSigner | undefined
  /** SQLite `synchronous`; default FULL (an event counts as appended once it is durable). */
  readonly synchronous?: Synchronous | undefined
  /** SQLite `busy_timeout`; default 5 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /** See `SqlAuditSink.Options.retrySchedule`. */
  readonly retrySchedule?: SqlAuditSink.Options["retrySchedule"]
  /** See `AuditQueue.Options`. */
  readonly maxRestarts?: number | undefined
  /** See `AuditQueue.Options`: how long closing the scope waits for queued events to reach the ledger. */
  readonly shutdownDrainTimeout?: Duration.DurationInput | undefined
  /** See `AuditQueue.Options`: the most events one write transaction takes (group commit); default 512. */
  readonly maxBatch?: number | undefined
  /** See `AuditQueue.Options`: the `queue_id` tag of the queue's metrics. */
  readonly queueId?: string | undefined
  /** See `AuditQueue.Options`: the delay before each restart of the drainer. */
  readonly restartSchedule?: AuditQueue.Options["restartSchedule"] | undefined
  /** See `AuditQueue.Options`: the delay between attempts while the database cannot be written. */
  readonly stallSchedule?: AuditQueue.Options["stallSchedule"] | undefined
  /** See `SqlAuditSink.Options`: payload bytes one write transaction may hold. */
  readonly maxTransactionBytes?: number | undefined
  /**
   * Replay pending dead letters (`DeadLetters.replayDeadLetters`) when the layer starts, before the queue
   * accepts events, so they land ahead of new ones. Dead letters that still fail stay pending and are
   * logged. Default false.
   */
  readonly replayDeadLettersOnStart?: boolean | undefined
}

export type LedgerServices =
  | SqlClient.SqlClient
  | SqliteClient.SqliteClient
  | SqlAuditSink.SqlAuditSink
  | AuditSink
  | AuditQueue.AuditQueue

const errnoCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

const statOf = (path: string) =>
  Effect.tryPromise({ try: () => stat(path), catch: (cause) => errnoCode(cause) ?? String(cause) }).pipe(
    Effect.map(Option.some),
    Effect.catchIf((code) => code === "ENOENT", () => Effect.succeedNone)
  )

const isWritable = (path: string) =>
  Effect.tryPromise(() => access(path, fsConstants.R_OK | fsConstants.W_OK)).pipe(
    Effect.as(true),
    Effect.orElseSucceed(() => false)
  )

/**
 * Checks that `filename` can hold a SQLite database before the driver opens it: the driver would
 * otherwise throw an untyped error, or create a file where none should be.
 */
export const checkDatabasePath = (filename: string): Effect.Effect<void, LedgerOpenError> => {
  if (filename === ":memory:" || filename === "") return Effect.void
  const path = resolve(filename)
  const fail = (reason: LedgerOpenError["reason"], detail: string) =>
    Effect.fail(new LedgerOpenError({ path, reason, detail }))
  const fromStatError = (code: string) =>
    code === "ENOTDIR"
      ? fail("notADirectory", "a component of the path is a file, not a directory")
      : fail("notWritable", `cannot inspect the path (${code})`)
  return Effect.gen(function*() {
    const file = yield* statOf(path).pipe(Effect.catchAll(fromStatError))
    if (Option.isSome(file)) {
      if (file.value.isDirectory()) return yield* fail("isADirectory", "the path is a directory")
      if (!file.value.isFile()) return yield* fail("openFailed", "the path is not a regular file")
      if (!(yield* isWritable(path))) return yield* fail("notWritable", "the database file is not writable")
    }
    const directory = dirname(path)
    const dir = yield* statOf(directory).pipe(Effect.catchAll(fromStatError))
    if (Option.isNone(dir)) return yield* fail("missingDirectory", `the directory ${directory} does not exist`)
    if (!dir.value.isDirectory()) return yield* fail("notADirectory", `${directory} is not a directory`)
    if (!(yield* isWritable(directory))) {
      return yield* fail("notWritable", `the directory ${directory} is not writable`)
    }
  })
}

/** The SQLite client on `filename`, with the ledger's connection settings, migrated to the current schema. */
export const layerSqliteClient = (
  options: Pick<SqliteOptions, "filename" | "synchronous" | "busyTimeout">
): Layer.Layer<SqlClient.SqlClient | SqliteClient.SqliteClient, LedgerOpenError | SqlError | MigrationError> => {
  const path = resolve(options.filename)
  const openFailed = (detail: string) => new LedgerOpenError({ path, reason: "openFailed", detail })
  // The driver throws (a defect) when it cannot open the file or the file is not a database.
  const client = SqliteClient.layer({ filename: options.filename }).pipe(
    Layer.catchAllCause((cause): Layer.Layer<SqlClient.SqlClient | SqliteClient.SqliteClient, LedgerOpenError> =>
      Layer.failCause(Option.match(Cause.dieOption(cause), {
        onNone: () => Cause.map(cause, (error) => openFailed(error.message)),
        onSome: (defect) =>
          Cause.fail(openFailed(Option.match(driverError(defect), {
            onNone: () => String(defect),
            onSome: (d) => `${d.code}: ${d.message}`
          })))
      }))
    )
  )
  const configured = Layer.effectDiscard(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.zipRight(
        sqlite.configure(sql, {
          synchronous: options.synchronous ?? "FULL",
          busyTimeout: Duration.decode(options.busyTimeout ?? SqlAuditSink.DEFAULT_BUSY_TIMEOUT)
        }),
        runMigrations
      ))
  )
  // The path check runs before the driver can create anything.
  return Layer.unwrapEffect(Effect.as(checkDatabasePath(options.filename), Layer.provideMerge(configured, client)))
}

/**
 * The whole ledger on a SQLite file: `SqlClient` (migrated), `SqlAuditSink`, `AuditSink` and `AuditQueue`.
 * Fails with `LedgerOpenError` naming the path when the file cannot be a database, before anything is
 * created. Closing the scope flushes the queue into the ledger (bounded by `shutdownDrainTimeout`), then
 * closes the database.
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<LedgerServices, LedgerOpenError | SqlError | MigrationError | ParseResult.ParseError> => {
  const sink = SqlAuditSink.layer({
    signer: options.signer,
    synchronous: options.synchronous,
    busyTimeout: options.busyTimeout,
    retrySchedule: options.retrySchedule,
    maxTransactionBytes: options.maxTransactionBytes
  })
  // Built last, so released first: the queue's finalizer flushes into the sink while the client is open.
  const queue = Layer.scoped(
    AuditQueue.AuditQueue,
    Effect.flatMap(AuditSink, (sink) =>
      AuditQueue.make({
        sink,
        ...(options.maxRestarts === undefined ? {} : { maxRestarts: options.maxRestarts }),
        ...(options.shutdownDrainTimeout === undefined ? {} : { shutdownDrainTimeout: options.shutdownDrainTimeout }),
        ...(options.maxBatch === undefined ? {} : { maxBatch: options.maxBatch }),
        ...(options.queueId === undefined ? {} : { queueId: options.queueId }),
        ...(options.restartSchedule === undefined ? {} : { restartSchedule: options.restartSchedule }),
        ...(options.stallSchedule === undefined ? {} : { stallSchedule: options.stallSchedule })
      }))
  )
  const replayOnStart = options.replayDeadLettersOnStart === true
    ? Layer.effectDiscard(Effect.flatMap(DeadLetters.replayDeadLetters(), (result) =>
      Effect.zipRight(
        Effect.logInfo(`agent-ledger: replayed ${result.replayed} of ${result.pending} dead letters on start`),
        Effect.forEach(result.failed, (failed) =>
          Effect.logWarning("agent-ledger: dead letter still pending after replay").pipe(
            Effect.annotateLogs({ dlqId: failed.dlqId, eventId: failed.eventId, reason: failed.reason })
          ), { discard: true })
      )))
    : Layer.empty
  return queue.pipe(
    Layer.provide(replayOnStart),
    Layer.provideMerge(sink),
    Layer.provideMerge(layerSqliteClient(options))
  )
}

/**
 * `layerSqlite` configured the Effect way, from a `Config` (by default the environment, through the
 * application's `ConfigProvider`):
 *
 * | key (env)                                  | option                 | default          |
 * | ------------------------------------------ | ---------------------- | ---------------- |
 * | `AGENT_LEDGER_DB`                          | `filename`             | required         |
 * | `AGENT_LEDGER_PRIVATE_KEY_FILE`            | `signer` (PKCS#8 PEM)  | unsigned         |
 * | `AGENT_LEDGER_SYNCHRONOUS` (FULL, NORMAL)  | `synchronous`          | FULL             |
 * | `AGENT_LEDGER_BUSY_TIMEOUT`                | `busyTimeout`          | 5 seconds        |
 * | `AGENT_LEDGER_QUEUE_ID`                    | `queueId`              | a fresh UUID v7  |
 * | `AGENT_LEDGER_SHUTDOWN_DRAIN_TIMEOUT`      | `shutdownDrainTimeout` | 5 seconds        |
 * | `AGENT_LEDGER_MAX_BATCH`                   | `maxBatch`             | 512              |
 * | `AGENT_LEDGER_MAX_RESTARTS`                | `maxRestarts`          | unlimited        |
 *
 * Durations are Effect duration strings (`"10 seconds"`). A missing or invalid value fails the layer with
 * the `ConfigError` naming the key; an unreadable key file with `KeyLoadError`.
 */
export const sqliteConfig: Config.Config<SqliteConfig> = Config.all({
  filename: Config.string("DB"),
  privateKeyFile: Config.option(Config.string("PRIVATE_KEY_FILE")),
  synchronous: Config.literal("FULL", "NORMAL")("SYNCHRONOUS").pipe(Config.withDefault("FULL" as const)),
  busyTimeout: Config.option(Config.duration("BUSY_TIMEOUT")),
  queueId: Config.option(Config.string("QUEUE_ID")),
  shutdownDrainTimeout: Config.option(Config.duration("SHUTDOWN_DRAIN_TIMEOUT")),
  maxBatch: Config.option(
    Config.integer("MAX_BATCH").pipe(Config.validate({
      message: "expected a positive integer",
      validation: (n) => n >= 1
    }))
  ),
  maxRestarts: Config.option(Config.integer("MAX_RESTARTS"))
}).pipe(Config.nested("AGENT_LEDGER"))

export interface SqliteConfig {
  readonly filename: string
  readonly privateKeyFile: Option.Option<string>
  readonly synchronous: Synchronous
  readonly busyTimeout: Option.Option<Duration.Duration>
  readonly queueId: Option.Option<string>
  readonly shutdownDrainTimeout: Option.Option<Duration.Duration>
  readonly maxBatch: Option.Option<number>
  readonly maxRestarts: Option.Option<number>
}

/** `layerSqlite` with its options read from `config` (default: `sqliteConfig`, the environment). */
export const layerSqliteConfig = (
  config: Config.Config<SqliteConfig> = sqliteConfig
): Layer.Layer<
  LedgerServices,
  | ConfigError.ConfigError
  | KeyLoadError
  | LedgerOpenError
  | SqlError
  | MigrationError
  | ParseResult.ParseError
> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const c = yield* config
    const signer = Option.isSome(c.privateKeyFile)
      ? yield* loadPrivateKeyFile(c.privateKeyFile.value)
      : undefined
    return layerSqlite({
      filename: c.filename,
      signer,
      synchronous: c.synchronous,
      busyTimeout: Option.getOrUndefined(c.busyTimeout),
      queueId: Option.getOrUndefined(c.queueId),
      shutdownDrainTimeout: Option.getOrUndefined(c.shutdownDrainTimeout),
      maxBatch: Option.getOrUndefined(c.maxBatch),
      maxRestarts: Option.getOrUndefined(c.maxRestarts)
    })
  }))
