/**
 * The ledger writer thread: the SQLite connection that appends rows and dead letters lives in a
 * `worker_threads` worker, so the guard's thread (the queue, `submit`, acknowledgements, metrics, spans and
 * the guard's own messages) never waits on a commit, a row hash, a signature or an fsync. better-sqlite3
 * is synchronous: on the guard's thread every group commit would block its event loop.
 *
 * What crosses to the thread is a batch of `SqlAuditSink.PreparedEvent`s (the canonical payload and four
 * short strings per event) and the commit time; what comes back is the rows' positions or the attempt's
 * failure as a plain value. The sink's retries, dead-letter fallback and accounting stay on the guard's
 * thread, on its `Clock` (`SqlAuditSink.makeWith`), so the contract is the in-thread sink's.
 *
 * A thread that dies (killed, out of memory, its connection cannot open) answers every request in flight
 * with a `WriterThreadDied` defect: the `AuditQueue` treats it like any sink defect (the batch is retried
 * one event at a time, a poison event is dead-lettered, the drainer restarts), and the next request starts
 * a new thread. Appends are idempotent by event id, so a batch that committed before its thread died is
 * found in the chain, not written twice; one that had not committed was rolled back by SQLite.
 *
 * Only for a ledger file of its own (`LedgerSql.layerSqlite`): an application's database given through
 * `LedgerSql.fromSqlClient` is a connection (and transactions) of the application's thread and stays there.
 */
import type { SqlError } from "@effect/sql/SqlError"
import type { Scope } from "effect"
import { Context, Duration, Effect, Either, Layer, Option, Schedule, Schema } from "effect"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import type { AuditSigner } from "../audit/AuditSigner.js"
import { exportPem } from "../audit/AuditSigner.js"
import type { AuditSink, ChainPosition } from "../audit/AuditSink.js"
import type { ClassifiedFailure, FailureKind, Synchronous } from "../internal/sqlDialect.js"
import type { JournalRow } from "./JournalRow.js"
import type * as LedgerSql from "./LedgerSql.js"
import { DEFAULT_BUSY_TIMEOUT } from "./LedgerSql.js"
import * as SqlAuditSink from "./SqlAuditSink.js"

// ---------------------------------------------------------------------------------------------------------
// The messages between the two threads (structured-cloned: plain values only)
// ---------------------------------------------------------------------------------------------------------

/** What the thread is started with. */
export interface WorkerData {
  /** The ledger's SQLite file; none for a thread that only hashes and signs rows (`makeRowHasher`). */
  readonly filename: string | undefined
  readonly synchronous: Synchronous
  readonly busyTimeoutMillis: number
  /** The signer's PKCS#8 PEM: rows are signed in the thread. */
  readonly privateKeyPem?: string | undefined
}

export type Request =
  | {
    readonly id: number
    readonly op: "append"
    readonly events: ReadonlyArray<SqlAuditSink.PreparedEvent>
    readonly at: string
  }
  | {
    readonly id: number
    readonly op: "deadLetter"
    readonly events: ReadonlyArray<SqlAuditSink.PreparedEvent>
    readonly reason: string
    readonly at: string
  }
  | {
    readonly id: number
    readonly op: "journal"
    readonly rows: ReadonlyArray<JournalRow>
    readonly at: string
  }
  | {
    readonly id: number
    readonly op: "hashRows"
    readonly events: ReadonlyArray<SqlAuditSink.PreparedEvent>
    readonly head: ChainPosition | undefined
  }
  | { readonly id: number; readonly op: "crash"; readonly when: "beforeCommit" | "afterCommit" }

/** A request before the writer gives it its id. */
type RequestBody = Request extends infer R ? R extends { readonly id: number } ? Omit<R, "id"> : never : never

export type WireFailure =
  | {
    readonly _tag: "Retryable" | "Classified"
    readonly kind: FailureKind
    readonly code: string | null
    readonly description: string
  }
  | { readonly _tag: "Unrecoverable"; readonly reason: string; readonly environmental: boolean }
  | { readonly _tag: "AlreadyInChain"; readonly found: ReadonlyArray<readonly [string, number, string]> }

