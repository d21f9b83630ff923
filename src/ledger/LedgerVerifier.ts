/**
 * Verifies a ledger (docs/FORMAT.md, "Ledger row v1", "Verification"): sequence continuity, the prev_hash
 * link, payload_hash, entry_hash, attest-level consistency, signatures against a `Keyring`, and an optional
 * pin from an earlier run.
 *
 * The checks live in an incremental checker (`makeChecker`) that takes rows one at a time from any source,
 * so the same code verifies the database (`verifyLedger`, which reads `signed_events` in keyset-paginated
 * pages, memory flat in the number of rows) and a JSONL export that may start mid-chain (`verifyRows`).
 *
 * After a failure the checker keeps going, re-synchronised on the stored values of the failing row (the
 * next row is linked against that row's stored entry_hash and expected at its sequence + 1), so one
 * tampered row is one failure and every row is still counted. The report carries the first failure in
 * detail, every failure in row order (up to `maxFailures`) and the number of failing rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Effect, Either, Option, ParseResult, Schema, Stream } from "effect"
import { isUtf8 } from "node:buffer"
import * as AuditSigner from "../audit/AuditSigner.js"
import { digestHex, isHash, ZERO_HASH } from "../internal/encoding.js"
import { yieldToEventLoop } from "../internal/eventLoopScheduler.js"
import { storedRowEntryHash } from "../internal/rowFormat.js"
import { dialectOf } from "../internal/sqlDialect.js"
import * as JournalVerifier from "./JournalVerifier.js"
import * as LedgerRow from "./LedgerRow.js"
import * as LedgerSql from "./LedgerSql.js"

// ---------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------

/**
 * What a failing row failed (one kind per row, the first in this order of checks):
 * - `malformed`: the row does not decode as a `LedgerRow` (the message names the field)
 * - `gap`: its sequence is not the previous row's + 1 (the first row's: `expectedFirstSequence`, 0)
 * - `link`: its prev_hash is not the previous row's entry_hash (the first row's: `expectedFirstPrevHash`)
 * - `payloadHash`: payload_hash is not SHA-256 of the payload text
 * - `entryHash`: entry_hash is not the row format v1 hash of the row
 * - `attestLevel`: attest_level disagrees with signature / key_id (`unsigned` needs both NULL, `ed25519`
 *   both set), or the row is unsigned while `requireSigned` is set
 * - `signature`: key_id is in the keyring but the signature is not valid (tampered)
 * - `unknownKey`: key_id is not in the keyring (unverifiable, not proven tampered)
 * - `pin`: the pinned `{ sequence, entryHash }` is not in the chain (truncated or rewritten history)
 * - `duplicate` (database only): two rows share a sequence, so keyset paging could pass one by (possible
 *   only once the unique index on `sequence` has been dropped)
 * - `downgrade`: an unsigned row in a signed ledger (after its first signed row, or anywhere from
 *   `signedFrom` on when keys were given): a stripped signature or a forged row
 * - `encoding` (database only): a hashed text column's stored bytes are not valid UTF-8, so no text
 *   hashes to them (what is stored is what is verified: the decoded text, with U+FFFD in place of the bad
 *   bytes, must not stand in for them); or the SQLite database does not store text as UTF-8 at all
 */
export const FailureKind = Schema.Literal(
  "malformed",
  "gap",
  "link",
  "payloadHash",
  "entryHash",
  "attestLevel",
  "signature",
  "unknownKey",
  "pin",
  "duplicate",
  "downgrade",
  "encoding",
  "journal"
)
export type FailureKind = typeof FailureKind.Type

export const VerifyFailure = Schema.Struct({
  /**
   * The sequence of the failing row as stored (for `pin`: the pinned sequence; for `journal`: the broken
   * entry's sequence in its session's journal).
   */
  sequence: Schema.Number,
  kind: FailureKind,
  /** For `journal`: the session whose stored journal is broken at `sequence`. */
  sessionId: Schema.optional(Schema.String),
  expected: Schema.optional(Schema.String),
  actual: Schema.optional(Schema.String),
  message: Schema.String
}).annotations({ identifier: "VerifyFailure" })
export type VerifyFailure = typeof VerifyFailure.Type

export const ChainHead = Schema.Struct({ sequence: Schema.Number, entryHash: Schema.String })
export type ChainHead = typeof ChainHead.Type

export const Pin = Schema.Struct({ sequence: Schema.Number, entryHash: Schema.String })
export type Pin = typeof Pin.Type

/** `matched`: the row is there with that entry_hash; `rewritten`: a different one; `missing`: no such row. */
export const PinStatus = Schema.Literal("matched", "rewritten", "missing")
export type PinStatus = typeof PinStatus.Type

export const PinResult = Schema.Struct({
  sequence: Schema.Number,
  entryHash: Schema.String,
  status: PinStatus,
  /** The entry_hash found at the pinned sequence, when `rewritten`. */
  actualEntryHash: Schema.optional(Schema.String)
})
export type PinResult = typeof PinResult.Type

