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
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Either, Option, Schedule, Schema } from "effect"
import type { KeyObject } from "node:crypto"
import { createHash } from "node:crypto"
import * as AuditSigner from "../audit/AuditSigner.js"
import { ZERO_HASH } from "../internal/encoding.js"
import { yieldToEventLoop } from "../internal/eventLoopScheduler.js"
import { storedRowEntryHash } from "../internal/rowFormat.js"
import { forClient, withWriteTransaction } from "../internal/sqlDialect.js"
import * as LedgerRow from "../ledger/LedgerRow.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import type { Hash } from "./MerkleTree.js"
import { EMPTY_ROOT, leafHash, MerkleTree, nodeHash, verifyConsistency, verifyInclusion } from "./MerkleTree.js"
import * as SignedNote from "./SignedNote.js"

export const RECEIPT_FORMAT = "agent-ledger/receipt/v1"
export const CONSISTENCY_FORMAT = "agent-ledger/consistency/v1"

/**
 * Rows read per query, and hashes computed, between two turns of the event loop (`yieldToEventLoop`): a
 * timeout or an interruption stops a long build there, and the process's timers and I/O are not held up.
 */
const PAGE = 10_000

/**
 * Rows verified between two turns of the event loop while a checkpoint extends the tree: a row's signature
 * check costs tens of microseconds, so a whole page of them would hold the host's event loop for a second.
 */
const CHECK_SLICE = 256

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
// The stored tree: complete subtrees in `merkle_nodes`, so proofs at a million rows take milliseconds. It
// is a cache anyone who can write the database can write: the key signs only a root it recomputed from
// rows whose chain it verified since its last signed checkpoint, over stored subtrees that checkpoint
// authenticates; a proof is checked against the root it leads to before it is handed out; a stored
// subtree that disagrees with the rows is reported and rebuilt, never signed.
// ---------------------------------------------------------------------------------------------------------

const NODE_INSERT_CHUNK = 500

/** The most stored checkpoint rows looked at for the last one this key signed (forged ones are skipped). */
const MAX_CHECKPOINTS_SCANNED = 1_000

/**
 * The lowest level kept in `merkle_nodes`: subtrees of 16 leaves and up. Lower ones are recomputed from
 * the rows when a proof needs them (at most 15 entry hashes per level it crosses), which keeps the table
 * at about one row per 8 ledger rows instead of one per row, and the checkpoints' cost on appends small.
 */
export const MIN_STORED_LEVEL = 4

/**
 * Another writer held the database for as long as the busy retry schedule allowed (SQLite: its write lock
 * past `busy_timeout` on every attempt): the checkpoint, tree or repair was not stored (nothing is half
 * written). `operation` says what was being stored, `attempts` how many write transactions were tried.
 */
export class LedgerBusy extends Schema.TaggedError<LedgerBusy>()("LedgerBusy", {
  operation: Schema.Literal("checkpoint", "extendTree", "proof"),
  attempts: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    return `the ledger stayed locked by another writer (${this.operation}, ${this.attempts} attempts): ${this.detail}`
  }
}

/**
 * Between attempts of a write the database was busy for: exponential from 50 ms, capped at 1 second, for
 * at most 1 minute (on `Clock`), on top of each attempt's own `busy_timeout` wait for SQLite's lock.
 */
export const defaultBusyRetrySchedule: Schedule.Schedule<unknown, unknown> = Schedule.exponential("50 millis").pipe(
  Schedule.union(Schedule.spaced("1 second")),
  Schedule.upTo("1 minute")
)

/**
 * `effect` (on the ledger's connection) tried again on `schedule` while it fails because the database is
 * busy (classified by the driver's code: `SQLITE_BUSY*`, `SQLITE_LOCKED*`, PostgreSQL's lock and
 * serialization codes); `LedgerBusy` once the schedule ends.
 */
const retryBusy = <A, E, R>(
  operation: LedgerBusy["operation"],
  schedule: Schedule.Schedule<unknown, unknown>,
  effect: Effect.Effect<A, E | SqlError, R>
): Effect.Effect<A, E | SqlError | LedgerBusy, Exclude<R, SqlClient.SqlClient> | LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.gen(function*() {
    const { client } = yield* LedgerSql.LedgerSql
    const dialect = yield* forClient(client)
    const busy = (error: unknown): error is SqlError =>
      typeof error === "object" && error !== null && "_tag" in error && error._tag === "SqlError" &&
      dialect.classify(error).kind === "busy"
    let attempts = 0
    return yield* Effect.suspend(() => {
      attempts++
      return effect
    }).pipe(
      Effect.retry({ schedule, while: busy }),
      Effect.catchIf(
        busy,
        (error) => Effect.fail(new LedgerBusy({ operation, attempts, detail: dialect.classify(error).description }))
      )
    )
  }))

/**
 * `body` in a write transaction that takes the write lock before it reads (SQLite `BEGIN IMMEDIATE`: a
 * deferred transaction that read and then wrote would lose to a concurrent writer with `SQLITE_BUSY`, its
 * busy handler never called), retried while busy (`retryBusy`). On PostgreSQL a plain transaction: the
 * rows it writes lock themselves, and the chain's advisory lock is not taken, so appends go on.
 */
const writeTransaction = <A, E, R>(
  operation: LedgerBusy["operation"],
  schedule: Schedule.Schedule<unknown, unknown>,
  body: Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError | LedgerBusy, Exclude<R, SqlClient.SqlClient> | LedgerSql.LedgerSql> =>
  retryBusy(
    operation,
    schedule,
    Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      Effect.flatMap(forClient(client), (dialect) =>
        withWriteTransaction(client, dialect, body, { lockChain: false })))
  )

