/**
 * The ledger's offline export: JSON Lines (docs/FORMAT.md, "Ledger export v1"). Line 1 is a header that
 * anchors the exported range in the chain (the hash preceding its first row and the entry_hash of its last
 * row); every further line is one `signed_events` row (`LedgerRow`, snake_case, every column). Written as a
 * stream of pages and read back as a stream of lines, so memory stays flat for millions of rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect, Either, Option, ParseResult, Schema, Stream } from "effect"
import { isUtf8 } from "node:buffer"
import * as fs from "node:fs"
import { isHash, ZERO_HASH } from "../internal/encoding.js"
import { describeTooDeep, findTooDeep } from "../internal/jsonDepth.js"
import * as LedgerRow from "./LedgerRow.js"
import * as LedgerSql from "./LedgerSql.js"
import * as LedgerVerifier from "./LedgerVerifier.js"

export const LEDGER_EXPORT_FORMAT = "agent-ledger/ledger-export/v1"

const Hash = Schema.String.pipe(Schema.filter((s) => isHash(s) || "a 64-char lowercase hex SHA-256 hash"))
const Sequence = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/** Line 1 of an export. `to_sequence` and `head_hash` are null when the range held no rows. */
export const ExportHeader = Schema.Struct({
  format: Schema.Literal(LEDGER_EXPORT_FORMAT),
  /** The sequence of the first exported row (the requested start when there are none). */
  from_sequence: Sequence,
  to_sequence: Schema.NullOr(Sequence),
  row_count: Sequence,
  /**
   * The entry_hash of the row before `from_sequence` (the zero hash when it is 0); null only in an export
   * without rows whose start has no row before it (a range past the head).
   */
  prev_hash: Schema.NullOr(Hash),
  /** The entry_hash of the last exported row. */
  head_hash: Schema.NullOr(Hash)
}).annotations({ identifier: "ExportHeader" })
export type ExportHeader = typeof ExportHeader.Type

export interface ExportRange {
  /** First sequence to export (inclusive, default 0). */
  readonly from?: number | undefined
  /** Last sequence to export (inclusive, default: the chain head when the export starts). */
  readonly to?: number | undefined
  readonly pageSize?: number | undefined
}

/** The row values in column order, so every export line has the same key order as the table. */
const rowLine = (row: Record<string, unknown>): string => {
  const ordered: Record<string, unknown> = {}
  for (const column of LedgerRow.COLUMNS) ordered[column] = row[column] ?? null
  return JSON.stringify(ordered)
}

/**
 * The export as lines (without trailing newlines): the header, then the rows with `from ≤ sequence ≤ to`
 * in sequence order. The range is fixed when the stream starts, so rows appended meanwhile are not
 * half-included.
 */
/** The row just before the exported range is missing: the database's chain has a gap there. */
export class ExportAnchorMissing extends Data.TaggedError("ExportAnchorMissing")<{
  readonly sequence: number
}> {
  override get message(): string {
    return `the ledger has no row at sequence ${this.sequence}, the anchor of the export (a gap in the chain: ` +
      `verify the database)`
  }
}

/** The largest sequence a ledger holds: `sequence` is a 32-bit INTEGER column on PostgreSQL. */
export const MAX_SEQUENCE = 2_147_483_647

export const exportLines = (
  range: ExportRange = {}
): Stream.Stream<string, SqlError | ExportAnchorMissing, LedgerSql.LedgerSql> =>
  Stream.unwrap(LedgerSql.use(Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const from = range.from ?? 0
    const to = Math.min(range.to ?? MAX_SEQUENCE, MAX_SEQUENCE)
    const pageSize = range.pageSize ?? LedgerVerifier.DEFAULT_PAGE_SIZE
    const [bounds] = yield* sql<{ first: number | null; last: number | null; count: number }>`
      SELECT MIN(sequence) AS first, MAX(sequence) AS last, CAST(COUNT(*) AS INTEGER) AS count
      FROM signed_events WHERE sequence >= ${from} AND sequence <= ${to}`
    const first = bounds?.first ?? null
    const last = bounds?.last ?? null
    const start = first ?? from
    const previous = start === 0
      ? []
      : yield* sql<{ entry_hash: string }>`SELECT entry_hash FROM signed_events WHERE sequence = ${start - 1}`
    const headRow = last === null
      ? []
      : yield* sql<{ entry_hash: string }>`SELECT entry_hash FROM signed_events WHERE sequence = ${last}`
    const header: ExportHeader = {
      format: LEDGER_EXPORT_FORMAT,
      from_sequence: start,
      to_sequence: last,
      row_count: Number(bounds?.count ?? 0),
      prev_hash: start === 0 ? ZERO_HASH : previous[0]?.entry_hash ?? null,
      head_hash: headRow[0]?.entry_hash ?? null
    }
    if (header.prev_hash === null && header.row_count > 0) {
      return yield* new ExportAnchorMissing({ sequence: start - 1 })
    }
    const rows = last === null
      ? Stream.empty
      : Stream.map(LedgerVerifier.storedRows({ from: start, to: last, pageSize }), rowLine)
    return Stream.concat(Stream.make(JSON.stringify(header)), rows)
  })))

// ---------------------------------------------------------------------------------------------------------
// Reading an export
// ---------------------------------------------------------------------------------------------------------

