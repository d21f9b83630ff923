/**
 * The auditor's workflow, through the CLI on a real signed ledger: a checkpoint and its verifier key, a
 * receipt that verifies with the key alone, a consistency proof after the ledger grew, and rejections of a
 * tampered receipt, a checkpoint of another key, a rewritten and a truncated ledger; evidence bundles and
 * each way of forging one.
 */
import { Effect, Either, TestClock, TestContext } from "effect"
import { execFile } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as EvidenceBundle from "../src/transparency/EvidenceBundle.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-tlog-"))
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

const demo = (db: string, sessions: string) =>
  cli("demo", "--db", db, "--sessions", sessions, "--calls", "20", "--session-out", join(dir, "s.json"))

describe("transparency-log proofs through the CLI", () => {
  it("checkpoint, receipt, consistency proof, and the rejections an auditor needs", async () => {
    const db = join(dir, "ledger.db")
    expect((await cli("keygen", "--out", join(dir, "keys"))).code).toBe(0)
    const key = join(dir, "keys", "agent-ledger-ed25519.pem")
    expect((await demo(db, "3")).code).toBe(0)

    // The demo's ledger is not signed: the key signs over its rows only when the operator adopts them.
    const refused = await cli("checkpoint", db, "--private-key", key)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/the row at sequence 0 is unsigned \(\d+ unsigned rows in 0\.\.\d+/)
    expect(refused.stdout).toBe("")
    const checkpoint = await cli("checkpoint", db, "--private-key", key, "--adopt-unsigned-rows")
    expect(checkpoint.code).toBe(0)
    expect(checkpoint.stderr).toMatch(/adopted \d+ unsigned rows \(sequences 0\.\.\d+\)/)
    const [origin, size, root, blank, signature] = checkpoint.stdout.split("\n")
    expect(origin).toBe("agent-ledger/ledger")
    expect(Number(size)).toBeGreaterThan(0)
    expect(Buffer.from(root!, "base64")).toHaveLength(32)
    expect(blank).toBe("")
    expect(signature).toMatch(/^\u2014 agent-ledger\/ledger [A-Za-z0-9+/=]+$/)
    writeFileSync(join(dir, "old.txt"), checkpoint.stdout)
    const vkey = (await cli("checkpoint", db, "--private-key", key, "--key")).stdout.trim()
    expect(vkey).toMatch(/^agent-ledger\/ledger\+[0-9a-f]{8}\+/)
    // keygen --origin prints the same verifier key for a new key; checkpoint --key prints it for this one.
    const fresh = await cli("keygen", "--out", join(dir, "fresh"), "--origin", "agent-ledger/ledger")
    const freshKey = /verifier key: (\S+)/.exec(fresh.stdout)![1]!
    const freshPem = join(dir, "fresh", "agent-ledger-ed25519.pem")
    expect((await cli("checkpoint", db, "--private-key", freshPem, "--key")).stdout.trim()).toBe(freshKey)

    // A receipt for one row verifies with the key alone; the same receipt with a changed row does not.
    expect((await cli("prove", db, "--private-key", key, "--sequence", "3", "--out", join(dir, "r.json"))).code)
      .toBe(0)
    // The ledger is not signed: its rows carry no signature by the key, which verify-receipt asks for by default.
    const unsignedRow = await cli("verify-receipt", join(dir, "r.json"), "--key", vkey)
    expect(unsignedRow.code).toBe(1)
    expect(unsignedRow.stdout).toContain("rowSignature")
    const ok = await cli("verify-receipt", join(dir, "r.json"), "--key", vkey, "--allow-unsigned")
    expect(ok.code).toBe(0)
    expect(ok.stdout).toContain("OK")
    const receipt = JSON.parse(readFileSync(join(dir, "r.json"), "utf8"))
    writeFileSync(join(dir, "tampered.json"), JSON.stringify({ ...receipt, row: { ...receipt.row, agent_id: "x" } }))
    const tampered = await cli("verify-receipt", join(dir, "tampered.json"), "--key", vkey)
    expect(tampered.code).toBe(1)
    expect(tampered.stdout).toContain("rowHash")
    const proofCut = { ...receipt, inclusion_proof: receipt.inclusion_proof.slice(1) }
    writeFileSync(join(dir, "cut.json"), JSON.stringify(proofCut))
    expect((await cli("verify-receipt", join(dir, "cut.json"), "--key", vkey, "--allow-unsigned")).stdout).toContain(
      "notIncluded"
    )
    // Another key (another log) does not vouch for it.
    expect((await cli("keygen", "--out", join(dir, "other"))).code).toBe(0)
    const otherKey = (await cli(
      "checkpoint",
      db,
      "--private-key",
      join(dir, "other", "agent-ledger-ed25519.pem"),
      "--key"
    )).stdout.trim()
    const wrongKey = await cli("verify-receipt", join(dir, "r.json"), "--key", otherKey)
    expect(wrongKey.code).toBe(1)
    expect(wrongKey.stdout).toContain("checkpointSignature")

    // The ledger grows (unsigned, adopted again): the old checkpoint is a prefix, provably, and
    // `verify --checkpoint` agrees.
    expect((await demo(db, "2")).code).toBe(0)
    expect((await cli("prove", db, "--private-key", key, "--consistency", join(dir, "old.txt"))).code).toBe(1)
    expect((await cli("checkpoint", db, "--private-key", key, "--adopt-unsigned-rows")).code).toBe(0)
    expect(
      (await cli(
        "prove",
        db,
        "--private-key",
        key,
        "--consistency",
        join(dir, "old.txt"),
        "--out",
        join(dir, "c.json")
      ))
        .code
    ).toBe(0)
    const consistent = await cli("verify-consistency", join(dir, "c.json"), "--key", vkey)
    expect(consistent.code).toBe(0)
    expect(consistent.stdout).toMatch(/\d+ leaves are a prefix of \d+/)
    // A receipt against the saved checkpoint (say, the one published on Monday), not a new one.
    const oldSize = Number(size)
    const [againstOld, pastOld] = await Promise.all([
      cli(
        "prove",
        db,
        "--private-key",
        key,
        "--sequence",
        "3",
        "--checkpoint",
        join(dir, "old.txt"),
        "--out",
        join(dir, "r-old.json")
      ),
      cli("prove", db, "--private-key", key, "--sequence", String(oldSize), "--checkpoint", join(dir, "old.txt"))
    ])
    expect(againstOld.code).toBe(0)
    const oldReceipt = JSON.parse(readFileSync(join(dir, "r-old.json"), "utf8"))
    expect(oldReceipt.tree_size).toBe(oldSize)
    expect(oldReceipt.checkpoint).toBe(checkpoint.stdout)
    expect((await cli("verify-receipt", join(dir, "r-old.json"), "--key", vkey, "--allow-unsigned")).code).toBe(0)
    expect(pastOld.code).toBe(2)
    expect(pastOld.stderr).toContain("came after the checkpoint")
    const pinned = await cli("verify", db, "--checkpoint", join(dir, "old.txt"), "--checkpoint-key", vkey, "--json")
    expect(pinned.code).toBe(0)
    expect(JSON.parse(pinned.stdout).checkpoint).toMatchObject({ ok: true })

    // A rewritten or truncated ledger no longer extends the checkpoint.
    const sqlite = (statement: string) =>
      new Promise<void>((resolve, reject) =>
        execFile("node", [
          "-e",
          `const D=require(${JSON.stringify(join(process.cwd(), "node_modules/better-sqlite3"))});` +
          `new D(${JSON.stringify(db)}).exec(${JSON.stringify(statement)})`
        ], (error) => error === null ? resolve() : reject(error))
      )
    await sqlite("DELETE FROM signed_events WHERE sequence >= 2")
    const truncated = await cli("verify", db, "--checkpoint", join(dir, "old.txt"), "--checkpoint-key", vkey, "--json")
    expect(truncated.code).toBe(1)
    expect(JSON.parse(truncated.stdout).checkpoint.detail).toContain("truncated")
    // Nor is a receipt against that checkpoint made from the cut ledger.
    const cutReceipt = await cli(
      "prove",
      db,
      "--private-key",
      key,
      "--sequence",
      "1",
      "--checkpoint",
      join(dir, "old.txt")
    )
    expect(cutReceipt.code).toBe(1)
    expect(cutReceipt.stderr).toContain("truncated")
  }, 300_000)

  it("evidence bundles: rows, proofs and keys in one file that verifies offline; every forgery is caught", async () => {
    const db = join(dir, "bundled.db")
    const keyDir = join(dir, "bundle-keys")
    const demoed = await cli(
      "demo",
      "--db",
      db,
      "--sessions",
      "3",
      "--calls",
      "20",
      "--sign",
      "--key-dir",
      keyDir,
      "--session-out",
      join(dir, "s2.json")
    )
    expect(demoed.code).toBe(0)
    const key = join(keyDir, readdirSync(keyDir).find((f) => f.endsWith(".ed25519.pem") && !f.includes(".pub."))!)
    const vkey = (await cli("checkpoint", db, "--private-key", key, "--key")).stdout.trim()
    const bundleFile = join(dir, "bundle.json")
    const made = await cli("export", db, "--from", "2", "--to", "7", "--bundle", bundleFile, "--private-key", key)
    expect(made.code).toBe(0)
    expect(made.stderr).toContain("bundled rows 2..7")
    expect(made.stderr).not.toContain("warning")
    const bundle = JSON.parse(readFileSync(bundleFile, "utf8"))
    expect(bundle).toMatchObject({ format: EvidenceBundle.BUNDLE_FORMAT, from_sequence: 2, to_sequence: 7 })
    expect(bundle.rows).toHaveLength(6)
    expect(bundle.verifier_key).toBe(vkey)

    const verify = async (file: string, ...extra: ReadonlyArray<string>) => {
      const result = await cli("verify", file, "--json", ...extra)
      return { code: result.code, json: JSON.parse(result.stdout), stderr: result.stderr }
    }
    const ok = await verify(bundleFile, "--checkpoint-key", vkey)
    expect(ok.code).toBe(0)
    expect(ok.json).toMatchObject({
      kind: "evidence bundle",
      ok: true,
      keyPinned: true,
      proven: 6,
      complete: true,
      checkpoint: { ok: true, origin: "agent-ledger/bundled" },
      report: { signatures: { valid: 6, invalid: 0, unknownKey: 0 } }
    })
    // Without the auditor's key it is a usage error naming the flag (finding 5); with --trust-embedded-key it
    // checks with the bundle's own key, and says so.
    const anchorless = await cli("verify", bundleFile)
    expect(anchorless.code).toBe(2)
    expect(anchorless.stderr).toContain("--checkpoint-key")
    expect(anchorless.stderr).toContain("--trust-embedded-key")
    const unpinned = await cli("verify", bundleFile, "--trust-embedded-key")
    expect(unpinned.code).toBe(0)
    expect(unpinned.stdout).toContain("unpinned key")
    // The checkpoint made for the bundle is kept: a later consistency proof can start from it.
    writeFileSync(join(dir, "bundle-cp.txt"), bundle.checkpoint)
    const publicKey = key.replace(/\.pem$/, ".pub.pem")
    const against = ["--checkpoint", join(dir, "bundle-cp.txt"), "--checkpoint-key", vkey, "--public-key", publicKey]
    expect((await cli("verify", db, ...against)).code).toBe(0)

    const forge = async (name: string, change: (b: any) => void, ...extra: ReadonlyArray<string>) => {
      const copy = JSON.parse(JSON.stringify(bundle))
      change(copy)
      const file = join(dir, `${name}.json`)
      writeFileSync(file, JSON.stringify(copy))
      const result = await verify(file, "--checkpoint-key", vkey, ...extra)
      expect(result.code, name).toBe(1)
      expect(result.json.ok, name).toBe(false)
      return result.json
    }
    // Each forgery is verified by its own process, concurrently.
    const [rewritten, rehashed, stripped, dropped, swapped, resized, cut] = await Promise.all([
      forge("rewritten", (b) => (b.rows[2].row.agent_id = "someone-else")),
      // A rewritten row whose hashes were recomputed: its entry hash is no longer the tree's leaf.
      forge("rehashed", (b) => (b.rows[5].row.entry_hash = "ab".repeat(32))),
      forge(
        "stripped",
        (b) => Object.assign(b.rows[1].row, { signature: null, key_id: null, attest_level: "unsigned" })
      ),
      forge("dropped", (b) => b.rows.splice(3, 1)),
      forge("swapped", (b) => ([b.rows[1], b.rows[2]] = [b.rows[2], b.rows[1]])),
      forge("resized", (b) => (b.checkpoint = b.checkpoint.replace(/\n\d+\n/, "\n9999\n"))),
      forge("cut", (b) => (b.rows[0].inclusion_proof = b.rows[0].inclusion_proof.slice(1)))
    ])
    // Every signature, key id and public key stripped: the rows are the ledger's, but the key given is the
    // ledger's key, which signed none of them: rejected (finding 2).
    const allStripped = await forge("all-stripped", (b) => {
      b.public_keys = []
      for (const { row } of b.rows) Object.assign(row, { signature: null, key_id: null, attest_level: "unsigned" })
    })
    expect(allStripped.report.firstFailure).toMatchObject({ sequence: 2, kind: "downgrade" })
    expect(rewritten.report.firstFailure).toMatchObject({ sequence: 4, kind: "entryHash" })
    expect(rehashed.firstUnproven).toBe(7)
    expect(stripped.report.firstFailure).toMatchObject({ sequence: 3, kind: "downgrade" })
    expect(dropped.complete).toBe(false)
    expect(swapped.complete).toBe(false)
    expect(resized.checkpoint.ok).toBe(false)
    expect(resized.proven).toBe(0)
    expect(cut.firstUnproven).toBe(2)
    // The ledger's tools will not sign it with another key: the rows are not that key's (it signs only rows
    // it verified). A bundle re-signed by hand with another key (its own verifier key written in) fails the
    // auditor's key.
    const otherDir = join(dir, "bundle-other")
    expect((await cli("keygen", "--out", otherDir)).code).toBe(0)
    const otherPem = join(otherDir, "agent-ledger-ed25519.pem")
    const reSigned = await cli("export", db, "--bundle", join(dir, "x.json"), "--private-key", otherPem)
    expect(reSigned.code).toBe(1)
    expect(reSigned.stderr).toContain("unknownKey")
    const other = await Effect.runPromise(AuditSigner.loadPrivateKeyFile(otherPem))
    const text = bundle.checkpoint.slice(0, bundle.checkpoint.lastIndexOf("\n\n") + 1)
    const forgedFile = join(dir, "forged-bundle.json")
    writeFileSync(
      forgedFile,
      JSON.stringify({
        ...bundle,
        checkpoint: SignedNote.signNote(
          text,
          "agent-ledger/bundled",
          (b) => AuditSigner.signNote(other, b),
          other.publicKey
        ),
        verifier_key: SignedNote.verifierKey("agent-ledger/bundled", other.publicKey)
      })
    )
    const forged = await verify(forgedFile, "--checkpoint-key", vkey)
    expect(forged.code).toBe(1)
    expect(forged.json.checkpoint.ok).toBe(false)
    // With the bundle's own key it passes: which is why the key must come from the auditor (finding 5).
    expect((await verify(forgedFile, "--trust-embedded-key")).code).toBe(0)

    // Usage errors exit 2: no key to sign with, an empty range, a file that is not a bundle.
    writeFileSync(join(dir, "not-a-bundle.json"), JSON.stringify({ ...bundle, rows: "none" }))
    const usage = await Promise.all([
      cli("export", db, "--bundle", join(dir, "x.json")),
      cli("export", db, "--from", "100000", "--bundle", join(dir, "x.json"), "--private-key", key),
      cli("verify", join(dir, "not-a-bundle.json"), "--checkpoint-key", vkey)
    ])
    expect(usage.map((u) => u.code)).toEqual([2, 2, 2])
    expect(Either.isLeft(EvidenceBundle.verify({ ...bundle, extra: 1 }))).toBe(true)
  }, 300_000)

  it("the stored tree (merkle_nodes) agrees with the tree built from the rows, as the ledger grows", async () => {
    const filename = join(dir, "stored.db")
    const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
    let appended = 0
    for (const batch of [1, 2, 5, 8, 13, 31, 64, 3]) {
      await Effect.runPromise(
        Effect.gen(function*() {
          const queue = yield* AuditQueue
          for (let i = 0; i < batch; i++) yield* queue.submit(refusalEvent("stored", appended++))
          yield* queue.drainPending("10 seconds")
        }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, synchronous: "NORMAL" })))
      )
      await Effect.runPromise(
        Effect.gen(function*() {
          const memory = yield* LedgerTransparency.tree
          const size = yield* LedgerTransparency.extendStoredTree
          expect(size).toBe(appended)
          const stored = yield* LedgerTransparency.withStoredTree(size, (tree) => ({
            root: hex(tree.rootHash()),
            proofs: Array.from({ length: size }, (_, i) => tree.inclusionProof(i).map(hex)),
            consistency: Array.from({ length: size }, (_, m) => tree.consistencyProof(m + 1).map(hex))
          }))
          expect(stored.root).toBe(hex(memory.rootHash()))
          expect(stored.proofs).toEqual(Array.from({ length: size }, (_, i) => memory.inclusionProof(i).map(hex)))
          expect(stored.consistency).toEqual(
            Array.from({ length: size }, (_, m) => memory.consistencyProof(m + 1).map(hex))
          )
          // Only subtrees of 16 leaves and up are stored; every one of them, once.
          const { client } = yield* LedgerSql.LedgerSql
          const levels = yield* client<{ level: number; n: number }>`
            SELECT level, COUNT(*) AS n FROM merkle_nodes GROUP BY level ORDER BY level`
          expect(levels.map((l) => [Number(l.level), Number(l.n)])).toEqual(
            Array.from({ length: Math.max(0, Math.floor(Math.log2(size)) - 3) }, (_, i) => [
              i + LedgerTransparency.MIN_STORED_LEVEL,
              Math.floor(size / 2 ** (i + LedgerTransparency.MIN_STORED_LEVEL))
            ])
          )
        }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename })))
      )
    }
  }, 60_000)

  it("AuditLedger checkpoints: every interval on Clock, and a last one covering every flushed row", async () => {
    const filename = join(dir, "checkpointed.db")
    const signer = await Effect.runPromise(AuditSigner.generate)
    const origin = "example.org/agent-ledger/checkpointed"
    const notes = await Effect.runPromise(
      Effect.gen(function*() {
        yield* Effect.gen(function*() {
          const queue = yield* AuditQueue
          for (let i = 0; i < 5; i++) yield* queue.submit(refusalEvent("cp", i))
          yield* queue.drainPending("10 seconds")
          yield* TestClock.adjust("10 seconds") // the first checkpoint: 5 rows
          for (let i = 0; i < 10; i++) yield* TestClock.adjust("0 millis")
          for (let i = 5; i < 12; i++) yield* queue.submit(refusalEvent("cp", i))
        }).pipe(
          Effect.provide(AuditLedger.layerSqlite({
            filename,
            signer,
            synchronous: "NORMAL",
            checkpoints: { origin, every: "10 seconds" }
          }))
        )
        const { client } = yield* LedgerSql.LedgerSql
        return yield* client<
          { tree_size: number; note: string }
        >`SELECT tree_size, note FROM checkpoints ORDER BY tree_size`
      }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename })), Effect.provide(TestContext.TestContext))
    )
    expect(notes.map((n) => n.tree_size)).toEqual([5, 12])
    const verifier = Either.getOrThrow(SignedNote.parseVerifierKey(SignedNote.verifierKey(origin, signer.publicKey)))
    for (const { note, tree_size } of notes) {
      const text = Either.getOrThrow(SignedNote.verifyNote(note, verifier))
      expect(text.split("\n").slice(0, 2)).toEqual([origin, String(tree_size)])
    }
  }, 60_000)
})

