/**
 * The per-session journal: an append-only, SHA-256 hash-chained record of an agent's tool calls, with
 * running data-flow totals and tool counts. Each entry's hash covers the session id, its position and the
 * previous entry's hash (docs/FORMAT.md "Session journal"), so any change to a recorded call, any
 * reordering, deletion or insertion, and (when the head hash is pinned) any truncation is detected by
 * `verifyIntegrity` on a live journal or by `verifyExport` on an exported one.
 *
 * Format v2 (what `record` writes) says how every call ended: a `call` entry records the decision (refused,
 * or allowed and `pending`, or allowed with its ending when recorded whole), and an `outcome` entry later
 * ends a pending call (result, error answer, timed out, upstream gone, interrupted), naming it by
 * `callSequence`. Exports of format v1 still verify, and a journal restored from one continues in v2.
 *
 * A journal is a value made by `make(sessionId)`, its state changed only in single synchronous steps; time
 * comes from `Clock`.
 */
import canonicalize from "canonicalize"
import type { Fiber } from "effect"
import { Clock, Context, Deferred, Effect, Exit, FiberId, Layer, ParseResult, Schema } from "effect"
import type { JsonValue } from "../audit/AuditEvent.js"
import {
  digestBytes,
  digestHex,
  hashBytes,
  isHash,
  lp,
  PrefixViews,
  u32,
  u64,
  u8,
  writeLpAt,
  writeU32At,
  writeU64At,
  ZERO_HASH
} from "../internal/encoding.js"
import { ENTRY_DOMAIN_V1, ENTRY_DOMAIN_V2, OUTCOME_NAMES } from "../internal/journalEntryFormat.js"
import { describeTooDeep, findTooDeep } from "../internal/jsonDepth.js"
import { debugEnabled, debugSpan } from "../internal/tracing.js"
import type * as JournalStore from "../ledger/JournalStore.js"

/** The `format` of a `JournalExport` written now (v2 entries; v1 entries of a restored journal kept). */
export const EXPORT_FORMAT = "agent-ledger/journal/v2"

/** The `format` of exports written before format v2 (every entry v1); still verified. */
export const EXPORT_FORMAT_V1 = "agent-ledger/journal/v1"

/** The domain string that opens every v2 entry's hash input. */
export const ENTRY_HASH_DOMAIN = ENTRY_DOMAIN_V2

/** The domain string that opens every v1 entry's hash input. */
export const ENTRY_HASH_DOMAIN_V1 = ENTRY_DOMAIN_V1

/** What a v2 entry is: a call's decision, or the later ending of a call recorded as `pending`. */
export const EntryKind = Schema.Literal("call", "outcome")
export type EntryKind = typeof EntryKind.Type

/**
 * How a call ended. `pending`: allowed and not ended yet (an `outcome` entry follows); `refused`: the guard
 * refused it; the others say how an allowed call ended (see `McpGuard.CallOutcome`).
 */
export const Outcome = Schema.Literal(...OUTCOME_NAMES)
export type Outcome = typeof Outcome.Type

/** The byte each kind is hashed as (docs/FORMAT.md). */
export const KIND_CODES: Readonly<Record<EntryKind, number>> = { call: 1, outcome: 2 }

/** The byte each outcome is hashed as (docs/FORMAT.md). */
export const OUTCOME_CODES: Readonly<Record<Outcome, number>> = {
  pending: 0,
  refused: 1,
  result: 2,
  errorAnswer: 3,
  timedOut: 4,
  upstreamGone: 5,
  interrupted: 6
}

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

/**
 * One journal entry, as it is hashed and exported. A v2 entry has `kind`, `outcome` and `callSequence`; a
 * v1 entry (only in journals restored from a v1 export) has none of them and is hashed as v1.
 */
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
  allowed: Schema.Boolean,
  /** v2: a call's decision, or the ending of an earlier pending call. */
  kind: Schema.optional(EntryKind),
  /** v2: how the call ended (`pending` until its `outcome` entry). */
  outcome: Schema.optional(Outcome),
  /** v2: the `sequence` of the call entry: its own for a `call`, the ended call's for an `outcome`. */
  callSequence: Schema.optional(NonNegativeSafeInt)
}) {}

