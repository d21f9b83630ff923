/**
 * The per-session journal: an append-only, SHA-256 hash-chained record of an agent's tool calls, with
 * running data-flow totals and tool counts. Each entry's hash covers the session id, its position and the
 * previous entry's hash (format v1, docs/FORMAT.md "Session journal"), so any change to a recorded call,
 * any reordering, deletion or insertion, and (when the head hash is pinned) any truncation is detected by
 * `verifyIntegrity` on a live journal or by `verifyExport` on an exported one.
 *
 * A journal is a value made by `make(sessionId)`, its state changed only in single synchronous steps; time
 * comes from `Clock`.
 */
import { Context, Effect, Layer, ParseResult, Schema } from "effect"
import { digestBytes, digestHex, hashBytes, isHash, lp, u32, u64, u8, ZERO_HASH } from "../internal/encoding.js"
import { describeTooDeep, findTooDeep } from "../internal/jsonDepth.js"
import { debugSpan } from "../internal/tracing.js"

/** The `format` of a `JournalExport`. */
export const EXPORT_FORMAT = "agent-ledger/journal/v1"

/** The domain string that opens every entry's hash input. */
export const ENTRY_HASH_DOMAIN = "agent-ledger/journal-entry/v1"

/** Span names, made only at debug level (docs/OPERATIONS.md, "Traces"). */
export const SPAN_RECORD = "agent_ledger.journal.record"
export const SPAN_EXPORT = "agent_ledger.journal.export"

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

/**
 * Writes v1 hash inputs for one session into one reused buffer (grown when a record's strings need more
 * room) and hashes them: byte for byte `entryHashInput`, without a buffer per field or BigInt encoding.
 * The domain and session id prefix is written once.
 */
/** The hashed fields an entry holds itself (its position and link are given apart). */
type EntryFields = Omit<EntryHashInput, "sessionId" | "prevHash" | "sequence">

class EntryEncoder {
  #buffer: Buffer
  readonly #prefixLength: number

