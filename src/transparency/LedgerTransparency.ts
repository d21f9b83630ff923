/**
 * The ledger as a transparency log (docs/FORMAT.md, "Transparency"): an RFC 6962 Merkle tree whose leaf i
 * is the row with sequence i (leaf data: the row's 32-byte `entry_hash`), signed checkpoints in the C2SP
 * tlog-checkpoint format, and receipts (a row, its inclusion proof, the signed checkpoint it is proven
 * against) and consistency proofs that an auditor checks with the verifier key alone: no database, no
 * network, no trust in the ledger's operator.
 *
 * The tree is built from the ledger's entry hashes when a checkpoint or a proof is asked for (O(n), then
 * O(log n) per proof).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Either, Schema } from "effect"
import { createHash } from "node:crypto"
import type { AuditSigner } from "../audit/AuditSigner.js"
import { signNote as signNoteBytes } from "../audit/AuditSigner.js"
import { yieldToEventLoop } from "../internal/eventLoopScheduler.js"
import { rowEntryHash } from "../internal/rowFormat.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import type { Hash } from "./MerkleTree.js"
import { leafHash, MerkleTree, nodeHash, verifyConsistency, verifyInclusion } from "./MerkleTree.js"
import * as SignedNote from "./SignedNote.js"

export const RECEIPT_FORMAT = "agent-ledger/receipt/v1"
export const CONSISTENCY_FORMAT = "agent-ledger/consistency/v1"

/**
 * Rows read per query, and hashes computed, between two turns of the event loop (`yieldToEventLoop`): a
 * timeout or an interruption stops a long build there, and the process's timers and I/O are not held up.
 */
const PAGE = 10_000

/** The ledger's leaf hashes, in sequence order (leaf i = row i); read in pages, yielding between them. */
export const leafHashes: Effect.Effect<ReadonlyArray<Hash>, SqlError, LedgerSql.LedgerSql> = Effect.flatMap(
  LedgerSql.LedgerSql,
  ({ client }) =>
    Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const leaves: Array<Hash> = []
      while (true) {
        const rows = yield* sql<{ sequence: number; entry_hash: string }>`
          SELECT sequence, entry_hash FROM signed_events WHERE sequence >= ${leaves.length}
          ORDER BY sequence LIMIT ${PAGE}`
        for (const row of rows) {
          if (Number(row.sequence) !== leaves.length) break
          leaves.push(leafHash(Buffer.from(row.entry_hash, "hex")))
        }
        if (rows.length < PAGE) return leaves
        yield* yieldToEventLoop
      }
    })
)

/** The ledger's Merkle tree (over its dense prefix of sequences 0, 1, 2, …). */
export const tree: Effect.Effect<MerkleTree, SqlError, LedgerSql.LedgerSql> = Effect.map(
  leafHashes,
  MerkleTree.fromLeafHashes
)

// ---------------------------------------------------------------------------------------------------------
// The stored tree: complete subtrees in `merkle_nodes`, so proofs at a million rows take milliseconds
// ---------------------------------------------------------------------------------------------------------

const NODE_INSERT_CHUNK = 500

/**
 * The lowest level kept in `merkle_nodes`: subtrees of 16 leaves and up. Lower ones are recomputed from
 * the rows when a proof needs them (at most 15 entry hashes per level it crosses), which keeps the table
 * at about one row per 8 ledger rows instead of one per row, and the checkpoints' cost on appends small.
 */
export const MIN_STORED_LEVEL = 4

/** The number of rows of the dense chain (sequences 0 … n-1). */
const chainSize = Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
  Effect.map(
    client.withoutTransforms()<{ n: number | null }>`SELECT MAX(sequence) AS n FROM signed_events`,
    (rows) => rows[0]?.n === null || rows[0]?.n === undefined ? 0 : Number(rows[0].n) + 1
  ))