/** Why the key refuses to sign a checkpoint or to hand out a proof. */
export class TransparencyRefusal extends Schema.TaggedError<TransparencyRefusal>()("TransparencyRefusal", {
  reason: Schema.Literal(
    /** The ledger has fewer rows than the last checkpoint this key signed. */
    "truncated",
    /** The rows under a checkpoint this key signed are not those it signed. */
    "rewritten",
    /** A row appended since the last checkpoint does not verify (hashes, link, signature). */
    "unverifiedRow",
    /**
     * A row appended since the last checkpoint carries no signature, and the signer was not told to adopt
     * unsigned rows (`SignOptions.adoptUnsignedRows`): a keyless writer can strip every signature.
     */
    "unsignedRow",
    /** The proof asked for cannot be made (a row past the tree, no such checkpoint). */
    "unprovable"
  ),
  sequence: Schema.optional(Schema.Number),
  detail: Schema.String
}) {
  override get message(): string {
    return this.detail
  }
}

/** A stored subtree (`merkle_nodes` row) that disagreed with the rows: reported, then replaced. */
export interface RepairedNode {
  readonly level: number
  readonly index: number
}

const describeRepairs = (repaired: ReadonlyArray<RepairedNode>): string =>
  repaired.slice(0, 10).map(({ index, level }) => `level ${level} index ${index}`).join(", ") +
  (repaired.length > 10 ? ` and ${repaired.length - 10} more` : "")

const warnRepairs = (repaired: ReadonlyArray<RepairedNode>) =>
  repaired.length === 0 ? Effect.void : Effect.logWarning(
    `agent-ledger: merkle_nodes disagreed with the rows at ${
      describeRepairs(repaired)
    }: rebuilt from the rows (someone wrote the cache)`
  )

interface Emitted {
  readonly level: number
  readonly index: number
  readonly hash: Hash
}

/**
 * The roots of the maximal complete subtrees of the first `size` leaves, largest first (a compact range
 * from leaf 0): pushing leaf `size` merges equal-height neighbours, and each merge is the complete subtree
 * `(level, index)` just finished.
 */
class Frontier {
  constructor(public size: number, readonly nodes: Array<{ readonly level: number; readonly hash: Hash }>) {}

  push(leaf: Hash, emit: (node: Emitted) => void): void {
    let hash = leaf
    let level = 0
    const position = this.size
    while (this.nodes.length > 0 && this.nodes[this.nodes.length - 1]!.level === level) {
      hash = nodeHash(this.nodes.pop()!.hash, hash)
      level++
      emit({ level, index: Math.floor(position / 2 ** level), hash })
    }
    this.nodes.push({ level, hash })
    this.size++
  }

  root(): Hash {
    let root: Hash | undefined
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      root = root === undefined ? this.nodes[i]!.hash : nodeHash(this.nodes[i]!.hash, root)
    }
    return root ?? EMPTY_ROOT
  }
}

const sameHash = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(b)

/** The complete subtrees of the first `size` leaves, largest first: (level, index) of each. */
const frontierPositions = (size: number): Array<readonly [number, number]> => {
  const positions: Array<readonly [number, number]> = []
  let start = 0
  for (let level = Math.floor(Math.log2(Math.max(size, 1))) + 1; level >= 0; level--) {
    if (start + 2 ** level <= size) {
      positions.push([level, start / 2 ** level])
      start += 2 ** level
    }
  }
  return positions
}

type Sql = ReturnType<LedgerSql.Service["client"]["withoutTransforms"]>

const chainSizeOn = (sql: Sql) =>
  Effect.map(
    sql<{ n: number | null }>`SELECT MAX(sequence) AS n FROM signed_events`,
    (rows) => rows[0]?.n === null || rows[0]?.n === undefined ? 0 : Number(rows[0].n) + 1
  )

/** The rows' leaf hashes of sequences `from` .. `to` - 1, in order (a short range: one query). */
const leavesOn = (sql: Sql, from: number, to: number) =>
  Effect.map(
    sql<{ h: string }>`
      SELECT entry_hash AS h FROM signed_events WHERE sequence >= ${from} AND sequence < ${to} ORDER BY sequence`,
    (rows) => rows.map((row) => leafHash(Buffer.from(row.h, "hex")))
  )

/** The frontier of `size` leaves as the cache and the rows give it (none: a stored subtree is missing). */
const storedFrontier = (sql: Sql, size: number) =>
  Effect.gen(function*() {
    const nodes: Array<{ level: number; hash: Hash }> = []
    for (const [level, index] of frontierPositions(size)) {
      if (level >= MIN_STORED_LEVEL) {
        const [row] = yield* sql<
          { h: string }
        >`SELECT hash AS h FROM merkle_nodes WHERE level = ${level} AND idx = ${index}`
        if (row === undefined) return undefined
        nodes.push({ level, hash: Buffer.from(row.h, "hex") })
      } else {
        const leaves = yield* leavesOn(sql, index * 2 ** level, (index + 1) * 2 ** level)
        if (leaves.length !== 2 ** level) return undefined
        nodes.push({ level, hash: MerkleTree.fromLeafHashes(leaves).rootHash() })
      }
    }
    return new Frontier(size, nodes)
  })

