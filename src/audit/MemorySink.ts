/**
 * An in-memory `AuditSink` for tests: it keeps what it appends and dead-letters, in order, hash-chains the
 * appended events (so durable acknowledgements carry a real position) and lets a test inject the failures
 * the SQL sink meets in production:
 *
 * - `unavailable(reason)`: every write fails with `unavailable: true` (a full disk, a locked file): the
 *   `AuditQueue` stalls and holds every event, in order, until `heal()`;
 * - `failNext(n)`: the next `n` appends fail as the event's own failure (not unavailable), so the queue
 *   accounts them as failed;
 * - `dieNext(n)`: the next `n` appends die (a defect): the queue dead-letters the event and restarts;
 * - `latency`: each write takes this long on `Clock` (a slow disk), so `TestClock.adjust` drives it.
 *
 * It implements group commit (`appendBatch`, all or nothing), like `SqlAuditSink`. Nothing here touches a
 * database: a test of the pipeline's contract runs in microseconds, under `TestClock`.
 */
import type { Array as Arr } from "effect"
import { Context, Duration, Effect, Layer, Ref } from "effect"
import { digestHex } from "../internal/encoding.js"
import type { DeferredAuditEvent } from "./AuditEvent.js"
import type { AppendOutcome } from "./AuditSink.js"
import { Appended, AuditSink, AuditSinkError } from "./AuditSink.js"

/** What the sink does with the next write. */
export type Failure =
  | { readonly _tag: "Healthy" }
  | { readonly _tag: "Unavailable"; readonly reason: string }
  | { readonly _tag: "FailNext"; readonly remaining: number }
  | { readonly _tag: "DieNext"; readonly remaining: number }

/** A dead-lettered event and the reason it was given. */
export interface DeadLetter {
  readonly event: DeferredAuditEvent
  readonly reason: string
}

/** One appended event and its place in the sink's chain. */
export interface Row {
  readonly sequence: number
  readonly entryHash: string
  readonly event: DeferredAuditEvent
}

export interface Options {
  /** How long each write (one append, one batch, one dead letter) takes, on `Clock`. Default: none. */
  readonly latency?: Duration.DurationInput | undefined
}

export class MemorySink extends Context.Tag("agent-ledger/MemorySink")<MemorySink, {
  /** The sink to give the `AuditQueue` (`AuditQueue.layer({ sink: memory.sink })`). */
  readonly sink: Context.Tag.Service<AuditSink>
  /** The appended events in chain order. */
  readonly rows: Effect.Effect<ReadonlyArray<Row>>
  /** The dead-lettered events in the order they landed. */
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>>
  /** Writes made (appends and batches that reached the sink, failed or not): how many transactions a real sink would run. */
  readonly writes: Effect.Effect<number>
  /** From now on every write fails as unavailable, until `heal`. */
  readonly unavailable: (reason?: string) => Effect.Effect<void>
  /** The next `n` appends fail as the event's own failure. */
  readonly failNext: (n: number) => Effect.Effect<void>
  /** The next `n` appends die (a defect in the sink). */
  readonly dieNext: (n: number) => Effect.Effect<void>
  /** Back to healthy. */
  readonly heal: Effect.Effect<void>
}>() {}

/** The `MemorySink` service itself. */
export type Service = Context.Tag.Service<MemorySink>

const GENESIS = "0".repeat(64)

export const make = (options: Options = {}): Effect.Effect<Service> =>
  Effect.gen(function*() {
    const rows = yield* Ref.make<ReadonlyArray<Row>>([])
    const deadLetters = yield* Ref.make<ReadonlyArray<DeadLetter>>([])
    const failure = yield* Ref.make<Failure>({ _tag: "Healthy" })
    const writes = yield* Ref.make(0)
    const latency = options.latency === undefined ? undefined : Duration.decode(options.latency)

    /** One write's failure, if any, consuming a `FailNext`/`DieNext` count. */
    const nextFailure = (eventId: string) =>
      Effect.flatMap(
        Ref.modify(failure, (current): [Failure, Failure] => {
          if (current._tag === "FailNext" || current._tag === "DieNext") {
            const remaining = current.remaining - 1
            return [current, remaining > 0 ? { ...current, remaining } : { _tag: "Healthy" }]
          }
          return [current, current]
        }),
        (current): Effect.Effect<void, AuditSinkError> => {
          switch (current._tag) {
            case "Healthy":
              return Effect.void
            case "Unavailable":
              return Effect.fail(new AuditSinkError({ eventId, reason: current.reason, unavailable: true }))
            case "FailNext":
              return Effect.fail(new AuditSinkError({ eventId, reason: "injected failure (MemorySink.failNext)" }))
            case "DieNext":
              return Effect.die(new Error(`injected defect (MemorySink.dieNext) on ${eventId}`))
          }
        }
      )

    const write = <A>(eventId: string, body: Effect.Effect<A>): Effect.Effect<A, AuditSinkError> =>
      Effect.gen(function*() {
        yield* Ref.update(writes, (n) => n + 1)
        if (latency !== undefined) yield* Effect.sleep(latency)
        yield* nextFailure(eventId)
        return yield* body
      })

    /** Appends in order (idempotent by event id, as the SQL sink is). */
    const appendAll = (events: ReadonlyArray<DeferredAuditEvent>) =>
      Ref.modify(rows, (current): [ReadonlyArray<AppendOutcome>, ReadonlyArray<Row>] => {
        const next = [...current]
        const outcomes = events.map((event) => {
          const existing = next.find((row) => row.event.id === event.id)
          if (existing !== undefined) {
            return new Appended({
              uniqueRaceRetries: 0,
              position: { sequence: existing.sequence, entryHash: existing.entryHash }
            })
          }
          const sequence = next.length
          const entryHash = digestHex(`${next[sequence - 1]?.entryHash ?? GENESIS}${event.id}`)
          next.push({ sequence, entryHash, event })
          return new Appended({ uniqueRaceRetries: 0, position: { sequence, entryHash } })
        })
        return [outcomes, next]
      })

    const sink = AuditSink.of({
      append: (event) => write(event.id, Effect.map(appendAll([event]), (outcomes) => outcomes[0]!)),
      appendBatch: (events: Arr.NonEmptyReadonlyArray<DeferredAuditEvent>) => write(events[0].id, appendAll(events)),
      deadLetter: (event, reason) => write(event.id, Ref.update(deadLetters, (all) => [...all, { event, reason }])),
      deadLetterBatch: (events, reason) =>
        write(events[0].id, Ref.update(deadLetters, (all) => [...all, ...events.map((event) => ({ event, reason }))]))
    })

    return MemorySink.of({
      sink,
      rows: Ref.get(rows),
      deadLetters: Ref.get(deadLetters),
      writes: Ref.get(writes),
      unavailable: (reason = "injected: unavailable (MemorySink.unavailable)") =>
        Ref.set(failure, { _tag: "Unavailable", reason }),
      failNext: (n) => Ref.set(failure, n > 0 ? { _tag: "FailNext", remaining: n } : { _tag: "Healthy" }),
      dieNext: (n) => Ref.set(failure, n > 0 ? { _tag: "DieNext", remaining: n } : { _tag: "Healthy" }),
      heal: Ref.set(failure, { _tag: "Healthy" })
    })
  })

/** The memory sink as both `MemorySink` (to inspect and inject) and `AuditSink` (for the queue). */
export const layer = (options: Options = {}): Layer.Layer<MemorySink | AuditSink> =>
  Layer.effectContext(
    Effect.map(make(options), (memory) => Context.make(MemorySink, memory).pipe(Context.add(AuditSink, memory.sink)))
  )
