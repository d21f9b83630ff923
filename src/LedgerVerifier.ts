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
 * detail and the number of failing rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Effect, Either, Option, ParseResult, Schema, Stream } from "effect"
import * as AuditSigner from "./AuditSigner.js"
import { isHash, sha256Hex, ZERO_HASH } from "./internal/encoding.js"
import { rowEntryHashBytes } from "./internal/rowFormat.js"
import * as LedgerRow from "./LedgerRow.js"

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
  "duplicate"
)
export type FailureKind = typeof FailureKind.Type

export const VerifyFailure = Schema.Struct({
  /** The sequence of the failing row as stored (for `pin`: the pinned sequence). */
  sequence: Schema.Number,
  kind: FailureKind,
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
 * `unknownKey` row, so an unverifiable row never hides a tampered one. Signature counts cover `ed25519`
 * rows whose signature was checked (rows that failed an earlier check are not counted): unsigned rows are
 * never counted as verified. `attestLevels` counts the rows that decoded.
 */
export const VerifyReport = Schema.Struct({
  ok: Schema.Boolean,
  rowsChecked: Schema.Number,
  /** Rows with a failure, plus 1 for a failed pin. */
  failureCount: Schema.Number,
  firstFailure: Schema.OptionFromNullOr(VerifyFailure),
  attestLevels: Schema.Struct({ unsigned: Schema.Number, ed25519: Schema.Number }),
  signatures: Schema.Struct({ valid: Schema.Number, invalid: Schema.Number, unknownKey: Schema.Number }),
  /** The distinct key_ids not in the keyring (at most `MAX_LISTED_KEY_IDS`). */
  unknownKeyIds: Schema.Array(Schema.String),
  /** The last row seen, as stored. */
  head: Schema.OptionFromNullOr(ChainHead),
  pin: Schema.OptionFromNullOr(PinResult)
}).annotations({ identifier: "VerifyReport" })
export type VerifyReport = typeof VerifyReport.Type

/** Bound on `unknownKeyIds`, so a ledger full of forged key ids cannot grow the report without limit. */
export const MAX_LISTED_KEY_IDS = 100

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
  /** Fail unsigned rows (kind `attestLevel`): catches signatures stripped from rows. Default false. */
  readonly requireSigned?: boolean | undefined
}

/**
 * An incremental verifier: feed rows in order with `check` (decoded) or `checkUnknown` (raw: a row that
 * does not decode is a `malformed` failure, not an error); `report` may be called at any time. Mutable and
 * single-owner: make one per verification run.
 */
export interface Checker {
  readonly check: (row: LedgerRow.LedgerRow) => void
  readonly checkUnknown: (input: unknown) => void
  readonly report: () => VerifyReport
}

interface RowVerdict {
  readonly failure?: VerifyFailure
  readonly signature?: "valid" | "invalid" | "unknownKey"
}

export const makeChecker = (options: CheckerOptions = {}): Checker => {
  const keyring = options.keyring ?? AuditSigner.Keyring.empty
  const requireSigned = options.requireSigned ?? false
  const pin = options.pin
  const firstSequence = options.expectedFirstSequence ?? 0

  let expectedSequence = firstSequence
  /** null after a malformed row without a usable entry_hash: the next row's link is not checked. */
  let previousEntryHash: string | null = options.expectedFirstPrevHash ?? ZERO_HASH
  let rowsChecked = 0
  let failureCount = 0
  let firstTamper: VerifyFailure | undefined
  let firstUnknownKey: VerifyFailure | undefined
  const attestLevels = { unsigned: 0, ed25519: 0 }
  const signatures = { valid: 0, invalid: 0, unknownKey: 0 }
  const unknownKeyIds = new Set<string>()
  let head: ChainHead | undefined
  let pinResult: PinResult | undefined

  const record = (failure: VerifyFailure): void => {
    failureCount++
    if (failure.kind === "unknownKey") firstUnknownKey ??= failure
    else firstTamper ??= failure
  }

  // A mid-chain source can still prove the pin that sits just before its first row.
  if (pin !== undefined && pin.sequence === firstSequence - 1 && previousEntryHash !== null) {
    pinResult = pinAgainst(pin, previousEntryHash)
    if (pinResult.status !== "matched") record(pinFailure(pinResult))
  }

  const verdict = (row: LedgerRow.LedgerRow): RowVerdict => {
    const sequence = row.sequence
    if (sequence !== expectedSequence) {
      return {
        failure: {
          sequence,
          kind: "gap",
          expected: String(expectedSequence),
          actual: String(sequence),
          message: `expected sequence ${expectedSequence}, found ${sequence}`
        }
      }
    }
    if (!isHash(row.prev_hash) || (previousEntryHash !== null && row.prev_hash !== previousEntryHash)) {
      return {
        failure: {
          sequence,
          kind: "link",
          ...(previousEntryHash === null ? {} : { expected: previousEntryHash }),
          actual: row.prev_hash,
          message: sequence === firstSequence
            ? `prev_hash of the first row is not the expected ${previousEntryHash}`
            : `prev_hash is not the entry_hash of sequence ${sequence - 1}`
        }
      }
    }
    const payloadHash = sha256Hex(Buffer.from(row.payload, "utf8"))
    if (row.payload_hash !== payloadHash) {
      return {
        failure: {
          sequence,
          kind: "payloadHash",
          expected: payloadHash,
          actual: row.payload_hash,
          message: "payload_hash is not SHA-256 of the payload"
        }
      }
    }
    const entryHashBytes = rowEntryHashBytes({
      sequence,
      prevHash: row.prev_hash,
      id: row.id,
      agentId: row.agent_id,
      eventType: row.event_type,
      payloadHash: row.payload_hash,
      timestamp: row.timestamp
    })
    const entryHash = entryHashBytes.toString("hex")
    if (row.entry_hash !== entryHash) {
      return {
        failure: {
          sequence,
          kind: "entryHash",
          expected: entryHash,
          actual: row.entry_hash,
          message: "entry_hash does not match the row (id, agent_id, event_type, timestamp or position changed)"
        }
      }
    }
    if (row.attest_level === "unsigned") {
      if (row.signature !== null || row.key_id !== null) {
        return { failure: attestFailure(row, "an unsigned row must have NULL signature and key_id") }
      }
      if (requireSigned) return { failure: attestFailure(row, "unsigned row, but signatures are required") }
      return {}
    }
    if (row.signature === null || row.key_id === null) {
      return { failure: attestFailure(row, "an ed25519 row must have both signature and key_id") }
    }
    const signature = AuditSigner.verifySignature(keyring, row.key_id, entryHashBytes, row.signature)
    switch (signature) {
      case "valid":
        return { signature }
      case "invalid":
        return {
          signature,
          failure: {
            sequence,
            kind: "signature",
            actual: row.signature,
            message: `signature is not valid for key ${row.key_id}`
          }
        }
      case "unknownKey":
        return {
          signature,
          failure: {
            sequence,
            kind: "unknownKey",
            actual: row.key_id,
            message: `key ${row.key_id} is not in the keyring: signature unverifiable`
          }
        }
    }
  }

  const advance = (sequence: number, entryHash: string | null): void => {
    rowsChecked++
    expectedSequence = sequence + 1
    previousEntryHash = entryHash
    if (entryHash !== null) head = { sequence, entryHash }
  }

  const check = (row: LedgerRow.LedgerRow): void => {
    attestLevels[row.attest_level]++
    const { failure, signature } = verdict(row)
    if (signature !== undefined) signatures[signature]++
    if (signature === "unknownKey" && row.key_id !== null && unknownKeyIds.size < MAX_LISTED_KEY_IDS) {
      unknownKeyIds.add(row.key_id)
    }
    if (failure !== undefined) record(failure)
    if (pin !== undefined && pinResult === undefined && row.sequence === pin.sequence) {
      pinResult = pinAgainst(pin, row.entry_hash)
      if (pinResult.status !== "matched") record(pinFailure(pinResult))
    }
    advance(row.sequence, row.entry_hash)
  }

  const checkUnknown = (input: unknown): void => {
    const decoded = LedgerRow.decodeUnknownEither(input)
    if (Either.isRight(decoded)) return check(decoded.right)
    const raw = typeof input === "object" && input !== null ? input as Record<string, unknown> : {}
    const sequence = typeof raw.sequence === "number" ? raw.sequence : expectedSequence
    record({
      sequence,
      kind: "malformed",
      message: `row at sequence ${sequence} does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`
    })
    advance(sequence, typeof raw.entry_hash === "string" ? raw.entry_hash : null)
  }

  const report = (): VerifyReport => {
    let finalPin = pinResult
    let pinFailed = 0
    let firstPinFailure: VerifyFailure | undefined
    if (pin !== undefined && finalPin === undefined) {
      finalPin = { sequence: pin.sequence, entryHash: pin.entryHash, status: "missing" }
      pinFailed = 1
      firstPinFailure = pin.sequence < firstSequence - 1
        ? { ...pinFailure(finalPin), message: `the pinned sequence ${pin.sequence} precedes the rows checked` }
        : pinFailure(finalPin)
    }
    const firstFailure = firstTamper ?? firstPinFailure ?? firstUnknownKey
    return {
      ok: firstFailure === undefined,
      rowsChecked,
      failureCount: failureCount + pinFailed,
      firstFailure: Option.fromNullable(firstFailure),
      attestLevels: { ...attestLevels },
      signatures: { ...signatures },
      unknownKeyIds: Array.from(unknownKeyIds),
      head: Option.fromNullable(head),
      pin: Option.fromNullable(finalPin)
    }
  }

  return { check, checkUnknown, report }
}

const attestFailure = (row: LedgerRow.LedgerRow, message: string): VerifyFailure => ({
  sequence: row.sequence,
  kind: "attestLevel",
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

/**
 * The stored `signed_events` rows in sequence order, undecoded, read in pages of `pageSize` with keyset
 * pagination (`WHERE sequence > last ORDER BY sequence LIMIT pageSize`): one page in memory at a time,
 * and no OFFSET scan. Rows appended while the stream runs are read too.
 */
export const storedRows = (
  options: {
    readonly pageSize?: number | undefined
    /** Only rows with `sequence >= from` (default: every row, whatever its sequence). */
    readonly from?: number | undefined
    /** Only rows with `sequence <= to` (default: no bound). */
    readonly to?: number | undefined
  } = {}
): Stream.Stream<Record<string, unknown>, SqlError, SqlClient.SqlClient> => {
  const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE
  if (!Number.isSafeInteger(pageSize) || pageSize < 1) {
    return Stream.dieMessage(`LedgerVerifier: pageSize must be a positive integer, got ${pageSize}`)
  }
  return Stream.unwrap(Effect.map(SqlClient.SqlClient, (client) => {
    // Column names must stay snake_case whatever result-name transform the app's client has.
    const sql = client.withoutTransforms()
    const columns = sql.literal(SELECT_COLUMNS)
    const upTo = options.to === undefined ? sql.literal("1 = 1") : sql`sequence <= ${options.to}`
    const page = (after: Option.Option<unknown>) =>
      Option.match(after, {
        onNone: () => {
          const from = options.from === undefined ? sql.literal("1 = 1") : sql`sequence >= ${options.from}`
          return sql<Record<string, unknown>>`
            SELECT ${columns} FROM signed_events WHERE ${from} AND ${upTo} ORDER BY sequence LIMIT ${pageSize}`
        },
        onSome: (last) =>
          sql<Record<string, unknown>>`
            SELECT ${columns} FROM signed_events WHERE sequence > ${last} AND ${upTo}
            ORDER BY sequence LIMIT ${pageSize}`
      })
    return Stream.paginateChunkEffect(Option.none<unknown>(), (after) =>
      Effect.map(page(after), (rows) => {
        const last = rows[rows.length - 1]
        const next = rows.length < pageSize || last === undefined
          ? Option.none()
          : Option.some(Option.some(last.sequence))
        return [Chunk.unsafeFromArray(rows), next] as const
      }))
  }))
}

export interface VerifyLedgerOptions {
  readonly keyring?: AuditSigner.Keyring | undefined
  readonly pin?: Pin | undefined
  readonly requireSigned?: boolean | undefined
  /** Rows per query (default `DEFAULT_PAGE_SIZE`). */
  readonly pageSize?: number | undefined
  /** Called after each page with the number of rows checked so far (e.g. to show progress). */
  readonly onProgress?: ((rowsChecked: number) => Effect.Effect<void>) | undefined
}

/**
 * Verifies the whole `signed_events` chain of the connected database, from sequence 0. Tampering is
 * reported in the `VerifyReport`, never as an error: the effect fails only when the database cannot be
 * read.
 */
export const verifyLedger = (
  options: VerifyLedgerOptions = {}
): Effect.Effect<VerifyReport, SqlError, SqlClient.SqlClient> =>
  Effect.suspend(() => {
    const checker = makeChecker({ keyring: options.keyring, pin: options.pin, requireSigned: options.requireSigned })
    const onProgress = options.onProgress ?? (() => Effect.void)
    let rows = 0
    return Stream.runForEachChunk(
      storedRows({ pageSize: options.pageSize }),
      (chunk) =>
        Effect.suspend(() => {
          Chunk.forEach(chunk, checker.checkUnknown)
          rows += chunk.length
          return onProgress(rows)
        })
    ).pipe(Effect.flatMap(() => withDuplicateCheck(checker.report())))
  })

/**
 * Paging by `sequence > last` reads one row per sequence; a second row with a sequence already read is
 * never seen. Counting the table up to the last row read shows whether any row was passed by.
 */
const withDuplicateCheck = (report: VerifyReport): Effect.Effect<VerifyReport, SqlError, SqlClient.SqlClient> =>
  Option.match(report.head, {
    onNone: () => Effect.succeed(report),
    onSome: (head) =>
      Effect.gen(function*() {
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        const [counted] = yield* sql<{ n: number }>`
          SELECT COUNT(*) AS n FROM signed_events WHERE sequence <= ${head.sequence}`
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
          firstFailure: Option.isSome(report.firstFailure) ? report.firstFailure : Option.some(failure)
        }
      })
  })