/**
 * Stores `emitted` subtrees: a missing one is inserted, one that disagrees is replaced and returned (so it
 * is reported). Only levels from MIN_STORED_LEVEL are kept.
 */
const reconcile = (sql: Sql, emitted: ReadonlyArray<Emitted>) =>
  Effect.gen(function*() {
    const repaired: Array<RepairedNode> = []
    const byLevel = new Map<number, Array<Emitted>>()
    for (const node of emitted) {
      if (node.level < MIN_STORED_LEVEL) continue
      const list = byLevel.get(node.level)
      if (list === undefined) byLevel.set(node.level, [node])
      else list.push(node)
    }
    for (const [level, nodes] of byLevel) {
      const first = nodes[0]!.index
      const last = nodes[nodes.length - 1]!.index
      const stored = new Map<number, string>()
      for (
        const row of yield* sql<{ i: number; h: string }>`
          SELECT idx AS i, hash AS h FROM merkle_nodes WHERE level = ${level} AND idx >= ${first} AND idx <= ${last}`
      ) stored.set(Number(row.i), row.h)
      const missing: Array<{ level: number; idx: number; hash: string }> = []
      for (const node of nodes) {
        const hash = Buffer.from(node.hash).toString("hex")
        const found = stored.get(node.index)
        if (found === hash) continue
        if (found === undefined) {
          missing.push({ level, idx: node.index, hash })
        } else {
          repaired.push({ level, index: node.index })
          yield* sql`UPDATE merkle_nodes SET hash = ${hash} WHERE level = ${level} AND idx = ${node.index}`
        }
      }
      for (let i = 0; i < missing.length; i += NODE_INSERT_CHUNK) {
        yield* sql`INSERT INTO merkle_nodes ${sql.insert(missing.slice(i, i + NODE_INSERT_CHUNK))}`
      }
    }
    return repaired
  })

/**
 * Recomputes the subtrees of leaves [0, `size`) from the rows' entry hashes (paged), storing the missing
 * and replacing the disagreeing ones. Returns the frontier (its root: the rows' root) and the repairs.
 */
const rebuildOn = (sql: Sql, size: number) =>
  Effect.gen(function*() {
    const frontier = new Frontier(0, [])
    const repaired: Array<RepairedNode> = []
    while (frontier.size < size) {
      const leaves = yield* leavesOn(sql, frontier.size, Math.min(size, frontier.size + PAGE))
      if (leaves.length === 0) break
      const emitted: Array<Emitted> = []
      for (const leaf of leaves) frontier.push(leaf, (node) => emitted.push(node))
      repaired.push(...(yield* reconcile(sql, emitted)))
      // Between pages the event loop gets its turn: a timeout or an interruption stops (and rolls back) here.
      yield* yieldToEventLoop
    }
    return { frontier, repaired }
  })

/** Unsigned rows a checkpoint signed over because the operator adopted them (`adoptUnsignedRows`). */
export interface AdoptedRows {
  readonly count: number
  /** The first and the last of them (others may be signed rows in between). */
  readonly first: number
  readonly last: number
}

/**
 * The root of the tree of the ledger's first `size` rows, recomputed from the rows' entry hashes (paged, no
 * stored subtree read, nothing written): what a read-only reader compares a checkpoint's root with. Fewer
 * than `size` rows: `None` (the ledger was truncated below the checkpoint). `onProgress` gets the leaves
 * hashed so far after each page.
 */
export const rootOfRows = (
  size: number,
  onProgress: (leaves: number) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<Option.Option<Hash>, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const frontier = new Frontier(0, [])
      while (frontier.size < size) {
        const leaves = yield* leavesOn(sql, frontier.size, Math.min(size, frontier.size + PAGE))
        if (leaves.length === 0) break
        for (const leaf of leaves) frontier.push(leaf, () => {})
        yield* onProgress(frontier.size)
        yield* yieldToEventLoop
      }
      return frontier.size === size ? Option.some(frontier.root()) : Option.none()
    })))

/** What the signed tree of the ledger now is: its size and root, and the stored subtrees repaired. */
export interface SignedTree {
  readonly size: number
  readonly rootHash: Hash
  readonly repaired: ReadonlyArray<RepairedNode>
  /** The unsigned rows adopted (none: every row since the last checkpoint was signed by an accepted key). */
  readonly adopted: AdoptedRows | undefined
}

/**
 * The largest checkpoint of `origin` stored in the ledger whose signature by one of `verifiers` (the
 * signer's key, then the accepted previous keys) holds: what the ledger's key already vouched for.
 */
const lastSignedCheckpointOn = (sql: Sql, origin: string, verifiers: ReadonlyArray<SignedNote.Verifier>) =>
  Effect.gen(function*() {
    for (let offset = 0; offset < MAX_CHECKPOINTS_SCANNED; offset += 50) {
      const rows = yield* sql<{ tree_size: number; note: string }>`
        SELECT tree_size, note FROM checkpoints WHERE origin = ${origin}
        ORDER BY tree_size DESC LIMIT 50 OFFSET ${offset}`
      for (const row of rows) {
        for (const verifier of verifiers) {
          const checkpoint = checkpointOf(row.note, verifier)
          if (Either.isRight(checkpoint) && checkpoint.right.treeSize === Number(row.tree_size)) {
            return checkpoint.right
          }
        }
        yield* Effect.logWarning(
          `agent-ledger: the stored checkpoint of ${origin} at ${row.tree_size} leaves is not signed by its key: ignored`
        )
      }
      if (rows.length < 50) break
    }
    return undefined
  })

