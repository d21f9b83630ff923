/**
 * Evidence bundles (docs/FORMAT.md, "Evidence bundle"): one JSON file holding a range of ledger rows, each
 * with its RFC 6962 inclusion proof against one signed checkpoint, the checkpoint's verifier key and the
 * public keys of the rows' signatures. An auditor checks it offline with nothing else: unlike a plain
 * export, whose header nobody signed, every row of a bundle is proven to sit at its sequence in the log the
 * checkpoint's key vouches for, so a rewritten row, a row moved or a forged range fails.
 *
 * A bundle is built in memory: at most `MAX_ROWS` rows (use `export` and receipts for more).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Data, Effect, Either, Option, Schema, Stream } from "effect"
import type { KeyObject } from "node:crypto"
import * as AuditSigner from "../audit/AuditSigner.js"
import { yieldToEventLoop } from "../internal/eventLoopScheduler.js"
import * as LedgerRow from "../ledger/LedgerRow.js"
import type * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import * as LedgerTransparency from "./LedgerTransparency.js"
import { leafHash, verifyInclusion } from "./MerkleTree.js"
import * as SignedNote from "./SignedNote.js"

export const BUNDLE_FORMAT = "agent-ledger/evidence-bundle/v1"

/** The most rows one bundle holds (it is built and checked in memory). */
export const MAX_ROWS = 100_000

export const BundleRow = Schema.Struct({
  row: LedgerRow.LedgerRow,
  /** Base64 hashes, RFC 6962 audit path order (leaf to root), of leaf `row.sequence`. */
  inclusion_proof: Schema.Array(Schema.String)
})
export type BundleRow = typeof BundleRow.Type

export const EvidenceBundle = Schema.Struct({
  format: Schema.Literal(BUNDLE_FORMAT),
  /** The sequences the bundle covers, both inclusive; every row between them is in `rows`. */
  from_sequence: Schema.Number,
  to_sequence: Schema.Number,
  /** The whole signed note of the checkpoint every proof leads to. */
  checkpoint: Schema.String,
  /** The checkpoint's verifier key (`<origin>+<key id>+<base64 key>`), as the bundle's maker gave it. */
  verifier_key: Schema.String,
  /** SPKI PEM public keys of the rows' signatures. */
  public_keys: Schema.Array(Schema.String),
  rows: Schema.Array(BundleRow)
})
export type EvidenceBundle = typeof EvidenceBundle.Type

/** Why a bundle could not be made. */
export class BundleError extends Data.TaggedError("BundleError")<{
  readonly reason: "emptyRange" | "tooManyRows" | "unreadableRow"
  readonly detail: string
}> {
  override get message(): string {
    return this.detail
  }
}

export interface MakeOptions {
  /** First sequence (inclusive; default 0). */
  readonly from?: number | undefined
  /** Last sequence (inclusive; default the head). */
  readonly to?: number | undefined
  /** The log's origin: the checkpoint's first line and its key name. */
  readonly origin: string
  /** Signs the checkpoint; its public key goes into the bundle when it signed rows of the range. */
  readonly signer: AuditSigner.AuditSigner
  /** More public keys to include (e.g. of rotated-out signers whose rows are in the range). */
  readonly publicKeys?: ReadonlyArray<KeyObject> | undefined
  /** Sign over unsigned rows since the last checkpoint (see `LedgerTransparency.SignOptions`). Default false. */
  readonly adoptUnsignedRows?: boolean | undefined
}

/**
 * Rows decoded or proven between two turns of the event loop: a timeout or an interruption stops a large
 * bundle there, and the process's timers and I/O keep running.
 */
const ROWS_PER_TURN = 1_000

const pemOf = (key: KeyObject): string => key.export({ format: "pem", type: "spki" }).toString()

/**
 * The bundle of the rows `from`..`to`, proven against a checkpoint of the whole ledger signed now (and
 * kept in the `checkpoints` table, so later consistency proofs can start from it): over a tree recomputed
 * from verified rows (`LedgerTransparency.checkpointNow`), each proof checked against its root. Reads,
 * decodes and proves the rows in batches, yielding to the event loop between them, so `Effect.timeout` and
 * interruption stop it promptly.
 */
export const make = (
  options: MakeOptions
): Effect.Effect<
  EvidenceBundle,
  BundleError | LedgerTransparency.TransparencyRefusal | LedgerTransparency.LedgerBusy | SqlError,
  LedgerSql.LedgerSql