/** How far a thread got before it failed: its signing key, its connection, or serving requests. */
export type StartStage = "signer" | "open" | "running"

export type Reply =
  | { readonly ready: true }
  | { readonly fatal: string; readonly stage: StartStage }
  | { readonly id: number; readonly sequences?: ReadonlyArray<number>; readonly entryHashes?: ReadonlyArray<string> }
  | { readonly id: number; readonly rows: ReadonlyArray<SqlAuditSink.RowHashes> }
  | { readonly id: number; readonly failure: WireFailure }
  | { readonly id: number; readonly defect: string }

/** The writer thread ended while a request was in flight (or could not start). A defect of the sink. */
export class WriterThreadDied extends Schema.TaggedError<WriterThreadDied>()("WriterThreadDied", {
  reason: Schema.String,
  exitCode: Schema.NullOr(Schema.Number)
}) {
  override get message(): string {
    return `the ledger writer thread died: ${this.reason}`
  }
}

/**
 * The writer thread could not start: the layer is not built (a guard must not start on a ledger it cannot
 * write). `reason`:
 * - `entryNotFound`: the thread's entry file (or a module it imports) is missing (`AGENT_LEDGER_WRITER_ENTRY`,
 *   a bundle without `LedgerWriterWorker`)
 * - `signerRejected`: the thread could not load the signing key handed to it
 * - `ledgerUnopenable`: the thread could not open the ledger file with the ledger's settings
 * - `exitedBeforeReady`: the thread ended before it was ready for another reason (`detail` says which)
 * - `startTimedOut`: the thread was not ready within `startTimeout` (it is terminated)
 */
export class WriterStartError extends Schema.TaggedError<WriterStartError>()("WriterStartError", {
  reason: Schema.Literal("entryNotFound", "signerRejected", "ledgerUnopenable", "exitedBeforeReady", "startTimedOut"),
  /** The ledger file; null for a thread that only hashes rows (`makeRowHasher`). */
  filename: Schema.NullOr(Schema.String),
  detail: Schema.String,
  exitCode: Schema.NullOr(Schema.Number)
}) {
  override get message(): string {
    const what = this.filename === null ? "the ledger row thread" : `the ledger writer thread for ${this.filename}`
    return `${what} could not start (${this.reason}): ${this.detail}`
  }
}

/**
 * The writer thread is down: its restarts failed `restartSchedule` times in a row without a request being
 * answered in between (it cannot start, or it dies on every request). A write fails with it at once, after
 * one more attempt to start the thread; the sink reports it as `unavailable`, so the `AuditQueue` stalls,
 * holding its events in order, and tries again on its `stallSchedule`.
 */
export class WriterUnavailable extends Schema.TaggedError<WriterUnavailable>()("WriterUnavailable", {
  /** Why the last start or thread failed. */
  lastFailure: Schema.String,
  /** Thread starts since a request was last answered. */
  failedRestarts: Schema.Number
}) {
  override get message(): string {
    return `the ledger writer thread is down after ${this.failedRestarts} restarts without an answered write: ${this.lastFailure}`
  }
}

/**
 * The delays between restarts of a thread that died, and how many in a row (with no request answered in
 * between) before the writer is down (`WriterUnavailable`): exponential from 10 ms, capped at 1 second,
 * `DEFAULT_MAX_FAILED_RESTARTS` of them.
 */
export const DEFAULT_MAX_FAILED_RESTARTS = 5
export const defaultRestartSchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("10 millis").pipe(
  Schedule.union(Schedule.spaced("1 second")),
  Schedule.intersect(Schedule.recurs(DEFAULT_MAX_FAILED_RESTARTS))
)

/** How long the layer waits for its thread to be ready (a start slower than this is a `WriterStartError`). */
export const DEFAULT_START_TIMEOUT: Duration.Duration = Duration.seconds(30)

// ---------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------

