/**
 * The SQL ledger sink: each refusal becomes one row of the `signed_events` hash chain (docs/FORMAT.md,
 * "Ledger row v1"), signed when a signer is configured; an event that cannot be appended lands in
 * `signed_events_dlq` with the reason.
 *
 * An append reads the chain head, computes the rows and inserts them inside one write transaction
 * (SQLite: `BEGIN IMMEDIATE`, so two writers cannot read the same head). `appendBatch` does this for many
 * events at once (group commit: one transaction, one fsync); `append` for one. The head is cached between
 * appends, so another writer on the same database (another connection or process) can make it stale; the
 * unique index on `sequence` then refuses the insert and the sink re-reads the head and retries the whole
 * transaction on a `Schedule`, as it does when the database stays busy. Failures are classified by driver
 * error code (internal/sqlDialect.ts).
 *
 * An event whose row cannot even be built (its payload cannot be canonicalized) is never a defect: it is
 * dead-lettered with the reason, its payload stored as plain JSON so nothing of the refusal is lost.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as SqlSchema from "@effect/sql/SqlSchema"
import type { Array as Arr, ParseResult } from "effect"
import { Context, Data, DateTime, Duration, Effect, Either, Layer, Option, Ref, Schedule, Schema } from "effect"
import type { KeyObject } from "node:crypto"
import type { DeferredAuditEvent } from "../audit/AuditEvent.js"
import { canonicalJson, canonicalObject, eventTypeOf, formatTimestamp } from "../audit/AuditEvent.js"
import type { AuditSigner } from "../audit/AuditSigner.js"
import { signDeadLetter } from "../audit/AuditSigner.js"
import type { AppendOutcome, ChainPosition } from "../audit/AuditSink.js"
import { Appended, AuditSink, AuditSinkError, DlqLanded } from "../audit/AuditSink.js"
import { deadLetterMessage } from "../internal/deadLetterFormat.js"
import { digestHex, sha256Hex, ZERO_HASH } from "../internal/encoding.js"
import { rowEntryHashBytes } from "../internal/rowFormat.js"
import type { ClassifiedFailure, SqlDialect, Synchronous } from "../internal/sqlDialect.js"
import { forClient, isEnvironmental, withWriteTransaction } from "../internal/sqlDialect.js"
import { toWellFormed } from "../internal/unicode.js"
import * as JournalRow from "./JournalRow.js"
import * as LedgerRow from "./LedgerRow.js"
import * as LedgerSql from "./LedgerSql.js"

/** The last row of the chain: the next row gets `sequence + 1` and `prev_hash = entryHash`. */
export type ChainHead = ChainPosition

/** An event in the chain: appended now, or found there already (`alreadyInChain`, no second row). */
export interface ChainAppend {
  readonly alreadyInChain: boolean
  readonly uniqueRaceRetries: number
  readonly position: ChainPosition
}

export class SqlAuditSink extends Context.Tag("agent-ledger/SqlAuditSink")<SqlAuditSink, {
  /** The `AuditSink` contract: `Appended`, `DlqLanded`, or `AuditSinkError` when even the DLQ insert failed. */
  readonly append: (event: DeferredAuditEvent) => Effect.Effect<AppendOutcome, AuditSinkError>
  /**
   * Group commit (the `AuditSink.appendBatch` contract): every event of the batch appended in order, in
   * one write transaction (more than one only when the batch exceeds `maxTransactionBytes`), each with
   * its position. Fails with `AuditSinkError` when the batch cannot be appended as a whole (an event whose
   * row cannot be built, a retry budget exhausted, any other database failure); events of an earlier
   * transaction of the same batch may then be committed already, and appending them again finds them.
   */
  readonly appendBatch: (
    events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>
  ) => Effect.Effect<ReadonlyArray<AppendOutcome>, AuditSinkError>
  readonly deadLetter: (event: DeferredAuditEvent, reason: string) => Effect.Effect<void, AuditSinkError>
  /** Dead-letters every event with `reason` in one write transaction (all or none). */
  readonly deadLetterBatch: (
    events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>,
    reason: string
  ) => Effect.Effect<void, AuditSinkError>
  /**
   * Appends to the chain with the same retries as `append` but no dead-letter fallback: fails with
   * `AuditSinkError` (the reason) when the event cannot be appended. For replaying dead letters.
   */
  readonly appendOnly: (event: DeferredAuditEvent) => Effect.Effect<ChainAppend, AuditSinkError>
  /**
   * The public key and key id of the key this sink signs rows (and dead letters) with; `None` for an
   * unsigned sink. Replay checks dead letters against it before this sink signs them.
   */
  readonly signingKey: Option.Option<SigningKey>
  /**
   * Session journal entries into `journal_entries`, in one write transaction where the sink writes (the
   * writer thread, when there is one), a busy database retried on the sink's schedule. Fails with
   * `AuditSinkError` (`unavailable` for the environment's fault) when they cannot be stored.
   */
  readonly insertJournalEntries: (
    rows: Arr.NonEmptyReadonlyArray<JournalRow.JournalRow>
  ) => Effect.Effect<void, AuditSinkError>
  /** Events waiting in `signed_events_dlq` (rows not yet replayed). */
  readonly dlqSize: Effect.Effect<number, SqlError>
  /** The chain head as stored now (not the cache); `None` for an empty chain. */
  readonly head: Effect.Effect<Option.Option<ChainHead>, SqlError | ParseResult.ParseError>
  /** Rows of `signed_events` with this `event_type`. */
  readonly countByEventType: (eventType: string) => Effect.Effect<number, SqlError>
}>() {}

