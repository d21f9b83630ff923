/**
 * The audit ledger in one Layer: a SQLite file, migrated to the current schema, the SQL sink writing the
 * signed hash chain into it, and the `AuditQueue` draining refusals into that sink. An application needs
 * exactly one `Layer.provide(AuditLedger.layerSqlite({ filename }))`.
 *
 * Shutdown order is part of the contract: closing the layer's scope first closes the queue and flushes
 * what is queued into the ledger, and only then closes the database connection.
 */
import type { MigrationError } from "@effect/sql/Migrator"
import type { SqlError } from "@effect/sql/SqlError"
import type { ParseResult } from "effect"
import { Config, ConfigError, Effect, Either, Layer, Option, Redacted } from "effect"
import type { Duration } from "effect"
import type { KeyObject } from "node:crypto"
import type * as ArgumentStorage from "./audit/ArgumentStorage.js"
import * as AuditQueue from "./audit/AuditQueue.js"
import type { AuditSigner, KeyLoadError } from "./audit/AuditSigner.js"
import { fromPrivateKeyPem, loadPrivateKeyFile } from "./audit/AuditSigner.js"
import { AuditSink } from "./audit/AuditSink.js"
import type { Synchronous } from "./internal/sqlDialect.js"
import * as DeadLetters from "./ledger/DeadLetters.js"
import * as JournalStore from "./ledger/JournalStore.js"
import * as LedgerSql from "./ledger/LedgerSql.js"
import type { LedgerOpenError } from "./ledger/LedgerSql.js"
import type { WriterStartError } from "./ledger/LedgerWriter.js"
import * as LedgerWriter from "./ledger/LedgerWriter.js"
import * as SqlAuditSink from "./ledger/SqlAuditSink.js"
import * as LedgerTransparency from "./transparency/LedgerTransparency.js"

export { checkDatabasePath, LedgerOpenError } from "./ledger/LedgerSql.js"
export { WriterStartError } from "./ledger/LedgerWriter.js"

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
  /** See `AuditQueue.Options`: where events that reach neither the ledger nor the dead letters are written. */
  readonly lostEvents?: AuditQueue.Options["lostEvents"] | undefined
  /** See `AuditQueue.Options`: the delay between attempts while the database cannot be written. */
  readonly stallSchedule?: AuditQueue.Options["stallSchedule"] | undefined
  /** See `SqlAuditSink.Options`: payload bytes one write transaction may hold. */
  readonly maxTransactionBytes?: number | undefined
  /**
   * Run the ledger's writes (row hashes, signatures, inserts, the commit's fsync) in a worker thread with
   * its own connection (`LedgerWriter`), so the guard's thread never waits on them. Default true; the
   * writes stay on the caller's thread for `:memory:` and for a signer not made by `AuditSigner` (its key
   * cannot be handed over). On PostgreSQL the connection stays on the caller's thread (an async client) and
   * the rows' hashes and signatures are computed in the thread (`LedgerWriter.makeRowHasher`).
   */
  readonly writerThread?: boolean | undefined
  /**
   * Replay pending dead letters (`DeadLetters.replayDeadLetters`) when the layer starts, before the queue
   * accepts events, so they land ahead of new ones. Dead letters that still fail (or that the signer did not
   * sign, docs/FORMAT.md "Dead-letter signature") stay pending and are logged; a replay that fails as a
   * whole is logged and never stops the layer from starting. Default false.
   */
  readonly replayDeadLettersOnStart?: boolean | undefined
  /**
   * Signed checkpoints of the ledger as a transparency log (docs/FORMAT.md, "Transparency"), made every
   * `every` by a background fiber while the layer is open (and once more when it closes), signed with
   * `signer`, kept in the `checkpoints` table. Needs `signer`. Default: none (run `agent-ledger checkpoint`).
   * It signs only rows signed by `signer` or by a key in `publicKeys`; it never adopts unsigned rows (a
   * round that meets one logs the refusal, naming the row, until `agent-ledger checkpoint
   * --adopt-unsigned-rows` is run once: docs/OPERATIONS.md, "Threat model").
   */
  readonly checkpoints?: CheckpointOptions | undefined
  /**
   * What rows keep of the arguments of tool calls built with `AuditEvent.toolCall` (the layer provides
   * `ArgumentStorage` with this ledger's salt): per tool, by glob, which top-level fields are kept as given,
   * as salted digests or not at all, in the vocabulary of the guard policy's `argumentStorage`. Default:
   * the salted digest and size of the arguments only; `ArgumentStorage.storeAll` keeps every field.
   */
  readonly argumentStorage?: ArgumentStorage.Tools | undefined
}