export class LedgerWriter extends Context.Tag("agent-ledger/LedgerWriter")<LedgerWriter, {
  /** The sink's write transactions, run in the thread. */
  readonly store: SqlAuditSink.ChainStore
  /** Threads started so far: 1 + restarts (0 before the first write). */
  readonly threadStarts: Effect.Effect<number>
  /** Fault injection for tests: the thread exits inside its next append, before or after the commit. */
  readonly crashNextAppend: (when: "beforeCommit" | "afterCommit") => Effect.Effect<void>
  /** Fault injection for tests: terminates the thread now, whatever it is doing. */
  readonly terminate: Effect.Effect<void>
}>() {}

export type Service = Context.Tag.Service<LedgerWriter>

export interface Options {
  /** The ledger's SQLite file (schema already migrated, e.g. by `LedgerSql.layerSqlite`). */
  readonly filename: string
  /** Signs every row in the thread; must be a signer made by `AuditSigner` (its key is handed over). */
  readonly signer?: AuditSigner | undefined
  /** SQLite `synchronous`; default FULL. */
  readonly synchronous?: Synchronous | undefined
  /** SQLite `busy_timeout`; default 5 seconds. */
  readonly busyTimeout?: Duration.DurationInput | undefined
  /** How long closing waits for the thread to close its connection before terminating it; default 5 seconds. */
  readonly closeTimeout?: Duration.DurationInput | undefined
  /** How long a thread may take to be ready (on `Clock`); default `DEFAULT_START_TIMEOUT`. */
  readonly startTimeout?: Duration.DurationInput | undefined
  /**
   * The delay before each restart of a thread that died (on `Clock`); when it ends, the writer is down
   * (`WriterUnavailable`). Reset when a thread answers a request. Default `defaultRestartSchedule`.
   */
  readonly restartSchedule?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * Whether the ledger can be written from a thread: a file (not `:memory:`, which is per connection) and
 * no signer, or one whose key can be handed over (made by `AuditSigner`).
 */
export const supports = (
  options: { readonly filename: string; readonly signer?: AuditSigner | undefined }
): boolean => {
  if (options.filename === "" || options.filename === ":memory:" || options.filename.startsWith("file::memory:")) {
    return false
  }
  return signerCanMove(options.signer)
}

/** Whether rows can be signed in a thread: no signer, or one whose key can be handed over (made by `AuditSigner`). */
export const signerCanMove = (signer: AuditSigner | undefined): boolean => {
  if (signer === undefined) return true
  try {
    exportPem(signer)
    return true
  } catch {
    return false
  }
}

/** The span of one write transaction in the thread (a child of the queue's append span). */
export const SPAN_WRITE = "agent_ledger.ledger.write"

/**
 * The environment variable naming the thread's entry file, for an application that bundles agent-ledger
 * (bundle `LedgerWriterWorker` as an entry of its own and name the output here); tests set it to a bundle.
 */
export const ENTRY_ENV = "AGENT_LEDGER_WRITER_ENTRY"

/**
 * How to start the thread, unless `AGENT_LEDGER_WRITER_ENTRY` names the entry: its entry next to this module, with the same extension: `.js` when built
 * (dist/), `.mjs` beside a bundle that bundles the entry next to it, `.ts` under tsx or vitest. A `.ts`
 * entry is loaded through tsx's loader, registered inside the thread first (a worker's `--import tsx`
 * does not apply to its own entry module).
 */
const workerEntry = (): { readonly script: string | URL; readonly eval: boolean } => {
  const given = process.env[ENTRY_ENV]
  if (given !== undefined && given !== "") return { script: pathToFileURL(given), eval: false }
  const here = new URL(import.meta.url)
  const extension = here.pathname.slice(here.pathname.lastIndexOf("."))
  const url = new URL(`./LedgerWriterWorker${extension}`, here)
  if (extension !== ".ts") return { script: url, eval: false }
  let tsxApi = "tsx/esm/api"
  try {
    tsxApi = import.meta.resolve(tsxApi)
  } catch {
    // No import.meta.resolve (vitest's module runner): the bare specifier resolves from the working directory.
  }
  return {
    script: `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${
      JSON.stringify(url.href)
    }) })`,
    eval: true
  }
}

interface Thread {
  readonly worker: Worker
  /** Requests in flight, by id: each answered exactly once (by its reply, or by the thread's death). */
  readonly pending: Map<number, (reply: Reply | WriterThreadDied) => void>
  fatal: { readonly message: string; readonly stage: StartStage } | undefined
  error: { readonly message: string; readonly code: string | undefined } | undefined
  /** The thread has opened its connection (or, a row hasher, loaded its key). */
  ready: boolean
  exited: boolean
  exitCode: number | undefined
  /** Called once the thread is ready, or has ended without being so. */
  onStarted: (() => void) | undefined
}

const toFailure = (failure: WireFailure): SqlAuditSink.AttemptFailure | ClassifiedFailure => {
  switch (failure._tag) {
    case "Retryable":
    case "Classified": {
      const classified: ClassifiedFailure = {
        kind: failure.kind,
        code: Option.fromNullable(failure.code),
        description: failure.description
      }
      return failure._tag === "Classified" ? classified : new SqlAuditSink.Retryable({ failure: classified })
    }
    case "Unrecoverable":
      return new SqlAuditSink.Unrecoverable({ reason: failure.reason, environmental: failure.environmental })
    case "AlreadyInChain":
      return new SqlAuditSink.AlreadyInChain({
        found: new Map(failure.found.map(([id, sequence, entryHash]) => [id, { sequence, entryHash }]))
      })
  }
}

/** A supervised worker thread: what `make` and `makeRowHasher` send their requests through. */
interface Supervised {
  /**
   * A request, answered by its reply; resent once to a fresh thread when its thread dies under it. Fails
   * with `WriterUnavailable` when the writer is down.
   */
  readonly request: (message: RequestBody) => Effect.Effect<Reply, WriterUnavailable>
  /** A request to the current thread only (a death is a `WriterThreadDied` defect). */
  readonly requestOnce: (message: RequestBody) => Effect.Effect<Reply, WriterUnavailable>
  readonly threadStarts: Effect.Effect<number>
  readonly terminate: Effect.Effect<void>
}

type SuperviseOptions = Pick<Options, "closeTimeout" | "startTimeout" | "restartSchedule">

/** Why a thread that ended before it was ready did not start. */
const startErrorOf = (thread: Thread, filename: string | undefined): WriterStartError => {
  const common = { filename: filename ?? null, exitCode: thread.exitCode ?? null }
  if (thread.fatal !== undefined) {
    const reason = thread.fatal.stage === "signer"
      ? "signerRejected"
      : thread.fatal.stage === "open"
      ? "ledgerUnopenable"
      : "exitedBeforeReady"
    return new WriterStartError({ ...common, reason, detail: firstLine(thread.fatal.message) })
  }
  if (thread.error !== undefined) {
    const missing = thread.error.code === "ERR_MODULE_NOT_FOUND" || thread.error.code === "MODULE_NOT_FOUND"
    return new WriterStartError({
      ...common,
      reason: missing ? "entryNotFound" : "exitedBeforeReady",
      detail: firstLine(thread.error.message)
    })
  }
  return new WriterStartError({
    ...common,
    reason: "exitedBeforeReady",
    detail: `the thread exited with code ${thread.exitCode ?? "unknown"}`
  })
}

/** The first line of an error's text (a `Cause.pretty` carries its stack below it). */
const firstLine = (text: string): string => text.split("\n", 1)[0]!.trim()

/**
 * Starts a thread running `LedgerWriterWorker` with `data` and waits until it is ready: the first start
 * fails with `WriterStartError` (nothing is built on a writer that cannot start). A thread that dies is
 * replaced on the next request, after a delay on `restartSchedule`; when the schedule ends without a
 * request answered in between, the writer is down and requests fail with `WriterUnavailable` (each
 * trying one start first, so a writer whose cause went away comes back). Closes the thread with the scope
 * (asked to close, terminated after `closeTimeout`).
 */
const supervise = (
  data: WorkerData,
  options: SuperviseOptions
): Effect.Effect<Supervised, WriterStartError, Scope.Scope> =>
  Effect.gen(function*() {
    const entry = workerEntry()
    const startTimeout = options.startTimeout ?? DEFAULT_START_TIMEOUT
    const restartDriver = yield* Schedule.driver(options.restartSchedule ?? defaultRestartSchedule)
    /** One replacement at a time: concurrent requests to a dead thread wait for the same new one. */
    const restartLock = yield* Effect.makeSemaphore(1)
    let current: Thread | undefined
    /** A thread not ready yet (`terminate` ends it too). */
    let starting: Thread | undefined
    let starts = 0
    let nextId = 0
    let closed = false
    /** Thread starts since a request was last answered, and whether one has been answered since. */
    let failedRestarts = 0
    let answered = false
    /** Why the last thread ended or failed to start. */
    let lastFailure = "the thread ended"
    /** Set once `restartSchedule` ended without an answered request: requests fail at once. */
    let down = false

    const spawn = (): Thread => {
      starts++
      const worker = new Worker(entry.script, { workerData: data, eval: entry.eval })
      const thread: Thread = {
        worker,
        pending: new Map(),
        fatal: undefined,
        error: undefined,
        ready: false,
        exited: false,
        exitCode: undefined,
        onStarted: undefined
      }
      worker.on("message", (reply: Reply) => {
        if ("fatal" in reply) thread.fatal = { message: reply.fatal, stage: reply.stage }
        if ("ready" in reply) {
          thread.ready = true
          // Held while it starts (a host awaiting the layer has nothing else keeping it alive), then idle.
          if (thread.pending.size === 0) worker.unref()
          thread.onStarted?.()
        }
        if (!("id" in reply)) return
        const answer = thread.pending.get(reply.id)
        if (answer === undefined) return
        thread.pending.delete(reply.id)
        answered = true
        down = false
        // An idle thread does not keep the process alive; one with requests in flight does.
        if (thread.pending.size === 0) worker.unref()
        answer(reply)
      })
      worker.on("error", (error: Error & { readonly code?: unknown }) => {
        thread.error = { message: error.message, code: typeof error.code === "string" ? error.code : undefined }
      })
      worker.on("exit", (exitCode) => {
        thread.exited = true
        thread.exitCode = exitCode
        thread.onStarted?.()
        if (current === thread) current = undefined
        const died = new WriterThreadDied({
          reason: thread.fatal?.message ?? thread.error?.message ?? `the thread exited with code ${exitCode}`,
          exitCode
        })
        if (thread.ready) lastFailure = firstLine(died.reason)
        const answers = Array.from(thread.pending.values())
        thread.pending.clear()
        for (const answer of answers) answer(died)
      })
      return thread
    }

    /** A new thread, once it is ready; terminated when it is not ready within `startTimeout`. */
    const start: Effect.Effect<Thread, WriterStartError> = Effect.gen(function*() {
      const thread = yield* Effect.try({
        try: spawn,
        catch: (error) =>
          new WriterStartError({
            reason: "exitedBeforeReady",
            filename: data.filename ?? null,
            detail: `the thread could not be created: ${error instanceof Error ? error.message : String(error)}`,
            exitCode: null
          })
      })
      starting = thread
      yield* Effect.async<void>((resume) => {
        if (thread.ready || thread.exited) return resume(Effect.void)
        thread.onStarted = () => resume(Effect.void)
        // Timed out or interrupted while starting: the thread is not wanted.
        return Effect.sync(() => void thread.worker.terminate())
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          starting = undefined
        })),
        Effect.timeoutFail({
          duration: startTimeout,
          onTimeout: () =>
            new WriterStartError({
              reason: "startTimedOut",
              filename: data.filename ?? null,
              detail: `not ready within ${Duration.format(Duration.decode(startTimeout))}`,
              exitCode: null
            })
        })
      )
      thread.onStarted = undefined
      if (!thread.ready || thread.exited) return yield* startErrorOf(thread, data.filename)
      return thread
    })