/** The public half of a sink's signer. */
export interface SigningKey {
  readonly keyId: string
  readonly publicKey: KeyObject
}

/** The `SqlAuditSink` service itself (what `yield* SqlAuditSink` gives). */
export type Service = Context.Tag.Service<SqlAuditSink>

export interface Options {
  /** Signs every row (`attest_level` "ed25519"); without one rows are "unsigned". */
  readonly signer?: AuditSigner | undefined
  /** SQLite `synchronous` pragma; default FULL: an event counts as appended only once it is durable. */
  readonly synchronous?: Synchronous | undefined
  /** How long a write waits for another writer's lock (SQLite `busy_timeout`); default 5 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /**
   * When to retry a lost sequence race or a busy database; default `defaultRetrySchedule`. Each retry
   * re-reads the chain head; when the schedule ends, the event goes to the dead-letter table.
   */
  readonly retrySchedule?: Schedule.Schedule<unknown, unknown> | undefined
  /**
   * Payload bytes one write transaction of `appendBatch` may hold before the batch is split into several
   * (each committed on its own, with a yield to the host between them); default 4 MiB. Bounds how long
   * one transaction holds the thread (the SQLite driver is synchronous) whatever the events' sizes.
   */
  readonly maxTransactionBytes?: number | undefined
}

/** Up to 5 retries, exponential from 2 ms (about 60 ms in all), jittered so racing writers spread out. */
export const defaultRetrySchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("2 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(5))
)

export const DEFAULT_BUSY_TIMEOUT: Duration.Duration = LedgerSql.DEFAULT_BUSY_TIMEOUT

export const DEFAULT_MAX_TRANSACTION_BYTES = 4 * 1024 * 1024

/** Events canonicalized between two yields to the host while a batch is prepared. */
const PREPARE_SLICE = 64

const HeadRow = Schema.Struct({
  sequence: Schema.Number.pipe(Schema.int(), Schema.nonNegative()),
  entry_hash: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))
})

const HeadRows = Schema.Array(Schema.Struct({ id: Schema.String, ...HeadRow.fields }))

// ---------------------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------------------

/**
 * The parts of a row that do not depend on its position in the chain, as plain strings: what crosses to
 * the writer thread (`LedgerWriter`). The payload's hash, the entry hash and the signature are computed
 * where the row is written.
 */
export interface PreparedEvent {
  readonly id: string
  readonly agentId: string
  readonly eventType: string
  /** The RFC 8785 canonical payload (or, for a dead letter whose payload cannot be canonical, plain JSON). */
  readonly payload: string
  readonly timestamp: string
}

const messageOf = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * The position-independent parts of the event's row, or why no row can be built (e.g. a string that
 * RFC 8785 cannot canonicalize). Never throws.
 */
const prepare = (event: DeferredAuditEvent): Either.Either<PreparedEvent, string> => {
  try {
    return Either.right({
      id: event.id,
      agentId: event.agentId,
      eventType: eventTypeOf(event),
      payload: canonicalJson(event),
      timestamp: formatTimestamp(event)
    })
  } catch (error) {
    return Either.left(`the event's ledger row cannot be built: ${messageOf(error)}`)
  }
}

/**
 * What the dead-letter table stores for an event: its canonical payload when there is one, else the same
 * object as plain JSON (JSON.stringify escapes what RFC 8785 refuses), so the refusal's data is kept.
 */
const deadLetterPayload = (event: DeferredAuditEvent): PreparedEvent =>
  Either.getOrElse(prepare(event), () => {
    let payload: string
    try {
      payload = JSON.stringify(canonicalObject(event))
    } catch (error) {
      payload = JSON.stringify({ event_id: event.id, agent_id: event.agentId, unencodable: messageOf(error) })
    }
    let timestamp: string
    try {
      timestamp = formatTimestamp(event)
    } catch {
      timestamp = ""
    }
    return { id: event.id, agentId: event.agentId, eventType: eventTypeOf(event), payload, timestamp }
  })

const DLQ_COLUMNS = [
  "id",
  "agent_id",
  "event_type",
  "payload",
  "payload_hash",
  "timestamp",
  "failure_reason",
  "failed_at",
  "signature",
  "key_id"
] as const

type Param = string | number | Uint8Array | null

/** Rows per multi-row INSERT statement; a batch uses statements of power-of-two sizes up to this. */
const ROWS_PER_STATEMENT = 64

