/**
 * The ledger's own database connection. Every module that reads or writes the ledger (`SqlAuditSink`,
 * `verifyLedger`, `DeadLetters`, `LedgerStats`, `LedgerExport`) depends on this tag, never on the generic
 * `@effect/sql` `SqlClient`, so an application that uses `@effect/sql` for its own data keeps its
 * `SqlClient`: the ledger does not run on the application's database, and the application's statements do
 * not land in the ledger file, whatever the order of `Layer.merge`.
 *
 * Two ways to get one:
 * - `layerSqlite({ filename })`: a private SQLite connection on the ledger file (what
 *   `AuditLedger.layerSqlite` uses). Transactions the application opens on its own client are not seen
 *   by the ledger's statements.
 * - `fromSqlClient`: the application's own `SqlClient` is the ledger's database (one database for both).
 *   Then a ledger write made inside the application's `sql.withTransaction` joins that transaction.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Cause, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import { constants as fsConstants } from "node:fs"
import { access, stat } from "node:fs/promises"
import { dirname, resolve } from "node:path"
import * as ArgumentStorage from "../audit/ArgumentStorage.js"
import { runMigrations } from "../internal/migrations.js"
import { driverError, sqlite } from "../internal/sqlDialect.js"
import type { Synchronous } from "../internal/sqlDialect.js"

/** The ledger's database: its client, and whether that client is the application's own. */
export interface Service {
  readonly client: SqlClient.SqlClient
  /**
   * True when the client is the application's (`fromSqlClient`): an application transaction on it is the
   * ledger's too. False for a private connection, whose statements never run on a connection of an
   * application transaction (that one belongs to another database).
   */
  readonly sharesApplicationTransactions: boolean
}

export class LedgerSql extends Context.Tag("agent-ledger/LedgerSql")<LedgerSql, Service>() {}

/** The context `effect` runs in on the ledger's database: `SqlClient` is the ledger's client. */
const ledgerContext = <R>(ledger: Service, context: Context.Context<R>): Context.Context<R> => {
  const own = ledger.sharesApplicationTransactions
    ? context
    : Context.omit(SqlClient.TransactionConnection)(context) as Context.Context<R>
  return Context.add(own, SqlClient.SqlClient, ledger.client) as Context.Context<R>
}

/**
 * Runs `effect` on `ledger`'s database: inside it, `SqlClient` is the ledger's client, and (for a
 * private connection) no application transaction is visible.
 */
export const runOn =
  (ledger: Service) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, SqlClient.SqlClient>> =>
    Effect.mapInputContext(
      effect as Effect.Effect<A, E, Exclude<R, SqlClient.SqlClient>>,
      (context: Context.Context<Exclude<R, SqlClient.SqlClient>>) => ledgerContext(ledger, context)
    )

/**
 * `runOn` with the ledger from context. For a private connection it hides every open transaction, the
 * ledger's own too: inside `client.withTransaction`, compose effects that do not call `use` again (a nested
 * `use` would wait for the connection the transaction holds).
 */
export const use = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, Exclude<R, SqlClient.SqlClient> | LedgerSql> =>
  Effect.flatMap(LedgerSql, (ledger) => runOn(ledger)(effect))

/**
 * The application's `SqlClient` as the ledger's database: one database for the application and the
 * ledger, and a ledger write inside the application's transaction joins it. The schema is not migrated
 * here (`AuditLedger` and the CLI do that); use `layerSqlite` for a ledger file of its own.
 */
export const fromSqlClient: Layer.Layer<LedgerSql, never, SqlClient.SqlClient> = Layer.effect(
  LedgerSql,
  Effect.map(SqlClient.SqlClient, (client) => ({ client, sharesApplicationTransactions: true }))
)

/**
 * Migrates the ledger's schema (tables `signed_events`, `signed_events_dlq`, `agent_ledger_migrations`) on
 * the ledger's database: what a `fromSqlClient` ledger needs once before the sink starts.
 */
export const migrate: Layer.Layer<never, SqlError | MigrationError, LedgerSql> = Layer.effectDiscard(use(runMigrations))