/** A line of an export file that is not what the format says (not JSON, or a field of the wrong type). */
export class CorruptExportLine extends Data.TaggedError("CorruptExportLine")<{
  readonly path: string
  /** 1-based line number in the file. */
  readonly line: number
  readonly reason: string
}> {
  override get message(): string {
    return `${this.path}: line ${this.line}: ${this.reason}`
  }
}

/** The export file could not be read at all. */
export class ExportReadError extends Data.TaggedError("ExportReadError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

const decodeHeader = Schema.decodeUnknownEither(ExportHeader)

/**
 * The line's JSON value, bounded in depth: what decoding and its error messages then walk (recursively)
 * can never overflow the stack, however deeply the line nests.
 */
const parseLine = (path: string, line: number, text: string): Either.Either<unknown, CorruptExportLine> =>
  Either.try({
    try: () => JSON.parse(text) as unknown,
    catch: () => new CorruptExportLine({ path, line, reason: "not valid JSON" })
  }).pipe(Either.flatMap((json) => {
    const tooDeep = findTooDeep(json)
    return tooDeep === undefined
      ? Either.right(json)
      : Either.left(new CorruptExportLine({ path, line, reason: describeTooDeep(tooDeep) }))
  }))

const formatParseError = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(line)"}: ${issue.message}`)
    .join("; ")

/** The lines of a file as bytes (without the newline), read lazily in the file's chunks. */
async function* byteLines(path: string): AsyncGenerator<Buffer> {
  let pending: Array<Buffer> = []
  for await (const chunk of fs.createReadStream(path) as AsyncIterable<Buffer>) {
    let start = 0
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline)
      yield pending.length === 0 ? piece : Buffer.concat([...pending, piece])
      pending = []
      start = newline + 1
    }
    if (start < chunk.length) pending.push(chunk.subarray(start))
  }
  if (pending.length > 0) yield Buffer.concat(pending)
}

const CR = 13

/**
 * The numbered non-empty lines of a text file, read lazily. A line whose bytes are not UTF-8 fails with
 * `CorruptExportLine`: decoded, its bad bytes would read as U+FFFD, text the file does not hold (an export
 * is JSON, which is UTF-8).
 */
const fileLines = (path: string): Stream.Stream<readonly [number, string], ExportReadError | CorruptExportLine> =>
  Stream.suspend(() => {
    let lineNumber = 0
    return Stream.fromAsyncIterable(byteLines(path), (error) => new ExportReadError({ path, reason: String(error) }))
      .pipe(
        Stream.mapEffect((bytes): Either.Either<readonly [number, string], CorruptExportLine> => {
          const line = ++lineNumber
          const content = bytes.length > 0 && bytes[bytes.length - 1] === CR ? bytes.subarray(0, -1) : bytes
          return isUtf8(content)
            ? Either.right([line, content.toString("utf8")] as const)
            : Either.left(new CorruptExportLine({ path, line, reason: "not valid UTF-8" }))
        }),
        Stream.filter(([, text]) => text.trim().length > 0)
      )
  })

export interface ExportVerification {
  readonly header: ExportHeader
  /** The chain checks of every row (mid-chain exports start at the header's anchor). */
  readonly report: LedgerVerifier.VerifyReport
  /** The rows end where the header says (count, last sequence and head hash): no lines cut off the end. */
  readonly complete: boolean
  /** Everything verified: `report.ok` and `complete`. */
  readonly ok: boolean
}

/**
 * Verifies an export file offline. Chain failures (tampered rows) are in the result; a line that is not
 * an export line at all fails with `CorruptExportLine` naming its line number.
 */
export const verifyExportFile = (
  path: string,
  options: Omit<LedgerVerifier.CheckerOptions, "expectedFirstSequence" | "expectedFirstPrevHash"> = {}
): Effect.Effect<ExportVerification, CorruptExportLine | ExportReadError> =>
  Effect.gen(function*() {
    const lines = fileLines(path)
    const firstLine = yield* Stream.runHead(lines)
    if (Option.isNone(firstLine)) {
      return yield* new CorruptExportLine({ path, line: 1, reason: "empty file: no export header" })
    }
    const [headerLine, headerText] = firstLine.value
    const header = yield* parseLine(path, headerLine, headerText).pipe(
      Either.flatMap((json) =>
        Either.mapLeft(decodeHeader(json), (error) =>
          new CorruptExportLine({ path, line: headerLine, reason: `bad export header: ${formatParseError(error)}` }))
      )
    )
    const rows = Stream.drop(lines, 1).pipe(
      Stream.mapEffect(([line, text]) =>
        parseLine(path, line, text).pipe(
          Either.flatMap((json) =>
            Either.mapLeft(LedgerRow.decodeUnknownEither(json), (error) =>
              new CorruptExportLine({ path, line, reason: formatParseError(error) }))
          )
        )
      )
    )
    let count = 0
    let lastRow: LedgerRow.LedgerRow | undefined
    const report = yield* LedgerVerifier.verifyRows(
      Stream.tap(rows, (row) =>
        Effect.sync(() => {
          count++
          lastRow = row
        })),
      {
        ...options,
        expectedFirstSequence: header.from_sequence,
        // A full export anchors at the zero hash whatever its header says.
        expectedFirstPrevHash: header.from_sequence === 0 ? ZERO_HASH : header.prev_hash ?? undefined
      }
    )
    const complete = count === header.row_count &&
      (lastRow === undefined
        ? header.to_sequence === null && header.head_hash === null
        : lastRow.sequence === header.to_sequence && lastRow.entry_hash === header.head_hash)
    return { header, report, complete, ok: report.ok && complete }
  })