/**
 * `INSERT INTO table (columns) VALUES (?, ...), ...` for `rows` rows, one text per (table, size), so the
 * driver's prepared-statement cache holds a handful of statements whatever the batch sizes.
 */
const insertText = (() => {
  const cache = new Map<string, string>()
  return (dialect: SqlDialect, table: string, columns: ReadonlyArray<string>, rows: number): string => {
    const key = `${dialect.name}:${table}:${rows}`
    let text = cache.get(key)
    if (text === undefined) {
      const values = Array.from(
        { length: rows },
        (_, r) => `(${columns.map((_, c) => dialect.placeholder(r * columns.length + c)).join(", ")})`
      )
      text = `INSERT INTO ${table} (${columns.join(", ")}) VALUES ${values.join(", ")}`
      cache.set(key, text)
    }
    return text
  }
})()

/** Inserts `rows` (each in `columns` order) with as few statements as power-of-two sizes allow. */
const insertRows = (
  sql: SqlClient.SqlClient,
  dialect: SqlDialect,
  table: string,
  columns: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<Param>>
): Effect.Effect<void, SqlError> =>
  Effect.suspend(() => {
    const statements: Array<Effect.Effect<unknown, SqlError>> = []
    let start = 0
    while (start < rows.length) {
      let size = ROWS_PER_STATEMENT
      while (size > rows.length - start) size >>= 1
      // The statement's parameters in one array, filled in place (no slice and flat per statement).
      const params: Array<Param> = new Array(size * columns.length)
      let p = 0
      for (let r = start; r < start + size; r++) {
        const row = rows[r]!
        for (let c = 0; c < row.length; c++) params[p++] = row[c] as Param
      }
      statements.push(sql.unsafe(insertText(dialect, table, columns, size), params))
      start += size
    }
    return Effect.all(statements, { discard: true })
  })

// ---------------------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------------------

/** Why events could not be appended; `unavailable` when the environment, not the events, is at fault. */
interface ChainFailure {
  readonly reason: string
  readonly unavailable: boolean
}

/** A failed write transaction that the retry schedule may try again (a lost sequence race, a busy database). */
export class Retryable extends Data.TaggedError("Retryable")<{ readonly failure: ClassifiedFailure }> {}

/** A failed write transaction that no retry can fix. */
export class Unrecoverable extends Data.TaggedError("Unrecoverable")<{
  readonly reason: string
  /** The environment's fault (disk full, read-only, I/O error), not the event's. */
  readonly environmental: boolean
}> {}

/** Some events of the attempted rows are in the chain already (a duplicate id): no race, no retry needed. */
export class AlreadyInChain extends Data.TaggedError("AlreadyInChain")<{
  readonly found: ReadonlyMap<string, ChainPosition>
}> {}

/** How one write transaction of the chain failed. */
export type AttemptFailure = Retryable | Unrecoverable | AlreadyInChain

const nowRfc3339 = Effect.map(DateTime.now, DateTime.formatIso)

/** The computed columns of a row: its payload's hash, its entry hash and (signed) its signature. */
export interface RowHashes {
  readonly payloadHash: string
  readonly entryHash: string
  readonly signature: string | null
}

/**
 * The computed columns of `batch`'s rows, one after the other right after `head` (`undefined`: an empty
 * chain): the payload hashes (independent of the head), then the chained entry hashes and the signatures
 * over them (docs/FORMAT.md, "Ledger row v1"). Pure CPU work, the same wherever it runs.
 */
export const hashRowsAfter = (
  batch: ReadonlyArray<PreparedEvent>,
  head: ChainHead | undefined,
  signer: AuditSigner | undefined
): Array<RowHashes> => {
  let sequence = head === undefined ? 0 : head.sequence + 1
  let prevHash = head === undefined ? ZERO_HASH : head.entryHash
  const rows: Array<RowHashes> = []
  for (const prepared of batch) {
    // One-shot over the payload's UTF-8 (no Hash object per row): the same bytes as `sha256Hex`.
    const payloadHash = digestHex(prepared.payload)
    const entryHashBytes = rowEntryHashBytes({
      sequence,
      prevHash,
      id: prepared.id,
      agentId: prepared.agentId,
      eventType: prepared.eventType,
      payloadHash,
      timestamp: prepared.timestamp
    })
    const entryHash = entryHashBytes.toString("hex")
    rows.push({ payloadHash, entryHash, signature: signer === undefined ? null : signer.sign(entryHashBytes) })
    prevHash = entryHash
    sequence++
  }
  return rows
}

/** Computes `hashRowsAfter` for a batch (on this thread, or in a worker thread). */
export type RowHasher = (
  batch: ReadonlyArray<PreparedEvent>,
  head: ChainHead | undefined
) => Effect.Effect<ReadonlyArray<RowHashes>>

// ---------------------------------------------------------------------------------------------------------
// The store: where the write transactions run
// ---------------------------------------------------------------------------------------------------------

/**
 * The sink's write transactions, one attempt each (retries, dead-letter fallback and accounting are the
 * sink's): on the ledger's own connection (`makeLocalStore`), or in the writer thread (`LedgerWriter`),
 * whose connection is the only one that appends.
 */