/**
 * The verification report. Optional parts are `Option`s in the type and `null` in the encoded form
 * (`Schema.encode(VerifyReport)` for JSON output).
 *
 * `ok` is true only when no row failed any check, no signed row is unverifiable, and the pin (if any)
 * matched. `firstFailure` is the first tampering failure in row order; when there is none, the first
 * `unknownKey` row, so an unverifiable row never hides a tampered one. `failures` lists them all (bounded),
 * as `git fsck` and `PRAGMA integrity_check` do. Signature counts cover `ed25519`
 * rows whose signature was checked (rows that failed an earlier check are not counted): unsigned rows are
 * never counted as verified. `attestLevels` counts the rows that decoded.
 */
export const VerifyReport = Schema.Struct({
  ok: Schema.Boolean,
  rowsChecked: Schema.Number,
  /** Rows with a failure, plus 1 for a failed pin. */
  failureCount: Schema.Number,
  firstFailure: Schema.OptionFromNullOr(VerifyFailure),
  /**
   * Every failure in row order (then a failed pin, then passed-by duplicates), at most `maxFailures`:
   * fewer than `failureCount` when the list was cut.
   */
  failures: Schema.Array(VerifyFailure),
  attestLevels: Schema.Struct({ unsigned: Schema.Number, ed25519: Schema.Number }),
  signatures: Schema.Struct({ valid: Schema.Number, invalid: Schema.Number, unknownKey: Schema.Number }),
  /** The distinct key_ids not in the keyring (at most `MAX_LISTED_KEY_IDS`). */
  unknownKeyIds: Schema.Array(Schema.String),
  /** The last row seen, as stored. */
  head: Schema.OptionFromNullOr(ChainHead),
  pin: Schema.OptionFromNullOr(PinResult),
  /** The stored session journals, when they were checked (`verifyLedger`). */
  journals: Schema.optional(JournalVerifier.JournalsReport)
}).annotations({ identifier: "VerifyReport" })
export type VerifyReport = typeof VerifyReport.Type

/** Bound on `unknownKeyIds`, so a ledger full of forged key ids cannot grow the report without limit. */
export const MAX_LISTED_KEY_IDS = 100

/** Default bound on `VerifyReport.failures` (`CheckerOptions.maxFailures`, `verify --max-failures`). */
export const DEFAULT_MAX_FAILURES = 100

// ---------------------------------------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------------------------------------

export interface CheckerOptions {
  /** Public keys for signature checks; without one every signed row is `unknownKey`. */
  readonly keyring?: AuditSigner.Keyring | undefined
  /** The sequence of the first row fed in (0 for a whole chain, the export's start otherwise). */
  readonly expectedFirstSequence?: number | undefined
  /** The prev_hash of the first row fed in (the zero hash for a whole chain). */
  readonly expectedFirstPrevHash?: string | undefined
  /** An earlier `{ sequence, entryHash }` that must still be in the chain. */
  readonly pin?: Pin | undefined
  /** Fail unsigned rows (kind `attestLevel`), even without keys. Default false. */
  readonly requireSigned?: boolean | undefined
  /**
   * With keys given, the ledger is expected signed from this sequence on (default 0: every row); rows
   * before it may be unsigned. For a ledger that started unsigned and switched to signing.
   */
  readonly signedFrom?: number | undefined
  /** Accept unsigned rows anywhere (no `downgrade` failures). Default false. */
  readonly allowMixed?: boolean | undefined
  /** How many failures `VerifyReport.failures` lists at most; default `DEFAULT_MAX_FAILURES`. */
  readonly maxFailures?: number | undefined
}

/**
 * An incremental verifier: feed rows in order with `check` (decoded) or `checkUnknown` (raw: a row that
 * does not decode is a `malformed` failure, not an error); `report` may be called at any time. Mutable and
 * single-owner: make one per verification run.
 */
export interface Checker {
  readonly check: (row: LedgerRow.LedgerRow) => void
  readonly checkUnknown: (input: unknown) => void
  /** A stored row whose `column` holds bytes that are not UTF-8 (an `encoding` failure; the chain goes on). */
  readonly checkBadText: (input: Record<string, unknown>, column: string) => void
  readonly report: () => VerifyReport
}

interface RowVerdict {
  readonly failure?: VerifyFailure
  readonly signature?: "valid" | "invalid" | "unknownKey"
}

/** What one verification run has seen so far; owned by its checker. */
interface Tally {
  rowsChecked: number
  failureCount: number
  firstTamper: VerifyFailure | undefined
  firstUnknownKey: VerifyFailure | undefined
  /** The failures in order, up to `maxFailures`. */
  readonly failures: Array<VerifyFailure>
  readonly maxFailures: number
  readonly attestLevels: { unsigned: number; ed25519: number }
  readonly signatures: { valid: number; invalid: number; unknownKey: number }
  readonly unknownKeyIds: Set<string>
  /** The last row seen with an entry_hash, as stored (kept as two fields: no object per row). */
  headSequence: number
  headEntryHash: string | null
  pin: PinResult | undefined
  /** The sequence of the first `ed25519` row: from there on the ledger is signed (see `attestation`). */
  firstSigned: number | undefined
}

