/**
 * The per-session journal: an append-only, SHA-256 hash-chained record of an agent's tool calls, with
 * running data-flow totals and tool counts. Each entry's hash covers the session id, its position and the
 * previous entry's hash (format v1, docs/FORMAT.md "Session journal"), so any change to a recorded call,
 * any reordering, deletion or insertion, and (when the head hash is pinned) any truncation is detected by
 * `verifyIntegrity` on a live journal or by `verifyExport` on an exported one.
 *
 * A journal is a `Ref`-backed value made by `make(sessionId)`; time comes from `Clock`.
 */
import { Clock, Context, Effect, HashMap, Layer, Option, ParseResult, Ref, Schema } from "effect"
import { hashBytes, isHash, lp, sha256Hex, u32, u64, u8, ZERO_HASH } from "./internal/encoding.js"

/** The `format` of a `JournalExport`. */
export const EXPORT_FORMAT = "agent-ledger/journal/v1"

/** The domain string that opens every entry's hash input. */
export const ENTRY_HASH_DOMAIN = "agent-ledger/journal-entry/v1"

/** The largest delegation depth the format can hold (it is hashed as a u32). */
export const MAX_DELEGATION_DEPTH = 0xffff_ffff

// ---------------------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------------------

const Hash = Schema.String.pipe(
  Schema.filter(isHash, { message: () => "expected a SHA-256 hash as 64 lowercase hex characters" })
).annotations({ identifier: "Hash" })

const NonNegativeSafeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative()).annotations({
  identifier: "NonNegativeSafeInt"
})

const DelegationDepth = Schema.Number.pipe(
  Schema.int(),
  Schema.between(0, MAX_DELEGATION_DEPTH)
).annotations({ identifier: "DelegationDepth" })

/** One recorded tool call, as it is hashed and exported. */
export class JournalEntry extends Schema.Class<JournalEntry>("JournalEntry")({
  /** 0-based position in the journal. */
  sequence: NonNegativeSafeInt,
  /** The previous entry's `entryHash`; the zero hash for the first entry. */
  prevHash: Hash,
  /** SHA-256 of this entry in format v1 (`computeEntryHash`). */
  entryHash: Hash,
  /** `Clock` time of the record, in milliseconds since the Unix epoch. */
  timestampMillis: NonNegativeSafeInt,
  toolName: Schema.String,
  serverId: Schema.String,
  agentId: Schema.String,
  bytesRead: NonNegativeSafeInt,
  bytesWritten: NonNegativeSafeInt,
  delegationDepth: DelegationDepth,
  /** `false` for a call the guard denied (still journaled and counted). */
  allowed: Schema.Boolean
}) {}

/** A whole journal, for offline verification (`verifyExport`) and restore (`fromExport`). */
export class JournalExport extends Schema.Class<JournalExport>("JournalExport")({
  format: Schema.Literal(EXPORT_FORMAT),
  sessionId: Schema.String,
  /** The last entry's `entryHash` (the zero hash when empty): pins the chain's length. */
  headHash: Hash,
  entries: Schema.Array(JournalEntry)
}) {}

/** What a caller records; the journal adds sequence, hashes and timestamp. */
export interface RecordParams {
  readonly toolName: string
  readonly serverId: string
  readonly agentId: string
  readonly bytesRead: number
  readonly bytesWritten: number
  readonly delegationDepth: number
  readonly allowed: boolean
}