export interface ChainStore {
  /**
   * One write transaction: reads the chain head (or uses its cached one), builds the rows of `batch` after
   * it (payload hash, entry hash, signature) and inserts them; the positions of the rows, in order.
   */
  readonly appendAfterHead: (
    batch: ReadonlyArray<PreparedEvent>,
    appendedAt: string
  ) => Effect.Effect<ReadonlyArray<ChainPosition>, AttemptFailure>
  /** One write transaction inserting a dead letter per event, all with `reason`; the classified failure. */
  readonly insertDeadLetters: (
    events: ReadonlyArray<PreparedEvent>,
    reason: string,
    failedAt: string
  ) => Effect.Effect<void, ClassifiedFailure>
  /**
   * One write transaction inserting session journal entries (`journal_entries`). Idempotent: an entry
   * stored already with the same `entry_hash` is left as it is; one stored with another hash (a session id
   * reused for a second chain) fails the whole transaction as `other`.
   */
  readonly insertJournalEntries: (
    rows: ReadonlyArray<JournalRow.JournalRow>,
    writtenAt: string
  ) => Effect.Effect<void, ClassifiedFailure>
}

/** The chain head as stored now, read on `sql`; `None` for an empty chain. */
const readHeadOn = (
  sql: SqlClient.SqlClient
): Effect.Effect<Option.Option<ChainHead>, SqlError | ParseResult.ParseError> =>
  Effect.map(
    SqlSchema.findOne({
      Request: Schema.Void,
      Result: HeadRow,
      execute: () => sql`SELECT sequence, entry_hash FROM signed_events ORDER BY sequence DESC LIMIT 1`
    })(undefined),
    Option.map((row): ChainHead => ({ sequence: row.sequence, entryHash: row.entry_hash }))
  )

/**
 * The store on `sql` (already configured with the ledger's connection settings): the write transactions
 * of the sink, with the chain head cached between them. Runs on the guard's thread for an in-thread sink,
 * and inside the writer thread for `LedgerWriter`.
 */
