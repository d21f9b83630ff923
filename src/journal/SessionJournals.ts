/**
 * The registry of open session journals: one `SessionJournal` per session id, created on first use and
 * handed back on every later `get`, until `end` closes the session and returns its final export.
 */
import { Context, Effect, HashMap, Layer, Option, SynchronizedRef } from "effect"
import * as JournalStore from "../ledger/JournalStore.js"
import * as SessionJournal from "./SessionJournal.js"

export class SessionJournals extends Context.Tag("agent-ledger/SessionJournals")<SessionJournals, {
  /**
   * The open journal of `sessionId`, created empty on first use. Concurrent first `get`s of one id all
   * receive the same journal.
   */
  readonly get: (sessionId: string) => Effect.Effect<SessionJournal.Journal>
  /**
   * Close `sessionId`: forget its journal and return its final export (`None` if it is not open).
   * A later `get` of the same id starts a new, empty journal (a new chain from the zero hash); records
   * made afterwards through a journal obtained before `end` are not in the returned export.
   */
  readonly end: (sessionId: string) => Effect.Effect<Option.Option<SessionJournal.JournalExport>>
  /** The ids of the open sessions, sorted. */
  readonly list: Effect.Effect<ReadonlyArray<string>>
}>() {}

/** The `SessionJournals` service itself (what `yield* SessionJournals` gives). */
export type Service = Context.Tag.Service<SessionJournals>

/**
 * The registry; with `options.store`, every journal it opens is durable (`SessionJournal.make` with the
 * store). `resumed`: journals open from the start (restored from the store by their session id), handed
 * back by `get` instead of a new, empty one.
 */
export const makeWith = (
  options: SessionJournal.Options = {},
  resumed: ReadonlyArray<SessionJournal.Journal> = []
): Effect.Effect<Service> =>
  Effect.gen(function*() {
    let initial = HashMap.empty<string, SessionJournal.Journal>()
    for (const journal of resumed) initial = HashMap.set(initial, yield* journal.sessionId, journal)
    const open = yield* SynchronizedRef.make(initial)

    // Creation happens inside one `modifyEffect`, which serializes creators, so two fibers racing on a new
    // id cannot both create a journal. The lock-free read first keeps `get` of an open session cheap.
    const get = (sessionId: string) =>
      Effect.flatMap(SynchronizedRef.get(open), (journals) =>
        Option.match(HashMap.get(journals, sessionId), {
          onSome: Effect.succeed,
          onNone: () =>
            SynchronizedRef.modifyEffect(open, (current) =>
              Option.match(HashMap.get(current, sessionId), {
                onSome: (journal) => Effect.succeed([journal, current] as const),
                onNone: () =>
                  Effect.map(
                    SessionJournal.make(sessionId, options),
                    (journal) => [journal, HashMap.set(current, sessionId, journal)] as const
                  )
              }))
        }))

    const end = (sessionId: string) =>
      SynchronizedRef.modifyEffect(open, (current) =>
        Option.match(HashMap.get(current, sessionId), {
          onNone: () => Effect.succeed([Option.none(), current] as const),
          onSome: (journal) =>
            Effect.map(
              journal.export,
              (exported) => [Option.some(exported), HashMap.remove(current, sessionId)] as const
            )
        }))

    const list = Effect.map(SynchronizedRef.get(open), (journals) => Array.from(HashMap.keys(journals)).sort())

    return SessionJournals.of({ get, end, list })
  })

/** In-memory journals (the library's default). */
export const make: Effect.Effect<Service> = makeWith()

export const layer: Layer.Layer<SessionJournals> = Layer.effect(SessionJournals, make)

/** Journals stored in the ledger as they are recorded (`JournalStore`). */
export const layerDurable: Layer.Layer<SessionJournals, never, JournalStore.JournalStore> = Layer.effect(
  SessionJournals,
  Effect.flatMap(JournalStore.JournalStore, (store) => makeWith({ store }))
)
