/**
 * The questions operators ask a ledger, answered without `sqlite3` (rekor-cli `get`/`search`, `git log` and
 * `tail -f` are the models): one row by sequence or event id with its session entry and seal (`show`), a
 * filtered log of what agents did (`log`, `page`, `recent`, `follow`), the sessions the ledger knows
 * (`sessions`) and one session's journal with its data-flow totals (`session`). The same on SQLite files and
 * PostgreSQL, every answer a Schema-typed value, so the CLI and the web console print and serve the same
 * thing.
 *
 * Rows are hostile input here too: filters are bound parameters, never SQL text; fields inside a payload
 * (rule, tool, session) are narrowed in SQL by a plain substring test on the stored payload text (`instr` /
 * `strpos`, which no payload can make fail, unlike a JSON cast: PostgreSQL's `jsonb` refuses `\u0000`) and
 * then checked exactly on the decoded payload, so an argument that merely contains `"ruleId":"R"` is never
 * reported as rule R. A row whose payload does not decode is still listed, with `problem` saying why.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Fragment } from "@effect/sql/Statement"
import { Chunk, Clock, Context, DateTime, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import {
  APPROVAL_EVENT_TYPE,
  GOVERNANCE_REFUSAL_EVENT_TYPE,
  JsonValue,
  SESSION_SEALED_EVENT_TYPE,
  TOOL_CHANGED_EVENT_TYPE,
  TOOL_PINNED_EVENT_TYPE,
  WOULD_REFUSE_EVENT_TYPE
} from "../audit/AuditEvent.js"
import * as LedgerRow from "../ledger/LedgerRow.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as JournalEntries from "./JournalEntries.js"

// ---------------------------------------------------------------------------------------------------------
// What a query answers
// ---------------------------------------------------------------------------------------------------------

/** The guard's decision on a call, as operators filter by it. */
export const Decision = Schema.Literal("allow", "refuse")
export type Decision = typeof Decision.Type

/**
 * What a log entry is: a refused call (`refusal`, a `governance.refusal` row), a session seal (`seal`, a
 * `session.sealed` row), a journaled call (`call`, an allowed call from the stored session journal), a
 * refusal a guard in shadow mode would have made (`would-refuse`, a `governance.would-refuse` row), a
 * question a guard asked a person and its answer (`approval`, a `governance.approval` row), a tool
 * definition a guard pinned or an operator approved (`tool-pinned`, a `tool.pinned` row), a pinned tool
 * whose definition changed (`tool-changed`, a `tool.changed` row), or a ledger row of a type this version
 * does not know (`other`).
 */
export const EntryKind = Schema.Literal(
  "refusal",
  "seal",
  "call",
  "would-refuse",
  "approval",
  "tool-pinned",
  "tool-changed",
  "other"
)
export type EntryKind = typeof EntryKind.Type

/** The `event_type` of each kind of ledger row the log names (`call` entries come from the journal). */
const EVENT_TYPE_OF_KIND: Readonly<Partial<Record<EntryKind, string>>> = {
  refusal: GOVERNANCE_REFUSAL_EVENT_TYPE,
  seal: SESSION_SEALED_EVENT_TYPE,
  "would-refuse": WOULD_REFUSE_EVENT_TYPE,
  approval: APPROVAL_EVENT_TYPE,
  "tool-pinned": TOOL_PINNED_EVENT_TYPE,
  "tool-changed": TOOL_CHANGED_EVENT_TYPE
}
const KIND_OF_EVENT_TYPE: ReadonlyMap<string, EntryKind> = new Map(
  Object.entries(EVENT_TYPE_OF_KIND).map(([kind, eventType]) => [eventType, kind as EntryKind])
)

const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/** One line of the log. Fields that do not apply to the entry's kind are null. */
export class LogEntry extends Schema.Class<LogEntry>("LogEntry")({
  /** Where the log continues after this entry (`page`'s and `follow`'s `after`); opaque. */
  cursor: Schema.String,
  kind: EntryKind,
  /** The ledger row's sequence (null for a call only the session journal records). */
  ledgerSequence: Schema.NullOr(NonNegativeInt),
  /** The ledger row's event id (UUID v7). */
  eventId: Schema.NullOr(Schema.String),
  /** RFC 3339, as stored. */
  timestamp: Schema.String,
  agentId: Schema.String,
  /**
   * `refuse` for a refused call, `allow` for an allowed one; null for the other kinds (a seal, a guard's
   * record; a `would-refuse` call was allowed, its journaled call says so).
   */
  decision: Schema.NullOr(Decision),
  ruleId: Schema.NullOr(Schema.String),
  reason: Schema.NullOr(Schema.String),
  /** The action's kind (`ToolCall`, `DataAccess`, `Delegation`, `Custom`). */
  action: Schema.NullOr(Schema.String),
  toolName: Schema.NullOr(Schema.String),
  serverId: Schema.NullOr(Schema.String),
  /** The session journal the entry belongs to (a refusal's `journal`, a seal's session). */
  sessionId: Schema.NullOr(Schema.String),
  /** The entry's position in its session journal. */
  journalSequence: Schema.NullOr(NonNegativeInt),
  /** A seal's length (entries sealed) and head hash. */
  sealLength: Schema.NullOr(NonNegativeInt),
  sealHeadHash: Schema.NullOr(Schema.String),
  /**
   * How the call ended, for journaled calls (`result`, `errorAnswer`, `timedOut`, `upstreamGone`,
   * `interrupted`; `pending` when no outcome is stored: the call never finished) and `refused` for refusals;
   * for an approval, what the answer did to the call (`allowed` or `refused`).
   */
  outcome: Schema.NullOr(Schema.String),
  /** Bytes the call read and wrote (known for journaled calls). */
  bytesRead: Schema.NullOr(NonNegativeInt),
  bytesWritten: Schema.NullOr(NonNegativeInt),
  /**
   * An approval's answer (`accept`, `decline`, `cancel`, `timeout`, `unavailable`) and who gave it (null
   * when nobody answered); who was asked is `reason`'s neighbour in the row (`show`).
   */
  answer: Schema.NullOr(Schema.String),
  approver: Schema.NullOr(Schema.String),
  /** A `tool-pinned` entry's pinned definition digest, a `tool-changed` entry's new one. */
  digest: Schema.NullOr(Schema.String),
  /** Why fields are missing: the stored payload could not be read (a damaged or foreign row). */
  problem: Schema.NullOr(Schema.String)
}) {}