> =>
  Effect.gen(function*() {
    const rows = yield* LedgerVerifier.storedRows({ from: options.from, to: options.to }).pipe(
      Stream.take(MAX_ROWS + 1),
      Stream.runCollect
    )
    if (rows.length > MAX_ROWS) {
      return yield* new BundleError({
        reason: "tooManyRows",
        detail: `more than ${MAX_ROWS} rows in the range: narrow it with --from/--to (or export and prove rows)`
      })
    }
    const decoded: Array<LedgerRow.LedgerRow> = []
    for (const row of rows) {
      if (decoded.length > 0 && decoded.length % ROWS_PER_TURN === 0) yield* yieldToEventLoop
      const result = LedgerRow.decodeUnknownEither({ ...row, sequence: Number(row.sequence) })
      if (Either.isLeft(result)) {
        return yield* new BundleError({
          reason: "unreadableRow",
          detail: `the row at sequence ${
            String(row.sequence)
          } is not a ledger row (${result.left.message}): verify the ledger`
        })
      }
      decoded.push(result.right)
    }
    const first = decoded[0]
    const last = decoded[decoded.length - 1]
    if (first === undefined || last === undefined) {
      return yield* new BundleError({
        reason: "emptyRange",
        detail: `no rows in the range ${options.from ?? 0}..${options.to ?? "head"}`
      })
    }
    const { note, rootHash, size } = yield* LedgerTransparency.checkpointNow(options.origin, options.signer, {
      publicKeys: options.publicKeys,
      adoptUnsignedRows: options.adoptUnsignedRows
    })
    // Each proof is checked against the root just signed before it goes into the bundle; in batches, the
    // event loop getting its turn between them (the tree of `size` leaves does not change between batches).
    const proofs: Array<ReadonlyArray<string>> = []
    for (let from = 0; from < decoded.length; from += ROWS_PER_TURN) {
      if (from > 0) yield* yieldToEventLoop
      const { proof: proven } = yield* LedgerTransparency.inclusionProofs(
        decoded.slice(from, from + ROWS_PER_TURN).map((row) => ({ sequence: row.sequence, entryHash: row.entry_hash })),
        size,
        rootHash
      )
      for (const path of proven) proofs.push(path.map((hash) => Buffer.from(hash).toString("base64")))
    }
    // The checkpoint's key signs rows too only if the ledger was signed with it: a key in `public_keys` tells
    // the verifier the rows are signed, so an unsigned ledger's bundle carries only the keys given.
    const rowKeyIds = new Set(decoded.map((row) => row.key_id))
    const keys = [
      ...(rowKeyIds.has(AuditSigner.keyIdOf(options.signer.publicKey)) ? [options.signer.publicKey] : []),
      ...(options.publicKeys ?? [])
    ]
    return {
      format: BUNDLE_FORMAT,
      from_sequence: first.sequence,
      to_sequence: last.sequence,
      checkpoint: note,
      verifier_key: SignedNote.verifierKey(options.origin, options.signer.publicKey),
      public_keys: Array.from(new Set(keys.map(pemOf))),
      rows: decoded.map((row, i) => ({ row, inclusion_proof: proofs[i]! }))
    }
  })

// ---------------------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------------------

/** A bundle that is not one (not the format, a bad key, a checkpoint that does not parse). */
export class MalformedBundle extends Data.TaggedError("MalformedBundle")<{ readonly detail: string }> {
  override get message(): string {
    return `not a valid evidence bundle: ${this.detail}`
  }
}

export interface VerifyOptions {
  /** The verifier key the auditor trusts. Without it the bundle's own `verifier_key` is used (unpinned). */
  readonly verifierKey?: string | undefined
  /** Public keys for row signatures. Without them the bundle's `public_keys` are used. */
  readonly keyring?: AuditSigner.Keyring | undefined
  readonly requireSigned?: boolean | undefined
  readonly signedFrom?: number | undefined
  readonly allowMixed?: boolean | undefined
  /**
   * How many failing rows are listed at most, of each kind (`report.failures` for the row checks,
   * `unproven` for the inclusion proofs); default `LedgerVerifier.DEFAULT_MAX_FAILURES`. The counts are exact.
   */
  readonly maxFailures?: number | undefined
}

export interface BundleVerification {
  /** The bundle as decoded. */
  readonly bundle: EvidenceBundle
  /** The checkpoint every proof was checked against. */
  readonly checkpoint: SignedNote.Checkpoint
  /** Why the checkpoint's signature does not vouch for it (none: it verified with the key used). */
  readonly checkpointProblem: Option.Option<string>
  /** Whether the checkpoint's key was given by the auditor, not taken from the bundle. */
  readonly keyPinned: boolean
  /** The row checks: hashes, links between consecutive rows, signatures, downgrades. */
  readonly report: LedgerVerifier.VerifyReport
  /** Rows whose inclusion proof leads to the checkpoint's root. */
  readonly proven: number
  /** The first row whose proof does not (or that lies past the checkpoint's tree). */
  readonly firstUnproven: Option.Option<number>
  /** Every row whose proof does not lead to the checkpoint's root, in order, at most `maxFailures`. */
  readonly unproven: ReadonlyArray<number>
  /** The rows are exactly `from_sequence`..`to_sequence`, each once, in order. */
  readonly complete: boolean
  readonly ok: boolean
}

const malformed = (detail: string) => Either.left(new MalformedBundle({ detail }))