/** Where the next row must sit: its sequence and the entry_hash it must link to (null: unknown). */
interface Position {
  expectedSequence: number
  /** null after a malformed row without a usable entry_hash: the next row's link is not checked. */
  previousEntryHash: string | null
  /** `previousEntryHash` is 64 lowercase hex: a row linking to it needs no hex check of its own. */
  previousIsHash: boolean
}

/** How a signature-less row is judged (docs/FORMAT.md, "Verification": signed ledgers). */
interface SigningPolicy {
  readonly keyring: AuditSigner.Keyring
  readonly requireSigned: boolean
  /** Keys were given: the verifier declares the ledger signed (from `signedFrom` on). */
  readonly expectSigned: boolean
  readonly signedFrom: number
  readonly allowMixed: boolean
}

const recordFailure = (tally: Tally, failure: VerifyFailure): void => {
  tally.failureCount++
  if (tally.failures.length < tally.maxFailures) tally.failures.push(failure)
  if (failure.kind === "unknownKey") tally.firstUnknownKey ??= failure
  else tally.firstTamper ??= failure
}

/** Step 1: the row sits where the chain says (its sequence, and its prev_hash links to the previous row). */
const positionFailure = (row: LedgerRow.LedgerRow, at: Position, firstSequence: number): VerifyFailure | undefined => {
  const sequence = row.sequence
  if (sequence !== at.expectedSequence) {
    return {
      sequence,
      kind: "gap",
      expected: String(at.expectedSequence),
      actual: String(sequence),
      message: `expected sequence ${at.expectedSequence}, found ${sequence}`
    }
  }
  const previous = at.previousEntryHash
  const linked = previous === null ? isHash(row.prev_hash) : row.prev_hash === previous && at.previousIsHash
  if (!linked) {
    return {
      sequence,
      kind: "link",
      ...(previous === null ? {} : { expected: previous }),
      actual: row.prev_hash,
      message: sequence === firstSequence
        ? `prev_hash of the first row is not the expected ${previous}`
        : `prev_hash is not the entry_hash of sequence ${sequence - 1}`
    }
  }
  return undefined
}

/** Step 2: the row's hashes are those of its content (compared as hex: no digest buffers per row). */
const hashFailure = (row: LedgerRow.LedgerRow): VerifyFailure | undefined => {
  const payloadHash = digestHex(row.payload)
  if (row.payload_hash !== payloadHash) {
    return {
      sequence: row.sequence,
      kind: "payloadHash",
      expected: payloadHash,
      actual: row.payload_hash,
      message: "payload_hash is not SHA-256 of the payload"
    }
  }
  const entryHash = storedRowEntryHash(row)
  if (row.entry_hash !== entryHash) {
    return {
      sequence: row.sequence,
      kind: "entryHash",
      expected: entryHash,
      actual: row.entry_hash,
      message: "entry_hash does not match the row (id, agent_id, event_type, timestamp or position changed)"
    }
  }
  return undefined
}

const ACCEPTED: RowVerdict = {}
const VALID_SIGNATURE: RowVerdict = { signature: "valid" }

/**
 * Step 3: attest level and signature. An unsigned row is a `downgrade` where the ledger is signed: after
 * its first signed row, or anywhere from `signedFrom` on when keys were given (the verifier's own
 * declaration, which a rewrite of the database cannot remove); unless mixed ledgers are allowed.
 */
const attestation = (
  row: LedgerRow.LedgerRow,
  policy: SigningPolicy,
  firstSigned: number | undefined
): RowVerdict => {
  if (row.attest_level === "unsigned") {
    if (row.signature !== null || row.key_id !== null) {
      return { failure: attestFailure(row, "an unsigned row must have NULL signature and key_id") }
    }
    if (policy.requireSigned) return { failure: attestFailure(row, "unsigned row, but signatures are required") }
    if (policy.allowMixed) return ACCEPTED
    if (policy.expectSigned && row.sequence >= policy.signedFrom) {
      return {
        failure: downgradeFailure(
          row,
          `unsigned row in a ledger verified as signed (keys given${
            policy.signedFrom > 0 ? `, signed from sequence ${policy.signedFrom}` : ""
          }): a stripped signature or a forged row`
        )
      }
    }
    if (firstSigned !== undefined) {
      return {
        failure: downgradeFailure(
          row,
          `unsigned row after signed rows (the first at sequence ${firstSigned}): a stripped signature or a forged row`
        )
      }
    }
    return ACCEPTED
  }
  if (row.signature === null || row.key_id === null) {
    return { failure: attestFailure(row, "an ed25519 row must have both signature and key_id") }
  }
  // entry_hash passed step 2, so it is the 64 hex chars of the hash the signature covers.
  const entryHashBytes = Buffer.from(row.entry_hash, "hex")
  const signature = AuditSigner.verifySignature(policy.keyring, row.key_id, entryHashBytes, row.signature)
  switch (signature) {
    case "valid":
      return VALID_SIGNATURE
    case "invalid":
      return {
        signature,
        failure: {
          sequence: row.sequence,
          kind: "signature",
          actual: row.signature,
          message: `signature is not valid for key ${row.key_id}`
        }
      }
    case "unknownKey":
      return {
        signature,
        failure: {
          sequence: row.sequence,
          kind: "unknownKey",
          actual: row.key_id,
          message: `key ${row.key_id} is not in the keyring: signature unverifiable`
        }
      }
  }
}