/** Signed checkpoints made while the layer is open (`SqliteOptions.checkpoints`). */
export interface CheckpointOptions {
  /** The log's origin, the checkpoint's first line and the signing key's name. */
  readonly origin: string
  /** How often; default 1 minute. */
  readonly every?: Duration.DurationInput | undefined
  /** The ledger's previous (rotated-out) public keys, whose row signatures still count. */
  readonly publicKeys?: ReadonlyArray<KeyObject> | undefined
}

/**
 * What `layerSqlite` provides. Not the generic `SqlClient`: the ledger's connection is its own
 * (`LedgerSql`), so an application's `@effect/sql` client and the ledger never stand in for each other.
 */
export type LedgerServices =
  | LedgerSql.LedgerSql
  | ArgumentStorage.ArgumentStorage
  | SqlAuditSink.SqlAuditSink
  | AuditSink
  | AuditQueue.AuditQueue
  | JournalStore.JournalStore

/**
 * The whole ledger on a SQLite file: `LedgerSql` (a private, migrated connection), `SqlAuditSink`,
 * `AuditSink` and `AuditQueue`. `verifyLedger`, `DeadLetters`, `LedgerStats` and `LedgerExport` run on it.
 *
 * Errors while building it: `LedgerOpenError` naming the path when the file cannot be a database (checked
 * before anything is created), `SqlError` when a connection setting or query fails, `MigrationError` when
 * the schema cannot be migrated (e.g. a newer agent-ledger wrote the file), `ParseError` when the
 * chain's head row is malformed, `WriterStartError` when the writer thread cannot start (its entry is
 * missing, it cannot open the file or load the key): the guard never starts on a ledger it cannot write. Closing the scope flushes the queue into the ledger (bounded by `shutdownDrainTimeout`), then
 * closes the database.
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<
  LedgerServices,
  LedgerOpenError | SqlError | MigrationError | WriterStartError | ParseResult.ParseError
> =>
  layerOn(
    LedgerSql.layerSqlite(options),
    options,
    options.writerThread !== false && LedgerWriter.supports(options)
      ? LedgerWriter.layerSink({
        filename: options.filename,
        signer: options.signer,
        synchronous: options.synchronous,
        busyTimeout: options.busyTimeout,
        retrySchedule: options.retrySchedule,
        maxTransactionBytes: options.maxTransactionBytes
      })
      : undefined
  )

/** The options of the ledger on PostgreSQL: the sink's and the queue's, as for SQLite. */
export interface PgOptions extends Omit<SqliteOptions, "filename" | "synchronous" | "busyTimeout"> {
  /** `postgres://user@host:port/database` */
  readonly url: string
  /** Connections in the pool (default 4). */
  readonly maxConnections?: number | undefined
}

/**
 * The whole ledger on PostgreSQL, for a fleet of guard instances writing one chain: the same tables, row
 * format, sink, queue, verifier, dead letters and CLI as on SQLite. Every write transaction takes a
 * transaction-scoped advisory lock on the chain before it reads the head, so writers queue up instead of
 * racing; group commit takes it once per batch. Fails with `LedgerOpenError` when the server cannot be
 * reached.
 */
export const layerPg = (
  options: PgOptions
): Layer.Layer<
  LedgerServices,
  LedgerOpenError | SqlError | MigrationError | WriterStartError | ParseResult.ParseError