/**
 * Checks a bundle offline: the checkpoint's signature (with the auditor's key, or the bundle's own), every
 * row's hashes and signature and its link to the row before, every row's inclusion proof against the
 * checkpoint's root at the index of its sequence, and that the rows are the range the bundle states.
 * Failing checks are in the result; only a bundle that cannot be read as one is an error.
 */
export const verify = (
  input: unknown,
  options: VerifyOptions = {}
): Either.Either<BundleVerification, MalformedBundle> => {
  const decoded = Schema.decodeUnknownEither(EvidenceBundle, { onExcessProperty: "error" })(input)
  if (Either.isLeft(decoded)) return malformed(decoded.left.message)
  const bundle = decoded.right
  const keyPinned = options.verifierKey !== undefined
  const verifier = SignedNote.parseVerifierKey(options.verifierKey ?? bundle.verifier_key)
  if (Either.isLeft(verifier)) return malformed(verifier.left.detail)
  const signed = SignedNote.verifyNote(bundle.checkpoint, verifier.right)
  if (Either.isLeft(signed) && signed.left.reason === "malformed") return malformed(signed.left.detail)
  // A signature that does not verify is a failed check (a forged bundle, another log), not a malformed file:
  // the rows are still checked against the checkpoint as written, to say what else is wrong.
  const text = Either.getOrElse(signed, () => bundle.checkpoint.slice(0, bundle.checkpoint.lastIndexOf("\n\n") + 1))
  const parsed = SignedNote.parseCheckpoint(text)
  if (Either.isLeft(parsed)) return malformed(parsed.left.detail)
  const checkpoint = parsed.right
  const checkpointProblem = Either.isLeft(signed)
    ? Option.some(signed.left.detail)
    : checkpoint.origin === verifier.right.name
    ? Option.none()
    : Option.some(`the checkpoint is of ${checkpoint.origin}, the key of ${verifier.right.name}`)
  let keyring = options.keyring
  if (keyring === undefined || keyring.size === 0) {
    const keys: Array<KeyObject> = []
    for (const pem of bundle.public_keys) {
      const key = AuditSigner.publicKeyFromPem(pem)
      if (Either.isLeft(key)) return malformed(`public_keys: ${key.left.detail}`)
      keys.push(key.right)
    }
    keyring = AuditSigner.Keyring.make(keys)
  }
  // The checkpoint's key is the ledger's key: the rows are checked as signed by it (an unsigned row is a
  // downgrade unless allowMixed or signedFrom says the ledger was not signed there), whatever the bundle
  // lists, so stripping every signature and key from a signed ledger's bundle does not pass.
  keyring = keyring.add(verifier.right.publicKey)
  const rows = bundle.rows
  const checker = LedgerVerifier.makeChecker({
    keyring,
    // The first row's anchor needs no trust: the row (prev_hash included) is proven in the signed tree.
    expectedFirstSequence: bundle.from_sequence,
    expectedFirstPrevHash: rows[0]?.row.prev_hash,
    requireSigned: options.requireSigned,
    signedFrom: options.signedFrom,
    allowMixed: options.allowMixed,
    maxFailures: options.maxFailures
  })
  const maxFailures = options.maxFailures ?? LedgerVerifier.DEFAULT_MAX_FAILURES
  // Proof hashes are strict standard base64 (docs/FORMAT.md): another spelling is not a bundle.
  const paths: Array<ReadonlyArray<Uint8Array>> = []
  for (const { inclusion_proof, row } of rows) {
    const path = LedgerTransparency.decodeHashes(inclusion_proof)
    if (Either.isLeft(path)) return malformed(`the proof of the row at sequence ${row.sequence}: ${path.left.detail}`)
    paths.push(path.right)
  }
  let proven = 0
  let firstUnproven: Option.Option<number> = Option.none()
  const unproven: Array<number> = []
  for (const [i, { row }] of rows.entries()) {
    checker.check(row)
    const included = /^[0-9a-f]{64}$/.test(row.entry_hash) &&
      verifyInclusion(
        leafHash(Buffer.from(row.entry_hash, "hex")),
        row.sequence,
        checkpoint.treeSize,
        paths[i]!,
        checkpoint.rootHash
      )
    if (included) {
      proven++
    } else {
      if (Option.isNone(firstUnproven)) firstUnproven = Option.some(row.sequence)
      if (unproven.length < maxFailures) unproven.push(row.sequence)
    }
  }
  const report = checker.report()
  const complete = rows.length > 0 && rows.length === bundle.to_sequence - bundle.from_sequence + 1 &&
    rows.every(({ row }, i) => row.sequence === bundle.from_sequence + i)
  return Either.right({
    bundle,
    checkpoint,
    checkpointProblem,
    keyPinned,
    report,
    proven,
    firstUnproven,
    unproven,
    complete,
    ok: Option.isNone(checkpointProblem) && report.ok && complete && proven === rows.length
  })
}