    /**
     * The current thread, or a new one after a delay on `restartSchedule`. A start that fails is tried
     * again on the schedule; once it has ended, the writer is down: one start is tried, and its failure is
     * the request's `WriterUnavailable`.
     */
    const replace: Effect.Effect<Thread, WriterUnavailable> = restartLock.withPermits(1)(Effect.gen(function*() {
      while (true) {
        if (current !== undefined && !current.exited) return current
        if (closed) {
          return yield* Effect.die(new WriterThreadDied({ reason: "the ledger writer is closed", exitCode: null }))
        }
        if (answered) {
          answered = false
          failedRestarts = 0
          yield* restartDriver.reset
        }
        if (!down && Either.isLeft(yield* Effect.either(restartDriver.next(lastFailure)))) {
          down = true
          yield* Effect.logError(
            `agent-ledger: the ledger writer thread is DOWN after ${failedRestarts} restarts without an answered ` +
              `write; writes fail as unavailable (the audit queue holds its events) and each tries one more start: ` +
              lastFailure
          )
        }
        failedRestarts++
        const started = yield* Effect.either(start)
        if (Either.isRight(started)) {
          current = started.right
          yield* Effect.logWarning(`agent-ledger: ledger writer thread restarted (start ${starts})`)
          return current
        }
        lastFailure = started.left.message
        yield* Effect.logWarning(`agent-ledger: ${lastFailure}`)
        if (down) return yield* new WriterUnavailable({ lastFailure, failedRestarts })
      }
    }))