/** A whole journal, for offline verification (`verifyExport`) and restore (`fromExport`). */
export class JournalExport extends Schema.Class<JournalExport>("JournalExport")({
  /** `agent-ledger/journal/v2` (entries v2, or v1 kept from a restored v1 journal), or `.../v1` (all v1). */
  format: Schema.Literal(EXPORT_FORMAT, EXPORT_FORMAT_V1),
  sessionId: Schema.String,
  /** The last entry's `entryHash` (the zero hash when empty): pins the chain's length. */
  headHash: Hash,
  entries: Schema.Array(JournalEntry)
}) {}

/**
 * What a caller records; the journal adds sequence, hashes and timestamp. Without `kind` it is a `call`;
 * without `outcome`, a refused call (`allowed: false`) is `refused` and an allowed one `result` (a call
 * recorded whole once it has ended). An `outcome` entry names the pending call it ends in `callSequence`.
 */
export interface RecordParams {
  readonly toolName: string
  readonly serverId: string
  readonly agentId: string
  readonly bytesRead: number
  readonly bytesWritten: number
  readonly delegationDepth: number
  readonly allowed: boolean
  readonly kind?: EntryKind | undefined
  readonly outcome?: Outcome | undefined
  readonly callSequence?: number | undefined
  /**
   * What the call asked for (e.g. its arguments as the policy lets the ledger store them: digest and size
   * by default). Kept only by a durable journal, in its entry row's `intent` column; not hashed.
   */
  readonly intent?: JsonValue | undefined
}

/**
 * Running totals over every recorded call, allowed or denied (bytes of `outcome` entries included; they are
 * not counted as invocations). Sums saturate at `Number.MAX_SAFE_INTEGER`.
 */
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
  field: Schema.Literal("bytesRead", "bytesWritten", "delegationDepth", "outcome", "callSequence"),
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
  field: Schema.Literal("sequence", "prevHash", "entryHash", "headHash", "outcome", "callSequence"),
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message(): string {
    return `journal integrity violation at ${this.sequence}: ${this.field} expected ${this.expected}, got ${this.actual}`
  }
}