/**
 * The ledger's client published as the generic `SqlClient` as well, for code that queries the ledger file
 * directly (tests, one-off tools). Not part of `AuditLedger.layerSqlite`: an application that provides it
 * has made the ledger's database its default one, so its transactions on that client are the ledger's too
 * (the `LedgerSql` it provides says so).
 */
export const asSqlClient: Layer.Layer<SqlClient.SqlClient | LedgerSql, never, LedgerSql> = Layer.effectContext(
  Effect.map(LedgerSql, (ledger) =>
    Context.make(SqlClient.SqlClient, ledger.client).pipe(
      Context.add(LedgerSql, { client: ledger.client, sharesApplicationTransactions: true })
    ))
)

/**
 * The ledger's salt for argument hashes (a guard stores some tool arguments only as salted SHA-256): 32
 * random bytes as hex, made on first use and kept in `agent_ledger_settings`, so hashes of one value agree
 * across sessions of one ledger and differ between ledgers.
 */
export const argumentSalt: Effect.Effect<string, SqlError, LedgerSql> = use(Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const read = sql<{ value: string }>`SELECT value FROM agent_ledger_settings WHERE key = 'argument_salt'`
  // Made with the schema (migration 0008): read only, unless a database migrated elsewhere lacks it.
  const [stored] = yield* read
  if (stored !== undefined) return stored.value
  const fresh = randomBytes(32).toString("hex")
  yield* sql`INSERT INTO agent_ledger_settings (key, value) VALUES ('argument_salt', ${fresh})
    ON CONFLICT (key) DO NOTHING`
  const [row] = yield* read
  return row?.value ?? fresh
}))

/**
 * `ArgumentStorage` for tool calls the application builds (`AuditEvent.toolCall`): this ledger's salt
 * (`argumentSalt`) and `tools` (default: digest and size only). What `AuditLedger`'s layers provide; an
 * application that builds the ledger on its own client (`fromSqlClient`) provides it the same way.
 */
export const layerArgumentStorage = (
  tools?: ArgumentStorage.Tools | undefined
): Layer.Layer<ArgumentStorage.ArgumentStorage, SqlError, LedgerSql> =>
  Layer.effect(
    ArgumentStorage.ArgumentStorage,
    Effect.map(argumentSalt, (salt) => ArgumentStorage.make({ salt, tools }))
  )

// ---------------------------------------------------------------------------------------------------------
// A private SQLite connection
// ---------------------------------------------------------------------------------------------------------

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

/** The default SQLite `busy_timeout` of the ledger's connection. */
export const DEFAULT_BUSY_TIMEOUT: Duration.Duration = Duration.seconds(5)

