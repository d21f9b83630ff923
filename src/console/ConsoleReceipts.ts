/**
 * A row's receipt as the console hands it out for download: the same receipt `agent-ledger prove
 * --stored-checkpoint latest` writes (`LedgerTransparency.receiptOfStoredRow`), against the last checkpoint
 * stored in the ledger. Nothing is signed (the console holds no private key); with the console's `--key`, the
 * checkpoint's signature is checked first and the receipt is checked as `verify-receipt` will check it before
 * it is served.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect, Either, Option } from "effect"
import type * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"
import * as ConsoleQueries from "./ConsoleQueries.js"

/** Why no receipt can be made for this row now. */
export class ReceiptUnavailable extends Data.TaggedError("ReceiptUnavailable")<{
  readonly reason: "noRow" | "noCheckpoint" | "afterCheckpoint" | "refused" | "busy"
  readonly detail: string
}> {}

const noteBody = (note: string): string => note.slice(0, Math.max(0, note.lastIndexOf("\n\n")) + 1)

export const receipt = (
  sequence: number,
  verifier: Option.Option<SignedNote.Verifier>
): Effect.Effect<LedgerTransparency.Receipt, ReceiptUnavailable | SqlError, LedgerSql.LedgerSql> =>
  Effect.gen(function*() {
    const unavailable = (reason: ReceiptUnavailable["reason"], detail: string) =>
      Effect.fail(new ReceiptUnavailable({ reason, detail }))
    const found = yield* ConsoleQueries.row(sequence)
    if (Option.isNone(found)) return yield* unavailable("noRow", `no row ${sequence} in the ledger`)
    const origin = yield* LedgerTransparency.storedOrigin
    const [stored] = yield* LedgerTransparency.storedCheckpoints({ origin: Option.getOrUndefined(origin), limit: 1 })
    if (stored === undefined) {
      return yield* unavailable(
        "noCheckpoint",
        "no checkpoint is stored in the ledger: make one with agent-ledger checkpoint DB --private-key FILE"
      )
    }
    const checkpoint: Either.Either<SignedNote.Checkpoint, { readonly message: string }> = Option.isSome(verifier)
      ? LedgerTransparency.checkpointOf(stored.note, verifier.value)
      : SignedNote.parseCheckpoint(noteBody(stored.note))
    if (Either.isLeft(checkpoint)) {
      return yield* unavailable("refused", `the stored checkpoint does not hold: ${checkpoint.left.message}`)
    }
    const { rootHash, treeSize } = checkpoint.right
    if (sequence >= treeSize) {
      return yield* unavailable(
        "afterCheckpoint",
        `row ${sequence} came after the last stored checkpoint (${treeSize} leaves): make a newer checkpoint`
      )
    }
    const made = yield* LedgerTransparency.receiptOfStoredRow(found.value, {
      note: stored.note,
      size: treeSize,
      root: rootHash
    }).pipe(
      Effect.catchTag("TransparencyRefusal", (refusal) => unavailable("refused", refusal.detail)),
      Effect.catchTag("LedgerBusy", (busy) => unavailable("busy", `${busy.message}: try again`))
    )
    if (Option.isSome(verifier)) {
      const key = SignedNote.verifierKey(verifier.value.name, verifier.value.publicKey)
      const checked = LedgerTransparency.verifyReceipt(made, key, { allowUnsigned: true })
      if (Either.isLeft(checked)) return yield* unavailable("refused", checked.left.message)
    }
    return made
  })