  constructor(sessionId: string) {
    const prefix = Buffer.concat([lp(ENTRY_HASH_DOMAIN), lp(sessionId)])
    this.#buffer = Buffer.allocUnsafe(prefix.length + 512)
    prefix.copy(this.#buffer, 0)
    this.#prefixLength = prefix.length
  }

  /** `entryHash` as 64 lowercase hex chars, the previous hash given as hex. */
  hash(input: Omit<EntryHashInput, "sessionId">): string {
    const at = this.#reserve(input.sequence, input)
    this.#buffer.write(input.prevHash, at, 32, "hex")
    return digestHex(this.#buffer.subarray(0, this.#encodeRest(at + 32, input)))
  }

  /** `entryHash` as 32 raw bytes, the previous hash given as raw bytes. */
  hashRaw(sequence: number, fields: EntryFields, log: EntryLog): Buffer {
    const at = this.#reserve(sequence, fields)
    log.copyHash(sequence - 1, this.#buffer, at)
    return digestBytes(this.#buffer.subarray(0, this.#encodeRest(at + 32, fields)))
  }

  /** Room for the input; returns where the previous hash goes (after the prefix and the sequence). */
  #reserve(sequence: number, input: EntryFields): number {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit: enough room without measuring each string first.
    const strings = input.toolName.length + input.serverId.length + input.agentId.length
    const needed = this.#prefixLength + 8 + 32 + 8 + 12 + 3 * strings + 8 + 8 + 4 + 1
    if (needed > this.#buffer.length) this.#grow(needed)
    return writeU64(this.#buffer, this.#prefixLength, sequence)
  }

  /** Everything after the previous hash, from `at`; returns the end. */
  #encodeRest(at: number, input: EntryFields): number {
    const b = this.#buffer
    at = writeU64(b, at, input.timestampMillis)
    at = writeLp(b, at, input.toolName)
    at = writeLp(b, at, input.serverId)
    at = writeLp(b, at, input.agentId)
    at = writeU64(b, at, input.bytesRead)
    at = writeU64(b, at, input.bytesWritten)
    at = b.writeUInt32BE(input.delegationDepth, at)
    return b.writeUInt8(input.allowed ? 1 : 0, at)
  }

  #grow(needed: number): void {
    const grown = Buffer.allocUnsafe(Math.max(needed, 2 * this.#buffer.length))
    this.#buffer.copy(grown, 0, 0, this.#prefixLength)
    this.#buffer = grown
  }
}

const TWO_32 = 0x1_0000_0000

/** u64 big-endian of a non-negative safe integer, without BigInt. */
const writeU64 = (b: Buffer, at: number, n: number): number => {
  b.writeUInt32BE(Math.floor(n / TWO_32), at)
  return b.writeUInt32BE(n % TWO_32, at + 4)
}

/** `u32 length || UTF-8(s)`; the buffer has room for 3 bytes per code unit. */
const writeLp = (b: Buffer, at: number, s: string): number => {
  const written = b.write(s, at + 4, "utf8")
  b.writeUInt32BE(written, at)
  return at + 4 + written
}

/** The v1 `entryHash`: SHA-256 of `entryHashInput`, as 64 lowercase hex chars. */
export const computeEntryHash = (input: EntryHashInput): string => new EntryEncoder(input.sessionId).hash(input)

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
  const encoder = new EntryEncoder(sessionId)
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
    const recomputed = encoder.hash(entry)
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

// A field the format does not have is an error: it would travel with the export while no hash covers it.
const decodeExport = Schema.decodeUnknown(JournalExport, { errors: "all", onExcessProperty: "error" })

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

/** The input itself when it nests no deeper than `MAX_JSON_DEPTH`: decoding it then cannot overflow the stack. */
const boundedDepth = (input: unknown): Effect.Effect<unknown, InvalidExport> => {
  const tooDeep = findTooDeep(input)
  return tooDeep === undefined
    ? Effect.succeed(input)
    : Effect.fail(
      new InvalidExport({ issues: [new ExportIssue({ path: tooDeep.path, message: describeTooDeep(tooDeep) })] })
    )
}

/**
 * Verify an export offline: decode it (failing with `InvalidExport`, which names the path of every bad
 * field, or of where it nests deeper than `MAX_JSON_DEPTH`), then check the chain from the zero hash and that `headHash` is the last entry's hash (failing
 * with `IntegrityViolation` for the first bad entry). Returns the decoded export.
 */
export const verifyExport = (input: unknown): Effect.Effect<JournalExport, InvalidExport | IntegrityViolation> =>
  boundedDepth(input).pipe(
    Effect.flatMap((bounded) => Effect.mapError(decodeExport(bounded), toInvalidExport)),
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

/** The `SessionJournal` service itself: a `Journal`. */
export type Service = Journal

/** What a journal keeps of one entry: its sequence is its index, its prevHash the previous entry's hash. */
interface StoredEntry extends RecordParams {
  readonly timestampMillis: number
}

const HASH_BYTES = 32

/**
 * The entries of one journal, compact: one small object per entry and every entry hash as 32 raw bytes in
 * one growing array (no 64-char string per entry). `JournalEntry` values are built only when read.
 */
class EntryLog {
  readonly stored: Array<StoredEntry> = []
  #hashes = Buffer.alloc(HASH_BYTES * 1024)

  get length(): number {
    return this.stored.length
  }

  hashHex(index: number): string {
    return index < 0 ? ZERO_HASH : this.#hashes.toString("hex", index * HASH_BYTES, (index + 1) * HASH_BYTES)
  }

  /** Copies the raw hash of entry `index` (the zero hash before the first) into `target` at `offset`. */
  copyHash(index: number, target: Buffer, offset: number): void {
    if (index < 0) target.fill(0, offset, offset + HASH_BYTES)
    else this.#hashes.copy(target, offset, index * HASH_BYTES, (index + 1) * HASH_BYTES)
  }

  /** True when entry `index`'s stored hash is `hash`. */
  hashEquals(index: number, hash: Buffer): boolean {
    return this.#hashes.compare(hash, 0, HASH_BYTES, index * HASH_BYTES, (index + 1) * HASH_BYTES) === 0
  }

  push(entry: StoredEntry, hash: Uint8Array): void {
    const offset = this.stored.length * HASH_BYTES
    if (offset + HASH_BYTES > this.#hashes.length) {
      const grown = Buffer.alloc(this.#hashes.length * 2)
      this.#hashes.copy(grown)
      this.#hashes = grown
    }
    this.#hashes.set(hash, offset)
    this.stored.push(entry)
  }

  /** Entry `index` as a `JournalEntry`. */
  entry(index: number): JournalEntry {
    const s = this.stored[index]!
    return new JournalEntry({
      sequence: index,
      prevHash: this.hashHex(index - 1),
      entryHash: this.hashHex(index),
      timestampMillis: s.timestampMillis,
      toolName: s.toolName,
      serverId: s.serverId,
      agentId: s.agentId,
      bytesRead: s.bytesRead,
      bytesWritten: s.bytesWritten,
      delegationDepth: s.delegationDepth,
      allowed: s.allowed
    }, true)
  }

  entries(from: number): Array<JournalEntry> {
    const out: Array<JournalEntry> = []
    for (let i = Math.max(0, from); i < this.stored.length; i++) out.push(this.entry(i))
    return out
  }
}

/**
 * Journal state, owned by one journal and changed only inside single synchronous steps (`Effect.sync`):
 * `record` validates, hashes and appends in one step, and every read copies what it returns in one step,
 * so a reader always sees one consistent journal and nothing can interleave with an append. (A `Ref`
 * would split a read into a get and a later copy, between which another fiber could append.) Returned
 * values are fresh copies or immutable entries: a caller cannot change the journal through them.
 */
interface State {
  readonly log: EntryLog
  totalBytesRead: number
  totalBytesWritten: number
  totalInvocations: number
  maxDelegationDepth: number
  /** Calls per tool name; a `Map` iterates in insertion order, so this is also the order of first use. */
  readonly toolCounts: Map<string, number>
}

const saturatingAdd = (a: number, b: number): number => Math.min(Number.MAX_SAFE_INTEGER, a + b)

const append = (state: State, entry: StoredEntry, hash: Uint8Array): void => {
  state.log.push(entry, hash)
  state.totalBytesRead = saturatingAdd(state.totalBytesRead, entry.bytesRead)
  state.totalBytesWritten = saturatingAdd(state.totalBytesWritten, entry.bytesWritten)
  state.totalInvocations = saturatingAdd(state.totalInvocations, 1)
  if (entry.delegationDepth > state.maxDelegationDepth) state.maxDelegationDepth = entry.delegationDepth
  state.toolCounts.set(entry.toolName, saturatingAdd(state.toolCounts.get(entry.toolName) ?? 0, 1))
}

const emptyState = (): State => ({
  log: new EntryLog(),
  totalBytesRead: 0,
  totalBytesWritten: 0,
  totalInvocations: 0,
  maxDelegationDepth: 0,
  toolCounts: new Map()
})

/** Re-checks a live journal's hashes (each entry against its fields and the previous entry's hash). */
const verifyLog = (sessionId: string, log: EntryLog, length: number): Effect.Effect<void, IntegrityViolation> => {
  const encoder = new EntryEncoder(sessionId)
  for (let index = 0; index < length; index++) {
    const recomputed = encoder.hashRaw(index, log.stored[index]!, log)
    if (!log.hashEquals(index, recomputed)) {
      return Effect.fail(
        new IntegrityViolation({
          sequence: index,
          field: "entryHash",
          expected: recomputed.toString("hex"),
          actual: log.hashHex(index)
        })
      )
    }
  }
  return Effect.void
}

/** The first invalid count of `params`, or undefined; plain checks, once, before anything is computed. */
const invalidParams = (params: Pick<RecordParams, "bytesRead" | "bytesWritten" | "delegationDepth">) =>
  invalidCount("bytesRead", params.bytesRead, Number.MAX_SAFE_INTEGER) ??
    invalidCount("bytesWritten", params.bytesWritten, Number.MAX_SAFE_INTEGER) ??
    invalidCount("delegationDepth", params.delegationDepth, MAX_DELEGATION_DEPTH)

const invalidCount = (field: InvalidRecord["field"], value: number, max: number): InvalidRecord | undefined => {
  if (!Number.isSafeInteger(value)) return new InvalidRecord({ field, value, reason: "expected a safe integer" })
  if (value < 0 || value > max) {
    return new InvalidRecord({ field, value, reason: `expected an integer between 0 and ${max}` })
  }
  return undefined
}

const fromState = (sessionId: string, state: State): Effect.Effect<Journal> =>
  Effect.sync((): Journal => {
    const encoder = new EntryEncoder(sessionId)
    const log = state.log
    const read = <A>(f: (state: State) => A): Effect.Effect<A> => Effect.sync(() => f(state))

    /** The append itself: one synchronous step, on values copied once from the caller's object. */
    const appendNow = (params: RecordParams, now: number): number | InvalidRecord => {
      const sequence = log.length
      const entry: StoredEntry = {
        timestampMillis: Math.max(0, Math.floor(now)),
        toolName: params.toolName,
        serverId: params.serverId,
        agentId: params.agentId,
        bytesRead: params.bytesRead,
        bytesWritten: params.bytesWritten,
        delegationDepth: params.delegationDepth,
        allowed: params.allowed
      }
      const invalid = invalidParams(entry)
      if (invalid !== undefined) return invalid
      append(state, entry, encoder.hashRaw(sequence, entry, log))
      return sequence
    }

    // Clock time is read before the append: under concurrent recording, timestamps follow the order in which
    // callers asked, which can differ slightly from sequence order. Validation and append are one step, so
    // the values checked are the values hashed.
    const recordNow = (params: RecordParams): Effect.Effect<number, InvalidRecord> =>
      Effect.clockWith((clock) => {
        const appended = appendNow(params, clock.unsafeCurrentTimeMillis())
        return typeof appended === "number" ? Effect.succeed(appended) : Effect.fail(appended)
      })
    const record = (params: RecordParams): Effect.Effect<number, InvalidRecord> =>
      recordNow(params).pipe(debugSpan(SPAN_RECORD, () => ({
        "agent_ledger.session_id": sessionId,
        "agent_ledger.tool_name": params.toolName,
        "agent_ledger.allowed": params.allowed
      })))

    return {
      sessionId: Effect.succeed(sessionId),
      record,
      dataFlow: read((s) => ({
        totalBytesRead: s.totalBytesRead,
        totalBytesWritten: s.totalBytesWritten,
        totalInvocations: s.totalInvocations,
        maxDelegationDepth: s.maxDelegationDepth
      })),
      toolSequence: read(() => log.stored.map((entry) => entry.toolName)),
      toolCounts: read((s) => new Map(s.toolCounts)),
      length: read(() => log.length),
      isEmpty: read(() => log.length === 0),
      entries: read(() => log.entries(0)),
      recentEntries: (n) => read(() => log.entries(log.length - Math.max(0, n))),
      headHash: read(() => log.hashHex(log.length - 1)),
      verifyIntegrity: Effect.flatMap(read(() => log.length), (length) => verifyLog(sessionId, log, length)),
      export: read(() =>
        new JournalExport({
          format: EXPORT_FORMAT,
          sessionId,
          headHash: log.hashHex(log.length - 1),
          entries: log.entries(0)
        }, true)
      ).pipe(
        debugSpan(SPAN_EXPORT, () => ({ "agent_ledger.session_id": sessionId, "agent_ledger.length": log.length }))
      )
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
    const state = emptyState()
    for (const entry of exported.entries) append(state, entry, Buffer.from(entry.entryHash, "hex"))
    return fromState(exported.sessionId, state)
  })

/** Provide `SessionJournal` with a new journal for `sessionId`. */
export const layer = (sessionId: string): Layer.Layer<SessionJournal> => Layer.effect(SessionJournal, make(sessionId))