/** All three steps, in order: the first that fails is the row's verdict. */
const verdictOf = (
  row: LedgerRow.LedgerRow,
  at: Position,
  firstSequence: number,
  policy: SigningPolicy,
  firstSigned: number | undefined
): RowVerdict => {
  const misplaced = positionFailure(row, at, firstSequence)
  if (misplaced !== undefined) return { failure: misplaced }
  const unhashed = hashFailure(row)
  if (unhashed !== undefined) return { failure: unhashed }
  return attestation(row, policy, firstSigned)
}

/**
 * The structure `LedgerRow` decodes, checked directly: a row the database or an export hands over that
 * has exactly the format's fields with the right types is used as it is; anything else goes through the
 * schema, whose error names the bad field. (Decoding every row through the schema was most of the cost of
 * verification.)
 */
const isLedgerRow = (u: unknown): u is LedgerRow.LedgerRow => {
  if (typeof u !== "object" || u === null) return false
  const r = u as Record<string, unknown>
  return Object.keys(r).length === LedgerRow.COLUMNS.length &&
    typeof r.id === "string" &&
    typeof r.sequence === "number" && Number.isSafeInteger(r.sequence) && r.sequence >= 0 &&
    typeof r.agent_id === "string" &&
    typeof r.event_type === "string" &&
    typeof r.payload === "string" &&
    typeof r.payload_hash === "string" &&
    typeof r.prev_hash === "string" &&
    typeof r.entry_hash === "string" &&
    (r.signature === null || typeof r.signature === "string") &&
    (r.key_id === null || typeof r.key_id === "string") &&
    (r.attest_level === "unsigned" || r.attest_level === "ed25519") &&
    typeof r.timestamp === "string" &&
    typeof r.appended_at === "string"
}

const newTally = (maxFailures: number): Tally => ({
  rowsChecked: 0,
  failureCount: 0,
  firstTamper: undefined,
  firstUnknownKey: undefined,
  failures: [],
  maxFailures,
  attestLevels: { unsigned: 0, ed25519: 0 },
  signatures: { valid: 0, invalid: 0, unknownKey: 0 },
  unknownKeyIds: new Set(),
  headSequence: 0,
  headEntryHash: null,
  pin: undefined,
  firstSigned: undefined
})

/** The report of a tally; a pin never reached counts as `missing`. */
const reportOf = (tally: Tally, pin: Pin | undefined, firstSequence: number): VerifyReport => {
  let finalPin = tally.pin
  let pinFailed = 0
  let firstPinFailure: VerifyFailure | undefined
  if (pin !== undefined && finalPin === undefined) {
    finalPin = { sequence: pin.sequence, entryHash: pin.entryHash, status: "missing" }
    pinFailed = 1
    firstPinFailure = pin.sequence < firstSequence - 1
      ? { ...pinFailure(finalPin), message: `the pinned sequence ${pin.sequence} precedes the rows checked` }
      : pinFailure(finalPin)
  }
  const firstFailure = tally.firstTamper ?? firstPinFailure ?? tally.firstUnknownKey
  const failures = firstPinFailure !== undefined && tally.failures.length < tally.maxFailures
    ? [...tally.failures, firstPinFailure]
    : [...tally.failures]
  return {
    ok: firstFailure === undefined,
    rowsChecked: tally.rowsChecked,
    failureCount: tally.failureCount + pinFailed,
    firstFailure: Option.fromNullable(firstFailure),
    failures,
    attestLevels: { ...tally.attestLevels },
    signatures: { ...tally.signatures },
    unknownKeyIds: Array.from(tally.unknownKeyIds),
    head: tally.headEntryHash === null
      ? Option.none()
      : Option.some({ sequence: tally.headSequence, entryHash: tally.headEntryHash }),
    pin: Option.fromNullable(finalPin)
  }
}