/** A durable journal's entry is not stored (yet): storing it failed with `reason`. */
export class EntryNotDurable extends Schema.TaggedError<EntryNotDurable>()("EntryNotDurable", {
  sessionId: Schema.String,
  sequence: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `journal entry ${this.sequence} of session ${this.sessionId} is not durable: ${this.reason}`
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

/**
 * The hash input bytes, in order (docs/FORMAT.md): v2 when the input has a `kind`, else v1. Callers pass
 * values the schemas above accept.
 */
export const entryHashInput = (input: EntryHashInput): ReadonlyArray<Uint8Array> => [
  lp(input.kind === undefined ? ENTRY_HASH_DOMAIN_V1 : ENTRY_HASH_DOMAIN),
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
  u8(input.allowed ? 1 : 0),
  ...(input.kind === undefined ? [] : [
    u8(KIND_CODES[input.kind]),
    u8(OUTCOME_CODES[input.outcome ?? "pending"]),
    u64(input.callSequence ?? input.sequence)
  ])
]

/** The hashed fields an entry holds itself (its position and link are given apart). */
type EntryFields = Omit<EntryHashInput, "sessionId" | "prevHash" | "sequence">

/** Where the domain's version digit sits in the prefix (the v1 and v2 domains differ only there). */
const DOMAIN_VERSION_OFFSET = 4 + ENTRY_HASH_DOMAIN.length - 1

/**
 * Writes hash inputs for one session into one reused buffer (grown when a record's strings need more
 * room) and hashes them: byte for byte `entryHashInput`, without a buffer per field or BigInt encoding.
 * The domain and session id prefix is written once (its version digit switched per entry).
 */
class EntryEncoder {
  #buffer: Buffer
  readonly #prefixLength: number

  constructor(sessionId: string) {
    const prefix = Buffer.concat([lp(ENTRY_HASH_DOMAIN), lp(sessionId)])
    this.#buffer = Buffer.allocUnsafe(prefix.length + 512)
    prefix.copy(this.#buffer, 0)
    this.#prefixLength = prefix.length
    this.#views = new PrefixViews(this.#buffer)
  }

  /** The input's bytes as one view per length, so hashing allocates no view per entry. */
  readonly #views: PrefixViews

  /** `entryHash` as 64 lowercase hex chars, the previous hash given as hex. */
  hash(input: Omit<EntryHashInput, "sessionId">): string {
    const at = this.#reserve(input.sequence, input)
    this.#buffer.write(input.prevHash, at, 32, "hex")
    return digestHex(this.#views.view(this.#encodeRest(at + 32, input)))
  }

  /**
   * `entryHash` as 32 raw bytes, the previous hash given as raw bytes; with `keepInput`, a copy of the hash
   * input is left in `lastInput` (what a durable journal stores as the entry's row body).
   */
  hashRaw(sequence: number, fields: EntryFields, log: EntryLog, keepInput = false): Buffer {
    const at = this.#reserve(sequence, fields)
    // Appending, the previous hash is the one this encoder just computed: a native copy of it, not a lookup.
    if (this.#last !== undefined && this.#lastSequence === sequence - 1) this.#buffer.set(this.#last, at)
    else log.copyHash(sequence - 1, this.#buffer, at)
    const input = this.#views.view(this.#encodeRest(at + 32, fields))
    if (keepInput) this.lastInput = Buffer.from(input)
    const hash = digestBytes(input)
    this.#last = hash
    this.#lastSequence = sequence
    return hash
  }

  lastInput: Buffer = Buffer.alloc(0)
  #last: Buffer | undefined
  #lastSequence = -1

  /** Room for the input; returns where the previous hash goes (after the prefix and the sequence). */
  #reserve(sequence: number, input: EntryFields): number {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit: enough room without measuring each string first.
    const strings = input.toolName.length + input.serverId.length + input.agentId.length
    const needed = this.#prefixLength + 8 + 32 + 8 + 12 + 3 * strings + 8 + 8 + 4 + 1 + 10
    if (needed > this.#buffer.length) this.#grow(needed)
    this.#buffer[DOMAIN_VERSION_OFFSET] = input.kind === undefined ? 0x31 : 0x32
    this.#sequence = sequence
    return writeU64At(this.#buffer, this.#prefixLength, sequence)
  }

  #sequence = 0

  /** Everything after the previous hash, from `at`; returns the end. */
  #encodeRest(at: number, input: EntryFields): number {
    const b = this.#buffer
    at = writeU64At(b, at, input.timestampMillis)
    at = writeLpAt(b, at, input.toolName)
    at = writeLpAt(b, at, input.serverId)
    at = writeLpAt(b, at, input.agentId)
    at = writeU64At(b, at, input.bytesRead)
    at = writeU64At(b, at, input.bytesWritten)
    at = writeU32At(b, at, input.delegationDepth)
    b[at++] = input.allowed ? 1 : 0
    if (input.kind === undefined) return at
    b[at++] = KIND_CODES[input.kind]
    b[at++] = OUTCOME_CODES[input.outcome ?? "pending"]
    return writeU64At(b, at, input.callSequence ?? this.#sequence)
  }

  #grow(needed: number): void {
    const grown = Buffer.allocUnsafe(Math.max(needed, 2 * this.#buffer.length))
    this.#buffer.copy(grown, 0, 0, this.#prefixLength)
    this.#buffer = grown
    this.#views.reset(grown)
  }
}

/** The `entryHash` (v2, or v1 for an input without `kind`): SHA-256 of `entryHashInput`, as 64 hex chars. */
export const computeEntryHash = (input: EntryHashInput): string => new EntryEncoder(input.sessionId).hash(input)

// ---------------------------------------------------------------------------------------------------------
// Verification (shared by live journals and exports)
// ---------------------------------------------------------------------------------------------------------

/** A broken v2 rule between entries: which field, what was expected and what was found. */
interface OutcomeProblem {
  readonly field: "outcome" | "callSequence"
  readonly expected: string
  readonly actual: string
}

const ENDINGS: ReadonlySet<Outcome> = new Set(["result", "errorAnswer", "timedOut", "upstreamGone", "interrupted"])

/**
 * The v2 rules between entries (docs/FORMAT.md): a `call` names itself; a refused call is `refused` and an
 * allowed one is not; an `outcome` entry ends (with an ending, not `pending`/`refused`) an earlier allowed
 * call that is `pending` and not ended yet, of the same tool, server, agent and delegation depth. v1
 * entries are calls recorded whole and take part in none of this.
 */
class Outcomes {
  readonly #pending = new Map<number, EntryFields>()

  /** The first rule `entry` (at `sequence`) breaks, or undefined; then `add` it. */
  problem(sequence: number, entry: EntryFields): OutcomeProblem | undefined {
    if (entry.kind === undefined) return undefined
    const outcome = entry.outcome
    if (outcome === undefined) return { field: "outcome", expected: "an outcome", actual: "none" }
    const callSequence = entry.callSequence
    if (entry.kind === "call") {
      if (callSequence !== sequence) {
        return { field: "callSequence", expected: String(sequence), actual: String(callSequence) }
      }
      if (entry.allowed ? outcome === "refused" : outcome !== "refused") {
        return { field: "outcome", expected: entry.allowed ? "not refused (allowed)" : "refused", actual: outcome }
      }
      return undefined
    }
    if (!ENDINGS.has(outcome) || !entry.allowed) {
      return { field: "outcome", expected: "an ending of an allowed call", actual: outcome }
    }
    const call = callSequence === undefined ? undefined : this.#pending.get(callSequence)
    if (call === undefined) {
      return { field: "callSequence", expected: "an earlier pending call", actual: String(callSequence) }
    }
    if (
      call.toolName !== entry.toolName || call.serverId !== entry.serverId || call.agentId !== entry.agentId ||
      call.delegationDepth !== entry.delegationDepth
    ) {
      return {
        field: "callSequence",
        expected: `the call of ${call.toolName} on ${call.serverId}`,
        actual: `${entry.toolName} on ${entry.serverId}`
      }
    }
    return undefined
  }

  add(sequence: number, entry: EntryFields): void {
    if (entry.kind === "call" && entry.outcome === "pending") this.#pending.set(sequence, entry)
    else if (entry.kind === "outcome" && entry.callSequence !== undefined) this.#pending.delete(entry.callSequence)
  }

  /** The calls still pending, oldest first. */
  get pending(): ReadonlyArray<number> {
    return Array.from(this.#pending.keys())
  }
}

const verifyChain = (
  sessionId: string,
  entries: ReadonlyArray<JournalEntry>,
  length: number,
  headHash: string
): Effect.Effect<void, IntegrityViolation> => {
  let expectedPrev = ZERO_HASH
  const encoder = new EntryEncoder(sessionId)
  const outcomes = new Outcomes()
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
    const problem = outcomes.problem(index, entry)
    if (problem !== undefined) return Effect.fail(new IntegrityViolation({ sequence: index, ...problem }))
    outcomes.add(index, entry)
    expectedPrev = entry.entryHash
  }
  if (headHash !== expectedPrev) {
    return Effect.fail(
      new IntegrityViolation({ sequence: length, field: "headHash", expected: expectedPrev, actual: headHash })
    )
  }
  return Effect.void
}

/** The path of the first v2 field among `entries` (`entries.3.kind`), or undefined. */
const v2FieldIn = (entries: ReadonlyArray<JournalEntry>): string | undefined => {
  for (const [i, entry] of entries.entries()) {
    for (const field of ["kind", "outcome", "callSequence"] as const) {
      if (entry[field] !== undefined) return `entries.${i}.${field}`
    }
  }
  return undefined
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
    Effect.filterOrFail(
      (exported) => exported.format !== EXPORT_FORMAT_V1 || v2FieldIn(exported.entries) === undefined,
      (exported) =>
        new InvalidExport({
          issues: [
            new ExportIssue({
              path: v2FieldIn(exported.entries) ?? "",
              message: `a format v2 field in a ${EXPORT_FORMAT_V1} export`
            })
          ]
        })
    ),
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
  /**
   * Append an entry (a call, or the outcome of a pending one); returns its `sequence`. Fails, leaving the
   * journal unchanged, on an invalid number or an entry that breaks the v2 rules (`outcome`, `callSequence`).
   */
  readonly record: (params: RecordParams) => Effect.Effect<number, InvalidRecord>
  readonly dataFlow: Effect.Effect<DataFlow>
  /** Tool names of the calls in recording order (`outcome` entries left out). */
  readonly toolSequence: Effect.Effect<ReadonlyArray<string>>
  /** The sequences of the allowed calls still `pending` (no `outcome` entry yet), oldest first. */
  readonly pendingCalls: Effect.Effect<ReadonlyArray<number>>
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
  /** Whether entries are also stored in the ledger (`make` with a `store`). */
  readonly durable: boolean
  /**
   * Waits until entry `sequence` is stored in the ledger; fails with `EntryNotDurable` when storing it has
   * failed (it is retried: a later call may succeed). Succeeds at once for an in-memory journal.
   */
  readonly awaitDurable: (sequence: number) => Effect.Effect<void, EntryNotDurable>
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
      allowed: s.allowed,
      ...(s.kind === undefined ? {} : { kind: s.kind, outcome: s.outcome, callSequence: s.callSequence })
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
  /** The v2 rules between entries, and the calls still pending. */
  readonly outcomes: Outcomes
  totalBytesRead: number
  totalBytesWritten: number
  totalInvocations: number
  maxDelegationDepth: number
  /** Calls per tool name; a `Map` iterates in insertion order, so this is also the order of first use. */
  readonly toolCounts: Map<string, number>
}

const saturatingAdd = (a: number, b: number): number => Math.min(Number.MAX_SAFE_INTEGER, a + b)

/** Appends; an `outcome` entry adds its bytes but is not another invocation of its tool. */
const append = (state: State, entry: StoredEntry, hash: Uint8Array): void => {
  state.outcomes.add(state.log.length, entry)
  state.log.push(entry, hash)
  state.totalBytesRead = saturatingAdd(state.totalBytesRead, entry.bytesRead)
  state.totalBytesWritten = saturatingAdd(state.totalBytesWritten, entry.bytesWritten)
  if (entry.kind === "outcome") return
  state.totalInvocations = saturatingAdd(state.totalInvocations, 1)
  if (entry.delegationDepth > state.maxDelegationDepth) state.maxDelegationDepth = entry.delegationDepth
  state.toolCounts.set(entry.toolName, saturatingAdd(state.toolCounts.get(entry.toolName) ?? 0, 1))
}

const emptyState = (): State => ({
  log: new EntryLog(),
  outcomes: new Outcomes(),
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

/** Where a durable journal's entries go (`make` with `store`). */
export interface Options {
  /** The ledger's journal store: every entry recorded is also stored there (group commit). */
  readonly store?: JournalStore.Service | undefined
}

/**
 * A durable journal's entries not stored yet, and those whose storing failed: `awaitDurable` reads them.
 * Waiters are made only for an entry someone waits on.
 */
class Durability {
  readonly #unstored = new Set<number>()
  readonly #failed = new Map<number, string>()
  readonly #waiters = new Map<number, Deferred.Deferred<void, EntryNotDurable>>()
  constructor(readonly sessionId: string) {}

  onStored(sequence: number): JournalStore.OnStored {
    this.#unstored.add(sequence)
    return (failure) => {
      const waiter = this.#waiters.get(sequence)
      this.#waiters.delete(sequence)
      if (failure === undefined) {
        this.#unstored.delete(sequence)
        this.#failed.delete(sequence)
        if (waiter !== undefined) Deferred.unsafeDone(waiter, Exit.void)
      } else {
        this.#failed.set(sequence, failure.reason)
        if (waiter !== undefined) Deferred.unsafeDone(waiter, Exit.fail(this.#notDurable(sequence, failure.reason)))
      }
    }
  }

  #notDurable(sequence: number, reason: string) {
    return new EntryNotDurable({ sessionId: this.sessionId, sequence, reason })
  }

  await(sequence: number): Effect.Effect<void, EntryNotDurable> {
    return Effect.suspend(() => {
      const failed = this.#failed.get(sequence)
      if (failed !== undefined) return Effect.fail(this.#notDurable(sequence, failed))
      if (!this.#unstored.has(sequence)) return Effect.void
      let waiter = this.#waiters.get(sequence)
      if (waiter === undefined) {
        waiter = Deferred.unsafeMake<void, EntryNotDurable>(FiberId.none)
        this.#waiters.set(sequence, waiter)
      }
      return Deferred.await(waiter)
    })
  }
}

/** The ledger row of an entry just appended (`body` is its hash input). */
const rowOf = (
  sessionId: string,
  sequence: number,
  entry: StoredEntry,
  prevHash: string,
  entryHash: string,
  body: Uint8Array,
  intent: JsonValue | undefined
): JournalStore.JournalRow => ({
  // Text columns hold what the body says: the body encodes a lone surrogate as U+FFFD (UTF-8 `EF BF BD`),
  // so the column gets the well-formed string too (a driver may store the raw one otherwise).
  sessionId: sessionId.toWellFormed(),
  sequence,
  kind: entry.kind ?? "call",
  outcome: entry.outcome ?? (entry.allowed ? "result" : "refused"),
  callSequence: entry.callSequence ?? sequence,
  agentId: entry.agentId.toWellFormed(),
  serverId: entry.serverId.toWellFormed(),
  toolName: entry.toolName.toWellFormed(),
  timestampMillis: entry.timestampMillis,
  prevHash,
  entryHash,
  body,
  intent: intent === undefined ? null : canonicalize(intent) ?? null
})

const fromState = (sessionId: string, state: State, options: Options = {}): Effect.Effect<Journal> =>
  Effect.sync((): Journal => {
    const encoder = new EntryEncoder(sessionId)
    const log = state.log
    const store = options.store
    const durability = store === undefined ? undefined : new Durability(sessionId)
    const read = <A>(f: (state: State) => A): Effect.Effect<A> => Effect.sync(() => f(state))

    /** The append itself: one synchronous step, on values copied once from the caller's object. */
    const appendNow = (params: RecordParams, now: number): number | InvalidRecord => {
      const sequence = log.length
      const kind = params.kind ?? "call"
      const entry: StoredEntry = {
        timestampMillis: Math.max(0, Math.floor(now)),
        toolName: params.toolName,
        serverId: params.serverId,
        agentId: params.agentId,
        bytesRead: params.bytesRead,
        bytesWritten: params.bytesWritten,
        delegationDepth: params.delegationDepth,
        allowed: params.allowed,
        kind,
        outcome: params.outcome ?? (params.allowed ? "result" : "refused"),
        callSequence: kind === "call" ? params.callSequence ?? sequence : params.callSequence
      }
      const invalid = invalidParams(entry)
      if (invalid !== undefined) return invalid
      const problem = state.outcomes.problem(sequence, entry)
      if (problem !== undefined) {
        return new InvalidRecord({
          field: problem.field,
          value: problem.field === "callSequence" ? entry.callSequence ?? -1 : OUTCOME_CODES[entry.outcome!],
          reason: `expected ${problem.expected}, got ${problem.actual}`
        })
      }
      const hash = encoder.hashRaw(sequence, entry, log, store !== undefined)
      append(state, entry, hash)
      if (store !== undefined) {
        // In the step that appends: the store receives each session's entries in their order.
        store.enqueue(
          rowOf(
            sessionId,
            sequence,
            entry,
            log.hashHex(sequence - 1),
            hash.toString("hex"),
            encoder.lastInput,
            params.intent
          ),
          durability!.onStored(sequence)
        )
      }
      return sequence
    }

    // Clock time is read before the append: under concurrent recording, timestamps follow the order in which
    // callers asked, which can differ slightly from sequence order. Validation and append are one step, so
    // the values checked are the values hashed.
    const recordAt = (params: RecordParams, fiber: Fiber.RuntimeFiber<unknown, unknown>) => {
      const appended = appendNow(
        params,
        Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
      )
      return typeof appended === "number" ? Effect.succeed(appended) : Effect.fail(appended)
    }
    const recordTraced = (params: RecordParams): Effect.Effect<number, InvalidRecord> =>
      Effect.withSpan(Effect.withFiberRuntime((fiber) => recordAt(params, fiber)), SPAN_RECORD, {
        attributes: {
          "agent_ledger.session_id": sessionId,
          "agent_ledger.tool_name": params.toolName,
          "agent_ledger.allowed": params.allowed
        }
      })
    // One step into the fiber's runtime per record (its clock and its log level), the span only when Debug
    // is on (`debugSpan`'s rule): a record costs little more than its hash.
    const record = (params: RecordParams): Effect.Effect<number, InvalidRecord> =>
      Effect.withFiberRuntime((fiber) => debugEnabled(fiber) ? recordTraced(params) : recordAt(params, fiber))

    return {
      sessionId: Effect.succeed(sessionId),
      record,
      dataFlow: read((s) => ({
        totalBytesRead: s.totalBytesRead,
        totalBytesWritten: s.totalBytesWritten,
        totalInvocations: s.totalInvocations,
        maxDelegationDepth: s.maxDelegationDepth
      })),
      toolSequence: read(() => log.stored.flatMap((entry) => entry.kind === "outcome" ? [] : [entry.toolName])),
      toolCounts: read((s) => new Map(s.toolCounts)),
      pendingCalls: read((s) => s.outcomes.pending),
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
      ),
      durable: store !== undefined,
      awaitDurable: (sequence) => durability === undefined ? Effect.void : durability.await(sequence)
    }
  })

/**
 * A new, empty journal for `sessionId`: in memory, or with `options.store` also stored in the ledger
 * (docs/FORMAT.md, "Journal entry row"). A durable session id must name one chain: a second journal of the
 * same id in the same ledger has its entries refused by the store (and logged as lost).
 */
export const make = (sessionId: string, options: Options = {}): Effect.Effect<Journal> =>
  fromState(sessionId, emptyState(), options)

/**
 * A journal restored from an export, continuing its chain: the next `record` gets sequence `length` and
 * links to the export's head. The export is verified first (`verifyExport`); a tampered one is refused.
 * With `options.store`, the entries recorded from now on are stored (the restored ones are taken as
 * already stored: resuming a durable session read back from the ledger, as `agent-ledger hook` does).
 */
export const fromExport = (
  input: unknown,
  options: Options = {}
): Effect.Effect<Journal, InvalidExport | IntegrityViolation> =>
  Effect.flatMap(verifyExport(input), (exported) => {
    const state = emptyState()
    for (const entry of exported.entries) append(state, entry, Buffer.from(entry.entryHash, "hex"))
    return fromState(exported.sessionId, state, options)
  })

/** Provide `SessionJournal` with a new journal for `sessionId`. */
export const layer = (sessionId: string): Layer.Layer<SessionJournal> => Layer.effect(SessionJournal, make(sessionId))