/** One `session.sealed` row: what it commits the session journal to. */
export class SealInfo extends Schema.Class<SealInfo>("SealInfo")({
  ledgerSequence: NonNegativeInt,
  eventId: Schema.String,
  timestamp: Schema.String,
  sessionId: Schema.String,
  /** Entries sealed: `0 … length - 1`. */
  length: NonNegativeInt,
  headHash: Schema.String
}) {}

/** The session journal entry a row belongs to. */
export class SessionEntryRef extends Schema.Class<SessionEntryRef>("SessionEntryRef")({
  sessionId: Schema.String,
  /** Null for a seal row (it belongs to the session, not to one entry). */
  sequence: Schema.NullOr(NonNegativeInt)
}) {}

/** `show`: one ledger row as stored, decoded, with its session entry and the seal that covers it. */
export class ShownRow extends Schema.Class<ShownRow>("ShownRow")({
  row: LedgerRow.LedgerRow,
  entry: LogEntry,
  /** The payload, parsed (null when it is not JSON). */
  payload: Schema.NullOr(JsonValue),
  session: Schema.NullOr(SessionEntryRef),
  /**
   * The first seal of the session that covers the entry (its length is past the entry's sequence); for a
   * seal row, the session's last seal. Null when no seal covers it yet.
   */
  seal: Schema.NullOr(SealInfo)
}) {}

/** One session as the ledger knows it. */
export class SessionSummary extends Schema.Class<SessionSummary>("SessionSummary")({
  sessionId: Schema.String,
  agentId: Schema.String,
  /** The first and last timestamps the ledger has of the session (RFC 3339). */
  start: Schema.String,
  end: Schema.String,
  /**
   * Calls the ledger proves the session made: its journal entries when the journal is stored; else the
   * larger of the last seal's length and one past the last refused entry (a lower bound).
   */
  calls: NonNegativeInt,
  refusals: NonNegativeInt,
  sealed: Schema.Boolean,
  /** The last seal's length and ledger sequence (later seals supersede earlier ones). */
  sealedLength: Schema.NullOr(NonNegativeInt),
  lastSealSequence: Schema.NullOr(NonNegativeInt)
}) {}

/** Calls, refusals and bytes of one tool in a session. */
export class ToolTotals extends Schema.Class<ToolTotals>("ToolTotals")({
  toolName: Schema.String,
  serverId: Schema.String,
  calls: NonNegativeInt,
  refusals: NonNegativeInt,
  bytesRead: NonNegativeInt,
  bytesWritten: NonNegativeInt
}) {}

/** `session`: one session's journal as the ledger has it, with data-flow totals. */
export class SessionDetail extends Schema.Class<SessionDetail>("SessionDetail")({
  summary: SessionSummary,
  seals: Schema.Array(SealInfo),
  /** The session's entries in journal order (at most `MAX_SESSION_ENTRIES`). */
  entries: Schema.Array(LogEntry),
  /** True when the session has more entries than `entries` holds. */
  truncated: Schema.Boolean,
  /** Whether the ledger stores the session's journal (every call), or only its refusals and seals. */
  journalStored: Schema.Boolean,
  totals: Schema.Struct({
    calls: NonNegativeInt,
    refusals: NonNegativeInt,
    bytesRead: NonNegativeInt,
    bytesWritten: NonNegativeInt
  }),
  byTool: Schema.Array(ToolTotals)
}) {}

/** `page`: some entries and where the next page starts (null when there is none). */
export class LogPage extends Schema.Class<LogPage>("LogPage")({
  entries: Schema.Array(LogEntry),
  next: Schema.NullOr(Schema.String)
}) {}

// ---------------------------------------------------------------------------------------------------------
// What a query asks
// ---------------------------------------------------------------------------------------------------------

/**
 * A log filter; every field is optional and they combine with AND. `since` and `until` are inclusive.
 * Decodes from strings (ISO 8601 times), e.g. query parameters.
 */
export const LogQuery = Schema.Struct({
  kind: Schema.optional(EntryKind),
  agent: Schema.optional(Schema.String),
  rule: Schema.optional(Schema.String),
  session: Schema.optional(Schema.String),
  tool: Schema.optional(Schema.String),
  decision: Schema.optional(Decision),
  since: Schema.optional(Schema.DateTimeUtc),
  until: Schema.optional(Schema.DateTimeUtc)
})
export type LogQuery = typeof LogQuery.Type

/** The largest `page` limit. */
export const MAX_PAGE_LIMIT = 1000
/** The most entries `recent` returns. */
export const MAX_RECENT = 100_000
/** The most entries `session` lists. */
export const MAX_SESSION_ENTRIES = 100_000
/** How often `follow` looks for new rows by default. */
export const DEFAULT_POLL_INTERVAL = Duration.seconds(1)

export interface PageRequest {
  /** 1 … `MAX_PAGE_LIMIT`. */
  readonly limit: number
  /** A cursor from an entry or a page's `next`: the page starts after it. */
  readonly after?: string | undefined
  /** `asc` (default): oldest first; `desc`: newest first. */
  readonly order?: "asc" | "desc" | undefined
}