export interface SignOptions {
  /**
   * More public keys whose row signatures are accepted (the ledger's previous, rotated-out keys), beside
   * the signer's own. A row signed by any other key is refused (`unverifiedRow`).
   */
  readonly publicKeys?: ReadonlyArray<KeyObject> | undefined
  /**
   * Sign over rows since the last checkpoint this key signed that carry no signature at all. By default
   * the key signs only rows signed by it (or by a key in `publicKeys`), and the first unsigned row is
   * refused (`unsignedRow`): whoever can write the database but holds no key can strip every signature
   * and append made-up unsigned rows, and without this rule the ledger would then look unsigned and be
   * signed as it is. Adopting is the operator vouching for those rows (a ledger that ran unsigned before
   * it got a key); the result's `adopted` says how many and which. Never set by the layer's checkpointer.
   */
  readonly adoptUnsignedRows?: boolean | undefined
  /**
   * How long storing the checkpoint retries a database another writer holds (see `LedgerBusy`); default
   * `defaultBusyRetrySchedule`.
   */
  readonly busyRetrySchedule?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * The tree the key may sign now, on the ledger's client in context (inside the caller's transaction):
 * 1. the last checkpoint of `origin` the signer signed, or an accepted previous key of the ledger (stored in
 *    `checkpoints`; forged ones are skipped);
 * 2. the stored subtrees that make its root, and row size-1's proof in it, checked against that root; a
 *    cache that disagrees is rebuilt from the rows, which must then give that root (else: `rewritten`);
 * 3. every row since then verified (hashes, link to the last, a valid signature by the signer's key or an
 *    accepted one; an unsigned row only when `adoptUnsignedRows`), and its subtrees computed from those
 *    rows and the checkpoint's frontier, stored or repaired.
 */
const signedTreeBody = (origin: string, signer: AuditSigner.AuditSigner, options: SignOptions) =>
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const verifiers = [signer.publicKey, ...(options.publicKeys ?? [])].map((key) =>
        Either.getOrThrow(SignedNote.parseVerifierKey(SignedNote.verifierKey(origin, key)))
      )
      const size = yield* chainSizeOn(sql)
      const anchor = yield* lastSignedCheckpointOn(sql, origin, verifiers)
      const anchored = anchor?.treeSize ?? 0
      if (anchored > size) {
        return yield* new TransparencyRefusal({
          reason: "truncated",
          sequence: size,
          detail: `the ledger has ${size} rows, fewer than the ${anchored} its last checkpoint signed: truncated`
        })
      }
      const repaired: Array<RepairedNode> = []
      let frontier = yield* storedFrontier(sql, anchored)
      let authentic = frontier !== undefined && (anchor === undefined || sameHash(frontier.root(), anchor.rootHash))
      if (authentic && anchor !== undefined && anchored > 0) {
        const [last] = yield* leavesOn(sql, anchored - 1, anchored)
        const proof = yield* readStoredTree(sql, anchored, (tree) => tree.inclusionProof(anchored - 1))
        authentic = last !== undefined && proof !== undefined &&
          verifyInclusion(last, anchored - 1, anchored, proof, anchor.rootHash)
      }
      if (!authentic) {
        const rebuilt = yield* rebuildOn(sql, anchored)
        repaired.push(...rebuilt.repaired)
        if (anchor !== undefined && !sameHash(rebuilt.frontier.root(), anchor.rootHash)) {
          return yield* new TransparencyRefusal({
            reason: "rewritten",
            detail: `the ledger's first ${anchored} rows are not those its last checkpoint signed: rewritten`
          })
        }
        frontier = rebuilt.frontier
      }
      const adopted = yield* unsignedSince(sql, anchored, size, options)
      const grown = yield* extendVerified(sql, frontier!, size, signer, options)
      repaired.push(...grown)
      yield* warnRepairs(repaired)
      return { size, rootHash: frontier!.root(), repaired, adopted } satisfies SignedTree
    }))

/**
 * The unsigned rows among `from` .. `size` - 1: refused (`unsignedRow`, naming the first) unless
 * `adoptUnsignedRows`, then returned to be reported. None: undefined.
 */
const unsignedSince = (sql: Sql, from: number, size: number, options: SignOptions) =>
  Effect.gen(function*() {
    const [found] = yield* sql<{ n: number | string; first: number | null; last: number | null }>`
      SELECT COUNT(*) AS n, MIN(sequence) AS first, MAX(sequence) AS last FROM signed_events
      WHERE sequence >= ${from} AND sequence < ${size} AND (signature IS NULL OR attest_level = 'unsigned')`
    const count = Number(found?.n ?? 0)
    if (count === 0 || found?.first === null || found?.first === undefined) return undefined
    const adopted: AdoptedRows = { count, first: Number(found.first), last: Number(found.last) }
    if (options.adoptUnsignedRows === true) return adopted
    const range = adopted.first === adopted.last ? `${adopted.first}` : `${adopted.first}..${adopted.last}`
    return yield* new TransparencyRefusal({
      reason: "unsignedRow",
      sequence: adopted.first,
      detail:
        `the row at sequence ${adopted.first} is unsigned (${count} unsigned row${
          count === 1 ? "" : "s"
        } in ${range} since the last checkpoint this key signed): the key signs only rows signed by it or by an ` +
        `accepted key, since whoever can write the database can strip signatures; nothing signed. If these ` +
        `rows are the ledger's own, written while it had no key, adopt them: agent-ledger checkpoint ` +
        `--adopt-unsigned-rows`
    })
  })