export interface SqliteOptions {
  /** The SQLite database file; created (with the schema) when missing, its directory must exist. */
  readonly filename: string
  /** SQLite `synchronous`; default FULL (an event counts as appended once it is durable). */
  readonly synchronous?: Synchronous | undefined
  /** SQLite `busy_timeout`; default 5 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
}

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
    Effect.fail(new LedgerOpenError({ path: filename, reason, detail }))
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

/** `SqliteClient.layer` with the driver's throws (defects) turned into `LedgerOpenError` naming `path`. */
const sqliteClient = (
  config: SqliteClient.SqliteClientConfig,
  path: string
): Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, LedgerOpenError> => {
  const openFailed = (detail: string) => new LedgerOpenError({ path, reason: "openFailed", detail })
  return SqliteClient.layer(config).pipe(
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
}

/** A private connection built from `client`, published only as `LedgerSql`. */
const privately = <E1, E2>(
  client: Layer.Layer<SqlClient.SqlClient, E1>,
  setup: Effect.Effect<unknown, E2, SqlClient.SqlClient>
): Layer.Layer<LedgerSql, E1 | E2> =>
  Layer.scoped(
    LedgerSql,
    Effect.flatMap(Layer.build(client), (context) => {
      const ledger: Service = {
        client: Context.get(context, SqlClient.SqlClient),
        sharesApplicationTransactions: false
      }
      return Effect.as(runOn(ledger)(setup), ledger)
    })
  )

/**
 * A private SQLite connection on `filename`, with the ledger's connection settings (WAL, `synchronous`,
 * foreign keys, `busy_timeout`), migrated to the current schema. Fails with `LedgerOpenError` naming the
 * path, before anything is created, when the file cannot be a database.
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<LedgerSql, LedgerOpenError | SqlError | MigrationError> => {
  const setup = Effect.zipRight(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sqlite.configure(sql, {
        synchronous: options.synchronous ?? "FULL",
        busyTimeout: Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT)
      })),
    runMigrations
  )
  // The path check runs before the driver can create anything.
  return Layer.unwrapEffect(
    Effect.as(
      checkDatabasePath(options.filename),
      privately(sqliteClient({ filename: options.filename }, options.filename), setup)
    )
  )
}

// ---------------------------------------------------------------------------------------------------------
// A private PostgreSQL connection pool
// ---------------------------------------------------------------------------------------------------------

/** The advisory lock key that serializes migrations of one PostgreSQL database ("agmigrat" in ASCII). */
const MIGRATION_LOCK_KEY = "7018141398398034292"

/** Whether `db` names a PostgreSQL database (`postgres://` or `postgresql://` URL) rather than a file. */
export const isPostgresUrl = (db: string): boolean => /^postgres(ql)?:\/\//i.test(db)

export interface PgOptions {
  /** `postgres://user@host:port/database` */
  readonly url: string
  /** Connections in the pool; default 4 (one writes at a time: the chain is locked per transaction). */
  readonly maxConnections?: number | undefined
}

/** The URL without its password, for messages and logs. */
export const redactUrl = (url: string): string => url.replace(/(\/\/[^:/@]+):[^@/]*@/, "$1:***@")

/**
 * A private PostgreSQL pool on `url`, migrated to the current schema (the same tables as on SQLite, in
 * PostgreSQL types). Fails with `LedgerOpenError` (reason `openFailed`, the URL without its password) when
 * the server cannot be reached.
 */
export const layerPg = (options: PgOptions): Layer.Layer<LedgerSql, LedgerOpenError | SqlError | MigrationError> => {
  const where = redactUrl(options.url)
  // Loaded on use: @effect/sql-pg is an optional peer dependency, needed only by PostgreSQL ledgers.
  const pgClient = Effect.tryPromise({
    try: (): Promise<typeof PgClient> => import("@effect/sql-pg/PgClient"),
    catch: () =>
      new LedgerOpenError({
        path: where,
        reason: "openFailed",
        detail: "a PostgreSQL ledger needs the package @effect/sql-pg (npm install @effect/sql-pg)"
      })
  })
  const client = Layer.unwrapEffect(Effect.map(pgClient, (Pg) =>
    Pg.layer({
      url: Redacted.make(options.url),
      maxConnections: options.maxConnections ?? 4,
      applicationName: "agent-ledger"
    }))).pipe(
      Layer.catchAllCause((cause) =>
        Layer.fail(Option.match(Cause.failureOption(cause), {
          onNone: () => new LedgerOpenError({ path: where, reason: "openFailed", detail: Cause.pretty(cause) }),
          onSome: (error) =>
            error._tag === "LedgerOpenError"
              ? error
              : new LedgerOpenError({ path: where, reason: "openFailed", detail: error.message })
        }))
      )
    )
  // Writers of a fleet start together: one migrates while the others wait on a lock (concurrent
  // CREATE TABLEs collide in PostgreSQL's catalog), then find the schema current.
  // The lock is a session lock held by one reserved connection; the migrations run on the others (the
  // migrator's own error handling needs statements outside one transaction).
  const migrate = Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.scoped(Effect.gen(function*() {
      const conn = yield* sql.reserve
      yield* Effect.acquireRelease(
        conn.executeUnprepared(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`, [], undefined),
        () => Effect.ignore(conn.executeUnprepared(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`, [], undefined))
      )
      return yield* runMigrations
    })))
  return privately(client, migrate)
}

/** `layerPg` for a `postgres://` URL, else `layerSqlite` for a file name. */
export const layerFor = (db: string): Layer.Layer<LedgerSql, LedgerOpenError | SqlError | MigrationError> =>
  isPostgresUrl(db) ? layerPg({ url: db }) : layerSqlite({ filename: db })
