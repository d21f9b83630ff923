/**
 * The one place where the SQL engines under the ledger differ: how a write transaction that must hold the
 * write lock from its first statement is opened, which per-connection settings the ledger needs, and how a
 * driver error is classified. Classification reads the driver's error code only, never its message, so a
 * driver that rewords its messages cannot turn a retryable race into a dead letter.
 *
 * SQLite (`@effect/sql-sqlite-node`) and PostgreSQL (`@effect/sql-pg`): on PostgreSQL every write
 * transaction takes a transaction-scoped advisory lock on the chain before it reads the head, so writers of
 * a fleet queue up instead of racing for sequences; a race that still happens (`23505`), a serialization
 * failure (`40001`) or a deadlock (`40P01`) is retried like SQLite's busy database.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Exit, Option } from "effect"

/** `synchronous` pragma: FULL makes an append durable at commit; NORMAL may lose the last commits on power loss. */
export type Synchronous = "FULL" | "NORMAL"

export interface ConnectionSettings {
  readonly synchronous: Synchronous
  /** How long a writer waits for another connection's write lock before the driver reports busy. */
  readonly busyTimeout: Duration.Duration
}

/**
 * What a failed statement means to the sink:
 * - `uniqueViolation`: a unique index or primary key refused the row (a lost sequence race or a duplicate id)
 * - `busy`: another connection held a lock for longer than the busy timeout
 * - `storageFull`: the database or disk is full
 * - `unavailable`: the database cannot be written at all right now (read-only file or directory, I/O
 *   error, cannot open, out of memory): a condition of the environment, like `storageFull`
 * - `other`: anything else (schema fault, constraint, bug)
 */
export type FailureKind = "uniqueViolation" | "busy" | "storageFull" | "unavailable" | "other"

/**
 * Kinds that say nothing about the event being written, only about the environment: the queue holds the
 * events and retries rather than dead-lettering them (the dead-letter table is in the same database).
 */
export const isEnvironmental = (kind: FailureKind): boolean =>
  kind === "busy" || kind === "storageFull" || kind === "unavailable"

export interface ClassifiedFailure {
  readonly kind: FailureKind
  /** The driver's error code, e.g. `SQLITE_CONSTRAINT_UNIQUE`, when the error carries one. */
  readonly code: Option.Option<string>
  /** Human-readable description for logs and `failure_reason` (never used for classification). */
  readonly description: string
}

export interface SqlDialect {
  readonly name: "sqlite" | "postgres"
  /** Opens a transaction that takes the write lock at once, so a read-then-insert cannot interleave. */
  readonly beginWrite: string
  /** Run right after `beginWrite` (and inside a caller's transaction) to serialize writers of the chain. */
  readonly lockChain: Option.Option<string>
  /** The placeholder of the `index`-th (0-based) parameter of a raw statement. */
  readonly placeholder: (index: number) => string
  readonly commit: string
  readonly rollback: string
  /** Applies the ledger's per-connection settings. */
  readonly configure: (sql: SqlClient.SqlClient, settings: ConnectionSettings) => Effect.Effect<void, SqlError>
  readonly classify: (error: unknown) => ClassifiedFailure
  /**
   * Fiber operations a write transaction may run before it yields to other fibers. The SQLite driver is
   * synchronous: if a transaction yielded while holding the write lock and another fiber of this process
   * began a write on a second connection, that fiber's busy wait would block the only thread, so the lock
   * holder could never commit. SQLite write transactions therefore run to the end without yielding.
   */
  readonly maxOpsBeforeYieldInWrite: number
}

interface DriverError {
  readonly code: string
  readonly message: string
}

const isDriverError = (u: unknown): u is DriverError =>
  typeof u === "object" && u !== null && "code" in u && typeof u.code === "string" &&
  "message" in u && typeof u.message === "string"

/** The innermost driver error (an object with a string `code`) in a chain of `cause`s, e.g. under `SqlError`. */
export const driverError = (error: unknown): Option.Option<DriverError> => {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    if (isDriverError(current) && !(current instanceof SqlError)) return Option.some(current)
    current = "cause" in current ? current.cause : undefined
  }
  return Option.none()
}

const describe = (error: unknown, driver: Option.Option<DriverError>): string =>
  Option.match(driver, {
    onNone: () => error instanceof Error ? error.message : String(error),
    onSome: (d) => `${d.code}: ${d.message}`
  })