    const thread: Effect.Effect<Thread, WriterUnavailable> = Effect.suspend(() =>
      current !== undefined && !current.exited ? Effect.succeed(current) : replace
    )

    /** One request to the current thread, answered by its reply or by the thread's death (a defect). */
    const requestOnce = (message: RequestBody): Effect.Effect<Reply, WriterUnavailable> =>
      Effect.flatMap(thread, (t) =>
        Effect.async<Reply>((resume) => {
          if (t.exited) {
            return resume(Effect.die(new WriterThreadDied({ reason: lastFailure, exitCode: t.exitCode ?? null })))
          }
          const id = nextId++
          t.pending.set(
            id,
            (reply) => resume(reply instanceof WriterThreadDied ? Effect.die(reply) : Effect.succeed(reply))
          )
          t.worker.ref()
          t.worker.postMessage({ ...message, id })
          // An interrupted caller stops waiting; the thread still finishes (and its reply is dropped).
          return Effect.sync(() => {
            t.pending.delete(id)
            if (t.pending.size === 0) t.worker.unref()
          })
        }))

    /**
     * A request, sent once more to a fresh thread when its thread dies under it: a thread that is killed
     * (or was dying when the request reached it) costs a restart, not the events. Safe to repeat: appends
     * are idempotent by event id; a dead-letter write that committed before the death is written twice
     * (replay marks both); hashing rows has no effect. A second death in a row is the sink's defect, for
     * the queue's supervisor; a death once the writer is down is `WriterUnavailable` (the events wait).
     */
    const request = (message: RequestBody): Effect.Effect<Reply, WriterUnavailable> =>
      requestOnce(message).pipe(
        Effect.catchSomeDefect((defect) => {
          if (!(defect instanceof WriterThreadDied) || closed) return Option.none()
          const unavailable = (died: WriterThreadDied) =>
            Effect.fail(new WriterUnavailable({ lastFailure: firstLine(died.reason), failedRestarts }))
          if (down) return Option.some(unavailable(defect))
          return Option.some(
            Effect.catchSomeDefect(
              requestOnce(message),
              (again) =>
                again instanceof WriterThreadDied && down && !closed ? Option.some(unavailable(again)) : Option.none()
            )
          )
        })
      )