> =>
  layerOn(
    LedgerSql.layerPg({ url: options.url, maxConnections: options.maxConnections }),
    options,
    options.writerThread !== false && LedgerWriter.signerCanMove(options.signer)
      ? LedgerWriter.layerHashingSink({
        signer: options.signer,
        retrySchedule: options.retrySchedule,
        maxTransactionBytes: options.maxTransactionBytes
      })
      : undefined
  )

/** `layerPg` for a `postgres://` URL, else `layerSqlite` for a file name: what the CLI's `--db` takes. */
export const layerFor = (
  db: string,
  options: Omit<SqliteOptions, "filename"> = {}
): Layer.Layer<
  LedgerServices,
  LedgerOpenError | SqlError | MigrationError | WriterStartError | ParseResult.ParseError
> => LedgerSql.isPostgresUrl(db) ? layerPg({ ...options, url: db }) : layerSqlite({ ...options, filename: db })

/**
 * The sink and the queue on a ledger database; the sink writes on the database's connection unless
 * `threadSink` (the writer thread's) is given.
 */
const layerOn = <E>(
  database: Layer.Layer<LedgerSql.LedgerSql, E>,
  options: Omit<SqliteOptions, "filename">,
  threadSink?: Layer.Layer<SqlAuditSink.SqlAuditSink | AuditSink, SqlError | WriterStartError, LedgerSql.LedgerSql>
): Layer.Layer<LedgerServices, E | SqlError | WriterStartError | ParseResult.ParseError> => {
  const sink = threadSink ?? SqlAuditSink.layer({
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
        ...(options.stallSchedule === undefined ? {} : { stallSchedule: options.stallSchedule }),
        ...(options.lostEvents === undefined ? {} : { lostEvents: options.lostEvents })
      }))
  )
  // A replay that fails as a whole (an unreadable table, a bug) is logged: the ledger still starts.
  const replayOnStart = options.replayDeadLettersOnStart === true
    ? Layer.effectDiscard(
      Effect.flatMap(DeadLetters.replayDeadLetters(), (result) =>
        Effect.zipRight(
          Effect.logInfo(`agent-ledger: replayed ${result.replayed} of ${result.pending} dead letters on start`),
          Effect.forEach(result.failed, (failed) =>
            Effect.logWarning("agent-ledger: dead letter still pending after replay").pipe(
              Effect.annotateLogs({ dlqId: failed.dlqId, eventId: failed.eventId, reason: failed.reason })
            ), { discard: true })
        )).pipe(
          Effect.catchAll((error) => Effect.logWarning("agent-ledger: replaying dead letters on start failed", error)),
          Effect.catchAllDefect((defect) =>
            Effect.logError("agent-ledger: replaying dead letters on start failed (a defect)", defect)
          )
        )
    )
    : Layer.empty
  // Beside the queue: closing flushes queued journal entries while the sink and the database are open.
  const journalStore = JournalStore.layer({
    ...(options.maxBatch === undefined ? {} : { maxBatch: options.maxBatch }),
    ...(options.stallSchedule === undefined ? {} : { stallSchedule: options.stallSchedule }),
    ...(options.shutdownDrainTimeout === undefined ? {} : { shutdownDrainTimeout: options.shutdownDrainTimeout })
  })
  return opening(
    checkpointer(options).pipe(
      Layer.provideMerge(queue),
      Layer.provideMerge(journalStore),
      Layer.provideMerge(LedgerSql.layerArgumentStorage(options.argumentStorage)),
      Layer.provide(replayOnStart),
      Layer.provideMerge(sink),
      Layer.provideMerge(database)
    ),
    {
      "agent_ledger.queue_id": options.queueId ?? AuditQueue.DEFAULT_QUEUE_ID,
      "agent_ledger.writer_thread": threadSink !== undefined
    }
  )
}

/** The span around opening a ledger (docs/OPERATIONS.md, "Traces"). */
export const SPAN_OPEN = "agent_ledger.ledger.open"