/** `extendStoredTree` on the ledger's client in context (no `LedgerSql.use`, so it can join a ledger transaction). */
const extendBody: Effect.Effect<number, SqlError, LedgerSql.LedgerSql> = Effect.flatMap(
  LedgerSql.LedgerSql,
  ({ client }) =>
    client.withTransaction(Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const size = yield* chainSize
      const storedCount = (level: number) =>
        Effect.map(
          sql<{ n: number | null }>`SELECT MAX(idx) AS n FROM merkle_nodes WHERE level = ${level}`,
          ([stored]) => stored?.n === null || stored?.n === undefined ? 0 : Number(stored.n) + 1
        )
      // The levels below MIN_STORED_LEVEL are computed from the rows the lowest stored level still lacks.
      const haveLowest = yield* storedCount(MIN_STORED_LEVEL)
      // The level below, as far as it is needed: hashes from index `from` on.
      let below: { from: number; hashes: Array<Hash> } = { from: 0, hashes: [] }
      for (let level = 1; 2 ** level <= size; level++) {
        const stored = level >= MIN_STORED_LEVEL
        const want = Math.floor(size / 2 ** level)
        const have = level === MIN_STORED_LEVEL
          ? haveLowest
          : stored
          ? yield* storedCount(level)
          : haveLowest * 2 ** (MIN_STORED_LEVEL - level)
        if (have >= want) {
          below = { from: 0, hashes: [] }
          continue
        }
        // Children 2·have … 2·want-1 of the level below: computed just now, or stored (or, at level 1, rows).
        const first = 2 * have
        const last = 2 * want
        const children: Array<Hash> = []
        for (let i = first; i < last; i++) {
          const fresh = below.hashes[i - below.from]
          if (fresh !== undefined && i >= below.from) {
            children.push(fresh)
            continue
          }
          break
        }
        if (children.length < last - first) {
          const missingFrom = first + children.length
          if (level !== 1 && level <= MIN_STORED_LEVEL) {
            return yield* Effect.dieMessage(`extendStoredTree: level ${level - 1} not computed from ${missingFrom}`)
          }
          for (let from = missingFrom; from < last; from += PAGE) {
            const to = Math.min(last, from + PAGE)
            const rows = level === 1
              ? yield* sql<{ i: number; h: string }>`
                  SELECT sequence AS i, entry_hash AS h FROM signed_events
                  WHERE sequence >= ${from} AND sequence < ${to} ORDER BY sequence`
              : yield* sql<{ i: number; h: string }>`
                  SELECT idx AS i, hash AS h FROM merkle_nodes
                  WHERE level = ${level - 1} AND idx >= ${from} AND idx < ${to} ORDER BY idx`
            for (const row of rows) {
              children.push(level === 1 ? leafHash(Buffer.from(row.h, "hex")) : Buffer.from(row.h, "hex"))
            }
            yield* yieldToEventLoop
          }
        }
        const made: Array<Hash> = []
        for (let i = 0; i + 1 < children.length; i += 2) {
          made.push(nodeHash(children[i]!, children[i + 1]!))
          if (made.length % PAGE === 0) yield* yieldToEventLoop
        }
        if (stored) {
          for (let i = 0; i < made.length; i += NODE_INSERT_CHUNK) {
            if (i > 0) yield* yieldToEventLoop
            const rows = made.slice(i, i + NODE_INSERT_CHUNK).map((hash, j) => ({
              level,
              idx: have + i + j,
              hash: Buffer.from(hash).toString("hex")
            }))
            yield* sql`INSERT INTO merkle_nodes ${sql.insert(rows)}`
          }
        }
        below = { from: have, hashes: made }
      }
      return size
    }))
)

/**
 * Brings `merkle_nodes` up to the ledger's current size: every complete subtree of 2^MIN_STORED_LEVEL or
 * more leaves not stored yet is computed (from the rows' entry hashes and the stored subtrees below it) and
 * stored, in one write transaction. Incremental: a ledger of n rows with m covered costs O(n - m) hashes; a
 * ledger written before this feature is built the first time. Returns the tree size now covered.
 *
 * It yields to the event loop between pages of rows and of hashes: a timeout or an interruption stops it
 * there and rolls the transaction back (nothing is half-stored; the next run starts over).
 */
export const extendStoredTree: Effect.Effect<number, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(extendBody)

/**
 * `use` run on the stored tree of the ledger's first `size` rows: the complete subtrees it reads are fetched
 * (O(log² n) of them, one query per level and round), then it computes as on an in-memory tree. `use` must
 * be pure (it may run more than once). Call `extendStoredTree` first; a missing subtree is a defect.
 */
export const withStoredTree = <A>(
  size: number,
  use: (tree: MerkleTree) => A
): Effect.Effect<A, SqlError, LedgerSql.LedgerSql> => LedgerSql.use(withStoredTreeBody(size, use))