/** Running totals over every recorded call, allowed or denied. Sums saturate at `Number.MAX_SAFE_INTEGER`. */
export interface DataFlow {
  readonly totalBytesRead: number
  readonly totalBytesWritten: number
  readonly totalInvocations: number
  readonly maxDelegationDepth: number
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/** `record` was given a value the format cannot hold; the journal is unchanged. */
export class InvalidRecord extends Schema.TaggedError<InvalidRecord>()("InvalidRecord", {
  field: Schema.Literal("bytesRead", "bytesWritten", "delegationDepth"),
  /** The rejected value (may be NaN or ±Infinity, so keep it out of strict JSON). */
  value: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid ${this.field} ${this.value}: ${this.reason}`
  }
}

/**
 * The chain is broken at `sequence` (the first bad entry). `field` says which check failed:
 * `sequence` (not equal to its index), `prevHash` (not the previous entry's hash), `entryHash` (not the
 * hash of the entry's fields; `expected` is the recomputed hash), or `headHash` (the pinned head is not the
 * last entry's hash; `sequence` is then the entry count, the position the head pins).
 */
export class IntegrityViolation extends Schema.TaggedError<IntegrityViolation>()("IntegrityViolation", {
  sequence: Schema.Number,
  field: Schema.Literal("sequence", "prevHash", "entryHash", "headHash"),
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message(): string {
    return `journal integrity violation at ${this.sequence}: ${this.field} expected ${this.expected}, got ${this.actual}`
  }
}

/** One schema issue of an export that failed to decode; `path` is dotted, e.g. `entries.3.bytesRead`. */
export class ExportIssue extends Schema.Class<ExportIssue>("ExportIssue")({
  path: Schema.String,
  message: Schema.String
}) {}

/** An export that is not a `JournalExport` at all (wrong shape, types or bounds). */
export class InvalidExport extends Schema.TaggedError<InvalidExport>()("InvalidExport", {
  issues: Schema.NonEmptyArray(ExportIssue)
}) {
  override get message(): string {
    return `invalid journal export: ${
      this.issues.map((issue) => `${issue.path === "" ? "(root)" : issue.path}: ${issue.message}`).join("; ")
    }`
  }
}

// ---------------------------------------------------------------------------------------------------------
// The hash
// ---------------------------------------------------------------------------------------------------------

/** The fields an entry hash covers: every `JournalEntry` field but `entryHash`, plus the session id. */
export interface EntryHashInput extends RecordParams {
  readonly sessionId: string
  readonly sequence: number
  readonly prevHash: string
  readonly timestampMillis: number
}

/** The v1 hash input bytes, in order (docs/FORMAT.md); callers pass values the schemas above accept. */
export const entryHashInput = (input: EntryHashInput): ReadonlyArray<Uint8Array> => [
  lp(ENTRY_HASH_DOMAIN),
  lp(input.sessionId),
  u64(input.sequence),
  hashBytes(input.prevHash),
  u64(input.timestampMillis),
  lp(input.toolName),
  lp(input.serverId),
  lp(input.agentId),
  u64(input.bytesRead),
  u64(input.bytesWritten),
  u32(input.delegationDepth),
  u8(input.allowed ? 1 : 0)
]

/** The v1 `entryHash`: SHA-256 of `entryHashInput`, as 64 lowercase hex chars. */
export const computeEntryHash = (input: EntryHashInput): string => sha256Hex(...entryHashInput(input))

// ---------------------------------------------------------------------------------------------------------
// Verification (shared by live journals and exports)
// ---------------------------------------------------------------------------------------------------------

const verifyChain = (
  sessionId: string,
  entries: ReadonlyArray<JournalEntry>,
  length: number,
  headHash: string
): Effect.Effect<void, IntegrityViolation> => {
  let expectedPrev = ZERO_HASH
  for (let index = 0; index < length; index++) {
    const entry = entries[index]!
    if (entry.sequence !== index) {
      return Effect.fail(
        new IntegrityViolation({
          sequence: index,
          field: "sequence",
          expected: String(index),
          actual: String(entry.sequence)
        })
      )
    }
    if (entry.prevHash !== expectedPrev) {
      return Effect.fail(
        new IntegrityViolation({ sequence: index, field: "prevHash", expected: expectedPrev, actual: entry.prevHash })
      )
    }
    const recomputed = computeEntryHash({ ...entry, sessionId })
    if (entry.entryHash !== recomputed) {
      return Effect.fail(
        new IntegrityViolation({ sequence: index, field: "entryHash", expected: recomputed, actual: entry.entryHash })
      )
    }
    expectedPrev = entry.entryHash
  }
  if (headHash !== expectedPrev) {
    return Effect.fail(
      new IntegrityViolation({ sequence: length, field: "headHash", expected: expectedPrev, actual: headHash })
    )
  }
  return Effect.void
}

const decodeExport = Schema.decodeUnknown(JournalExport, { errors: "all" })

const toInvalidExport = (error: ParseResult.ParseError): InvalidExport => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) =>
    new ExportIssue({ path: issue.path.map(String).join("."), message: issue.message })
  )
  return new InvalidExport({
    issues: issues.length > 0
      ? [issues[0]!, ...issues.slice(1)]
      : [new ExportIssue({ path: "", message: error.message })]
  })
}

/**
 * Verify an export offline: decode it (failing with `InvalidExport`, which names the path of every bad
 * field), then check the chain from the zero hash and that `headHash` is the last entry's hash (failing
 * with `IntegrityViolation` for the first bad entry). Returns the decoded export.
 */
export const verifyExport = (input: unknown): Effect.Effect<JournalExport, InvalidExport | IntegrityViolation> =>
  decodeExport(input).pipe(
    Effect.mapError(toInvalidExport),
    Effect.tap((exported) =>
      verifyChain(exported.sessionId, exported.entries, exported.entries.length, exported.headHash)
    )
  )

// ---------------------------------------------------------------------------------------------------------
// The journal
// ---------------------------------------------------------------------------------------------------------

/** A journal of one session. Every operation reads one consistent snapshot. */
export interface Journal {
  readonly sessionId: Effect.Effect<string>
  /** Append a call; returns its `sequence`. Fails, leaving the journal unchanged, on an invalid number. */
  readonly record: (params: RecordParams) => Effect.Effect<number, InvalidRecord>
  readonly dataFlow: Effect.Effect<DataFlow>
  /** Tool names in recording order. */
  readonly toolSequence: Effect.Effect<ReadonlyArray<string>>
  /** Calls per tool name, in order of first use (a fresh copy). */
  readonly toolCounts: Effect.Effect<ReadonlyMap<string, number>>
  readonly length: Effect.Effect<number>
  readonly isEmpty: Effect.Effect<boolean>
  readonly entries: Effect.Effect<ReadonlyArray<JournalEntry>>
  /** The last `n` entries, oldest first (all of them when `n` exceeds the length; none for `n <= 0`). */
  readonly recentEntries: (n: number) => Effect.Effect<ReadonlyArray<JournalEntry>>
  /** The last entry's hash, or the zero hash when empty. */
  readonly headHash: Effect.Effect<string>
  readonly verifyIntegrity: Effect.Effect<void, IntegrityViolation>
  readonly export: Effect.Effect<JournalExport>
}

/** A journal as a service, for programs that run inside one session (`layer`). */
export class SessionJournal extends Context.Tag("agent-ledger/SessionJournal")<SessionJournal, Journal>() {}

/**
 * Journal state. `log` is append-only and owned by the Ref: it is only ever pushed to inside the one
 * `Ref.modify` of `record`, which also publishes a new state with the new `length`. A state therefore
 * describes the immutable prefix `log[0, length)` even after later appends, so readers slice their snapshot
 * without racing writers, and an append is an amortized O(1) push instead of an O(n) array copy.
 * `toolNames` (distinct tool names in order of first use) is append-only in the same way. The other fields
 * are immutable values replaced on each append (`HashMap` updates share structure).
 */
interface State {
  readonly log: Array<JournalEntry>
  readonly length: number
  readonly headHash: string
  readonly dataFlow: DataFlow
  readonly toolNames: Array<string>
  readonly toolNamesLength: number
  readonly toolCounts: HashMap.HashMap<string, number>
}

const saturatingAdd = (a: number, b: number): number => Math.min(Number.MAX_SAFE_INTEGER, a + b)

const addToTotals = (state: State, entry: JournalEntry): State => {
  const count = HashMap.get(state.toolCounts, entry.toolName)
  if (Option.isNone(count)) state.toolNames.push(entry.toolName)
  return {
    log: state.log,
    length: state.length + 1,
    headHash: entry.entryHash,
    dataFlow: {
      totalBytesRead: saturatingAdd(state.dataFlow.totalBytesRead, entry.bytesRead),
      totalBytesWritten: saturatingAdd(state.dataFlow.totalBytesWritten, entry.bytesWritten),
      totalInvocations: saturatingAdd(state.dataFlow.totalInvocations, 1),
      maxDelegationDepth: Math.max(state.dataFlow.maxDelegationDepth, entry.delegationDepth)
    },
    toolNames: state.toolNames,
    toolNamesLength: state.toolNamesLength + (Option.isNone(count) ? 1 : 0),
    toolCounts: HashMap.set(state.toolCounts, entry.toolName, saturatingAdd(Option.getOrElse(count, () => 0), 1))
  }
}

const emptyState = (): State => ({
  log: [],
  length: 0,
  headHash: ZERO_HASH,
  dataFlow: { totalBytesRead: 0, totalBytesWritten: 0, totalInvocations: 0, maxDelegationDepth: 0 },
  toolNames: [],
  toolNamesLength: 0,
  toolCounts: HashMap.empty()
})

const validateCount = (
  field: InvalidRecord["field"],
  value: number,
  max: number
): Effect.Effect<void, InvalidRecord> => {
  if (!Number.isSafeInteger(value)) {
    return Effect.fail(new InvalidRecord({ field, value, reason: "expected a safe integer" }))
  }
  if (value < 0 || value > max) {
    return Effect.fail(new InvalidRecord({ field, value, reason: `expected an integer between 0 and ${max}` }))
  }
  return Effect.void
}

const validateParams = (params: RecordParams): Effect.Effect<void, InvalidRecord> =>
  Effect.all([
    validateCount("bytesRead", params.bytesRead, Number.MAX_SAFE_INTEGER),
    validateCount("bytesWritten", params.bytesWritten, Number.MAX_SAFE_INTEGER),
    validateCount("delegationDepth", params.delegationDepth, MAX_DELEGATION_DEPTH)
  ], { discard: true })

const fromState = (sessionId: string, initial: State): Effect.Effect<Journal> =>
  Effect.map(Ref.make(initial), (ref): Journal => {
    const snapshot = Effect.map(Ref.get(ref), (state) => state.log.slice(0, state.length))

    const record = (params: RecordParams) =>
      Effect.zipRight(
        validateParams(params),
        // Clock time is read before the append: under concurrent recording, timestamps follow the order
        // in which callers asked, which can differ slightly from sequence order.
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Ref.modify(ref, (state): [number, State] => {
            const fields = {
              sequence: state.length,
              prevHash: state.headHash,
              timestampMillis: Math.max(0, Math.floor(now)),
              toolName: params.toolName,
              serverId: params.serverId,
              agentId: params.agentId,
              bytesRead: params.bytesRead,
              bytesWritten: params.bytesWritten,
              delegationDepth: params.delegationDepth,
              allowed: params.allowed
            }
            const entry = new JournalEntry({ ...fields, entryHash: computeEntryHash({ ...fields, sessionId }) }, true)
            state.log.push(entry)
            return [entry.sequence, addToTotals(state, entry)]
          }))
      )

    return {
      sessionId: Effect.succeed(sessionId),
      record,
      dataFlow: Effect.map(Ref.get(ref), (state) => state.dataFlow),
      toolSequence: Effect.map(snapshot, (entries) => entries.map((entry) => entry.toolName)),
      toolCounts: Effect.map(Ref.get(ref), (state) =>
        new Map(
          state.toolNames.slice(0, state.toolNamesLength).map((name) => [
            name,
            Option.getOrElse(HashMap.get(state.toolCounts, name), () => 0)
          ])
        )),
      length: Effect.map(Ref.get(ref), (state) => state.length),
      isEmpty: Effect.map(Ref.get(ref), (state) => state.length === 0),
      entries: snapshot,
      recentEntries: (n) =>
        Effect.map(Ref.get(ref), (state) => state.log.slice(Math.max(0, state.length - Math.max(0, n)), state.length)),
      headHash: Effect.map(Ref.get(ref), (state) => state.headHash),
      verifyIntegrity: Effect.flatMap(
        Ref.get(ref),
        (state) => verifyChain(sessionId, state.log, state.length, state.headHash)
      ),
      export: Effect.map(Ref.get(ref), (state) =>
        new JournalExport({
          format: EXPORT_FORMAT,
          sessionId,
          headHash: state.headHash,
          entries: state.log.slice(0, state.length)
        }, true))
    }
  })

/** A new, empty journal for `sessionId`. */
export const make = (sessionId: string): Effect.Effect<Journal> => fromState(sessionId, emptyState())

/**
 * A journal restored from an export, continuing its chain: the next `record` gets sequence `length` and
 * links to the export's head. The export is verified first (`verifyExport`); a tampered one is refused.
 */
export const fromExport = (input: unknown): Effect.Effect<Journal, InvalidExport | IntegrityViolation> =>
  Effect.flatMap(verifyExport(input), (exported) => {
    const initial = exported.entries.reduce(addToTotals, { ...emptyState(), log: exported.entries.slice() })
    return fromState(exported.sessionId, initial)
  })

/** Provide `SessionJournal` with a new journal for `sessionId`. */
export const layer = (sessionId: string): Layer.Layer<SessionJournal> => Layer.effect(SessionJournal, make(sessionId))