/** The root span of each checkpoint the layer's background fiber makes. */
export const SPAN_CHECKPOINT = "agent_ledger.transparency.checkpoint"

/**
 * `layer` built inside one `SPAN_OPEN` span that ends when the layer is built (not when it is released):
 * the connection, the migrations, the settings, the head read and a replay on start are its children, one
 * trace instead of a root trace per statement. The fibers the layer forks (the drainer, checkpoints) make
 * root spans of their own.
 */
const opening = <A, E, R>(
  layer: Layer.Layer<A, E, R>,
  attributes: Record<string, unknown>
): Layer.Layer<A, E, R> =>
  Layer.scopedContext(
    Effect.useSpan(
      SPAN_OPEN,
      { kind: "internal", attributes },
      (span) => Layer.build(Layer.withParentSpan(layer, span))
    )
  )

/**
 * The checkpoint fiber of `options.checkpoints`: extends the stored tree, signs, keeps the checkpoint, every
 * interval on `Clock`; a failed round is logged and the next one tries again. Built beside the queue, so
 * its last checkpoint (made when the layer closes, after the queue's flush) covers every flushed row.
 */
const checkpointer = (
  options: Omit<SqliteOptions, "filename">
): Layer.Layer<never, never, LedgerSql.LedgerSql | AuditQueue.AuditQueue> => {
  const config = options.checkpoints
  const signer = options.signer
  if (config === undefined) return Layer.empty
  if (signer === undefined) {
    return Layer.effectDiscard(Effect.logWarning("agent-ledger: checkpoints need a signer; none are made"))
  }
  const once = LedgerTransparency.checkpointNow(config.origin, signer, { publicKeys: config.publicKeys }).pipe(
    Effect.tap(({ size }) => Effect.annotateCurrentSpan("agent_ledger.tree_size", size)),
    Effect.withSpan(SPAN_CHECKPOINT, { root: true, attributes: { "agent_ledger.origin": config.origin } }),
    Effect.catchAll((error) => Effect.logWarning("agent-ledger: a checkpoint could not be made", error))
  )
  return Layer.scopedDiscard(Effect.gen(function*() {
    // Released before the queue (built after it): wait for what is queued, then a last checkpoint.
    const queue = yield* AuditQueue.AuditQueue
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        queue.drainPending(options.shutdownDrainTimeout ?? AuditQueue.DEFAULT_SHUTDOWN_DRAIN_TIMEOUT),
        once
      )
    )
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(config.every ?? "1 minute"), once)))
  }))
}

// ---------------------------------------------------------------------------------------------------------
// From a Config
// ---------------------------------------------------------------------------------------------------------

/** Keys read as given, not nested: `ConfigProvider.fromEnv()` and `fromMap` (any `pathDelim`) find them alike. */
const positiveInteger = (key: string) =>
  Config.integer(key).pipe(Config.validate({ message: "expected a positive integer", validation: (n) => n >= 1 }))

const common = {
  privateKeyFile: Config.option(Config.string("AGENT_LEDGER_PRIVATE_KEY_FILE")),
  synchronous: Config.literal("FULL", "NORMAL")("AGENT_LEDGER_SYNCHRONOUS").pipe(
    Config.withDefault("FULL" as const)
  ),
  busyTimeout: Config.option(Config.duration("AGENT_LEDGER_BUSY_TIMEOUT")),
  queueId: Config.option(Config.string("AGENT_LEDGER_QUEUE_ID")),
  shutdownDrainTimeout: Config.option(Config.duration("AGENT_LEDGER_SHUTDOWN_DRAIN_TIMEOUT")),
  maxBatch: Config.option(positiveInteger("AGENT_LEDGER_MAX_BATCH")),
  maxRestarts: Config.option(Config.integer("AGENT_LEDGER_MAX_RESTARTS"))
}