    /** Asks the thread to close (its connection) and waits for it to end, then terminates it if it has not. */
    const close = Effect.suspend(() => {
      closed = true
      const t = current
      if (t === undefined || t.exited) return Effect.void
      const ended = Effect.async<void>((resume) => {
        t.worker.once("exit", () => resume(Effect.void))
        t.worker.postMessage("close")
      })
      return ended.pipe(
        Effect.timeout(options.closeTimeout ?? "5 seconds"),
        Effect.catchAll(() => Effect.promise(() => t.worker.terminate())),
        Effect.asVoid
      )
    })
    yield* Effect.addFinalizer(() => close)
    // Started with the layer, which is ready once the thread has its connection: the first refusal does not
    // wait for the thread's start-up, and a thread that cannot start fails the layer (`WriterStartError`).
    current = yield* start

    return {
      request,
      requestOnce,
      threadStarts: Effect.sync(() => starts),
      terminate: Effect.suspend(() => {
        const t = current ?? starting
        if (t === undefined) return Effect.void
        // No request goes to a thread being terminated; the ones in flight are answered when it exits.
        current = undefined
        return Effect.asVoid(Effect.promise(() => t.worker.terminate()))
      })
    }
  })

const defectOf = (reply: Reply): Option.Option<string> => "defect" in reply ? Option.some(reply.defect) : Option.none()