describe("concurrent writers of checkpoints and the stored tree on one SQLite file", () => {
  it(
    "4 checkpoint and 4 prove --private-key processes at once: all succeed, every stored checkpoint and receipt verifies against the rows' tree",
    async () => {
      const filename = join(dir, "concurrent.db")
      const signer = await Effect.runPromise(AuditSigner.generate)
      const pem = join(dir, "concurrent-key.pem")
      writeFileSync(pem, AuditSigner.exportPem(signer).privateKeyPem)
      const rows = 3000
      await Effect.runPromise(
        Effect.gen(function*() {
          const queue = yield* AuditQueue
          for (let i = 0; i < rows; i++) yield* queue.submit(refusalEvent(`agent-${i % 5}`, i))
          expect(yield* queue.drainPending("60 seconds")).toBe(true)
        }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, signer, synchronous: "NORMAL" })))
      )
      // Each one reads the rows, builds and stores the tree, signs and stores a checkpoint: the stored tree is
      // empty, so every one of them writes it, and they start together.
      const proveOrigin = "example.org/proves"
      const runs = await Promise.all([
        ...[1, 2, 3, 4].map((n) => cli("checkpoint", filename, "--private-key", pem, "--origin", `example.org/c${n}`)),
        ...[1, 2, 3, 4].map((n) =>
          cli(
            "prove",
            filename,
            "--private-key",
            pem,
            "--origin",
            proveOrigin,
            "--sequence",
            String(n * 700),
            "--out",
            join(dir, `concurrent-receipt-${n}.json`)
          )
        )
      ])
      runs.forEach((run, i) => expect(run.code, `run ${i}: ${run.stderr}`).toBe(0))

      const { root, stored, proof } = await Effect.runPromise(
        Effect.gen(function*() {
          const tree = yield* LedgerTransparency.tree
          const root = tree.rootHash()
          const stored = yield* LedgerTransparency.storedCheckpoints()
          // The stored subtrees are the rows' own: a proof from them holds with nothing to repair.
          const [row] = yield* (yield* LedgerSql.LedgerSql).client<{ sequence: number; entry_hash: string }>`
          SELECT sequence, entry_hash FROM signed_events WHERE sequence = 1234`
          const proof = yield* LedgerTransparency.inclusionProofs(
            [{ sequence: row!.sequence, entryHash: row!.entry_hash }],
            rows,
            root
          )
          return { root, stored, proof }
        }).pipe(Effect.provide(LedgerSql.layerSqlite({ filename })))
      )
      expect(proof.repaired).toEqual([])
      const origins = [1, 2, 3, 4].map((n) => `example.org/c${n}`).concat(proveOrigin)
      expect(stored.map((c) => c.origin).sort()).toEqual([...origins].sort())
      for (const checkpoint of stored) {
        const verifier = Either.getOrThrow(
          SignedNote.parseVerifierKey(SignedNote.verifierKey(checkpoint.origin, signer.publicKey))
        )
        const verified = Either.getOrThrow(LedgerTransparency.checkpointOf(checkpoint.note, verifier))
        expect(verified.treeSize).toBe(rows)
        expect(Buffer.from(verified.rootHash).equals(Buffer.from(root))).toBe(true)
      }
      // What each checkpoint process printed is the stored note of its origin.
      runs.slice(0, 4).forEach((run, i) =>
        expect(run.stdout.trimEnd()).toBe(stored.find((c) => c.origin === origins[i])!.note.trimEnd())
      )
      const proveKey = SignedNote.verifierKey(proveOrigin, signer.publicKey)
      for (const n of [1, 2, 3, 4]) {
        const receipt = JSON.parse(readFileSync(join(dir, `concurrent-receipt-${n}.json`), "utf8"))
        expect(Either.isRight(LedgerTransparency.verifyReceipt(receipt, proveKey))).toBe(true)
        expect(receipt.row.sequence).toBe(n * 700)
      }
    },
    120_000
  )
})