export const makeChecker = (options: CheckerOptions = {}): Checker => {
  const keyring = options.keyring ?? AuditSigner.Keyring.empty
  const policy: SigningPolicy = {
    keyring,
    requireSigned: options.requireSigned ?? false,
    expectSigned: keyring.size > 0,
    signedFrom: options.signedFrom ?? 0,
    allowMixed: options.allowMixed ?? false
  }
  const pin = options.pin
  const firstSequence = options.expectedFirstSequence ?? 0
  const firstPrevHash = options.expectedFirstPrevHash ?? ZERO_HASH
  const at: Position = {
    expectedSequence: firstSequence,
    previousEntryHash: firstPrevHash,
    previousIsHash: isHash(firstPrevHash)
  }
  const maxFailures = options.maxFailures ?? DEFAULT_MAX_FAILURES
  if (!Number.isSafeInteger(maxFailures) || maxFailures < 0) {
    throw new RangeError(`LedgerVerifier: maxFailures must be a non-negative integer, got ${maxFailures}`)
  }
  const tally = newTally(maxFailures)

  // A mid-chain source can still prove the pin that sits just before its first row.
  if (pin !== undefined && pin.sequence === firstSequence - 1 && at.previousEntryHash !== null) {
    tally.pin = pinAgainst(pin, at.previousEntryHash)
    if (tally.pin.status !== "matched") recordFailure(tally, pinFailure(tally.pin))
  }

  /** `entryHashIsHash`: whether `entryHash` is known to be 64 lowercase hex. */
  const advance = (sequence: number, entryHash: string | null, entryHashIsHash: boolean): void => {
    tally.rowsChecked++
    at.expectedSequence = sequence + 1
    at.previousEntryHash = entryHash
    at.previousIsHash = entryHashIsHash
    if (entryHash !== null) {
      tally.headSequence = sequence
      tally.headEntryHash = entryHash
    }
  }

  const check = (row: LedgerRow.LedgerRow): void => {
    tally.attestLevels[row.attest_level]++
    const { failure, signature } = verdictOf(row, at, firstSequence, policy, tally.firstSigned)
    if (row.attest_level === "ed25519" && tally.firstSigned === undefined) tally.firstSigned = row.sequence
    if (signature !== undefined) tally.signatures[signature]++
    if (signature === "unknownKey" && row.key_id !== null && tally.unknownKeyIds.size < MAX_LISTED_KEY_IDS) {
      tally.unknownKeyIds.add(row.key_id)
    }
    if (failure !== undefined) recordFailure(tally, failure)
    if (pin !== undefined && tally.pin === undefined && row.sequence === pin.sequence) {
      tally.pin = pinAgainst(pin, row.entry_hash)
      if (tally.pin.status !== "matched") recordFailure(tally, pinFailure(tally.pin))
    }
    // A row without a failure has the entry_hash step 2 computed: hex, with no need to test it.
    advance(row.sequence, row.entry_hash, failure === undefined || isHash(row.entry_hash))
  }

  /** A row that cannot be checked: one failure, and the chain goes on from its stored entry_hash. */
  const unusable = (
    raw: Record<string, unknown>,
    kind: "malformed" | "encoding",
    reason: (sequence: number) => string
  ) => {
    const sequence = typeof raw.sequence === "number" ? raw.sequence : at.expectedSequence
    recordFailure(tally, { sequence, kind, message: reason(sequence) })
    const entryHash = typeof raw.entry_hash === "string" ? raw.entry_hash : null
    advance(sequence, entryHash, entryHash !== null && isHash(entryHash))
  }

  const checkUnknown = (input: unknown): void => {
    if (isLedgerRow(input)) return check(input)
    const decoded = LedgerRow.decodeUnknownEither(input)
    if (Either.isRight(decoded)) return check(decoded.right)
    const raw = typeof input === "object" && input !== null ? input as Record<string, unknown> : {}
    unusable(
      raw,
      "malformed",
      (sequence) =>
        `row at sequence ${sequence} does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`
    )
  }

  const checkBadText = (input: Record<string, unknown>, column: string): void =>
    unusable(input, "encoding", () => `${column} is not valid UTF-8 as stored: no text hashes to its bytes`)

  return { check, checkUnknown, checkBadText, report: () => reportOf(tally, pin, firstSequence) }
}

const attestFailure = (row: LedgerRow.LedgerRow, message: string): VerifyFailure => ({
  sequence: row.sequence,
  kind: "attestLevel",
  actual: row.attest_level,
  message
})

const downgradeFailure = (row: LedgerRow.LedgerRow, message: string): VerifyFailure => ({
  sequence: row.sequence,
  kind: "downgrade",
  actual: row.attest_level,
  message
})

const pinAgainst = (pin: Pin, entryHash: string): PinResult =>
  entryHash === pin.entryHash
    ? { sequence: pin.sequence, entryHash: pin.entryHash, status: "matched" }
    : { sequence: pin.sequence, entryHash: pin.entryHash, status: "rewritten", actualEntryHash: entryHash }

const pinFailure = (pin: PinResult): VerifyFailure => ({
  sequence: pin.sequence,
  kind: "pin",
  expected: pin.entryHash,
  ...(pin.actualEntryHash === undefined ? {} : { actual: pin.actualEntryHash }),
  message: pin.status === "missing"
    ? `no row with the pinned sequence ${pin.sequence}: history truncated`
    : `the row at the pinned sequence ${pin.sequence} has a different entry_hash: history rewritten`
})

// ---------------------------------------------------------------------------------------------------------
// Row sources
// ---------------------------------------------------------------------------------------------------------

/** Verifies rows from any source (e.g. a decoded JSONL export), in the order the stream gives them. */
export const verifyRows = <E, R>(
  rows: Stream.Stream<LedgerRow.LedgerRow, E, R>,
  options: CheckerOptions = {}
): Effect.Effect<VerifyReport, E, R> =>
  Effect.suspend(() => {
    const checker = makeChecker(options)
    return Stream.runForEachChunk(rows, (chunk) => Effect.sync(() => Chunk.forEach(chunk, checker.check))).pipe(
      Effect.map(() => checker.report())
    )
  })

export const DEFAULT_PAGE_SIZE = 1_000