const privateKeyPemOf = (signer: AuditSigner | undefined): string | undefined =>
  signer === undefined ? undefined : exportPem(signer).privateKeyPem

/** What a write fails with while the writer is down: the environment's fault, so the queue holds the events. */
const downAsClassified = (error: WriterUnavailable): ClassifiedFailure => ({
  kind: "unavailable",
  code: Option.none(),
  description: error.message
})

/**
 * Starts the writer thread and waits until it has opened the ledger (`WriterStartError` when it cannot);
 * closing the scope closes its connection and ends it.
 */
export const make = (options: Options): Effect.Effect<Service, WriterStartError, Scope.Scope> =>
  Effect.gen(function*() {
    const { request, requestOnce, terminate, threadStarts } = yield* supervise({
      filename: options.filename,
      synchronous: options.synchronous ?? "FULL",
      busyTimeoutMillis: Duration.toMillis(Duration.decode(options.busyTimeout ?? DEFAULT_BUSY_TIMEOUT)),
      privateKeyPem: privateKeyPemOf(options.signer)
    }, options)

    /** The request as a span: the thread's statements are not traced, its round trip is. */
    const traced = (
      effect: Effect.Effect<Reply, WriterUnavailable>,
      op: "append" | "dead_letter" | "journal",
      rows: number
    ) => Effect.withSpan(effect, SPAN_WRITE, { attributes: { "agent_ledger.op": op, "agent_ledger.rows": rows } })

    const store: SqlAuditSink.ChainStore = {
      appendAfterHead: (events, at) =>
        Effect.flatMap(
          Effect.mapError(
            traced(request({ op: "append", events, at }), "append", events.length),
            (down) => new SqlAuditSink.Unrecoverable({ reason: down.message, environmental: true })
          ),
          (reply) => {
            const defect = defectOf(reply)
            if (Option.isSome(defect)) return Effect.dieMessage(`ledger writer thread: ${defect.value}`)
            if ("failure" in reply) return Effect.fail(toFailure(reply.failure) as SqlAuditSink.AttemptFailure)
            const sequences = "sequences" in reply ? reply.sequences ?? [] : []
            const hashes = "entryHashes" in reply ? reply.entryHashes ?? [] : []
            return Effect.succeed(sequences.map((sequence, i): ChainPosition => ({ sequence, entryHash: hashes[i]! })))
          }
        ),
      insertDeadLetters: (events, reason, at) =>
        Effect.flatMap(
          Effect.mapError(
            traced(request({ op: "deadLetter", events, reason, at }), "dead_letter", events.length),
            downAsClassified
          ),
          (reply) => {
            const defect = defectOf(reply)
            if (Option.isSome(defect)) return Effect.dieMessage(`ledger writer thread: ${defect.value}`)
            return "failure" in reply ? Effect.fail(toFailure(reply.failure) as ClassifiedFailure) : Effect.void
          }
        ),
      insertJournalEntries: (rows, at) =>
        Effect.flatMap(
          Effect.mapError(traced(request({ op: "journal", rows, at }), "journal", rows.length), downAsClassified),
          (reply) => {
            const defect = defectOf(reply)
            if (Option.isSome(defect)) return Effect.dieMessage(`ledger writer thread: ${defect.value}`)
            return "failure" in reply ? Effect.fail(toFailure(reply.failure) as ClassifiedFailure) : Effect.void
          }
        )
    }

    return LedgerWriter.of({
      store,
      threadStarts,
      crashNextAppend: (when) => Effect.asVoid(Effect.orDie(requestOnce({ op: "crash", when }))),
      terminate
    })
  })