const withStoredTreeBody = <A>(
  size: number,
  use: (tree: MerkleTree) => A
): Effect.Effect<A, SqlError, LedgerSql.LedgerSql> =>
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const found = new Map<string, Hash>()
      const fetch = (needed: ReadonlyArray<readonly [number, number]>) =>
        Effect.gen(function*() {
          const byLevel = new Map<number, Array<number>>()
          for (const [level, index] of needed) byLevel.set(level, [...(byLevel.get(level) ?? []), index])
          for (const [level, indexes] of byLevel) {
            const rows = level === 0
              ? yield* sql<{ i: number; h: string }>`
                  SELECT sequence AS i, entry_hash AS h FROM signed_events WHERE ${sql.in("sequence", indexes)}`
              : yield* sql<{ i: number; h: string }>`
                  SELECT idx AS i, hash AS h FROM merkle_nodes WHERE level = ${level} AND ${sql.in("idx", indexes)}`
            for (const row of rows) {
              const bytes = Buffer.from(row.h, "hex")
              found.set(`${level}/${Number(row.i)}`, level === 0 ? leafHash(bytes) : bytes)
            }
          }
        })
      // What `use` reads can depend on what it read (a comparison, then a proof): run it against what is
      // fetched so far, fetch what it asked for and did not get, until it asks for nothing new.
      for (let round = 0; round < 8; round++) {
        const missing = new Map<string, readonly [number, number]>()
        const result = use(MerkleTree.fromSource({
          size,
          node: function node(level, index): Hash {
            // Subtrees below MIN_STORED_LEVEL are not stored: computed from their leaves.
            if (level > 0 && level < MIN_STORED_LEVEL) {
              return nodeHash(node(level - 1, 2 * index), node(level - 1, 2 * index + 1))
            }
            const hash = found.get(`${level}/${index}`)
            if (hash !== undefined) {
              return hash
            }
            missing.set(`${level}/${index}`, [level, index])
            return new Uint8Array(32)
          }
        }))
        if (missing.size === 0) return result
        const before = found.size
        yield* fetch(Array.from(missing.values()))
        if (found.size === before) {
          return yield* Effect.dieMessage(`merkle_nodes lacks ${Array.from(missing.keys()).slice(0, 3).join(", ")}`)
        }
      }
      return yield* Effect.dieMessage("the stored tree did not settle")
    }))

/** `use` on the ledger's whole stored tree, brought up to date first. */
export const onStoredTree = <A>(use: (tree: MerkleTree) => A): Effect.Effect<A, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(extendBody, (size) => withStoredTreeBody(size, use)))

/**
 * Brings the stored tree up to date, signs a checkpoint of the whole ledger as `origin` and keeps it: one
 * write transaction (one commit, so one fsync beside the sink's). Returns the size and the note.
 */
export const checkpointNow = (
  origin: string,
  signer: AuditSigner
): Effect.Effect<{ readonly size: number; readonly note: string }, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    client.withTransaction(
      Effect.tap(
        Effect.flatMap(
          extendBody,
          (size) => withStoredTreeBody(size, (tree) => ({ size, note: signCheckpoint(tree, origin, signer) }))
        ),
        ({ note, size }) => saveCheckpointBody(origin, size, note)
      )
    )))

/** Keeps a signed checkpoint in the ledger's `checkpoints` table (one per origin and size). */
export const saveCheckpoint = (
  origin: string,
  size: number,
  note: string
): Effect.Effect<void, SqlError, LedgerSql.LedgerSql> => LedgerSql.use(saveCheckpointBody(origin, size, note))

const saveCheckpointBody = (origin: string, size: number, note: string) =>
  Effect.gen(function*() {
    const { client } = yield* LedgerSql.LedgerSql
    const now = new Date(yield* Clock.currentTimeMillis).toISOString()
    yield* client.withoutTransforms()`
      INSERT INTO checkpoints (origin, tree_size, note, created_at)
      VALUES (${origin}, ${size}, ${note}, ${now})
      ON CONFLICT (origin, tree_size) DO NOTHING`
  })

