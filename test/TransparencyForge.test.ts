/**
 * A writer without the key (a compromised guard host, a DBA, a restored backup) against the key holder's
 * transparency commands: stored subtrees (`merkle_nodes`) planted at several levels, above and below the
 * last signed checkpoint, and fabricated rows. The key must sign only roots over the ledger's own rows, and
 * every receipt it writes must verify; a receipt for a fabricated row never does. On SQLite, and on
 * PostgreSQL when `AGENT_LEDGER_PG_URL` is set.
 */
import { Effect, Either } from "effect"
import { execFile } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { rowEntryHash } from "../src/internal/rowFormat.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as EvidenceBundle from "../src/transparency/EvidenceBundle.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import { leafHash, MerkleTree } from "../src/transparency/MerkleTree.js"
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-forge-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const cli = (...args: ReadonlyArray<string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [cliBundle, ...args],
      { cwd: dir },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr })
    )
  })

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64")

interface StoredRow {
  readonly id: string
  readonly sequence: number
  readonly agent_id: string
  readonly event_type: string
  readonly payload: string
  readonly payload_hash: string
  readonly prev_hash: string
  readonly entry_hash: string
  readonly signature: string | null
  readonly key_id: string | null
  readonly attest_level: string
  readonly timestamp: string
}

/** A signed ledger at `db` (a file or a postgres:// URL), its key, and what a keyless writer can do to it. */
const signedLedger = async (db: string) => {
  const signer = await Effect.runPromise(AuditSigner.generate)
  const privateKey = join(dir, `key-${randomBytes(4).toString("hex")}.pem`)
  writeFileSync(privateKey, AuditSigner.exportPem(signer).privateKeyPem, { mode: 0o600 })
  const origin = LedgerTransparency.defaultOrigin(db)
  const verifierKey = SignedNote.verifierKey(origin, signer.publicKey)
  let appended = 0
  const onDb = <A, E>(effect: Effect.Effect<A, E, LedgerSql.LedgerSql>) =>
    Effect.runPromise(Effect.provide(effect, LedgerSql.layerFor(db)) as Effect.Effect<A, unknown>)
  const append = (count: number) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const queue = yield* AuditQueue
        for (let i = 0; i < count; i++) yield* queue.submit(refusalEvent("forge", appended++))
        yield* queue.drainPending("10 seconds")
      }).pipe(Effect.provide(AuditLedger.layerFor(db, { signer, synchronous: "NORMAL" })))
    )
  const rows = () =>
    onDb(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      Effect.map(
        client.withoutTransforms()<Record<string, unknown>>`SELECT * FROM signed_events ORDER BY sequence`,
        (found) => found.map(({ appended_at: _, ...row }) => ({ ...row, sequence: Number(row.sequence) }) as StoredRow)
      )))
  /** Rows the writer makes up, chained from `prev` at `from`, "signed" with random bytes. */
  const fabricate = (from: number, count: number, prev: string): Array<StoredRow> => {
    const made: Array<StoredRow> = []
    for (let i = 0; i < count; i++) {
      const sequence = from + i
      const payload = JSON.stringify({ fabricated: sequence })
      const row = {
        id: `fabricated-${sequence}`,
        sequence,
        agent_id: "mallory",
        event_type: "refusal",
        payload,
        payload_hash: createHash("sha256").update(payload).digest("hex"),
        prev_hash: made[i - 1]?.entry_hash ?? prev,
        timestamp: "2026-11-24T06:52:03.120Z"
      }
      const entry_hash = rowEntryHash({
        sequence,
        prevHash: row.prev_hash,
        id: row.id,
        agentId: row.agent_id,
        eventType: row.event_type,
        payloadHash: row.payload_hash,
        timestamp: row.timestamp
      })
      made.push({
        ...row,
        entry_hash,
        signature: randomBytes(64).toString("hex"),
        key_id: AuditSigner.keyIdOf(signer.publicKey),
        attest_level: "ed25519"
      })
    }
    return made
  }
  const plant = (level: number, index: number, hash: Uint8Array) =>
    onDb(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
      client.withoutTransforms()`
        INSERT INTO merkle_nodes (level, idx, hash) VALUES (${level}, ${index}, ${hex(hash)})
        ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash`))
  const insertRows = (made: ReadonlyArray<StoredRow>) =>
    onDb(
      Effect.flatMap(LedgerSql.LedgerSql, ({ client }) =>
        client.withoutTransforms()`INSERT INTO signed_events ${
          client.insert(made.map((row) => ({ ...row, appended_at: row.timestamp })))
        }`)
    )
  const sql = (statement: string) => onDb(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => client.unsafe(statement)))
  const checkpoint = async () => {
    const made = await cli("checkpoint", db, "--private-key", privateKey)
    return { ...made, root: made.stdout.split("\n")[2] ?? "", size: Number(made.stdout.split("\n")[1]) }
  }
  /** The root over the rows as stored (what the key may sign). */
  const rowsRoot = async (size?: number) => {
    const all = await rows()
    return b64(MerkleTree.fromLeafHashes(all.map((r) => leafHash(Buffer.from(r.entry_hash, "hex")))).rootHash(size))
  }
  const prove = async (sequence: number, ...extra: ReadonlyArray<string>) => {
    const out = join(dir, `receipt-${randomBytes(4).toString("hex")}.json`)
    const made = await cli(
      "prove",
      db,
      "--private-key",
      privateKey,
      "--sequence",
      String(sequence),
      "--out",
      out,
      ...extra
    )
    const receipt = made.code === 0 ? JSON.parse(readFileSync(out, "utf8")) : undefined
    // What verify-receipt runs (its exit codes are test/TransparencyVerifiers.test.ts's): one process fewer.
    const verified = {
      code: receipt !== undefined && Either.isRight(LedgerTransparency.verifyReceipt(receipt, verifierKey)) ? 0 : 1
    }
    return { made, verified, receipt }
  }
  /**
   * Every row in `sequences` proven (each its own `prove`, one after the other to keep the load of a file
   * low: each signs and stores a checkpoint; several at once on one SQLite file queue on its write lock,
   * test/LedgerTransparency.test.ts), and each receipt checked.
   */
  const proveAll = async (sequences: ReadonlyArray<number>) => {
    const results: Array<Awaited<ReturnType<typeof prove>>> = []
    for (const sequence of sequences) results.push(await prove(sequence))
    results.forEach(({ made, verified }, i) => {
      expect(made.code, `prove ${sequences[i]}: ${made.stderr}`).toBe(0)
      expect(verified.code, `verify-receipt ${sequences[i]}`).toBe(0)
    })
    return results
  }
  /** `prove --consistency` from the checkpoint `older` to a new one, and its check by verify-consistency's code. */
  const proveConsistency = async (older: string) => {
    const oldFile = join(dir, `old-${randomBytes(4).toString("hex")}.txt`)
    writeFileSync(oldFile, older)
    const made = await cli("prove", db, "--private-key", privateKey, "--consistency", oldFile, "--out", "-")
    const verified = made.code === 0 &&
      Either.isRight(LedgerTransparency.verifyConsistencyProof(JSON.parse(made.stdout), verifierKey))
    return { made, verified }
  }
  /** `export --bundle`'s library call (in-process: no CLI run), and the bundle as `verify` checks it. */
  const bundle = async (from: number, to: number) => {
    const made = await onDb(EvidenceBundle.make({ origin, signer, from, to }))
    return Either.getOrThrow(EvidenceBundle.verify(made, { verifierKey }))
  }
  return {
    bundle,
    append,
    rows,
    fabricate,
    insertRows,
    sql,
    plant,
    checkpoint,
    rowsRoot,
    prove,
    proveAll,
    proveConsistency,
    origin,
    verifierKey,
    signer
  }
}

