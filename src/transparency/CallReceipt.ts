/**
 * A receipt for one tool call (docs/FORMAT.md, "Transparency", "Call receipt"): the call's journal entry as
 * stored (`journal_entries.body`), the chain of entries from it to the head a `session.sealed` row sealed,
 * and that seal row's receipt (its inclusion proof against a signed checkpoint). An auditor checks it with
 * the verifier key alone: the checkpoint's signature, the seal row's hashes, signature and inclusion, then
 * that the entries hash and link from the call up to exactly the sealed head. Allowed and refused calls
 * alike: every call is an entry.
 */
import { Either, Schema } from "effect"
import { digestHex } from "../internal/encoding.js"
import type { DecodedEntry } from "../internal/journalEntryFormat.js"
import { decodeEntryBody } from "../internal/journalEntryFormat.js"
import type * as JournalRow from "../ledger/JournalRow.js"
import * as LedgerTransparency from "./LedgerTransparency.js"
import type * as SignedNote from "./SignedNote.js"

export const CALL_RECEIPT_FORMAT = "agent-ledger/call-receipt/v1"

/** The `event_type` of a seal row (docs/FORMAT.md, "Session seal"). */
const SESSION_SEALED = "session.sealed"

export const Entry = Schema.Struct({
  seq: Schema.Number,
  /** The entry's hash input (`journal_entries.body`), standard base64. */
  body: Schema.String,
  entry_hash: Schema.String
})

export const CallReceipt = Schema.Struct({
  format: Schema.Literal(CALL_RECEIPT_FORMAT),
  session_id: Schema.String,
  /** The call's entry: the first of `entries`. */
  sequence: Schema.Number,
  /** Entries `sequence` … `length − 1` of the seal, in order. */
  entries: Schema.Array(Entry),
  /** The receipt (`agent-ledger/receipt/v1`) of the `session.sealed` row that seals them. */
  seal: LedgerTransparency.Receipt
})
export type CallReceipt = typeof CallReceipt.Type

/** What a call receipt proves: the call's entry, its outcome entry when the segment holds it, the checkpoint. */
export interface ProvenCall {
  readonly checkpoint: SignedNote.Checkpoint
  readonly entry: DecodedEntry
  readonly outcome: DecodedEntry | undefined
  /** The ledger sequence of the seal row. */
  readonly sealSequence: number
}

/** A seal row's commitment: its session, length and head hash. */
export const sealOf = (
  row: LedgerTransparency.Receipt["row"]
): { readonly sessionId: string; readonly length: number; readonly headHash: string } | undefined => {
  if (row.event_type !== SESSION_SEALED) return undefined
  try {
    const payload = JSON.parse(row.payload)
    const seal = payload?.action?.payload
    if (
      payload?.decision?._tag !== "Allow" || payload?.action?._tag !== "Custom" ||
      payload?.action?.customKind !== SESSION_SEALED || typeof seal?.session_id !== "string" ||
      !Number.isSafeInteger(seal?.length) || typeof seal?.head_hash !== "string"
    ) return undefined
    return { sessionId: seal.session_id, length: seal.length, headHash: seal.head_hash }
  } catch {
    return undefined
  }
}

/** The receipt of the call at `rows[0]`, sealed by the seal row proven in `seal`. */
export const make = (
  sessionId: string,
  rows: ReadonlyArray<JournalRow.StoredRow>,
  seal: LedgerTransparency.Receipt
): CallReceipt => ({
  format: CALL_RECEIPT_FORMAT,
  session_id: sessionId,
  sequence: Number(rows[0]?.seq ?? 0),
  entries: rows.map((row) => ({
    seq: Number(row.seq),
    body: Buffer.from(row.body).toString("base64"),
    entry_hash: row.entry_hash
  })),
  seal
})

const fail = (reason: LedgerTransparency.ProofFailure["reason"], detail: string) =>
  Either.left(new LedgerTransparency.ProofFailure({ reason, detail }))

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/**
 * Checks a call receipt with the verifier key alone (see the module comment); `options` as for the seal
 * row's receipt (`LedgerTransparency.verifyReceipt`). Returns what it proves.
 */
export const verify = (
  input: unknown,
  verifierKey: string,
  options: LedgerTransparency.ReceiptOptions = {}
): Either.Either<ProvenCall, LedgerTransparency.ProofFailure> =>
  Either.flatMap(
    Either.mapLeft(Schema.decodeUnknownEither(CallReceipt, { onExcessProperty: "error" })(input), (error) =>
      new LedgerTransparency.ProofFailure({ reason: "malformed", detail: error.message })),
    (receipt) =>
      Either.flatMap(LedgerTransparency.verifyReceipt(receipt.seal, verifierKey, options), (checkpoint) => {
        const seal = sealOf(receipt.seal.row)
        if (seal === undefined) {
          return fail("notIncluded", `ledger row ${receipt.seal.row.sequence} is not a session.sealed row`)
        }
        if (seal.sessionId !== receipt.session_id) {
          return fail("notIncluded", `the seal is of session ${JSON.stringify(seal.sessionId)}`)
        }
        const decoded: Array<DecodedEntry> = []
        let previous: string | undefined
        for (const [i, entry] of receipt.entries.entries()) {
          const seq = receipt.sequence + i
          const at = `entry ${seq} of session ${JSON.stringify(receipt.session_id)}`
          if (entry.seq !== seq) {
            return fail("malformed", `expected entry ${seq}, found ${entry.seq}`)
          }
          if (!STRICT_BASE64.test(entry.body)) {
            return fail("malformed", `${at}: the body is not standard base64`)
          }
          const body = Buffer.from(entry.body, "base64")
          if (digestHex(body) !== entry.entry_hash) {
            return fail("rowHash", `${at} does not hash to its entry_hash`)
          }
          const fields = decodeEntryBody(body)
          if (typeof fields === "string") {
            return fail("malformed", `${at}: ${fields}`)
          }
          if (fields.sessionId !== receipt.session_id || fields.sequence !== seq) {
            return fail("rowHash", `${at}: its body is entry ${fields.sequence} of ${JSON.stringify(fields.sessionId)}`)
          }
          if (previous !== undefined && fields.prevHash !== previous) {
            return fail("notIncluded", `${at} does not link to the entry before it`)
          }
          previous = entry.entry_hash
          decoded.push(fields)
        }
        const last = receipt.sequence + receipt.entries.length - 1
        if (receipt.entries.length === 0 || last !== seal.length - 1 || previous !== seal.headHash) {
          return fail(
            "notIncluded",
            `the entries do not end at the sealed head (entry ${seal.length - 1}, ${seal.headHash})`
          )
        }
        const entry = decoded[0]!
        return Either.right({
          checkpoint,
          entry,
          outcome: decoded.find((d) =>
            d.kind === "outcome" && d.callSequence === entry.sequence
          ),
          sealSequence: receipt.seal.row.sequence
        })
      })
  )