/**
 * `layerConfig`'s settings, read from the application's `ConfigProvider` (by default the environment):
 *
 * | key (env)                                  | option                              | default          |
 * | ------------------------------------------ | ----------------------------------- | ---------------- |
 * | `AGENT_LEDGER_DB`                          | a SQLite file, or a `postgres://` URL (PostgreSQL) | required |
 * | `AGENT_LEDGER_PRIVATE_KEY_FILE`            | `signer` from a PKCS#8 PEM file     | unsigned         |
 * | `AGENT_LEDGER_PRIVATE_KEY`                 | `signer` from the PEM itself (a secret store's env) | unsigned |
 * | `AGENT_LEDGER_CHECKPOINT_ORIGIN`           | `checkpoints.origin` (needs a key)  | no checkpoints   |
 * | `AGENT_LEDGER_CHECKPOINT_EVERY`            | `checkpoints.every`                 | 1 minute         |
 * | `AGENT_LEDGER_PG_MAX_CONNECTIONS`          | `maxConnections` (PostgreSQL)       | 4                |
 * | `AGENT_LEDGER_SYNCHRONOUS` (FULL, NORMAL)  | `synchronous` (SQLite)              | FULL             |
 * | `AGENT_LEDGER_BUSY_TIMEOUT`                | `busyTimeout` (SQLite)              | 5 seconds        |
 * | `AGENT_LEDGER_QUEUE_ID`                    | `queueId`                           | `"default"`      |
 * | `AGENT_LEDGER_SHUTDOWN_DRAIN_TIMEOUT`      | `shutdownDrainTimeout`              | 5 seconds        |
 * | `AGENT_LEDGER_MAX_BATCH`                   | `maxBatch`                          | 512              |
 * | `AGENT_LEDGER_MAX_RESTARTS`                | `maxRestarts`                       | unlimited        |
 *
 * The keys are whole names, not nested paths, so `ConfigProvider.fromMap(new Map([["AGENT_LEDGER_DB", …]]))`
 * finds them without `pathDelim: "_"` (and with it). Durations are Effect duration strings
 * (`"10 seconds"`). Refused with a `ConfigError` naming the keys: both key settings at once, a checkpoint
 * setting without a key, `CHECKPOINT_EVERY` without `CHECKPOINT_ORIGIN`.
 */
export const config: Config.Config<LedgerConfig> = Config.all({
  db: Config.string("AGENT_LEDGER_DB"),
  privateKey: Config.option(Config.redacted("AGENT_LEDGER_PRIVATE_KEY")),
  checkpointOrigin: Config.option(Config.string("AGENT_LEDGER_CHECKPOINT_ORIGIN")),
  checkpointEvery: Config.option(Config.duration("AGENT_LEDGER_CHECKPOINT_EVERY")),
  pgMaxConnections: Config.option(positiveInteger("AGENT_LEDGER_PG_MAX_CONNECTIONS")),
  ...common
}).pipe(Config.mapOrFail((c) => {
  const refuse = (message: string) => Either.left(ConfigError.InvalidData([], message))
  if (Option.isSome(c.privateKey) && Option.isSome(c.privateKeyFile)) {
    return refuse("AGENT_LEDGER_PRIVATE_KEY and AGENT_LEDGER_PRIVATE_KEY_FILE are both set: give one")
  }
  if (Option.isSome(c.checkpointEvery) && Option.isNone(c.checkpointOrigin)) {
    return refuse("AGENT_LEDGER_CHECKPOINT_EVERY needs AGENT_LEDGER_CHECKPOINT_ORIGIN")
  }
  if (Option.isSome(c.checkpointOrigin) && Option.isNone(c.privateKey) && Option.isNone(c.privateKeyFile)) {
    return refuse("AGENT_LEDGER_CHECKPOINT_ORIGIN needs a key to sign with: set AGENT_LEDGER_PRIVATE_KEY_FILE")
  }
  return Either.right(c)
}))