type Ledger = Awaited<ReturnType<typeof signedLedger>>

/** The tree a writer who swapped rows `from`.. for `fake` would like the key to sign. */
const forgedTree = (real: ReadonlyArray<StoredRow>, fake: ReadonlyArray<StoredRow>) => {
  const leaves = real.map((r) => leafHash(Buffer.from(r.entry_hash, "hex")))
  for (const row of fake) leaves[row.sequence] = leafHash(Buffer.from(row.entry_hash, "hex"))
  return MerkleTree.fromLeafHashes(leaves)
}

/** A receipt for a fabricated row against a signed checkpoint, with the forger's own proof. */
const fabricatedReceipt = (tree: MerkleTree, row: StoredRow, note: string) => ({
  format: LedgerTransparency.RECEIPT_FORMAT,
  row,
  tree_size: tree.size,
  inclusion_proof: tree.inclusionProof(row.sequence).map(b64),
  checkpoint: note
})

const scenarios = (target: () => { readonly db: string; readonly drop?: () => void }) => {
  const withLedger = async (body: (ledger: Ledger) => Promise<void>) => {
    const { db, drop } = target()
    try {
      await body(await signedLedger(db))
    } finally {
      drop?.()
    }
  }

  it("the issue's forgery: a level-4 node over 8 real and 8 fabricated leaves, above the last checkpoint", {
    timeout: 300_000
  }, () =>
    withLedger(async (ledger) => {
      await ledger.append(8)
      const first = await ledger.checkpoint()
      expect(first.code).toBe(0)
      await ledger.append(12)
      const real = await ledger.rows()
      const fake = ledger.fabricate(8, 8, real[7]!.entry_hash)
      const forged = forgedTree(real, fake)
      await ledger.plant(4, 0, forged.rootHash(16))

      const next = await ledger.checkpoint()
      expect(next.code).toBe(0)
      expect(next.size).toBe(20)
      expect(next.root).toBe(await ledger.rowsRoot())
      expect(next.stderr).toMatch(/level 4 index 0/)
      // The forger's receipt for a fabricated row, against the key holder's new checkpoint, fails.
      const note = next.stdout
      expect(
        Either.isLeft(LedgerTransparency.verifyReceipt(fabricatedReceipt(forged, fake[2]!, note), ledger.verifierKey))
      )
        .toBe(true)
      // Every real row is still provable, and each receipt written verifies; so does the operator's
      // consistency proof from the checkpoint before the planting (the prove --consistency wrote one
      // that both verifiers rejected).
      await ledger.proveAll([0, 7, 8, 15, 19])
      const grew = await ledger.proveConsistency(first.stdout)
      expect(grew.made.code, grew.made.stderr).toBe(0)
      expect(grew.verified).toBe(true)
    }))

  it(
    "a level-5 node planted above the last checkpoint, and one at level 6 over the whole ledger",
    { timeout: 300_000 },
    () =>
      withLedger(async (ledger) => {
        await ledger.append(16)
        expect((await ledger.checkpoint()).code).toBe(0)
        await ledger.append(50)
        const real = await ledger.rows()
        const fake = ledger.fabricate(20, 12, real[19]!.entry_hash)
        const forged = forgedTree(real, fake)
        await ledger.plant(5, 0, forged.rootHash(32))
        await ledger.plant(6, 0, forged.rootHash(64))
        const next = await ledger.checkpoint()
        expect(next.code).toBe(0)
        expect(next.root).toBe(await ledger.rowsRoot())
        expect(
          Either.isLeft(
            LedgerTransparency.verifyReceipt(fabricatedReceipt(forged, fake[0]!, next.stdout), ledger.verifierKey)
          )
        )
          .toBe(true)
        const { made, verified } = await ledger.prove(21)
        expect(made.code).toBe(0)
        expect(verified.code).toBe(0)
      })
  )

  it("nodes planted below the last signed checkpoint: on its frontier, and off it (used only by proofs)", {
    timeout: 300_000
  }, () =>
    withLedger(async (ledger) => {
      await ledger.append(48)
      const first = await ledger.checkpoint()
      expect(first.code).toBe(0)
      const real = await ledger.rows()
      const fake = ledger.fabricate(0, 16, "0".repeat(64))
      const forged = forgedTree(real, fake)
      // Off the frontier (the root of 48 leaves is node 5/0 and node 4/2): only proofs read node 4/0.
      await ledger.plant(4, 0, forged.rootHash(16))
      const receipt = await ledger.prove(20)
      expect(receipt.made.code).toBe(0)
      expect(receipt.verified.code).toBe(0)
      expect(receipt.made.stderr).toMatch(/level 4 index 0/)
      // Planted again: a bundle made now reads node 4/0 for every proof of rows 0..15, and checks each first.
      await ledger.plant(4, 0, forged.rootHash(16))
      expect(await ledger.bundle(0, 20)).toMatchObject({ ok: true, proven: 21 })
      // On the frontier: node 5/0 over fabricated rows 0..15 and real ones.
      await ledger.plant(5, 0, forged.rootHash(32))
      await ledger.append(5)
      const next = await ledger.checkpoint()
      expect(next.code).toBe(0)
      expect(next.root).toBe(await ledger.rowsRoot())
      expect(next.stderr).toMatch(/level 5 index 0/)
      expect(
        Either.isLeft(
          LedgerTransparency.verifyReceipt(fabricatedReceipt(forged, fake[3]!, next.stdout), ledger.verifierKey)
        )
      )
        .toBe(true)
      await ledger.proveAll([3, 17, 40, 52])
    }))

  it("finding 2: a receipt whose row signature is forged, stripped or another key's does not verify", {
    timeout: 300_000
  }, () =>
    withLedger(async (ledger) => {
      await ledger.append(5)
      const { made, receipt, verified } = await ledger.prove(2)
      expect(made.code).toBe(0)
      expect(verified.code).toBe(0)
      const check = (row: Record<string, unknown>, allowUnsigned = false) =>
        LedgerTransparency.verifyReceipt({ ...receipt, row: { ...receipt.row, ...row } }, ledger.verifierKey, {
          allowUnsigned
        })
      const other = await Effect.runPromise(AuditSigner.generate)
      const reasons = [
        check({ signature: randomBytes(64).toString("hex") }),
        check({ signature: null, key_id: null, attest_level: "unsigned" }),
        check({ key_id: AuditSigner.keyIdOf(other.publicKey) }),
        check({ signature: null }),
        check({ key_id: null, attest_level: "unsigned" }, true)
      ].map((result) => Either.isLeft(result) ? result.left.reason : "verified")
      expect(reasons).toEqual(["rowSignature", "rowSignature", "rowSignature", "rowSignature", "rowSignature"])
      // --allow-unsigned is the auditor saying the ledger is not signed: the row is then proven in the tree only.
      expect(Either.isRight(check({ signature: null, key_id: null, attest_level: "unsigned" }, true))).toBe(true)
    }))

  it(
    "rows rewritten or cut under a signed checkpoint: never signed over, never proven",
    { timeout: 300_000 },
    () =>
      withLedger(async (ledger) => {
        await ledger.append(20)
        expect((await ledger.checkpoint()).code).toBe(0)
        // Row 5 replaced by a made-up row with consistent hashes (its entry hash is no longer the tree's leaf).
        const real = await ledger.rows()
        const [fake] = ledger.fabricate(5, 1, real[4]!.entry_hash)
        await ledger.sql(`DELETE FROM signed_events WHERE sequence = 5`)
        await ledger.insertRows([fake!])
        // The next checkpoint still signs the rows the key signed before (the stored subtrees it authenticated).
        await ledger.append(3)
        const next = await ledger.checkpoint()
        expect(next.code).toBe(0)
        expect(next.root).toBe(b64(forgedTree(await ledger.rows(), [real[5]!]).rootHash()))
        const rewritten = await ledger.prove(5)
        expect(rewritten.made.code).toBe(1)
        expect(rewritten.made.stderr).toContain("rewritten")
        // Cut below the last checkpoint: the key refuses to sign.
        await ledger.sql(`DELETE FROM signed_events WHERE sequence >= 10`)
        const cut = await ledger.checkpoint()
        expect(cut.code).toBe(1)
        expect(cut.stderr).toContain("truncated")
      })
  )

  it(
    "fabricated rows appended to a signed ledger are never checkpointed, nor proven",
    { timeout: 300_000 },
    () =>
      withLedger(async (ledger) => {
        await ledger.append(10)
        expect((await ledger.checkpoint()).code).toBe(0)
        const real = await ledger.rows()
        const fake = ledger.fabricate(10, 3, real[9]!.entry_hash)
        await ledger.insertRows(fake)
        const refused = await ledger.checkpoint()
        expect(refused.code).toBe(1)
        expect(refused.stderr).toMatch(/sequence 10/)
        const receipt = await ledger.prove(11)
        expect(receipt.made.code).toBe(1)
      })
  )
}

let counter = 0
const sqliteTarget = () => ({ db: join(dir, `forge-${counter++}.db`) })

describe("a keyless writer against checkpoint and prove (SQLite)", () => {
  scenarios(sqliteTarget)
})

describe.skipIf(noPostgres)("a keyless writer against checkpoint and prove (PostgreSQL)", () => {
  scenarios(() => {
    const fresh = freshDatabase()
    return { db: fresh.url, drop: fresh.drop }
  })
})