/** Rows `frontier.size` .. `size` - 1 verified as a chain and pushed onto `frontier`; their subtrees stored. */
const extendVerified = (
  sql: Sql,
  frontier: Frontier,
  size: number,
  signer: AuditSigner.AuditSigner,
  options: SignOptions
) =>
  Effect.gen(function*() {
    const keyring = AuditSigner.Keyring.make([signer.publicKey, ...(options.publicKeys ?? [])])
    const [previous] = frontier.size === 0 ? [undefined] : yield* sql<{ h: string }>`
      SELECT entry_hash AS h FROM signed_events WHERE sequence = ${frontier.size - 1}`
    const checker = LedgerVerifier.makeChecker({
      keyring,
      expectedFirstSequence: frontier.size,
      expectedFirstPrevHash: previous?.h ?? ZERO_HASH,
      // Every row signed by an accepted key; unsigned ones only when the operator adopts them (`unsignedSince`
      // counted and named them first). Where the rows were signed is never read from the database: a writer
      // without the key could strip them all.
      ...(options.adoptUnsignedRows === true ? { allowMixed: true } : { requireSigned: true })
    })
    const repaired: Array<RepairedNode> = []
    while (frontier.size < size) {
      const rows = yield* sql<Record<string, unknown>>`
        SELECT ${sql.literal(LedgerRow.COLUMNS.join(", "))} FROM signed_events
        WHERE sequence >= ${frontier.size} AND sequence < ${size} ORDER BY sequence LIMIT ${PAGE}`
      if (rows.length === 0) break
      const emitted: Array<Emitted> = []
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!
        checker.checkUnknown({ ...row, sequence: Number(row.sequence) })
        if ((i + 1) % CHECK_SLICE === 0) yield* yieldToEventLoop
      }
      // One report per page: a page with a failing row is refused whole, before any of it is pushed.
      const report = checker.report()
      if (!report.ok) {
        const failure = Option.getOrThrow(report.firstFailure)
        return yield* new TransparencyRefusal({
          reason: "unverifiedRow",
          sequence: failure.sequence,
          detail: `the row at sequence ${failure.sequence} does not verify (${failure.kind}: ${failure.message}): ` +
            `nothing signed`
        })
      }
      for (const row of rows) {
        frontier.push(leafHash(Buffer.from(String(row.entry_hash), "hex")), (node) => emitted.push(node))
      }
      repaired.push(...(yield* reconcile(sql, emitted)))
      yield* yieldToEventLoop
    }
    if (frontier.size !== size) return yield* Effect.dieMessage(`the chain ends at ${frontier.size}, not ${size}`)
    return repaired
  })

/**
 * Recomputes every subtree of the ledger's rows and stores it, replacing those that disagree (reported).
 * Returns the tree size now covered. Nothing is signed: a cache filler and repair tool.
 */
export const extendStoredTree: Effect.Effect<number, SqlError | LedgerBusy, LedgerSql.LedgerSql> = writeTransaction(
  "extendTree",
  defaultBusyRetrySchedule,
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.gen(function*() {
      const sql = client.withoutTransforms()
      const size = yield* chainSizeOn(sql)
      const { repaired } = yield* rebuildOn(sql, size)
      yield* warnRepairs(repaired)
      return size
    }))
)

/** `use` on the stored tree of `size` leaves; none when a subtree it reads is not stored. */
const readStoredTree = <A>(sql: Sql, size: number, use: (tree: MerkleTree) => A) =>
  Effect.gen(function*() {
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
          if (hash !== undefined) return hash
          missing.set(`${level}/${index}`, [level, index])
          return new Uint8Array(32)
        }
      }))
      if (missing.size === 0) return result
      const before = found.size
      yield* fetch(Array.from(missing.values()))
      if (found.size === before) return undefined
    }
    return undefined
  })

/**
 * `use` run on the stored tree of the ledger's first `size` rows: the complete subtrees it reads are fetched
 * (O(log² n) of them, one query per level and round), then it computes as on an in-memory tree. `use` must
 * be pure (it may run more than once). Nothing here is checked: the stored subtrees are a cache (see
 * `inclusionProof` and `consistencyProof` for proofs checked against a signed root). A subtree that is not
 * stored is a defect (run `extendStoredTree`).
 */
export const withStoredTree = <A>(
  size: number,
  use: (tree: MerkleTree) => A
): Effect.Effect<A, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.flatMap(
      readStoredTree(client.withoutTransforms(), size, use),
      (result) =>
        result === undefined
          ? Effect.dieMessage(`merkle_nodes lacks subtrees of ${size} leaves`)
          : Effect.succeed(result)
    )))

/**
 * A proof from the stored tree, checked with `holds` against the root it must lead to; when it does not
 * hold (or a subtree is missing), the subtrees of the first `size` rows are rebuilt from the rows (the
 * disagreeing ones reported) and it is made again. The rows' own root must be `root`, or: `rewritten`.
 */
const checkedProof = <A>(
  size: number,
  root: Hash,
  make: (tree: MerkleTree) => A,
  holds: (proof: A) => boolean
): Effect.Effect<
  { readonly proof: A; readonly repaired: ReadonlyArray<RepairedNode> },
  TransparencyRefusal | SqlError | LedgerBusy,
  LedgerSql.LedgerSql