export const makeLocalStore = (
  sql: SqlClient.SqlClient,
  dialect: SqlDialect,
  signer: AuditSigner | undefined,
  hooks: {
    /** Fault injection for tests: runs inside each append transaction, after the inserts, before the commit. */
    readonly beforeCommit?: Effect.Effect<void>
    /**
     * Where the rows' hashes and signatures are computed, inside the write transaction once the head is
     * known; default here, with `signer` (`hashRowsAfter`). `LedgerWriter.makeRowHasher`: a worker thread.
     */
    readonly hashRows?: RowHasher | undefined
  } = {}
): Effect.Effect<ChainStore> =>
  Effect.gen(function*() {
    const hashRows: RowHasher = hooks.hashRows ??
      ((batch, head) => Effect.sync(() => hashRowsAfter(batch, head, signer)))
    // None: unknown, read it from the table inside the next write transaction.
    const cachedHead = yield* Ref.make(Option.none<ChainHead>())
    const readHead = readHeadOn(sql)

    /** The rows of `ids` that are in the chain already, by id. */
    const findExisting = (ids: ReadonlyArray<string>) =>
      Effect.flatMap(
        sql`SELECT id, sequence, entry_hash FROM signed_events WHERE ${sql.in("id", ids)}`,
        Schema.decodeUnknown(HeadRows)
      ).pipe(
        Effect.map((rows) =>
          new Map(rows.map((row) => [row.id, { sequence: row.sequence, entryHash: row.entry_hash }] as const))
        )
      )

    /** Runs inside the write transaction: the rows after the head, inserted; their positions in order. */
    const insertAfterHead = (batch: ReadonlyArray<PreparedEvent>, appendedAt: string) =>
      Effect.gen(function*() {
        const cached = yield* Ref.get(cachedHead)
        const head = Option.isSome(cached) ? cached : yield* readHead
        const hashes = yield* hashRows(batch, Option.getOrUndefined(head))
        const rows: Array<ReadonlyArray<Param>> = []
        const positions: Array<ChainPosition> = []
        let sequence = Option.isSome(head) ? head.value.sequence + 1 : 0
        let prevHash = Option.isSome(head) ? head.value.entryHash : ZERO_HASH
        for (let i = 0; i < batch.length; i++) {
          const prepared = batch[i]!
          const row = hashes[i]!
          rows.push([
            prepared.id,
            sequence,
            prepared.agentId,
            prepared.eventType,
            prepared.payload,
            row.payloadHash,
            prevHash,
            row.entryHash,
            row.signature,
            signer === undefined ? null : signer.keyId,
            signer === undefined ? "unsigned" : "ed25519",
            prepared.timestamp,
            appendedAt
          ])
          positions.push({ sequence, entryHash: row.entryHash })
          prevHash = row.entryHash
          sequence++
        }
        yield* insertRows(sql, dialect, "signed_events", LedgerRow.COLUMNS, rows)
        if (hooks.beforeCommit !== undefined) yield* hooks.beforeCommit
        return positions
      })

    /** After a unique violation: duplicates of ids in the chain, else a lost race for the sequence. */
    const explainUniqueViolation = (
      batch: ReadonlyArray<PreparedEvent>,
      failure: ClassifiedFailure
    ): Effect.Effect<never, AttemptFailure> =>
      findExisting(batch.map((p) => p.id)).pipe(
        Effect.mapError((error) => {
          const classified = error._tag === "ParseError" ? undefined : dialect.classify(error)
          return new Unrecoverable({
            reason: `${failure.description}; then checking for a duplicate id failed: ${
              classified?.description ?? error.message
            }`,
            environmental: classified !== undefined && isEnvironmental(classified.kind)
          })
        }),
        Effect.flatMap((found): Effect.Effect<never, AttemptFailure> =>
          found.size > 0 ? Effect.fail(new AlreadyInChain({ found })) : Effect.fail(new Retryable({ failure }))
        )
      )

    const classify = (
      batch: ReadonlyArray<PreparedEvent>,
      failure: ClassifiedFailure
    ): Effect.Effect<never, AttemptFailure> => {
      switch (failure.kind) {
        case "uniqueViolation":
          return explainUniqueViolation(batch, failure)
        case "busy":
          return Effect.fail(new Retryable({ failure }))
        case "storageFull":
        case "unavailable":
        case "other":
          return Effect.fail(
            new Unrecoverable({ reason: failure.description, environmental: isEnvironmental(failure.kind) })
          )
      }
    }

    const appendAfterHead = (
      batch: ReadonlyArray<PreparedEvent>,
      appendedAt: string
    ): Effect.Effect<ReadonlyArray<ChainPosition>, AttemptFailure> =>
      withWriteTransaction(sql, dialect, insertAfterHead(batch, appendedAt)).pipe(
        Effect.tap((positions) =>
          Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (callerTransaction) =>
            // In the caller's transaction the rows are not committed yet and may still be rolled back: a
            // cached head must never be ahead of the table (the next row would leave a gap).
            Ref.set(
              cachedHead,
              Option.isSome(callerTransaction) ? Option.none() : Option.fromNullable(positions[positions.length - 1])
            ))
        ),
        Effect.catchAll((error) =>
          Effect.zipRight(
            Ref.set(cachedHead, Option.none()),
            error._tag === "ParseError"
              ? Effect.fail(
                new Unrecoverable({ reason: `the chain head row is malformed: ${error.message}`, environmental: false })
              )
              : classify(batch, dialect.classify(error))
          )
        )
      )

    const insertDeadLetters = (
      events: ReadonlyArray<PreparedEvent>,
      reason: string,
      failedAt: string
    ): Effect.Effect<void, ClassifiedFailure> =>
      withWriteTransaction(
        sql,
        dialect,
        insertRows(
          sql,
          dialect,
          "signed_events_dlq",
          DLQ_COLUMNS,
          events.map((p) => authenticatedDeadLetter(p, reason, failedAt, signer))
        )
      ).pipe(Effect.mapError((error) => dialect.classify(error)))

    /** The stored entry hashes of `rows`' positions, by `session_id:seq`. */
    const storedJournalHashes = (rows: ReadonlyArray<JournalRow.JournalRow>) =>
      Effect.map(
        Effect.forEach(
          Array.from(new Set(rows.map((row) => row.sessionId))),
          (sessionId) => {
            const seqs = rows.filter((row) => row.sessionId === sessionId).map((row) => row.sequence)
            return sql<{ seq: number | string; entry_hash: string }>`
              SELECT seq, entry_hash FROM journal_entries
              WHERE session_id = ${sessionId} AND seq >= ${Math.min(...seqs)} AND seq <= ${Math.max(...seqs)}`.pipe(
              Effect.map((found) => found.map((f) => [`${sessionId}:${Number(f.seq)}`, f.entry_hash] as const))
            )
          }
        ),
        (pairs) => new Map(pairs.flat())
      )

    /**
     * Inserts the rows not stored yet; after a unique violation (a batch retried after its commit was not
     * seen, or a session id reused), compares what is stored: the same entries are skipped, others refused.
     */
    const insertJournalEntries = (
      rows: ReadonlyArray<JournalRow.JournalRow>,
      writtenAt: string
    ): Effect.Effect<void, ClassifiedFailure> => {
      const insert = (some: ReadonlyArray<JournalRow.JournalRow>) =>
        some.length === 0 ? Effect.void : withWriteTransaction(
          sql,
          dialect,
          insertRows(
            sql,
            dialect,
            "journal_entries",
            JournalRow.COLUMNS,
            some.map((r) => JournalRow.toParams(r, writtenAt))
          )
        )
      return insert(rows).pipe(
        Effect.mapError((error) => dialect.classify(error)),
        Effect.catchIf((failure) => failure.kind === "uniqueViolation", (failure) =>
          storedJournalHashes(rows).pipe(
            Effect.mapError((error) => dialect.classify(error)),
            Effect.flatMap((stored) => {
              const other = rows.find((r) => {
                const hash = stored.get(`${r.sessionId}:${r.sequence}`)
                return hash !== undefined && hash !== r.entryHash
              })
              if (other !== undefined) {
                return Effect.fail<ClassifiedFailure>({
                  kind: "other",
                  code: failure.code,
                  description: `journal entry ${other.sequence} of session ${
                    JSON.stringify(other.sessionId)
                  } is stored already with another hash (a session id used for two chains)`
                })
              }
              return insert(rows.filter((r) => !stored.has(`${r.sessionId}:${r.sequence}`))).pipe(
                Effect.mapError((error) => dialect.classify(error))
              )
            })
          ))
      )
    }

    return { appendAfterHead, insertDeadLetters, insertJournalEntries }
  })