export interface LedgerConfig {
  /** A SQLite file, or a `postgres://` (`postgresql://`) URL. */
  readonly db: string
  readonly privateKeyFile: Option.Option<string>
  readonly privateKey: Option.Option<Redacted.Redacted<string>>
  readonly checkpointOrigin: Option.Option<string>
  readonly checkpointEvery: Option.Option<Duration.Duration>
  readonly pgMaxConnections: Option.Option<number>
  readonly synchronous: Synchronous
  readonly busyTimeout: Option.Option<Duration.Duration>
  readonly queueId: Option.Option<string>
  readonly shutdownDrainTimeout: Option.Option<Duration.Duration>
  readonly maxBatch: Option.Option<number>
  readonly maxRestarts: Option.Option<number>
}

/** Why a ledger layer read from configuration fails to build. */
export type ConfigLayerError =
  | ConfigError.ConfigError
  | KeyLoadError
  | LedgerOpenError
  | SqlError
  | MigrationError
  | WriterStartError
  | ParseResult.ParseError

type Common = Omit<LedgerConfig, "db" | "privateKey" | "checkpointOrigin" | "checkpointEvery" | "pgMaxConnections">

/** The options both databases take, from the common settings. */
const optionsOf = (c: Common, signer: AuditSigner | undefined) => ({
  signer,
  queueId: Option.getOrUndefined(c.queueId),
  shutdownDrainTimeout: Option.getOrUndefined(c.shutdownDrainTimeout),
  maxBatch: Option.getOrUndefined(c.maxBatch),
  maxRestarts: Option.getOrUndefined(c.maxRestarts)
})

/**
 * The ledger from `config` (default: `AuditLedger.config`, the environment): `layerPg` when
 * `AGENT_LEDGER_DB` is a `postgres://` URL, else `layerSqlite`, with the signer and checkpoints it names.
 * A missing or invalid setting fails the layer with the `ConfigError` naming the key; an unreadable key
 * with `KeyLoadError`.
 */
export const layerConfig = (
  ledgerConfig: Config.Config<LedgerConfig> = config
): Layer.Layer<LedgerServices, ConfigLayerError> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const c = yield* ledgerConfig
    const signer = Option.isSome(c.privateKey)
      ? yield* fromPrivateKeyPem(Redacted.value(c.privateKey.value))
      : Option.isSome(c.privateKeyFile)
      ? yield* loadPrivateKeyFile(c.privateKeyFile.value)
      : undefined
    const options = {
      ...optionsOf(c, signer),
      checkpoints: Option.getOrUndefined(Option.map(c.checkpointOrigin, (origin) => ({
        origin,
        every: Option.getOrUndefined(c.checkpointEvery)
      })))
    }
    return LedgerSql.isPostgresUrl(c.db)
      ? layerPg({ ...options, url: c.db, maxConnections: Option.getOrUndefined(c.pgMaxConnections) })
      : layerSqlite({
        ...options,
        filename: c.db,
        synchronous: c.synchronous,
        busyTimeout: Option.getOrUndefined(c.busyTimeout)
      })
  }))

/**
 * The SQLite subset of `config` (`AGENT_LEDGER_DB` as `filename`, the key file and the common settings).
 * Prefer `config`, which also takes PostgreSQL URLs, a key from the environment and checkpoints.
 */
export const sqliteConfig: Config.Config<SqliteConfig> = Config.all({
  filename: Config.string("AGENT_LEDGER_DB"),
  ...common
})

export interface SqliteConfig extends Common {
  readonly filename: string
}

/** `layerSqlite` with its options read from `config` (default: `sqliteConfig`, the environment); see `layerConfig`. */
export const layerSqliteConfig = (
  config: Config.Config<SqliteConfig> = sqliteConfig
): Layer.Layer<LedgerServices, ConfigLayerError> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const c = yield* config
    const signer = Option.isSome(c.privateKeyFile)
      ? yield* loadPrivateKeyFile(c.privateKeyFile.value)
      : undefined
    return layerSqlite({
      ...optionsOf(c, signer),
      filename: c.filename,
      synchronous: c.synchronous,
      busyTimeout: Option.getOrUndefined(c.busyTimeout)
    })
  }))