> =>
  retryBusy(
    "proof",
    defaultBusyRetrySchedule,
    Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      client.withTransaction(Effect.gen(function*() {
        const sql = client.withoutTransforms()
        const chain = yield* chainSizeOn(sql)
        if (size > chain) {
          return yield* new TransparencyRefusal({
            reason: "truncated",
            sequence: chain,
            detail: `the checkpoint has ${size} leaves, the ledger ${chain}: truncated`
          })
        }
        const first = yield* readStoredTree(sql, size, make)
        if (first !== undefined && holds(first)) return { proof: first, repaired: [] }
        const { frontier, repaired } = yield* rebuildOn(sql, size)
        yield* warnRepairs(repaired)
        if (!sameHash(frontier.root(), root)) {
          return yield* new TransparencyRefusal({
            reason: "rewritten",
            detail: `the ledger's first ${size} rows are not the checkpoint's: rewritten`
          })
        }
        const again = yield* readStoredTree(sql, size, make)
        if (again === undefined || !holds(again)) {
          return yield* new TransparencyRefusal({
            reason: "unprovable",
            detail: `the proof in the tree of ${size} leaves does not hold after rebuilding it from the rows`
          })
        }
        return { proof: again, repaired }
      })))
  )

/**
 * The inclusion proofs of `leaves` (rows: their sequence and entry hash) in the tree of `size` leaves whose
 * root is `root` (a checkpoint's), each checked against that root before they are returned (see
 * `checkedProof`).
 */
export const inclusionProofs = (
  leaves: ReadonlyArray<{ readonly sequence: number; readonly entryHash: string }>,
  size: number,
  root: Hash
): Effect.Effect<
  { readonly proof: ReadonlyArray<ReadonlyArray<Hash>>; readonly repaired: ReadonlyArray<RepairedNode> },
  TransparencyRefusal | SqlError | LedgerBusy,
  LedgerSql.LedgerSql
> => {
  const outside = leaves.find(({ sequence }) => !Number.isSafeInteger(sequence) || sequence < 0 || sequence >= size)
  if (outside !== undefined) {
    return Effect.fail(
      new TransparencyRefusal({
        reason: "unprovable",
        sequence: outside.sequence,
        detail: `row ${outside.sequence} is not in the tree of ${size} leaves`
      })
    )
  }
  const hashes = leaves.map(({ entryHash }) => leafHash(Buffer.from(entryHash, "hex")))
  return checkedProof(
    size,
    root,
    (tree) => leaves.map(({ sequence }) => tree.inclusionProof(sequence, size)),
    (proofs) => proofs.every((proof, i) => verifyInclusion(hashes[i]!, leaves[i]!.sequence, size, proof, root))
  )
}

/** The consistency proof from the tree (`oldSize`, `oldRoot`) to (`size`, `root`), checked before it is returned. */
export const consistencyProof = (oldSize: number, oldRoot: Hash, size: number, root: Hash) =>
  oldSize > size
    ? Effect.fail(
      new TransparencyRefusal({
        reason: "truncated",
        detail: `the older checkpoint has ${oldSize} leaves, the newer ${size}: truncated`
      })
    )
    : Effect.flatMap(
      checkedProof(
        size,
        root,
        (tree) => ({ proof: tree.consistencyProof(oldSize, size), oldRoot: tree.rootHash(oldSize) }),
        ({ proof }) => verifyConsistency(oldSize, size, proof, oldRoot, root)
      ),
      ({ proof, repaired }) =>
        // The rows' tree at `oldSize` is another than the older checkpoint's: the ledger was rewritten since.
        verifyConsistency(oldSize, size, proof.proof, oldRoot, root)
          ? Effect.succeed({ proof: proof.proof, repaired })
          : new TransparencyRefusal({
            reason: "rewritten",
            detail: `the ledger's first ${oldSize} rows are not the older checkpoint's: rewritten`
          })
    )

/**
 * Signs a checkpoint of the whole ledger as `origin` and keeps it, in one write transaction (one commit,
 * so one fsync beside the sink's): over the tree `signedTreeBody` recomputed and checked, never over a
 * stored root. Returns the size, the root, the note and the stored subtrees repaired on the way.
 */
export const checkpointNow = (
  origin: string,
  signer: AuditSigner.AuditSigner,
  options: SignOptions = {}
): Effect.Effect<
  SignedTree & { readonly note: string },
  SqlError | TransparencyRefusal | LedgerBusy,
  LedgerSql.LedgerSql
> =>
  writeTransaction(
    "checkpoint",
    options.busyRetrySchedule ?? defaultBusyRetrySchedule,
    Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      Effect.gen(function*() {
        const tree = yield* signedTreeBody(origin, signer, options)
        const note = signRoot(origin, signer, tree.size, tree.rootHash)
        yield* saveCheckpointBody(origin, tree.size, note)
        // The first checkpoint's origin becomes the ledger's (`originOf`): it no longer follows the file name.
        yield* client.withoutTransforms()`
          INSERT INTO agent_ledger_settings (key, value) VALUES (${ORIGIN_SETTING}, ${origin})
          ON CONFLICT (key) DO NOTHING`
        return { ...tree, note }
      }))
  )

/** The signed note of the checkpoint (`origin`, `size`, `root`). */
const signRoot = (origin: string, signer: AuditSigner.AuditSigner, size: number, root: Hash): string =>
  SignedNote.signNote(
    SignedNote.formatCheckpoint({ origin, treeSize: size, rootHash: root }),
    origin,
    (bytes) => AuditSigner.signNote(signer, bytes),
    signer.publicKey
  )

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