// ---------------------------------------------------------------------------------------------------------
// The sink
// ---------------------------------------------------------------------------------------------------------

/**
 * The sink on the ledger's database (`LedgerSql`). Applies the ledger's connection settings (SQLite: WAL,
 * `synchronous`, foreign keys, `busy_timeout`); the schema must already be migrated (`runMigrations`).
 * Every statement runs on the ledger's client, whatever `SqlClient` the caller's context holds.
 */
export const make = (
  options: Options = {},
  /** Where rows are hashed and signed (`LedgerWriter.makeRowHasher`: a worker thread); default here. */
  hashRows?: RowHasher
) =>
  Effect.gen(function*() {
    const ledger = yield* LedgerSql.LedgerSql
    const client = ledger.client
    const dialect: SqlDialect = yield* forClient(client)
    // Column names are the ledger's format: a client configured with name transforms must not rename them.
    const sql = client.withoutTransforms()
    yield* LedgerSql.runOn(ledger)(dialect.configure(sql, {
      synchronous: options.synchronous ?? "FULL",
      busyTimeout: Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT)
    }))
    return yield* makeWith(yield* makeLocalStore(sql, dialect, options.signer, { hashRows }), options)
  })

/**
 * The sink over `store` (its write transactions run there); reads (`head`, `dlqSize`, `countByEventType`)
 * run on the ledger's connection (`LedgerSql`). Row building up to the canonical payload happens here, on
 * the caller's thread; hashing and signing where the store writes.
 */
export const makeWith = (store: ChainStore, options: Omit<Options, "synchronous" | "busyTimeout">) =>
  Effect.gen(function*() {
    const ledger = yield* LedgerSql.LedgerSql
    const onLedger = LedgerSql.runOn(ledger)
    const sql = ledger.client.withoutTransforms()
    const retrySchedule = options.retrySchedule ?? defaultRetrySchedule
    const chain = makeChainWriter(store, retrySchedule)
    const deadLetters = makeDeadLetterWriter(store, retrySchedule)

    const append = (event: DeferredAuditEvent): Effect.Effect<AppendOutcome, AuditSinkError> =>
      Either.match(prepare(event), {
        onLeft: (reason): Effect.Effect<AppendOutcome, AuditSinkError> =>
          deadLetters.land(deadLetterPayload(event), reason, 0),
        onRight: (prepared) =>
          Effect.flatMap(chain.appendAll([prepared]), ({ outcomes, uniqueRaceRetries }) =>
            Either.match(outcomes, {
              // The dead-letter table is in the same unwritable database: fail, and let the queue hold it.
              onLeft: (failure): Effect.Effect<AppendOutcome, AuditSinkError> =>
                failure.unavailable
                  ? Effect.fail(new AuditSinkError({ eventId: event.id, ...failure }))
                  : deadLetters.land(prepared, failure.reason, uniqueRaceRetries),
              onRight: ([appended]) => Effect.succeed(new Appended({ uniqueRaceRetries, position: appended!.position }))
            }))
      })

    const appendBatch = (
      events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>
    ): Effect.Effect<ReadonlyArray<AppendOutcome>, AuditSinkError> =>
      Effect.gen(function*() {
        const prepared: Array<PreparedEvent> = []
        for (const event of events) {
          // Canonicalizing is the part of a row built on the caller's thread: let the host run between
          // slices of it (the drainer's scheduler yields to the event loop), not only between batches.
          if (prepared.length > 0 && prepared.length % PREPARE_SLICE === 0) yield* Effect.yieldNow()
          const one = prepare(event)
          if (Either.isLeft(one)) return yield* new AuditSinkError({ eventId: event.id, reason: one.left })
          prepared.push(one.right)
        }
        const outcomes: Array<AppendOutcome> = []
        for (const group of transactionGroups(prepared, options.maxTransactionBytes)) {
          if (outcomes.length > 0) yield* Effect.yieldNow()
          const result = yield* chain.appendAll(group)
          if (Either.isLeft(result.outcomes)) {
            return yield* new AuditSinkError({ eventId: group[0]!.id, ...result.outcomes.left })
          }
          result.outcomes.right.forEach((appended, i) =>
            outcomes.push(
              new Appended({ uniqueRaceRetries: i === 0 ? result.uniqueRaceRetries : 0, position: appended.position })
            )
          )
        }
        return outcomes
      })

    const appendOnly = (event: DeferredAuditEvent): Effect.Effect<ChainAppend, AuditSinkError> =>
      Either.match(prepare(event), {
        onLeft: (reason) => Effect.fail(new AuditSinkError({ eventId: event.id, reason })),
        onRight: (prepared) =>
          Effect.flatMap(chain.appendAll([prepared]), ({ outcomes, uniqueRaceRetries }) =>
            Either.match(outcomes, {
              onLeft: (failure) => Effect.fail(new AuditSinkError({ eventId: event.id, ...failure })),
              onRight: ([appended]) => Effect.succeed({ ...appended!, uniqueRaceRetries })
            }))
      })

    const count = (rows: Effect.Effect<ReadonlyArray<{ readonly [column: string]: unknown }>, SqlError>) =>
      Effect.map(rows, (found) => Number(found[0]?.n ?? 0))

    return SqlAuditSink.of({
      append: (event) => onLedger(append(event)),
      appendBatch: (events) => onLedger(appendBatch(events)),
      deadLetter: (event, reason) => onLedger(deadLetters.insert([deadLetterPayload(event)], reason)),
      deadLetterBatch: (events, reason) => onLedger(deadLetters.insert(events.map(deadLetterPayload), reason)),
      appendOnly: (event) => onLedger(appendOnly(event)),
      insertJournalEntries: (rows) =>
        onLedger(
          Effect.flatMap(nowRfc3339, (writtenAt) => store.insertJournalEntries(rows, writtenAt)).pipe(
            Effect.retry({ schedule: retrySchedule, while: (failure) => failure.kind === "busy" }),
            Effect.mapError((failure) =>
              new AuditSinkError({
                eventId: `journal:${rows[0].sessionId}:${rows[0].sequence}`,
                reason: `journal entries not stored: ${failure.description}`,
                unavailable: isEnvironmental(failure.kind)
              })
            )
          )
        ),
      signingKey: Option.map(
        Option.fromNullable(options.signer),
        (signer): SigningKey => ({ keyId: signer.keyId, publicKey: signer.publicKey })
      ),
      dlqSize: onLedger(
        count(sql`SELECT CAST(COUNT(*) AS INTEGER) AS n FROM signed_events_dlq WHERE replayed_at IS NULL`)
      ),
      head: onLedger(readHeadOn(sql)),
      countByEventType: (eventType) =>
        onLedger(count(sql`SELECT CAST(COUNT(*) AS INTEGER) AS n FROM signed_events WHERE event_type = ${eventType}`))
    })
  })