/** A log origin for `db` when none is configured: `agent-ledger/<file or database name>`. */
export const defaultOrigin = (db: string): string => {
  const name = LedgerSql.isPostgresUrl(db)
    ? new URL(db).pathname.replace(/^\//, "")
    : db.replace(/^.*[\\/]/, "").replace(/\.[^.]*$/, "")
  return `agent-ledger/${(name.length > 0 ? name : "ledger").replace(/[\s+]/gu, "_")}`
}

/** The signed checkpoint (a C2SP signed note) of `tree` at `size` leaves, signed as `origin`. */
export const signCheckpoint = (
  merkle: MerkleTree,
  origin: string,
  signer: AuditSigner,
  size: number = merkle.size
): string =>
  SignedNote.signNote(
    SignedNote.formatCheckpoint({ origin, treeSize: size, rootHash: merkle.rootHash(size) }),
    origin,
    (bytes) => signNoteBytes(signer, bytes),
    signer.publicKey
  )

// ---------------------------------------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------------------------------------

const Row = Schema.Struct({
  id: Schema.String,
  sequence: Schema.Number,
  agent_id: Schema.String,
  event_type: Schema.String,
  payload: Schema.String,
  payload_hash: Schema.String,
  prev_hash: Schema.String,
  entry_hash: Schema.String,
  signature: Schema.NullOr(Schema.String),
  key_id: Schema.NullOr(Schema.String),
  attest_level: Schema.String,
  timestamp: Schema.String
})

/** A receipt: one row, its inclusion proof, and the signed checkpoint it is proven against. */
export const Receipt = Schema.Struct({
  format: Schema.Literal(RECEIPT_FORMAT),
  row: Row,
  tree_size: Schema.Number,
  /** Base64 hashes, RFC 6962 audit path order (leaf to root). */
  inclusion_proof: Schema.Array(Schema.String),
  /** The whole signed note. */
  checkpoint: Schema.String
})
export type Receipt = typeof Receipt.Type

/** A consistency proof from an older checkpoint to a newer one. */
export const ConsistencyProof = Schema.Struct({
  format: Schema.Literal(CONSISTENCY_FORMAT),
  old_checkpoint: Schema.String,
  new_checkpoint: Schema.String,
  proof: Schema.Array(Schema.String)
})
export type ConsistencyProof = typeof ConsistencyProof.Type

/** The receipt of the row at `sequence`, against the signed checkpoint `note` (of `size` leaves). */
export const receiptOf = (
  row: typeof Row.Type,
  merkle: MerkleTree,
  note: string,
  size: number
): Receipt => ({
  format: RECEIPT_FORMAT,
  row,
  tree_size: size,
  inclusion_proof: merkle.inclusionProof(row.sequence, size).map((h) => Buffer.from(h).toString("base64")),
  checkpoint: note
})

/** Why a receipt or a consistency proof does not hold. */
export class ProofFailure extends Schema.TaggedError<ProofFailure>()("ProofFailure", {
  reason: Schema.Literal(
    "malformed",
    "checkpointSignature",
    "wrongLog",
    "rowHash",
    "notIncluded",
    "inconsistent"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

const fail = (reason: ProofFailure["reason"], detail: string) => Either.left(new ProofFailure({ reason, detail }))

/** The checkpoint a note holds, once its signature by `verifier` is checked and its origin is the key's. */
const checkpointOf = (note: string, verifier: SignedNote.Verifier) =>
  Either.flatMap(
    Either.mapLeft(SignedNote.verifyNote(note, verifier), (error) =>
      new ProofFailure({ reason: "checkpointSignature", detail: error.detail })),
    (text) =>
      Either.flatMap(
        Either.mapLeft(SignedNote.parseCheckpoint(text), (error) =>
          new ProofFailure({ reason: "malformed", detail: error.detail })),
        (checkpoint) =>
          checkpoint.origin === verifier.name
            ? Either.right(checkpoint)
            : fail("wrongLog", `the checkpoint is of ${checkpoint.origin}, the key of ${verifier.name}`)
      )
  )

const hashes = (list: ReadonlyArray<string>) => list.map((h) => Buffer.from(h, "base64"))

/**
 * Checks a receipt with nothing but the verifier key: the checkpoint's signature, the row's own hashes
 * (its payload hash and its entry hash recomputed from its fields, docs/FORMAT.md "Ledger row"), and the
 * row's inclusion in the checkpoint's tree. Returns the checkpoint the row is proven in.
 */
export const verifyReceipt = (
  input: unknown,
  verifierKey: string
): Either.Either<SignedNote.Checkpoint, ProofFailure> =>
  Either.flatMap(
    Either.mapLeft(Schema.decodeUnknownEither(Receipt)(input), (error) =>
      new ProofFailure({ reason: "malformed", detail: error.message })),
    (receipt) =>
      Either.flatMap(
        Either.mapLeft(SignedNote.parseVerifierKey(verifierKey), (error) =>
          new ProofFailure({ reason: "malformed", detail: error.detail })),
        (verifier) =>
          Either.flatMap(checkpointOf(receipt.checkpoint, verifier), (checkpoint) => {
            const row = receipt.row
            if (checkpoint.treeSize !== receipt.tree_size) {
              return fail(
                "malformed",
                `the receipt says ${receipt.tree_size} leaves, its checkpoint ${checkpoint.treeSize}`
              )
            }
            const payloadHash = createHash("sha256").update(row.payload, "utf8").digest("hex")
            const entryHash = rowEntryHash({
              sequence: row.sequence,
              prevHash: row.prev_hash,
              id: row.id,
              agentId: row.agent_id,
              eventType: row.event_type,
              payloadHash: row.payload_hash,
              timestamp: row.timestamp
            })
            if (payloadHash !== row.payload_hash || entryHash !== row.entry_hash) {
              return fail("rowHash", `the row at sequence ${row.sequence} does not hash to its entry_hash`)
            }
            return verifyInclusion(
                leafHash(Buffer.from(row.entry_hash, "hex")),
                row.sequence,
                checkpoint.treeSize,
                hashes(receipt.inclusion_proof),
                checkpoint.rootHash
              )
              ? Either.right(checkpoint)
              : fail("notIncluded", `row ${row.sequence} is not in the tree of ${checkpoint.treeSize} leaves`)
          })
      )
  )

/** The consistency proof from the checkpoint `oldNote` (of this ledger) to `newNote`. */
export const consistencyOf = (
  merkle: MerkleTree,
  oldSize: number,
  oldNote: string,
  newNote: string
): ConsistencyProof => ({
  format: CONSISTENCY_FORMAT,
  old_checkpoint: oldNote,
  new_checkpoint: newNote,
  proof: merkle.consistencyProof(oldSize).map((h) => Buffer.from(h).toString("base64"))
})

/** Checks that the older checkpoint's log is a prefix of the newer's, with nothing but the verifier key. */
export const verifyConsistencyProof = (
  input: unknown,
  verifierKey: string
): Either.Either<{ readonly old: SignedNote.Checkpoint; readonly new: SignedNote.Checkpoint }, ProofFailure> =>
  Either.flatMap(
    Either.mapLeft(
      Schema.decodeUnknownEither(ConsistencyProof)(input),
      (error) => new ProofFailure({ reason: "malformed", detail: error.message })
    ),
    (proof) =>
      Either.flatMap(
        Either.mapLeft(SignedNote.parseVerifierKey(verifierKey), (error) =>
          new ProofFailure({ reason: "malformed", detail: error.detail })),
        (verifier) =>
          Either.flatMap(checkpointOf(proof.old_checkpoint, verifier), (older) =>
            Either.flatMap(checkpointOf(proof.new_checkpoint, verifier), (newer) =>
              verifyConsistency(older.treeSize, newer.treeSize, hashes(proof.proof), older.rootHash, newer.rootHash)
                ? Either.right({ old: older, new: newer })
                : fail(
                  "inconsistent",
                  `the log of ${older.treeSize} leaves is not a prefix of the log of ${newer.treeSize} leaves`
                )))
      )
  )

/** Whether the ledger's tree still has the older checkpoint's tree as its prefix (rewrite or truncation). */
export const checkAgainst = (
  merkle: MerkleTree,
  checkpoint: SignedNote.Checkpoint
): Either.Either<void, ProofFailure> => {
  if (checkpoint.treeSize > merkle.size) {
    return fail(
      "inconsistent",
      `the checkpoint has ${checkpoint.treeSize} leaves, the ledger ${merkle.size}: truncated`
    )
  }
  return Buffer.from(merkle.rootHash(checkpoint.treeSize)).equals(checkpoint.rootHash)
    ? Either.right(undefined)
    : fail("inconsistent", `the ledger's first ${checkpoint.treeSize} rows are not the checkpoint's: rewritten`)
}