/** A checkpoint kept in the ledger's `checkpoints` table, as stored (its signature is not checked here). */
export interface StoredCheckpoint {
  readonly origin: string
  readonly treeSize: number
  readonly note: string
  readonly createdAt: string
}

/**
 * The checkpoints kept in the ledger (of `origin`, or all), newest (largest) first, at most `limit`. Read
 * only; what they say is checked by whoever uses them (`checkpointOf` with the verifier key): anyone who
 * can write the database can write this table.
 */
export const storedCheckpoints = (
  options: { readonly origin?: string | undefined; readonly limit?: number | undefined } = {}
): Effect.Effect<ReadonlyArray<StoredCheckpoint>, SqlError, LedgerSql.LedgerSql> =>
  LedgerSql.use(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => {
    const sql = client.withoutTransforms()
    const where = options.origin === undefined ? sql.literal("1 = 1") : sql`origin = ${options.origin}`
    const limit = options.limit === undefined ? sql.literal("") : sql`LIMIT ${options.limit}`
    return Effect.map(
      sql<{ origin: string; tree_size: number; note: string; created_at: string }>`
        SELECT origin, tree_size, note, created_at FROM checkpoints WHERE ${where}
        ORDER BY tree_size DESC, origin ${limit}`,
      (rows) =>
        rows.map((row) => ({
          origin: row.origin,
          treeSize: Number(row.tree_size),
          note: row.note,
          createdAt: row.created_at
        }))
    )
  }))

/** The `agent_ledger_settings` key of the ledger's log origin, kept when its first checkpoint is made. */
export const ORIGIN_SETTING = "transparency_origin"

/** The origin the ledger's first checkpoint was made as (none before one is made). */
export const storedOrigin: Effect.Effect<Option.Option<string>, SqlError, LedgerSql.LedgerSql> = LedgerSql.use(
  Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
    Effect.map(
      client.withoutTransforms()<{ value: string }>`
        SELECT value FROM agent_ledger_settings WHERE key = ${ORIGIN_SETTING}`,
      ([row]) => Option.fromNullable(row?.value)
    ))
)

/**
 * The ledger's log origin when none is given: the one its first checkpoint was made as, else
 * `defaultOrigin(db)`. So renaming or copying the database file does not change it once a checkpoint exists.
 */
export const originOf = (db: string): Effect.Effect<string, SqlError, LedgerSql.LedgerSql> =>
  Effect.map(storedOrigin, Option.getOrElse(() => defaultOrigin(db)))