/** Splits prepared events into consecutive groups of at most `maxBytes` payload bytes (at least one event each). */
const transactionGroups = (
  prepared: ReadonlyArray<PreparedEvent>,
  maxBytes: number = DEFAULT_MAX_TRANSACTION_BYTES
): ReadonlyArray<ReadonlyArray<PreparedEvent>> => {
  const groups: Array<Array<PreparedEvent>> = []
  let current: Array<PreparedEvent> = []
  let bytes = 0
  for (const p of prepared) {
    // Characters, not bytes: at most a factor 3 off for UTF-8, and free to compute.
    const size = p.payload.length + p.agentId.length
    if (current.length > 0 && bytes + size > maxBytes) {
      groups.push(current)
      current = []
      bytes = 0
    }
    current.push(p)
    bytes += size
  }
  if (current.length > 0) groups.push(current)
  return groups
}

// ---------------------------------------------------------------------------------------------------------
// The chain writer
// ---------------------------------------------------------------------------------------------------------

/** Appended events in order, each with its position; `alreadyInChain` for a duplicate id. */
interface ChainAppendResult {
  readonly outcomes: Either.Either<ReadonlyArray<Omit<ChainAppend, "uniqueRaceRetries">>, ChainFailure>
  /** Write transactions retried after a lost race or a busy database. */
  readonly uniqueRaceRetries: number
}

/**
 * Appends prepared events to the chain: one write transaction of `store` per attempt, retried from a
 * fresh head on `retrySchedule` (on this thread's `Clock`) after a lost race or a busy database. Events
 * found in the chain already (replays, or a transaction that committed before its caller saw the answer)
 * keep their rows and positions.
 */