const SELECT_COLUMNS = LedgerRow.COLUMNS.join(", ")

interface SequenceRange {
  /** Only rows with `sequence >= from` (default: every row, whatever its sequence). */
  readonly from?: number | undefined
  /** Only rows with `sequence <= to` (default: no bound). */
  readonly to?: number | undefined
}

type Page = ReadonlyArray<Record<string, unknown>>

const invalidPageSize = (pageSize: number): string | undefined =>
  Number.isSafeInteger(pageSize) && pageSize >= 1
    ? undefined
    : `LedgerVerifier: pageSize must be a positive integer, got ${pageSize}`

/**
 * Keyset pagination over `signed_events`: the page after the row whose sequence was `after` (none: the
 * first page), `WHERE sequence > after ORDER BY sequence LIMIT pageSize`, so no OFFSET scan.
 */
const pageReader = (client: SqlClient.SqlClient, range: SequenceRange, pageSize: number) => {
  // Column names must stay snake_case whatever result-name transform the app's client has.
  const sql = client.withoutTransforms()
  const columns = sql.literal(SELECT_COLUMNS)
  const upTo = range.to === undefined ? sql.literal("1 = 1") : sql`sequence <= ${range.to}`
  return (after: Option.Option<unknown>): Effect.Effect<Page, SqlError> =>
    Option.match(after, {
      onNone: () => {
        const from = range.from === undefined ? sql.literal("1 = 1") : sql`sequence >= ${range.from}`
        return sql<Record<string, unknown>>`
          SELECT ${columns} FROM signed_events WHERE ${from} AND ${upTo} ORDER BY sequence LIMIT ${pageSize}`
      },
      onSome: (last) =>
        sql<Record<string, unknown>>`
          SELECT ${columns} FROM signed_events WHERE sequence > ${last} AND ${upTo}
          ORDER BY sequence LIMIT ${pageSize}`
    })
}

/** Where the page after `rows` starts: none when `rows` was the last page. */
const nextPage = (rows: Page, pageSize: number): Option.Option<unknown> => {
  const last = rows[rows.length - 1]
  return rows.length < pageSize || last === undefined ? Option.none() : Option.some(last.sequence)
}

/**
 * The stored `signed_events` rows in sequence order, undecoded, read in pages of `pageSize` with keyset
 * pagination (`WHERE sequence > last ORDER BY sequence LIMIT pageSize`): one page in memory at a time,
 * and no OFFSET scan. Rows appended while the stream runs are read too.
 */
export const storedRows = (
  options: SequenceRange & { readonly pageSize?: number | undefined } = {}
): Stream.Stream<Record<string, unknown>, SqlError, LedgerSql.LedgerSql> => {
  const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE
  const invalid = invalidPageSize(pageSize)
  if (invalid !== undefined) return Stream.dieMessage(invalid)
  return Stream.unwrap(Effect.map(LedgerSql.LedgerSql, (ledger) => {
    const page = pageReader(ledger.client, options, pageSize)
    const onLedger = LedgerSql.runOn(ledger)
    return Stream.paginateChunkEffect(
      Option.none<unknown>(),
      (after) =>
        Effect.map(
          // Each page after the first waits for the event loop: the consumer's work on the last page is done,
          // and timers, I/O and an interruption get their turn.
          Option.isSome(after) ? Effect.zipRight(yieldToEventLoop, onLedger(page(after))) : onLedger(page(after)),
          (rows) => [Chunk.unsafeFromArray(rows), Option.map(nextPage(rows, pageSize), Option.some)] as const
        )
    )
  }))
}

/**
 * Empties a page once its rows are checked. The effect values that carried the page through the SQL client
 * can outlive a young-generation collection; from the old generation they kept the page's rows alive until
 * the next full collection, so most rows were promoted (measured over 1M rows: the heap swung between 27
 * and 136 MB, with four times the full GCs; emptied pages keep it under 21 MB). A frozen result is left as
 * it is.
 */
const releasePage = (rows: Page): void => {
  if (Object.isExtensible(rows)) (rows as Array<unknown>).length = 0
}

/**
 * On PostgreSQL, `body` runs in one read-only transaction with a repeatable-read snapshot: every page
 * comes from the same state of the chain, whatever the fleet appends meanwhile. SQLite reads are already
 * consistent per connection.
 */
const consistentRead = <A, E, R>(
  body: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Option.exists(dialectOf(sql), (dialect) => dialect.name === "postgres")
      ? sql.withTransaction(
        Effect.zipRight(sql.unsafe("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"), body)
      )
      : body)

/**
 * The free-text columns the row hash covers (the hex and literal columns fail their own checks when their
 * bytes are not UTF-8).
 */
const HASHED_TEXT_COLUMNS = ["id", "agent_id", "event_type", "payload", "timestamp"] as const

const SELECT_STORED_BYTES = HASHED_TEXT_COLUMNS.map((column) => `CAST(${column} AS BLOB) AS ${column}`).join(", ")

const REPLACEMENT_CHARACTER = "\uFFFD"