/** A log origin for `db` when none is configured nor stored: `agent-ledger/<file or database name>`. */
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
  signer: AuditSigner.AuditSigner,
  size: number = merkle.size
): string =>
  SignedNote.signNote(
    SignedNote.formatCheckpoint({ origin, treeSize: size, rootHash: merkle.rootHash(size) }),
    origin,
    (bytes) => AuditSigner.signNote(signer, bytes),
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

/** The receipt of `row` with its inclusion proof `proof` (leaf to root) in the checkpoint `note` of `size` leaves. */
export const receiptFrom = (
  row: typeof Row.Type,
  size: number,
  proof: ReadonlyArray<Hash>,
  note: string
): Receipt => ({
  format: RECEIPT_FORMAT,
  row,
  tree_size: size,
  inclusion_proof: proof.map((h) => Buffer.from(h).toString("base64")),
  checkpoint: note
})

/**
 * The receipt of a row as the database returned it (`SELECT *`: `appended_at`, which no hash covers, is left
 * out) against the signed checkpoint `note` of `size` leaves and root `root`: its inclusion proof is made
 * from the stored tree and checked against that root (`inclusionProofs`). What `prove` and the console serve.
 */
export const receiptOfStoredRow = (
  stored: Record<string, unknown>,
  against: { readonly note: string; readonly size: number; readonly root: Hash }
): Effect.Effect<Receipt, TransparencyRefusal | SqlError | LedgerBusy, LedgerSql.LedgerSql> => {
  const { appended_at: _appendedAt, ...fields } = stored
  const row = { ...fields, sequence: Number(fields.sequence) } as Receipt["row"]
  return Effect.map(
    inclusionProofs([{ sequence: row.sequence, entryHash: row.entry_hash }], against.size, against.root),
    ({ proof }) => receiptFrom(row, against.size, proof[0]!, against.note)
  )
}

/** The consistency proof `proof` from the checkpoint `oldNote` to `newNote`. */
export const consistencyFrom = (oldNote: string, newNote: string, proof: ReadonlyArray<Hash>): ConsistencyProof => ({
  format: CONSISTENCY_FORMAT,
  old_checkpoint: oldNote,
  new_checkpoint: newNote,
  proof: proof.map((h) => Buffer.from(h).toString("base64"))
})

/** Why a receipt or a consistency proof does not hold. */
export class ProofFailure extends Schema.TaggedError<ProofFailure>()("ProofFailure", {
  reason: Schema.Literal(
    "malformed",
    "checkpointSignature",
    "wrongLog",
    "rowHash",
    "rowSignature",
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
export const checkpointOf = (note: string, verifier: SignedNote.Verifier) =>
  Either.flatMap(
    Either.mapLeft(SignedNote.verifyNote(note, verifier), (error) =>
      new ProofFailure({
        reason: error.reason === "malformed" ? "malformed" : "checkpointSignature",
        detail: error.detail
      })),
    (text) =>
      Either.flatMap(
        Either.mapLeft(
          SignedNote.parseCheckpoint(text),
          (error) => new ProofFailure({ reason: "malformed", detail: error.detail })
        ),
        (checkpoint) =>
          checkpoint.origin === verifier.name
            ? Either.right(checkpoint)
            : fail("wrongLog", `the checkpoint is of ${checkpoint.origin}, the key of ${verifier.name}`)
      )
  )

/**
 * Proof hashes as FORMAT.md gives them: standard base64 (RFC 4648 §4, padded) of exactly 32 bytes, in
 * canonical form; URL-safe, unpadded or otherwise lenient spellings are rejected (as Go's decoder does).
 */
export const decodeHashes = (list: ReadonlyArray<string>): Either.Either<ReadonlyArray<Hash>, ProofFailure> => {
  const decoded: Array<Hash> = []
  for (const [i, text] of list.entries()) {
    const bytes = decodeHash(text)
    if (bytes === undefined) {
      return fail("malformed", `proof hash ${i} is not 32 bytes of standard, padded base64`)
    }
    decoded.push(bytes)
  }
  return Either.right(decoded)
}

/** One hash in strict standard base64 (44 characters, one `=`), or undefined. */
export const decodeHash = (text: string): Hash | undefined => {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) return undefined
  const bytes = Buffer.from(text, "base64")
  return bytes.length === 32 && bytes.toString("base64") === text ? bytes : undefined
}

export interface ReceiptOptions {
  /**
   * Accept a row marked `unsigned` (a ledger that is not signed). By default the checkpoint's key is the
   * ledger's key and the row must carry its valid signature: a row nobody signed proves only that it sits
   * in the tree.
   */
  readonly allowUnsigned?: boolean | undefined
  /**
   * The ledger's previous (rotated-out) public keys: a row signed by one of them counts as the ledger's,
   * beside the checkpoint's key. The auditor's to give (a receipt never carries keys).
   */
  readonly publicKeys?: ReadonlyArray<KeyObject> | undefined
}

/**
 * The row's signature by the checkpoint's key (the ledger's key) or an accepted previous one: an `ed25519`
 * row must be signed by one of them, validly; an `unsigned` row is accepted only with `allowUnsigned`.
 */
const checkRowSignature = (
  row: typeof Row.Type,
  verifier: SignedNote.Verifier,
  options: ReceiptOptions
): Either.Either<void, ProofFailure> => {
  const at = `the row at sequence ${row.sequence}`
  if (row.attest_level === "unsigned") {
    if (row.signature !== null || row.key_id !== null) {
      return fail("rowSignature", `${at} is marked unsigned but carries a signature or key id`)
    }
    return options.allowUnsigned === true ? Either.right(undefined) : fail(
      "rowSignature",
      `${at} is unsigned: the ledger's key (the checkpoint's) did not sign it (--allow-unsigned for a ledger ` +
        `that is not signed)`
    )
  }
  if (row.attest_level !== "ed25519" || row.signature === null || row.key_id === null) {
    return fail("rowSignature", `${at} has attest level ${row.attest_level} without both signature and key id`)
  }
  const keyring = AuditSigner.Keyring.make([verifier.publicKey, ...(options.publicKeys ?? [])])
  const keyId = AuditSigner.keyIdOf(verifier.publicKey)
  if (Option.isNone(keyring.get(row.key_id))) {
    return fail(
      "rowSignature",
      `${at} is signed by key ${row.key_id}, not by the checkpoint's key ${keyId}${
        keyring.size > 1 ? " nor an accepted one" : ""
      }`
    )
  }
  const verdict = AuditSigner.verifySignature(keyring, row.key_id, Buffer.from(row.entry_hash, "hex"), row.signature)
  return verdict === "valid"
    ? Either.right(undefined)
    : fail("rowSignature", `${at}: its signature is not valid for key ${row.key_id}`)
}

/**
 * Checks a receipt with nothing but the verifier key: the checkpoint's signature, the row's own hashes
 * (its payload hash and its entry hash recomputed from its fields, docs/FORMAT.md "Ledger row"), the row's
 * signature by the same key (the checkpoint key is the ledger key; see `ReceiptOptions`), and the row's
 * inclusion in the checkpoint's tree. Returns the checkpoint the row is proven in.
 */
export const verifyReceipt = (
  input: unknown,
  verifierKey: string,
  options: ReceiptOptions = {}
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
            const proof = decodeHashes(receipt.inclusion_proof)
            if (Either.isLeft(proof)) {
              return Either.left(proof.left)
            }
            const payloadHash = createHash("sha256").update(row.payload, "utf8").digest("hex")
            const entryHash = storedRowEntryHash(row)
            if (payloadHash !== row.payload_hash || entryHash !== row.entry_hash) {
              return fail("rowHash", `the row at sequence ${row.sequence} does not hash to its entry_hash`)
            }
            const signed = checkRowSignature(row, verifier, options)
            if (Either.isLeft(signed)) {
              return Either.left(signed.left)
            }
            return verifyInclusion(
                leafHash(Buffer.from(row.entry_hash, "hex")),
                row.sequence,
                checkpoint.treeSize,
                proof.right,
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
              Either.flatMap(decodeHashes(proof.proof), (path) =>
                verifyConsistency(older.treeSize, newer.treeSize, path, older.rootHash, newer.rootHash)
                  ? Either.right({ old: older, new: newer })
                  : fail(
                    "inconsistent",
                    `the log of ${older.treeSize} leaves is not a prefix of the log of ${newer.treeSize} leaves`
                  ))))
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