const makeChainWriter = (store: ChainStore, retrySchedule: Schedule.Schedule<unknown, unknown>) => {
  const appendAll = (batch: ReadonlyArray<PreparedEvent>): Effect.Effect<ChainAppendResult> =>
    Effect.gen(function*() {
      const positions = new Map<string, ChainPosition>()
      const alreadyInChain = new Set<string>()
      let transactions = 0
      let duplicateRounds = 0
      // The events not in the chain yet, in one transaction. Duplicates are progress, not a race: their
      // rows are taken as they are and the rest is tried again at once, outside the retry schedule.
      const appendRest: Effect.Effect<void, Retryable | Unrecoverable> = Effect.suspend(() => {
        const rest = batch.filter((p) => !positions.has(p.id))
        if (rest.length === 0) return Effect.void
        transactions++
        return Effect.flatMap(nowRfc3339, (appendedAt) => store.appendAfterHead(rest, appendedAt)).pipe(
          Effect.map((inserted) => rest.forEach((p, i) => positions.set(p.id, inserted[i]!))),
          Effect.catchTag("AlreadyInChain", ({ found }) => {
            duplicateRounds++
            found.forEach((position, id) => {
              positions.set(id, position)
              alreadyInChain.add(id)
            })
            return appendRest
          })
        )
      })
      const result = yield* Effect.either(
        Effect.retry(appendRest, { schedule: retrySchedule, while: (f) => f._tag === "Retryable" })
      )
      const uniqueRaceRetries = Math.max(0, transactions - 1 - duplicateRounds)
      return {
        uniqueRaceRetries,
        outcomes: Either.isLeft(result)
          ? Either.left(
            result.left._tag === "Retryable"
              ? {
                reason: `retry budget exhausted after ${uniqueRaceRetries} retries: ${result.left.failure.description}`,
                // A lock held past the budget is the environment; a race lost that often is this event's.
                unavailable: isEnvironmental(result.left.failure.kind)
              }
              : { reason: result.left.reason, unavailable: result.left.environmental }
          )
          : Either.right(batch.map((p) => ({
            alreadyInChain: alreadyInChain.has(p.id),
            position: positions.get(p.id)!
          })))
      }
    })

  return { appendAll }
}

// ---------------------------------------------------------------------------------------------------------
// The dead-letter writer
// ---------------------------------------------------------------------------------------------------------

/**
 * A dead letter's column values (`DLQ_COLUMNS` order), signed with `signer` over exactly these stored
 * values (docs/FORMAT.md, "Dead-letter signature") so that `dlq replay` can tell them from rows planted by
 * a writer without the key; `signature` and `key_id` are NULL without a signer. Runs where the store writes
 * (the writer thread, by default), like the row signatures.
 */
const authenticatedDeadLetter = (
  prepared: PreparedEvent,
  reason: string,
  failedAt: string,
  signer: AuditSigner | undefined
): ReadonlyArray<Param> => {
  const content = {
    id: prepared.id,
    // Exact in the payload (JSON escapes a lone surrogate); readable here.
    agentId: toWellFormed(prepared.agentId),
    eventType: prepared.eventType,
    payload: prepared.payload,
    payloadHash: sha256Hex(prepared.payload),
    timestamp: prepared.timestamp,
    failureReason: reason,
    failedAt
  }
  return [
    content.id,
    content.agentId,
    content.eventType,
    content.payload,
    content.payloadHash,
    content.timestamp,
    content.failureReason,
    content.failedAt,
    signer === undefined ? null : signDeadLetter(signer, deadLetterMessage(content)),
    signer === undefined ? null : signer.keyId
  ]
}

const makeDeadLetterWriter = (store: ChainStore, retrySchedule: Schedule.Schedule<unknown, unknown>) => {
  /** Inserts dead letters for `events` in one write transaction, retrying a busy database. */
  const insert = (events: ReadonlyArray<PreparedEvent>, reason: string): Effect.Effect<void, AuditSinkError> =>
    Effect.flatMap(nowRfc3339, (failedAt) => store.insertDeadLetters(events, reason, failedAt)).pipe(
      Effect.retry({ schedule: retrySchedule, while: (failure) => failure.kind === "busy" }),
      Effect.mapError((failure) =>
        new AuditSinkError({
          eventId: events[0]?.id ?? "",
          reason: `dead-letter insert failed (${failure.description}) for: ${reason}`,
          unavailable: isEnvironmental(failure.kind)
        })
      )
    )

  /** Dead-letters one event that could not be appended, and says so. */
  const land = (prepared: PreparedEvent, reason: string, uniqueRaceRetries: number) =>
    Effect.gen(function*() {
      yield* insert([prepared], reason)
      yield* Effect.logWarning("agent-ledger: event landed in signed_events_dlq; the chain did not advance").pipe(
        Effect.annotateLogs({ eventId: prepared.id, agentId: prepared.agentId, reason })
      )
      return new DlqLanded({ reason, uniqueRaceRetries })
    })

  return { insert, land }
}

/** `SqlAuditSink` and, backed by it, `AuditSink` (with group commit), for a built sink. */
export const contextOf = (sink: Service): Context.Context<SqlAuditSink | AuditSink> =>
  Context.make(SqlAuditSink, sink).pipe(
    Context.add(
      AuditSink,
      AuditSink.of({
        append: sink.append,
        appendBatch: sink.appendBatch,
        deadLetter: sink.deadLetter,
        deadLetterBatch: sink.deadLetterBatch
      })
    )
  )

/** `SqlAuditSink` and, backed by it, `AuditSink` (with group commit), writing on the ledger's connection. */
export const layer = (options: Options = {}): Layer.Layer<SqlAuditSink | AuditSink, SqlError, LedgerSql.LedgerSql> =>
  Layer.effectContext(Effect.map(make(options), contextOf))