/**
 * The indexes of `rows` whose hashed text holds U+FFFD. Only such text can come from bytes that are not
 * UTF-8: a driver decodes every bad sequence to U+FFFD, and valid UTF-8 decodes and re-encodes to the same
 * bytes. So a row without one is hashed as stored, and only the (rare) rows with one need their bytes read.
 */
const rowsWithReplacementCharacters = (rows: Page): ReadonlyArray<number> => {
  let found: Array<number> | undefined
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!
    for (const column of HASHED_TEXT_COLUMNS) {
      const text = row[column]
      if (typeof text === "string" && text.includes(REPLACEMENT_CHARACTER)) {
        ;(found ??= []).push(i)
        break
      }
    }
  }
  return found ?? []
}

/**
 * For the rows at `suspects` (SQLite), the first hashed text column whose stored bytes are not UTF-8, by
 * row index: those bytes were read as U+FFFD, a different text, whose hash proves nothing about them.
 */
const badStoredText = (
  sql: SqlClient.SqlClient,
  rows: Page,
  suspects: ReadonlyArray<number>
): Effect.Effect<ReadonlyMap<number, string>, SqlError> =>
  Effect.gen(function*() {
    const bad = new Map<number, string>()
    for (const index of suspects) {
      const stored = yield* sql.unsafe<Record<string, unknown>>(
        `SELECT ${SELECT_STORED_BYTES} FROM signed_events WHERE sequence = ?`,
        [rows[index]!.sequence as number]
      )
      for (const bytes of stored) {
        const column = HASHED_TEXT_COLUMNS.find((c) => {
          const value = bytes[c]
          return value instanceof Uint8Array && !isUtf8(value)
        })
        if (column !== undefined) bad.set(index, column)
      }
    }
    return bad
  })

/**
 * Whether this database's text can be checked against its stored bytes: SQLite storing UTF-8 (the
 * replacement-character rows' bytes are read, `badStoredText`), or PostgreSQL with a UTF8 server encoding
 * (it refuses bad bytes on the way in: docs/FORMAT.md, "Verification"). A database that does not store text
 * as checked UTF-8 (SQLite: UTF-16; PostgreSQL: any other encoding, e.g. SQL_ASCII, which takes any byte
 * and hands bad ones to the driver as U+FFFD) holds nothing the verifier can hash as stored: `None`.
 */
const storedTextCheck = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  if (Option.exists(dialectOf(sql), (dialect) => dialect.name === "postgres")) {
    const [setting] = yield* sql.unsafe<{ server_encoding: string }>("SHOW server_encoding")
    return setting?.server_encoding === "UTF8" ? Option.some("serverChecked" as const) : Option.none()
  }
  const [encoding] = yield* sql.unsafe<{ encoding: string }>("PRAGMA encoding")
  return encoding?.encoding === "UTF-8" ? Option.some("readBytes" as const) : Option.none()
})

/**
 * Rows checked between two turns of the event loop in `verifyLedger`, whatever the page size: about 4 ms of
 * work for unsigned rows on a quiet core, so a timeout or Ctrl-C stops a verify within a few milliseconds.
 */
const ROWS_PER_TURN = 250

/** The span around `verifyLedger` (docs/OPERATIONS.md, "Traces"). */
export const SPAN_VERIFY = "agent_ledger.ledger.verify"

export interface VerifyLedgerOptions {
  readonly keyring?: AuditSigner.Keyring | undefined
  readonly pin?: Pin | undefined
  readonly requireSigned?: boolean | undefined
  /** See `CheckerOptions.signedFrom`. */
  readonly signedFrom?: number | undefined
  /** See `CheckerOptions.allowMixed`. */
  readonly allowMixed?: boolean | undefined
  /** See `CheckerOptions.maxFailures`. */
  readonly maxFailures?: number | undefined
  /** Rows per query (default `DEFAULT_PAGE_SIZE`). */
  readonly pageSize?: number | undefined
  /** Called after each page with the number of rows checked so far (e.g. to show progress). */
  readonly onProgress?: ((rowsChecked: number) => Effect.Effect<void>) | undefined
  /**
   * Also verify every stored session journal (`journal_entries`) against itself and its seals; a broken
   * entry is a `journal` failure naming its session and sequence. Default true.
   */
  readonly journals?: boolean | undefined
}

/**
 * Verifies the whole `signed_events` chain of the connected database, from sequence 0. Tampering is
 * reported in the `VerifyReport`, never as an error: the effect fails only when the database cannot be
 * read.
 *
 * It pages with the same queries as `storedRows`, in a plain loop that releases each page once checked.
 * Between pages, and every `ROWS_PER_TURN` rows within one, it yields to the event loop (on any scheduler),
 * so `Effect.timeout` and interruption stop it within a few milliseconds, and the process's timers and I/O
 * keep running meanwhile.
 */