// Extended result codes arrive as their names (better-sqlite3), e.g. SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE.
const hasCode = (code: string, primary: string): boolean => code === primary || code.startsWith(`${primary}_`)

const classifySqliteCode = (code: string): FailureKind => {
  if (code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY") return "uniqueViolation"
  if (hasCode(code, "SQLITE_BUSY") || hasCode(code, "SQLITE_LOCKED")) return "busy"
  if (code === "SQLITE_FULL") return "storageFull"
  if (
    hasCode(code, "SQLITE_READONLY") || hasCode(code, "SQLITE_IOERR") || hasCode(code, "SQLITE_CANTOPEN") ||
    code === "SQLITE_NOMEM" || code === "SQLITE_PROTOCOL"
  ) return "unavailable"
  return "other"
}

export const sqlite: SqlDialect = {
  name: "sqlite",
  beginWrite: "BEGIN IMMEDIATE",
  lockChain: Option.none(),
  placeholder: () => "?",
  maxOpsBeforeYieldInWrite: Number.MAX_SAFE_INTEGER,
  commit: "COMMIT",
  rollback: "ROLLBACK",
  configure: (sql, settings) =>
    Effect.gen(function*() {
      const busyMillis = Math.max(0, Math.round(Duration.toMillis(settings.busyTimeout)))
      // busy_timeout first: switching the journal mode itself may have to wait for another connection.
      yield* sql.unsafe(`PRAGMA busy_timeout = ${busyMillis}`)
      yield* sql.unsafe("PRAGMA journal_mode = WAL")
      yield* sql.unsafe(`PRAGMA synchronous = ${settings.synchronous}`)
      yield* sql.unsafe("PRAGMA foreign_keys = ON")
    }),
  classify: (error) => {
    const driver = driverError(error)
    return {
      kind: Option.match(driver, { onNone: () => "other" as const, onSome: (d) => classifySqliteCode(d.code) }),
      code: Option.map(driver, (d) => d.code),
      description: describe(error, driver)
    }
  }
}

/**
 * The advisory lock key of the chain (PostgreSQL): any fixed 64-bit number, the same for every writer of a
 * database. It spells "agledger" in ASCII.
 */
export const CHAIN_LOCK_KEY = "7018141391744435570"

/** SQLSTATE classes and codes (PostgreSQL appendix A). */
const classifyPgCode = (code: string): FailureKind => {
  if (code === "23505") return "uniqueViolation"
  // serialization_failure, deadlock_detected, lock_not_available: another writer was in the way.
  if (code === "40001" || code === "40P01" || code === "55P03") return "busy"
  // disk_full, insufficient_resources, out_of_memory, too_many_connections
  if (code === "53100") return "storageFull"
  if (
    code.startsWith("08") || // connection exception
    code.startsWith("53") || // insufficient resources
    code.startsWith("57P") || // operator intervention (admin shutdown, crash shutdown, cannot connect now)
    code === "25006" || // read_only_sql_transaction (a standby)
    code.startsWith("58") // system error (I/O)
  ) return "unavailable"
  return "other"
}

/** Node's network errors before any SQLSTATE: the server is not there. */
const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH"])

export const postgres: SqlDialect = {
  name: "postgres",
  beginWrite: "BEGIN",
  lockChain: Option.some(`SELECT pg_advisory_xact_lock(${CHAIN_LOCK_KEY})`),
  placeholder: (index) => `$${index + 1}`,
  // The driver is asynchronous: a transaction that yields blocks no other fiber.
  maxOpsBeforeYieldInWrite: 2048,
  commit: "COMMIT",
  rollback: "ROLLBACK",
  configure: () => Effect.void,
  classify: (error) => {
    const driver = driverError(error)
    return {
      kind: Option.match(driver, {
        // The server judges every statement it receives with a SQLSTATE; a failure without one never reached
        // it (a pooled connection that died, a socket closed mid-query): the environment, not the event.
        onNone: () => "unavailable" as const,
        onSome: (d) => NETWORK_CODES.has(d.code) ? "unavailable" as const : classifyPgCode(d.code)
      }),
      code: Option.map(driver, (d) => d.code),
      description: describe(error, driver)
    }
  }
}

const SQLITE_CLIENT_TYPE_ID = Symbol.for("@effect/sql-sqlite-node/SqliteClient")
const PG_CLIENT_TYPE_ID = "~@effect/sql-pg/PgClient"

/** The dialect of a connected client, `None` for an engine the ledger does not support. */
export const dialectOf = (sql: SqlClient.SqlClient): Option.Option<SqlDialect> =>
  SQLITE_CLIENT_TYPE_ID in sql ? Option.some(sqlite) : PG_CLIENT_TYPE_ID in sql ? Option.some(postgres) : Option.none()

/** The dialect of a connected client; fails with `SqlError` for an engine the ledger does not support. */
export const forClient = (sql: SqlClient.SqlClient): Effect.Effect<SqlDialect, SqlError> =>
  Option.match(dialectOf(sql), {
    onSome: Effect.succeed,
    onNone: () =>
      Effect.fail(
        new SqlError({
          message: "agent-ledger's SQL sink supports SQLite (@effect/sql-sqlite-node) and PostgreSQL (@effect/sql-pg)"
        })
      )
  })

/**
 * Runs `body` in a write transaction (`dialect.beginWrite`) on one reserved connection: every statement of
 * `body` made through the `SqlClient` runs on it, then COMMIT, or ROLLBACK when `body` fails or is
 * interrupted. A failed BEGIN or COMMIT fails with its `SqlError` (never a defect), so callers can classify
 * and retry it. Interruption of `body` rolls back and propagates.
 *
 * Inside a transaction the caller already opened (`sql.withTransaction`), `body` runs in a savepoint of
 * that transaction instead: reserving a second connection there would wait forever on SQLite's single one.
 *
 * `lockChain: false` (default true) leaves out `dialect.lockChain`: for writers of tables other than the
 * chain (the stored tree, checkpoints), which must not hold up appends on PostgreSQL; on SQLite the write
 * lock is the database's either way.
 */
export const withWriteTransaction = <A, E, R>(
  sql: SqlClient.SqlClient,
  dialect: SqlDialect,
  body: Effect.Effect<A, E, R>,
  options: { readonly lockChain?: boolean | undefined } = {}
): Effect.Effect<A, E | SqlError, R> => {
  const lockChain = options.lockChain === false ? Option.none<string>() : dialect.lockChain
  return Effect.flatMap(
    Effect.serviceOption(SqlClient.TransactionConnection),
    Option.match({
      onSome: () =>
        sql.withTransaction(Option.match(lockChain, {
          onNone: () => body,
          onSome: (lock) => Effect.zipRight(sql.unsafe(lock), body)
        })),
      onNone: () => ownWriteTransaction(sql, dialect, lockChain, body)
    })
  ).pipe(Effect.withMaxOpsBeforeYield(dialect.maxOpsBeforeYieldInWrite))
}

const ownWriteTransaction = <A, E, R>(
  sql: SqlClient.SqlClient,
  dialect: SqlDialect,
  lockChain: Option.Option<string>,
  body: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R> =>
  Effect.scoped(
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const conn = yield* restore(sql.reserve)
        yield* conn.executeUnprepared(dialect.beginWrite, [], undefined)
        if (Option.isSome(lockChain)) {
          // A failed lock (connection lost, a statement timeout) rolls back like a failed body.
          const locked = yield* Effect.exit(restore(conn.executeUnprepared(lockChain.value, [], undefined)))
          if (Exit.isFailure(locked)) {
            yield* conn.executeUnprepared(dialect.rollback, [], undefined).pipe(Effect.ignore)
            return yield* Effect.failCause(locked.cause)
          }
        }
        const bodyExit = yield* Effect.exit(
          restore(Effect.provideService(body, SqlClient.TransactionConnection, [conn, 0] as const))
        )
        // SQLite rolls some failures back itself (e.g. SQLITE_FULL), after which ROLLBACK reports "no
        // transaction is active"; the connection is usable either way, so that error is only logged.
        const rollback = conn.executeUnprepared(dialect.rollback, [], undefined).pipe(
          Effect.catchAll((error) => Effect.logDebug("agent-ledger: rollback after a failed write", error))
        )
        if (Exit.isFailure(bodyExit)) {
          yield* rollback
          return yield* Effect.failCause(bodyExit.cause)
        }
        const commitExit = yield* Effect.exit(conn.executeUnprepared(dialect.commit, [], undefined))
        if (Exit.isFailure(commitExit)) {
          yield* rollback
          return yield* Effect.failCause(commitExit.cause)
        }
        return bodyExit.value
      })
    )
  )