/**
 * For a ledger whose connection stays on the caller's thread (PostgreSQL's async client): a thread that
 * computes the rows' payload hashes, entry hashes and Ed25519 signatures (`SqlAuditSink.hashRowsAfter`),
 * asked inside each write transaction once the head is known (the entry hash chains on it, so with
 * several writers racing nothing past the payload hash can be computed before the lock). A thread that dies
 * is restarted as the writer thread is; the transaction it was hashing for rolls back. A thread that cannot
 * start fails the layer (`WriterStartError`); once the thread is down (`WriterUnavailable`), the rows are
 * hashed and signed on the caller's thread instead (the same rows, only slower for the host).
 */
export const makeRowHasher = (
  options: Pick<Options, "signer" | "closeTimeout" | "startTimeout" | "restartSchedule">
): Effect.Effect<
  {
    readonly hashRows: SqlAuditSink.RowHasher
    readonly threadStarts: Effect.Effect<number>
    /** Fault injection for tests: terminates the thread now, whatever it is doing. */
    readonly terminate: Effect.Effect<void>
  },
  WriterStartError,
  Scope.Scope
> =>
  Effect.map(
    supervise({
      filename: undefined,
      synchronous: "FULL",
      busyTimeoutMillis: 0,
      privateKeyPem: privateKeyPemOf(options.signer)
    }, options),
    ({ request, terminate, threadStarts }) => ({
      threadStarts,
      terminate,
      hashRows: (events, head) =>
        Effect.flatMap(
          Effect.catchTag(
            request({ op: "hashRows", events, head }),
            "WriterUnavailable",
            (): Effect.Effect<Reply> =>
              Effect.sync(() => ({ id: -1, rows: SqlAuditSink.hashRowsAfter(events, head, options.signer) }))
          ),
          (reply) => {
            const defect = defectOf(reply)
            if (Option.isSome(defect)) return Effect.dieMessage(`ledger row thread: ${defect.value}`)
            return "rows" in reply
              ? Effect.succeed(reply.rows)
              : Effect.dieMessage("ledger row thread: a reply without rows")
          }
        )
    })
  )

export const layer = (options: Options): Layer.Layer<LedgerWriter, WriterStartError> =>
  Layer.scoped(LedgerWriter, make(options))

/**
 * `SqlAuditSink` and `AuditSink` on the ledger's own connection (PostgreSQL), with the rows hashed and
 * signed in a thread (`makeRowHasher`).
 */
export const layerHashingSink = (
  options:
    & Omit<SqlAuditSink.Options, "signer">
    & Pick<Options, "signer" | "closeTimeout" | "startTimeout" | "restartSchedule">
): Layer.Layer<SqlAuditSink.SqlAuditSink | AuditSink, SqlError | WriterStartError, LedgerSql.LedgerSql> =>
  Layer.scopedContext(
    Effect.flatMap(
      makeRowHasher(options),
      ({ hashRows }) => Effect.map(SqlAuditSink.make(options, hashRows), SqlAuditSink.contextOf)
    )
  )

/**
 * `SqlAuditSink` and `AuditSink` writing through the writer thread (and `LedgerWriter` itself); reads run
 * on the ledger's connection (`LedgerSql`, which also migrated the schema).
 */
export const layerSink = (
  options: Options & Pick<SqlAuditSink.Options, "retrySchedule" | "maxTransactionBytes">
): Layer.Layer<SqlAuditSink.SqlAuditSink | AuditSink | LedgerWriter, WriterStartError, LedgerSql.LedgerSql> =>
  Layer.effectContext(
    Effect.flatMap(LedgerWriter, (writer) =>
      Effect.map(
        SqlAuditSink.makeWith(writer.store, options),
        (sink) => Context.add(SqlAuditSink.contextOf(sink), LedgerWriter, writer)
      ))
  ).pipe(Layer.provideMerge(layer(options)))
