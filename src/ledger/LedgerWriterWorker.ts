/**
 * The ledger writer thread's entry (started by `LedgerWriter`, never imported by a user): opens its own
 * SQLite connection on the ledger file with the ledger's settings and runs the sink's write transactions
 * (`SqlAuditSink.makeLocalStore`) one request at a time: the rows' payload hashes, entry hashes and Ed25519
 * signatures, the multi-row inserts and the commit's fsync all happen here, off the guard's thread.
 * Started without a ledger file (`LedgerWriter.makeRowHasher`, for PostgreSQL, whose async client stays on
 * the caller's thread), it opens no connection and only hashes and signs rows (`hashRowsAfter`).
 *
 * Every request gets exactly one reply; a store failure travels back as a plain value, a defect as its
 * text. The thread ends when asked to close (after closing its connection) or when it dies; the guard's
 * side then answers whatever was in flight (`LedgerWriter`).
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Context, Duration, Effect, Either, Exit, Layer, Option, Queue } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import type { AuditSigner } from "../audit/AuditSigner.js"
import { fromPrivateKeyPem } from "../audit/AuditSigner.js"
import type { ClassifiedFailure } from "../internal/sqlDialect.js"
import { sqlite } from "../internal/sqlDialect.js"
import type { Reply, Request, StartStage, WireFailure, WorkerData } from "./LedgerWriter.js"
import type { AttemptFailure } from "./SqlAuditSink.js"
import { hashRowsAfter, makeLocalStore } from "./SqlAuditSink.js"

const port = parentPort
const data = workerData as WorkerData

const wireAttemptFailure = (failure: AttemptFailure): WireFailure => {
  switch (failure._tag) {
    case "Retryable":
      return {
        _tag: "Retryable",
        kind: failure.failure.kind,
        code: failure.failure.code._tag === "Some" ? failure.failure.code.value : null,
        description: failure.failure.description
      }
    case "Unrecoverable":
      return { _tag: "Unrecoverable", reason: failure.reason, environmental: failure.environmental }
    case "AlreadyInChain":
      return {
        _tag: "AlreadyInChain",
        found: Array.from(failure.found, ([id, position]) => [id, position.sequence, position.entryHash] as const)
      }
  }
}

/** The thread's SQLite connection and the sink's store on it, for a writer thread (not a row hasher). */
const openStore = (filename: string, signer: AuditSigner | undefined, crash: { when: CrashPoint | undefined }) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(SqliteClient.layer({ filename }))
    const sql = Context.get(context, SqlClient.SqlClient).withoutTransforms()
    yield* sqlite.configure(sql, {
      synchronous: data.synchronous,
      busyTimeout: Duration.millis(data.busyTimeoutMillis)
    })
    return yield* makeLocalStore(sql, sqlite, signer, {
      beforeCommit: Effect.sync(() => {
        if (crash.when === "beforeCommit") process.exit(70)
      })
    })
  })

type CrashPoint = "beforeCommit" | "afterCommit"

/** How far the thread got: a failure before `ready` is reported with it (`LedgerWriter.WriterStartError`). */
let stage: StartStage = "signer"

const program = Effect.gen(function*() {
  if (port === null) return yield* Effect.dieMessage("LedgerWriterWorker runs only as a worker thread")
  const signer = data.privateKeyPem === undefined ? undefined : yield* fromPrivateKeyPem(data.privateKeyPem)
  /** Fault injection for tests (`LedgerWriter.crashNextAppend`): the thread exits inside its next append. */
  const crash: { when: CrashPoint | undefined } = { when: undefined }
  stage = "open"
  const store = data.filename === undefined ? undefined : yield* openStore(data.filename, signer, crash)
  stage = "running"
  const noStore = (id: number): Reply => ({ id, defect: "this thread has no ledger connection (a row hasher)" })
  /** The reply to a write that answers nothing but success, or its classified failure. */
  const written = (id: number, write: Effect.Effect<unknown, ClassifiedFailure>): Effect.Effect<Reply> =>
    Effect.map(Effect.either(write), (result): Reply =>
      Either.isRight(result) ? { id } : {
        id,
        failure: {
          _tag: "Classified",
          kind: result.left.kind,
          code: Option.getOrNull(result.left.code),
          description: result.left.description
        }
      })

  const handle = (request: Request): Effect.Effect<Reply> => {
    switch (request.op) {
      case "append":
        if (store === undefined) return Effect.succeed(noStore(request.id))
        return Effect.map(Effect.either(store.appendAfterHead(request.events, request.at)), (result): Reply => {
          if (crash.when === "afterCommit") process.exit(70)
          return Either.isRight(result)
            ? {
              id: request.id,
              sequences: result.right.map((p) => p.sequence),
              entryHashes: result.right.map((p) => p.entryHash)
            }
            : { id: request.id, failure: wireAttemptFailure(result.left) }
        })
      case "deadLetter":
        if (store === undefined) return Effect.succeed(noStore(request.id))
        return written(request.id, store.insertDeadLetters(request.events, request.reason, request.at))
      case "journal":
        if (store === undefined) return Effect.succeed(noStore(request.id))
        return written(request.id, store.insertJournalEntries(request.rows, request.at))
      case "hashRows":
        return Effect.sync((): Reply => ({ id: request.id, rows: hashRowsAfter(request.events, request.head, signer) }))
      case "crash":
        return Effect.sync(() => {
          crash.when = request.when
          return { id: request.id }
        })
    }
  }

  const requests = yield* Queue.unbounded<Request | "close">()
  port.on("message", (message: Request | "close") => requests.unsafeOffer(message))
  port.postMessage({ ready: true } satisfies Reply)
  while (true) {
    const request = yield* Queue.take(requests)
    if (request === "close") return
    const exit = yield* Effect.exit(handle(request))
    port.postMessage(
      Exit.isSuccess(exit) ? exit.value : ({ id: request.id, defect: Cause.pretty(exit.cause) } satisfies Reply)
    )
  }
})

// An entry point, like the CLI's: the thread's whole life is this one program. A failure to open the
// connection is reported once, then the thread exits and the guard's side answers what was in flight.
Effect.runFork(
  Effect.scoped(program).pipe(
    Effect.catchAllCause((cause) =>
      Effect.sync(() => {
        port?.postMessage({ fatal: Cause.pretty(cause), stage } satisfies Reply)
        process.exitCode = 1
      })
    ),
    Effect.ensuring(Effect.sync(() => port?.close()))
  )
)