/** A query argument was unusable: `field` says which, `reason` how. */
export class InvalidQuery extends Schema.TaggedError<InvalidQuery>()("InvalidQuery", {
  field: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.reason}`
  }
}

/** Nothing in the ledger has this id. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  what: Schema.Literal("row", "session"),
  id: Schema.String
}) {
  override get message(): string {
    return this.what === "row" ? `no ledger row ${this.id}` : `no session ${this.id}`
  }
}

/**
 * A time bound as operators write it: RFC 3339 (`2026-11-24T06:52:03Z`, an offset, fractions), a UTC date
 * (`2026-11-24`, midnight), or an age before now (`90s`, `15m`, `2h`, `7d`, `1w`, from `Clock`). A time
 * without a zone is refused rather than guessed.
 */
export const parseTime = (text: string, field = "time"): Effect.Effect<DateTime.Utc, InvalidQuery> =>
  Effect.gen(function*() {
    const bad = (reason: string) => new InvalidQuery({ field, reason: `'${text.slice(0, 64)}' ${reason}` })
    const age = /^(\d{1,9})(s|m|h|d|w)$/.exec(text)
    if (age !== null) {
      const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[age[2] as "s"]
      const millis = (yield* Clock.currentTimeMillis) - Number(age[1]) * unit
      return yield* Option.match(DateTime.make(millis), {
        onNone: () => Effect.fail(bad("reaches before the earliest time")),
        onSome: (time) => Effect.succeed(DateTime.toUtc(time))
      })
    }
    const date = /^\d{4}-\d{2}-\d{2}$/.test(text)
    const dateTime = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})$/.test(text)
    if (!date && !dateTime) {
      return yield* bad(
        /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}/.test(text)
          ? "has no time zone (add Z or an offset such as +02:00)"
          : "is not a time (RFC 3339 such as 2026-11-24T06:52:03Z, a date such as 2026-11-24, or an age such as 2h)"
      )
    }
    const millis = Date.parse(date ? `${text}T00:00:00Z` : text.replace(" ", "T"))
    // Date.parse rolls 2026-02-30 over to March; a round trip of the date part catches it.
    if (
      !Number.isFinite(millis) || new Date(millis + offsetMillis(text)).toISOString().slice(0, 10) !== text.slice(0, 10)
    ) {
      return yield* bad("is not a valid date")
    }
    return DateTime.unsafeMake(millis)
  })

const offsetMillis = (text: string): number => {
  const offset = /([+-])(\d{2}):(\d{2})$/.exec(text)
  return offset === null ? 0 : (offset[1] === "-" ? -1 : 1) * (Number(offset[2]) * 60 + Number(offset[3])) * 60_000
}

/** What identifies an entry across scans: its ledger row, or else its session journal entry. */
export const entryKey = (entry: LogEntry): string =>
  entry.ledgerSequence !== null
    ? `ledger ${entry.ledgerSequence}`
    : `journal ${entry.journalSequence ?? ""} ${entry.sessionId ?? ""}`

/** What `show` takes: a ledger sequence (digits) or an event id (a UUID). */
export type RowId = { readonly sequence: number } | { readonly eventId: string }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** `17` → sequence 17, a UUID → that event id; anything else is an `InvalidQuery`. */
export const parseRowId = (text: string): Effect.Effect<RowId, InvalidQuery> => {
  if (/^\d+$/.test(text)) {
    const sequence = Number(text)
    return Number.isSafeInteger(sequence)
      ? Effect.succeed({ sequence })
      : Effect.fail(new InvalidQuery({ field: "id", reason: `sequence ${text.slice(0, 32)}… is too large` }))
  }
  const lower = text.toLowerCase()
  return UUID.test(lower)
    ? Effect.succeed({ eventId: lower })
    : Effect.fail(
      new InvalidQuery({
        field: "id",
        reason: `'${text.slice(0, 64)}' is neither a sequence number nor an event id (a UUID)`
      })
    )
}

// ---------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------

export interface Service {
  /** One ledger row, decoded, with its session entry and seal. */
  readonly show: (id: RowId) => Effect.Effect<ShownRow, InvalidQuery | NotFound | SqlError>
  /** Every entry matching `query`, oldest first, read in pages (flat memory); starts after `after`. */
  readonly log: (
    query: LogQuery,
    options?: { readonly after?: string | undefined }
  ) => Stream.Stream<LogEntry, InvalidQuery | SqlError>
  /** One page of matching entries, for paging through a log (`next` continues it in the same order). */
  readonly page: (query: LogQuery, request: PageRequest) => Effect.Effect<LogPage, InvalidQuery | SqlError>
  /** The last `count` matching entries (1 … `MAX_RECENT`), oldest first: `tail -n`. */
  readonly recent: (query: LogQuery, count: number) => Effect.Effect<ReadonlyArray<LogEntry>, InvalidQuery | SqlError>
  /**
   * A cursor at the log's end now: `follow` from it prints only what is appended later (`recent` then
   * `follow(end)` is `tail -f`; an entry appended between the two may be in both, see `entryKey`).
   */
  readonly end: Effect.Effect<string, SqlError>
  /**
   * The matching entries after `after` (from the start when none), then every new one as it is appended,
   * polling every `pollInterval` (via `Clock`) once it has caught up; ends only when interrupted: `tail -f`.
   */
  readonly follow: (
    query: LogQuery,
    options?: { readonly after?: string | undefined; readonly pollInterval?: Duration.DurationInput | undefined }
  ) => Stream.Stream<LogEntry, InvalidQuery | SqlError>
  /** The sessions the ledger knows, in order of first appearance (optionally one agent's). */
  readonly sessions: (
    query?: { readonly agent?: string | undefined }
  ) => Effect.Effect<ReadonlyArray<SessionSummary>, SqlError>
  /** One session: its journal entries, seals and data-flow totals. */
  readonly session: (sessionId: string) => Effect.Effect<SessionDetail, NotFound | SqlError>
}

export class LedgerQuery extends Context.Tag("agent-ledger/LedgerQuery")<LedgerQuery, Service>() {}

/** Ledger rows read per SQL statement. */
const PAGE_SIZE = 256

export const make: Effect.Effect<Service, never, LedgerSql.LedgerSql> = Effect.gen(function*() {
  const ledger = yield* LedgerSql.LedgerSql
  const onLedger = LedgerSql.runOn(ledger)
  // A ledger written before journals were stored (and opened read-only, so not migrated) has no table.
  const journalStored = yield* onLedger(JournalEntries.tableExists)
  const scan = (query: LogQuery, position: Position, order: "asc" | "desc") =>
    onLedger(scanMerged(query, position, order, journalStored))

  const log: Service["log"] = (query, options = {}) =>
    Stream.unwrap(Effect.map(
      Effect.zip(checkQuery(query), parseCursor(options.after)),
      ([, after]) =>
        Stream.paginateChunkEffect(after, (position) =>
          Effect.map(
            scan(query, position, "asc"),
            (scanned) =>
              [
                Chunk.unsafeFromArray(scanned.matches),
                scanned.exhausted ? Option.none() : Option.some(scanned.position)
              ] as const
          ))
    ))

  const page: Service["page"] = (query, request) =>
    Effect.gen(function*() {
      yield* checkQuery(query)
      if (!Number.isSafeInteger(request.limit) || request.limit < 1 || request.limit > MAX_PAGE_LIMIT) {
        return yield* new InvalidQuery({ field: "limit", reason: `must be a whole number from 1 to ${MAX_PAGE_LIMIT}` })
      }
      const order = request.order ?? "asc"
      let position = yield* parseCursor(request.after)
      const entries: Array<LogEntry> = []
      for (;;) {
        const scanned = yield* scan(query, position, order)
        entries.push(...scanned.matches)
        if (entries.length >= request.limit || scanned.exhausted) {
          const more = entries.length > request.limit || (entries.length === request.limit && !scanned.exhausted)
          return new LogPage({
            entries: entries.slice(0, request.limit),
            next: more ? entries[request.limit - 1]!.cursor : null
          })
        }
        position = scanned.position
      }
    })

  const recent: Service["recent"] = (query, count) =>
    Effect.gen(function*() {
      if (!Number.isSafeInteger(count) || count < 1 || count > MAX_RECENT) {
        return yield* new InvalidQuery({ field: "limit", reason: `must be a whole number from 1 to ${MAX_RECENT}` })
      }
      yield* checkQuery(query)
      const newestFirst: Array<LogEntry> = []
      let position = START
      while (newestFirst.length < count) {
        const scanned = yield* scan(query, position, "desc")
        newestFirst.push(...scanned.matches)
        if (scanned.exhausted) break
        position = scanned.position
      }
      return newestFirst.slice(0, count).reverse()
    })

  const end: Service["end"] = onLedger(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const [head] = yield* sql<{ sequence: unknown }>`SELECT MAX(sequence) AS sequence FROM signed_events`
    const journal = journalStored ? yield* JournalEntries.lastKey : Option.none()
    const sequence = head?.sequence === null || head?.sequence === undefined ? NaN : Number(head.sequence)
    return encodeCursor({ ledger: Number.isSafeInteger(sequence) ? Option.some(sequence) : Option.none(), journal })
  }))

  const follow: Service["follow"] = (query, options = {}) => {
    const interval = Duration.decode(options.pollInterval ?? DEFAULT_POLL_INTERVAL)
    return Stream.unwrap(Effect.map(
      Effect.zip(checkQuery(query), parseCursor(options.after)),
      ([, after]) =>
        Stream.paginateChunkEffect({ position: after, caughtUp: false }, ({ caughtUp, position }) =>
          // Caught up last time: wait before looking again (Clock, so a test drives it with TestClock). The
          // wait comes before the next read, never between a read and what it found.
          Effect.zipRight(
            caughtUp ? Effect.sleep(interval) : Effect.void,
            Effect.map(scan(query, position, "asc"), (scanned) =>
              [
                Chunk.unsafeFromArray(scanned.matches),
                Option.some({ position: scanned.position, caughtUp: scanned.exhausted })
              ] as const)
          ))
    ))
  }

  const summariesOf = (agent: string | undefined, only?: string) =>
    onLedger(Effect.gen(function*() {
      const fromLedger = yield* sessionSummaries(agent, only)
      const fromJournal = journalStored ? yield* JournalEntries.sessionTotals(agent, only) : []
      return withJournalTotals(fromLedger, fromJournal)
    }))

  const sessions: Service["sessions"] = (query = {}) => summariesOf(query.agent)

  const session: Service["session"] = (sessionId) =>
    Effect.gen(function*() {
      const summary = (yield* summariesOf(undefined, sessionId)).find((s) => s.sessionId === sessionId)
      if (summary === undefined) return yield* new NotFound({ what: "session", id: sessionId })
      const seals = yield* onLedger(sealsOfSession(sessionId))
      const collected = yield* Stream.runCollect(
        log({ session: sessionId }).pipe(Stream.take(MAX_SESSION_ENTRIES + 1))
      ).pipe(Effect.catchTag("InvalidQuery", Effect.die))
      const fromLedger = Chunk.toReadonlyArray(collected).filter((entry) => entry.kind === "refusal")
      const stored = journalStored
        ? yield* onLedger(JournalEntries.sessionEntries(sessionId, 2 * MAX_SESSION_ENTRIES + 1))
        : []
      const all = stored.length === 0 ? fromLedger : journalView(stored, fromLedger)
      const entries = all.slice(0, MAX_SESSION_ENTRIES)
      return new SessionDetail({
        summary,
        seals,
        entries,
        truncated: all.length > MAX_SESSION_ENTRIES || stored.length > 2 * MAX_SESSION_ENTRIES,
        journalStored: stored.length > 0,
        ...totalsOf(entries, summary)
      })
    })

  const show: Service["show"] = (id) =>
    onLedger(Effect.gen(function*() {
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const where = "sequence" in id ? sql`sequence = ${id.sequence}` : sql`id = ${id.eventId}`
      const [raw] = yield* sql<Record<string, unknown>>`SELECT ${columns(sql)} FROM signed_events WHERE ${where}`
      const label = "sequence" in id ? String(id.sequence) : id.eventId
      if (raw === undefined) return yield* new NotFound({ what: "row", id: label })
      const row = yield* LedgerRow.decodeUnknown(raw).pipe(
        Effect.mapError((error) =>
          new InvalidQuery({ field: "row", reason: `row ${label} does not decode: ${error.message}` })
        )
      )
      const { entry, payload } = entryOf(raw)
      const sessionRef = entry.sessionId === null
        ? null
        : new SessionEntryRef({
          sessionId: entry.sessionId,
          sequence: entry.kind === "seal" ? null : entry.journalSequence
        })
      const seals = sessionRef === null ? [] : yield* sealsOfSession(sessionRef.sessionId)
      const seal = sessionRef === null
        ? null
        : sessionRef.sequence === null
        ? seals.find((s) => s.ledgerSequence === entry.ledgerSequence) ?? null
        : seals.find((s) => s.length > sessionRef.sequence!) ?? null
      return new ShownRow({ row, entry, payload, session: sessionRef, seal })
    }))

  return { show, log, page, recent, end, follow, sessions, session }
})

export const layer: Layer.Layer<LedgerQuery, never, LedgerSql.LedgerSql> = Layer.effect(LedgerQuery, make)

// ---------------------------------------------------------------------------------------------------------
// Reading ledger rows
// ---------------------------------------------------------------------------------------------------------

const checkQuery = (query: LogQuery): Effect.Effect<void, InvalidQuery> =>
  query.since !== undefined && query.until !== undefined && DateTime.lessThan(query.until, query.since)
    ? Effect.fail(new InvalidQuery({ field: "until", reason: "is before since" }))
    : Effect.void

/**
 * Where a scan is in each of the log's two sources: the ledger's rows (by sequence) and the stored
 * journal's calls (by time, session, sequence). None: not started (the start for `asc`, the end for `desc`).
 */
interface Position {
  readonly ledger: Option.Option<number>
  readonly journal: Option.Option<JournalEntries.Key>
}

const START: Position = { ledger: Option.none(), journal: Option.none() }

/** A cursor continues the order it was read in (`page`'s `order`); its text is opaque. */
const encodeCursor = (position: Position): string =>
  Option.isNone(position.journal)
    ? Option.match(position.ledger, { onNone: () => "start", onSome: (sequence) => `ledger:${sequence}` })
    : `log:${
      Buffer.from(JSON.stringify([
        Option.getOrNull(position.ledger),
        position.journal.value.ms,
        position.journal.value.session,
        position.journal.value.seq
      ])).toString("base64url")
    }`

const isSequence = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0

/** A cursor back to a position; anything else is an `InvalidQuery`. */
const parseCursor = (cursor: string | undefined): Effect.Effect<Position, InvalidQuery> => {
  if (cursor === undefined || cursor === "start") return Effect.succeed(START)
  const bad = Effect.fail(new InvalidQuery({ field: "after", reason: `'${cursor.slice(0, 64)}' is not a log cursor` }))
  const ledger = /^ledger:(\d{1,16})$/.exec(cursor)
  if (ledger !== null) {
    const sequence = Number(ledger[1])
    return isSequence(sequence) ? Effect.succeed({ ledger: Option.some(sequence), journal: Option.none() }) : bad
  }
  if (!cursor.startsWith("log:") || cursor.length > 4096) return bad
  let parts: unknown
  try {
    parts = JSON.parse(Buffer.from(cursor.slice(4), "base64url").toString("utf8"))
  } catch {
    return bad
  }
  if (!Array.isArray(parts) || parts.length !== 4) return bad
  const [sequence, ms, session, seq] = parts as [unknown, unknown, unknown, unknown]
  if (
    (sequence !== null && !isSequence(sequence)) || !isSequence(ms) || typeof session !== "string" || !isSequence(seq)
  ) {
    return bad
  }
  return Effect.succeed({
    ledger: sequence === null ? Option.none() : Option.some(sequence),
    journal: Option.some({ ms, session, seq })
  })
}

const columns = (sql: SqlClient.SqlClient) => sql.literal(LedgerRow.COLUMNS.join(", "))

/** `payload` holds `needle` as a substring: no payload text can make this fail. */
const contains = (sql: SqlClient.SqlClient, needle: string): Fragment =>
  sql.onDialectOrElse({
    pg: () => sql`strpos(payload, ${needle}) > 0`,
    orElse: () => sql`instr(payload, ${needle}) > 0`
  })

/**
 * `column = value`, or nothing on PostgreSQL when `value` holds NUL: its text cannot store one (so no row
 * matches), and sending one is a statement error, which a filter must not be able to cause.
 */
const columnIs = (sql: SqlClient.SqlClient, column: "agent_id", value: string): Fragment =>
  sql.onDialectOrElse({
    pg: () => value.includes("\u0000") ? sql`1 = 0` : sql`${sql(column)} = ${value}`,
    orElse: () => sql`${sql(column)} = ${value}`
  })

/** How the canonical payload (RFC 8785: no whitespace, JSON string escapes) writes `"key":"value"`. */
const member = (key: string, value: string): string => `${JSON.stringify(key)}:${JSON.stringify(value)}`

const iso = (time: DateTime.Utc): string => new Date(DateTime.toEpochMillis(time)).toISOString()

/** Ledger row types whose entries have a rule, and a tool (a seal and unknown rows have neither). */
const RULED_TYPES = [GOVERNANCE_REFUSAL_EVENT_TYPE, WOULD_REFUSE_EVENT_TYPE, APPROVAL_EVENT_TYPE]
const TOOLED_TYPES = [...RULED_TYPES, TOOL_PINNED_EVENT_TYPE, TOOL_CHANGED_EVENT_TYPE]

/**
 * The ledger row types `query` can match: `undefined` for any, `"other"` for the types this version does
 * not know; an empty list when no ledger row can match (allowed calls are journal entries).
 */
const eventTypesOf = (query: LogQuery): ReadonlyArray<string> | "other" | undefined => {
  let types: ReadonlyArray<string> | undefined = undefined
  const narrow = (allowed: ReadonlyArray<string>) => {
    types = types === undefined ? allowed : types.filter((t) => allowed.includes(t))
  }
  if (query.kind === "other") {
    return query.decision !== undefined || query.rule !== undefined || query.tool !== undefined ? [] : "other"
  }
  if (query.kind !== undefined) narrow(Option.toArray(Option.fromNullable(EVENT_TYPE_OF_KIND[query.kind])))
  // Among ledger rows only refusals have a decision (`refuse`); allowed calls are journal entries.
  if (query.decision === "allow") narrow([])
  if (query.decision === "refuse") narrow([GOVERNANCE_REFUSAL_EVENT_TYPE])
  if (query.rule !== undefined) narrow(RULED_TYPES)
  if (query.tool !== undefined) narrow(TOOLED_TYPES)
  return types
}

/** The SQL conditions that narrow `query` on indexed columns and on payload text. */
const conditions = (sql: SqlClient.SqlClient, query: LogQuery): Array<Fragment> => {
  const where: Array<Fragment> = []
  if (query.agent !== undefined) where.push(columnIs(sql, "agent_id", query.agent))
  const types = eventTypesOf(query)
  if (types === "other") where.push(sql`event_type NOT IN ${sql.in([...KIND_OF_EVENT_TYPE.keys()])}`)
  else if (types !== undefined) where.push(types.length === 0 ? sql`1 = 0` : sql`event_type IN ${sql.in(types)}`)
  if (query.since !== undefined) where.push(sql`timestamp >= ${iso(query.since)}`)
  if (query.until !== undefined) where.push(sql`timestamp <= ${iso(query.until)}`)
  // A refusal's payload names them `ruleId`/`toolName`, a guard record's `rule_id`/`tool_name`.
  if (query.rule !== undefined) {
    where.push(sql.or([contains(sql, member("ruleId", query.rule)), contains(sql, member("rule_id", query.rule))]))
  }
  if (query.tool !== undefined) {
    where.push(sql.or([contains(sql, member("toolName", query.tool)), contains(sql, member("tool_name", query.tool))]))
  }
  if (query.session !== undefined) where.push(contains(sql, member("session_id", query.session)))
  return where
}

/** Whether a decoded entry matches `query` exactly (the SQL narrowing may let false positives through). */
const matches = (entry: LogEntry, query: LogQuery): boolean =>
  (query.kind === undefined || entry.kind === query.kind) &&
  (query.agent === undefined || entry.agentId === query.agent) &&
  (query.rule === undefined || entry.ruleId === query.rule) &&
  (query.tool === undefined || entry.toolName === query.tool) &&
  (query.session === undefined || entry.sessionId === query.session) &&
  (query.decision === undefined || entry.decision === query.decision) &&
  (query.since === undefined || entry.timestamp >= iso(query.since)) &&
  (query.until === undefined || entry.timestamp <= iso(query.until))

interface Scanned {
  readonly matches: ReadonlyArray<LogEntry>
  /** Where the next scan in the same order starts. */
  readonly position: Position
  /** Both sources read to their end: nothing more in this order for now. */
  readonly exhausted: boolean
}

/** A row read from one source: its time (for the merge), its key, and its entry when it matches. */
interface Item<K> {
  readonly millis: number
  readonly key: K
  readonly entry: Omit<LogEntry, "cursor"> | null
}

/** One page of ledger rows after (`asc`) or before (`desc`) `from`, narrowed in SQL, matched exactly. */
const ledgerPage = (query: LogQuery, from: Option.Option<number>, order: "asc" | "desc") =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const where = conditions(sql, query)
    if (Option.isSome(from)) {
      where.unshift(order === "asc" ? sql`sequence > ${from.value}` : sql`sequence < ${from.value}`)
    }
    const rows = yield* sql<Record<string, unknown>>`
      SELECT ${columns(sql)} FROM signed_events WHERE ${sql.and(where)}
      ORDER BY sequence ${sql.literal(order === "asc" ? "ASC" : "DESC")} LIMIT ${PAGE_SIZE}`
    return rows.map((raw): Item<number> => {
      const { entry } = entryOf(raw)
      const millis = Date.parse(entry.timestamp)
      return {
        millis: Number.isFinite(millis) ? millis : 0,
        key: Number(raw.sequence),
        entry: matches(entry, query) ? entry : null
      }
    })
  })

/** One page of stored allowed calls matching `query` (all narrowing in SQL, on plain columns). */
const journalPage = (query: LogQuery, from: Option.Option<JournalEntries.Key>, order: "asc" | "desc") =>
  Effect.gen(function*() {
    // Journaled calls here are allowed ones, which have no rule.
    if (query.decision === "refuse" || query.rule !== undefined) return []
    if (query.kind !== undefined && query.kind !== "call") return []
    const calls = yield* JournalEntries.callsPage(
      {
        agent: query.agent,
        tool: query.tool,
        session: query.session,
        sinceMs: query.since === undefined ? undefined : DateTime.toEpochMillis(query.since),
        untilMs: query.until === undefined ? undefined : DateTime.toEpochMillis(query.until)
      },
      from,
      order,
      PAGE_SIZE
    )
    return calls.map((call): Item<JournalEntries.Key> => ({
      millis: call.key.ms,
      key: call.key,
      entry: callEntry(call)
    }))
  })

const callEntry = (call: JournalEntries.Call): Omit<LogEntry, "cursor"> => ({
  kind: "call",
  ledgerSequence: null,
  eventId: null,
  timestamp: new Date(call.key.ms).toISOString(),
  agentId: call.agentId,
  decision: "allow",
  ruleId: null,
  reason: null,
  action: "ToolCall",
  toolName: call.toolName,
  serverId: call.serverId,
  sessionId: call.key.session,
  journalSequence: call.key.seq,
  sealLength: null,
  sealHeadHash: null,
  outcome: call.outcome,
  bytesRead: call.bytesRead,
  bytesWritten: call.bytesWritten,
  answer: null,
  approver: null,
  digest: null,
  problem: call.problem
})

/**
 * One step of the log in `order`: a page from each source, merged by time (the ledger's rows keep their
 * sequence order among themselves, as do the journal's calls). The merge stops where a source's page ends
 * and the source has more, so the position only ever passes rows that were read, and each entry's cursor
 * is the position just after it.
 */
const scanMerged = (query: LogQuery, position: Position, order: "asc" | "desc", journalStored: boolean) =>
  Effect.gen(function*() {
    const ledgerRows = yield* ledgerPage(query, position.ledger, order)
    const journalRows = journalStored ? yield* journalPage(query, position.journal, order) : []
    const ledgerDone = ledgerRows.length < PAGE_SIZE
    const journalDone = journalRows.length < PAGE_SIZE
    const first = (a: number, b: number) => order === "asc" ? a <= b : a >= b
    let { journal, ledger } = position
    let i = 0
    let j = 0
    const found: Array<LogEntry> = []
    for (;;) {
      const row = ledgerRows[i]
      const call = journalRows[j]
      if ((row === undefined && !ledgerDone) || (call === undefined && !journalDone)) break
      if (row === undefined && call === undefined) break
      if (call === undefined || (row !== undefined && first(row.millis, call.millis))) {
        ledger = Option.some(row!.key)
        i++
        if (row!.entry !== null) {
          found.push(new LogEntry({ ...row!.entry, cursor: encodeCursor({ ledger, journal }) }, true))
        }
      } else {
        journal = Option.some(call.key)
        j++
        if (call.entry !== null) {
          found.push(new LogEntry({ ...call.entry, cursor: encodeCursor({ ledger, journal }) }, true))
        }
      }
    }
    return {
      matches: found,
      position: { ledger, journal },
      exhausted: ledgerDone && journalDone
    } satisfies Scanned
  })

const text = (value: unknown): string | null => typeof value === "string" ? value : null
const count = (value: unknown): number | null =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : null
const record = (value: unknown): Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : {}

const parsePayload = (payload: unknown): { readonly value: JsonValue | null; readonly problem: string | null } => {
  if (typeof payload !== "string") return { value: null, problem: "the payload is not text" }
  try {
    return { value: JSON.parse(payload) as JsonValue, problem: null }
  } catch {
    return { value: null, problem: "the payload is not JSON" }
  }
}

/** A stored row as a log entry; never fails (a damaged payload leaves fields null and says so). */
const entryOf = (raw: Record<string, unknown>): { readonly entry: LogEntry; readonly payload: JsonValue | null } => {
  const sequence = Number(raw.sequence)
  const eventType = text(raw.event_type)
  const parsed = parsePayload(raw.payload)
  const payload = record(parsed.value)
  const action = record(payload.action)
  const decision = record(payload.decision)
  const journal = record(payload.journal)
  const kind: EntryKind = eventType === null ? "other" : KIND_OF_EVENT_TYPE.get(eventType) ?? "other"
  // A refusal (enforced or shadow) keeps its rule in `decision` and its tool in `action`; a seal and a
  // guard's record keep theirs in the Custom action's `payload`, in snake_case (docs/FORMAT.md).
  const refusalLike = kind === "refusal" || kind === "would-refuse"
  const custom = refusalLike ? {} : record(action.payload)
  const fromRecord = kind === "approval" || kind === "tool-pinned" || kind === "tool-changed"
  const entry = new LogEntry({
    cursor: encodeCursor({ ledger: Option.some(sequence), journal: Option.none() }),
    kind,
    ledgerSequence: count(sequence),
    eventId: text(raw.id),
    timestamp: text(raw.timestamp) ?? "",
    agentId: text(raw.agent_id) ?? "",
    decision: kind === "refusal" ? "refuse" : null,
    ruleId: refusalLike ? text(decision.ruleId) : kind === "approval" ? text(custom.rule_id) : null,
    reason: refusalLike ? text(decision.reason) : kind === "approval" ? text(custom.reason) : null,
    action: text(action._tag),
    toolName: fromRecord ? text(custom.tool_name) : text(action.toolName),
    serverId: fromRecord ? text(custom.server_id) : text(action.serverId),
    sessionId: kind === "seal" ? text(custom.session_id) : text(journal.session_id) ?? text(custom.session_id),
    journalSequence: kind === "seal" ? null : count(journal.sequence),
    sealLength: kind === "seal" ? count(custom.length) : null,
    sealHeadHash: kind === "seal" ? text(custom.head_hash) : null,
    outcome: kind === "refusal" ? "refused" : kind === "approval" ? text(custom.outcome) : null,
    bytesRead: null,
    bytesWritten: null,
    answer: kind === "approval" ? text(custom.answer) : null,
    approver: kind === "approval" ? text(custom.approver) : null,
    digest: kind === "tool-pinned" || kind === "tool-changed" ? text(custom.digest) : null,
    problem: parsed.problem
  }, true)
  return { entry, payload: parsed.value }
}

/** The `session.sealed` rows of one session, in ledger order. */
const sealsOfSession = (sessionId: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<Record<string, unknown>>`
      SELECT ${columns(sql)} FROM signed_events
      WHERE event_type = ${SESSION_SEALED_EVENT_TYPE} AND ${contains(sql, member("session_id", sessionId))}
      ORDER BY sequence`
    return rows.flatMap((raw) => {
      const seal = sealInfoOf(entryOf(raw).entry)
      return seal !== null && seal.sessionId === sessionId ? [seal] : []
    })
  })

const sealInfoOf = (entry: LogEntry): SealInfo | null =>
  entry.kind === "seal" && entry.ledgerSequence !== null && entry.eventId !== null && entry.sessionId !== null &&
    entry.sealLength !== null && entry.sealHeadHash !== null
    ? new SealInfo({
      ledgerSequence: entry.ledgerSequence,
      eventId: entry.eventId,
      timestamp: entry.timestamp,
      sessionId: entry.sessionId,
      length: entry.sealLength,
      headHash: entry.sealHeadHash
    }, true)
    : null

interface SessionState {
  sessionId: string
  agentId: string
  start: string
  end: string
  maxRefusedSequence: number
  refusals: number
  sealedLength: number | null
  lastSealSequence: number | null
}

/**
 * Every session the ledger rows name (refusals with a `journal`, seals), aggregated in one pass over the
 * rows in pages; `only` restricts it to one session.
 */
const sessionSummaries = (agent: string | undefined, only?: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const states = new Map<string, SessionState>()
    const narrow = only === undefined
      ? sql.or([
        sql`event_type = ${SESSION_SEALED_EVENT_TYPE}`,
        sql.and([sql`event_type = ${GOVERNANCE_REFUSAL_EVENT_TYPE}`, contains(sql, "\"journal\":{")])
      ])
      : contains(sql, member("session_id", only))
    const byAgent = agent === undefined ? sql`1 = 1` : columnIs(sql, "agent_id", agent)
    let after = -1
    for (;;) {
      const rows = yield* sql<Record<string, unknown>>`
        SELECT ${columns(sql)} FROM signed_events WHERE sequence > ${after} AND ${byAgent} AND ${narrow}
        ORDER BY sequence LIMIT ${PAGE_SIZE}`
      for (const raw of rows) {
        const { entry } = entryOf(raw)
        if (entry.sessionId === null || (only !== undefined && entry.sessionId !== only)) continue
        if (entry.kind !== "refusal" && entry.kind !== "seal") continue
        const state = states.get(entry.sessionId) ?? {
          sessionId: entry.sessionId,
          agentId: entry.agentId,
          start: entry.timestamp,
          end: entry.timestamp,
          maxRefusedSequence: -1,
          refusals: 0,
          sealedLength: null,
          lastSealSequence: null
        }
        states.set(entry.sessionId, state)
        if (entry.timestamp < state.start) state.start = entry.timestamp
        if (entry.timestamp > state.end) state.end = entry.timestamp
        if (entry.kind === "refusal") {
          state.refusals++
          state.maxRefusedSequence = Math.max(state.maxRefusedSequence, entry.journalSequence ?? -1)
        } else if (entry.sealLength !== null) {
          state.sealedLength = entry.sealLength
          state.lastSealSequence = entry.ledgerSequence
        }
      }
      const last = rows[rows.length - 1]
      if (rows.length < PAGE_SIZE || last === undefined) break
      after = Number(last.sequence)
    }
    return Array.from(states.values(), (state) =>
      new SessionSummary({
        sessionId: state.sessionId,
        agentId: state.agentId,
        start: state.start,
        end: state.end,
        calls: Math.max(state.sealedLength ?? 0, state.maxRefusedSequence + 1),
        refusals: state.refusals,
        sealed: state.sealedLength !== null,
        sealedLength: state.sealedLength,
        lastSealSequence: state.lastSealSequence
      }, true))
  })

/** A session's summaries from its ledger rows, with the stored journal's counts and times where it has them. */
const withJournalTotals = (
  fromLedger: ReadonlyArray<SessionSummary>,
  fromJournal: ReadonlyArray<JournalEntries.SessionTotals>
): ReadonlyArray<SessionSummary> => {
  const byId = new Map(fromLedger.map((s) => [s.sessionId, s]))
  for (const totals of fromJournal) {
    const known = byId.get(totals.sessionId)
    const first = new Date(totals.firstMs).toISOString()
    const last = new Date(totals.lastMs).toISOString()
    byId.set(
      totals.sessionId,
      new SessionSummary({
        sessionId: totals.sessionId,
        agentId: known?.agentId ?? totals.agentId,
        start: known === undefined || first < known.start ? first : known.start,
        end: known === undefined || last > known.end ? last : known.end,
        calls: Math.max(totals.calls, known?.calls ?? 0),
        refusals: Math.max(totals.refusals, known?.refusals ?? 0),
        sealed: known?.sealed ?? false,
        sealedLength: known?.sealedLength ?? null,
        lastSealSequence: known?.lastSealSequence ?? null
      }, true)
    )
  }
  return Array.from(byId.values()).sort((a, b) => a.start < b.start ? -1 : a.start > b.start ? 1 : 0)
}

/**
 * A session's stored journal as log entries: every call, allowed or refused, with the outcome entry that
 * ended it and, for a refusal, the rule and ledger row that recorded it.
 */
const journalView = (
  stored: ReadonlyArray<JournalEntries.SessionEntry>,
  refusals: ReadonlyArray<LogEntry>
): ReadonlyArray<LogEntry> => {
  const refusalOf = new Map(
    refusals.flatMap((r) => r.journalSequence === null ? [] : [[r.journalSequence, r] as const])
  )
  const endOf = new Map(stored.filter((e) => e.kind === "outcome").map((e) => [e.callSeq, e] as const))
  return stored.filter((e) => e.kind === "call").map((e) => {
    const refusal = refusalOf.get(e.seq)
    const end = endOf.get(e.seq)
    const refused = e.outcome === "refused"
    return new LogEntry({
      cursor: refusal?.cursor ??
        encodeCursor({ ledger: Option.none(), journal: Option.some({ ms: e.ms, session: e.sessionId, seq: e.seq }) }),
      kind: refused ? "refusal" : "call",
      ledgerSequence: refusal?.ledgerSequence ?? null,
      eventId: refusal?.eventId ?? null,
      timestamp: new Date(e.ms).toISOString(),
      agentId: e.agentId,
      decision: refused ? "refuse" : "allow",
      ruleId: refusal?.ruleId ?? null,
      reason: refusal?.reason ?? null,
      action: "ToolCall",
      toolName: e.toolName,
      serverId: e.serverId,
      sessionId: e.sessionId,
      journalSequence: e.seq,
      sealLength: null,
      sealHeadHash: null,
      outcome: end?.outcome ?? e.outcome,
      bytesRead: e.bytesRead + (end?.bytesRead ?? 0),
      bytesWritten: e.bytesWritten,
      answer: null,
      approver: null,
      digest: null,
      problem: e.problem ?? end?.problem ?? null
    }, true)
  })
}

/** Per-session and per-tool totals of a session's entries. */
const totalsOf = (entries: ReadonlyArray<LogEntry>, summary: SessionSummary) => {
  const byTool = new Map<
    string,
    { toolName: string; serverId: string; calls: number; refusals: number; bytesRead: number; bytesWritten: number }
  >()
  let bytesRead = 0
  let bytesWritten = 0
  for (const entry of entries) {
    if (entry.kind !== "refusal" && entry.kind !== "call") continue
    const toolName = entry.toolName ?? `(${entry.action ?? "unknown"})`
    const serverId = entry.serverId ?? ""
    const key = JSON.stringify([toolName, serverId])
    const tool = byTool.get(key) ?? { toolName, serverId, calls: 0, refusals: 0, bytesRead: 0, bytesWritten: 0 }
    byTool.set(key, tool)
    tool.calls++
    if (entry.decision === "refuse") tool.refusals++
    tool.bytesRead += entry.bytesRead ?? 0
    tool.bytesWritten += entry.bytesWritten ?? 0
    bytesRead += entry.bytesRead ?? 0
    bytesWritten += entry.bytesWritten ?? 0
  }
  return {
    totals: { calls: summary.calls, refusals: summary.refusals, bytesRead, bytesWritten },
    byTool: Array.from(byTool.values(), (tool) => new ToolTotals(tool, true))
  }
}