export const verifyLedger = (
  options: VerifyLedgerOptions = {}
): Effect.Effect<VerifyReport, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(
    Effect.gen(function*() {
      const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE
      const invalid = invalidPageSize(pageSize)
      if (invalid !== undefined) return yield* Effect.dieMessage(invalid)
      const checker = makeChecker({
        keyring: options.keyring,
        pin: options.pin,
        requireSigned: options.requireSigned,
        signedFrom: options.signedFrom,
        allowMixed: options.allowMixed,
        maxFailures: options.maxFailures
      })
      const textCheck = yield* storedTextCheck
      if (Option.isNone(textCheck)) return notUtf8Database
      const sql = yield* SqlClient.SqlClient
      const page = pageReader(sql, {}, pageSize)
      let after = Option.none<unknown>()
      let rowsRead = 0
      do {
        const rows = yield* page(after)
        const suspects = textCheck.value === "readBytes" ? rowsWithReplacementCharacters(rows) : []
        const badText = suspects.length === 0 ? undefined : yield* badStoredText(sql, rows, suspects)
        for (let i = 0; i < rows.length; i++) {
          const column = badText?.get(i)
          if (column === undefined) checker.checkUnknown(rows[i])
          else checker.checkBadText(rows[i]!, column)
          if ((i + 1) % ROWS_PER_TURN === 0 && i + 1 < rows.length) yield* yieldToEventLoop
        }
        rowsRead += rows.length
        after = nextPage(rows, pageSize)
        releasePage(rows)
        if (options.onProgress !== undefined) yield* options.onProgress(rowsRead)
        // Between pages the event loop gets its turn: a timeout or an interruption stops the run here.
        if (Option.isSome(after)) yield* yieldToEventLoop
      } while (Option.isSome(after))
      const chainReport = yield* withDuplicateCheck(checker.report(), options.maxFailures ?? DEFAULT_MAX_FAILURES)
      const report = options.journals === false
        ? chainReport
        : withJournals(
          chainReport,
          yield* JournalVerifier.verifyJournals(options.maxFailures ?? DEFAULT_MAX_FAILURES),
          options.maxFailures ?? DEFAULT_MAX_FAILURES
        )
      yield* Effect.annotateCurrentSpan({
        "agent_ledger.rows_checked": report.rowsChecked,
        "agent_ledger.ok": report.ok,
        "agent_ledger.failure_count": report.failureCount
      })
      return report
    }).pipe(consistentRead)
  ).pipe(Effect.withSpan(SPAN_VERIFY))

/** The chain's report with the stored journals' check added (their failures after the chain's). */
const withJournals = (
  report: VerifyReport,
  checked: JournalVerifier.JournalsCheck,
  maxFailures: number
): VerifyReport => {
  const failures = checked.failures.map((f): VerifyFailure => ({
    sequence: f.sequence,
    kind: "journal",
    sessionId: f.sessionId,
    message: `${f.check}: ${f.detail}`
  }))
  if (failures.length === 0) return { ...report, journals: checked.report }
  return {
    ...report,
    ok: false,
    failureCount: report.failureCount + failures.length,
    firstFailure: Option.isSome(report.firstFailure) ? report.firstFailure : Option.some(failures[0]!),
    failures: [...report.failures, ...failures].slice(0, Math.max(report.failures.length, maxFailures)),
    journals: checked.report
  }
}

/** The report on a database whose text is not stored as checked UTF-8: nothing in it can be verified. */
const notUtf8Database: VerifyReport = (() => {
  const checker = makeChecker()
  const report = checker.report()
  const failure: VerifyFailure = {
    sequence: 0,
    kind: "encoding",
    message: "the database does not store text as UTF-8 (SQLite PRAGMA encoding, PostgreSQL server_encoding): " +
      "ledger text is hashed as its stored UTF-8 bytes"
  }
  return { ...report, ok: false, failureCount: 1, firstFailure: Option.some(failure), failures: [failure] }
})()

/**
 * Paging by `sequence > last` reads one row per sequence; a second row with a sequence already read is
 * never seen. Counting the table up to the last row read shows whether any row was passed by.
 */
const withDuplicateCheck = (
  report: VerifyReport,
  maxFailures: number
): Effect.Effect<VerifyReport, SqlError, SqlClient.SqlClient> =>
  Option.match(report.head, {
    onNone: () => Effect.succeed(report),
    onSome: (head) =>
      Effect.gen(function*() {
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        const [counted] = yield* sql<{ n: number }>`
          SELECT CAST(COUNT(*) AS INTEGER) AS n FROM signed_events WHERE sequence <= ${head.sequence}`
        const passedBy = Number(counted?.n ?? 0) - report.rowsChecked
        if (passedBy <= 0) return report
        const [duplicate] = yield* sql<{ sequence: number }>`
          SELECT sequence FROM signed_events WHERE sequence <= ${head.sequence}
          GROUP BY sequence HAVING COUNT(*) > 1 ORDER BY sequence LIMIT 1`
        const failure: VerifyFailure = {
          sequence: Number(duplicate?.sequence ?? head.sequence),
          kind: "duplicate",
          message: `${passedBy} row(s) share a sequence with a checked row (is the unique index on sequence gone?)`
        }
        return {
          ...report,
          ok: false,
          failureCount: report.failureCount + passedBy,
          firstFailure: Option.isSome(report.firstFailure) ? report.firstFailure : Option.some(failure),
          failures: report.failures.length < maxFailures ? [...report.failures, failure] : report.failures
        }
      })
  })
