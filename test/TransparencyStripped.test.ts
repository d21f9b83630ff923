/**
 * The key signs only rows signed by it (or by an accepted previous key) since its last checkpoint; unsigned
 * rows only when the operator adopts them (docs/OPERATIONS.md, "Threat model"). A writer without the key who
 * strips every row signature makes the ledger look unsigned: without this rule, `checkpoint` then signed
 * made-up unsigned rows appended after the last checkpoint. Library and CLI, on SQLite and on PostgreSQL
 * when `AGENT_LEDGER_PG_URL` is set; rotated keys and the layer's checkpointer on SQLite.
 */
import { Effect, Either, Exit, Logger } from "effect"
import { execFile } from "node:child_process"
import { createHash } from "node:crypto"
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
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-stripped-"))
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

let files = 0
const keyFiles = (signer: AuditSigner.AuditSigner) => {
  const pem = AuditSigner.exportPem(signer)
  const privateKey = join(dir, `key-${files}.pem`)
  const publicKey = join(dir, `key-${files++}.pub.pem`)
  writeFileSync(privateKey, pem.privateKeyPem)
  writeFileSync(publicKey, pem.publicKeyPem)
  return { privateKey, publicKey }
}

/** A ledger at `db` and what its operator and a keyless writer do to it. */
const ledgerAt = (db: string) => {
  const origin = LedgerTransparency.defaultOrigin(db)
  let appended = 0
  const run = <A, E>(effect: Effect.Effect<A, E, LedgerSql.LedgerSql>) =>
    Effect.runPromise(Effect.provide(effect, LedgerSql.layerFor(db)) as Effect.Effect<A, unknown>)
  const runExit = <A, E>(effect: Effect.Effect<A, E, LedgerSql.LedgerSql>) =>
    Effect.runPromiseExit(Effect.provide(effect, LedgerSql.layerFor(db)))
  /** `count` events through the ledger's own writer, signed by `signer` (none: unsigned). */
  const append = (count: number, signer?: AuditSigner.AuditSigner, options: Partial<AuditLedger.SqliteOptions> = {}) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const queue = yield* AuditQueue
        for (let i = 0; i < count; i++) yield* queue.submit(refusalEvent("stripped", appended++))
        yield* queue.drainPending("10 seconds")
      }).pipe(
        Effect.provide(AuditLedger.layerFor(db, { signer, synchronous: "NORMAL", writerThread: false, ...options })),
        Effect.provide(Logger.remove(Logger.defaultLogger))
      )
    )
  const sql = (statement: string) => run(Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => client.unsafe(statement)))
  const stripAll = () => sql(`UPDATE signed_events SET signature = NULL, key_id = NULL, attest_level = 'unsigned'`)
  /** Unsigned rows the keyless writer makes up, chained onto the head. */
  const fabricate = async (count: number) => {
    const [head] = await sql(`SELECT sequence, entry_hash FROM signed_events ORDER BY sequence DESC LIMIT 1`) as Array<
      { sequence: number; entry_hash: string }
    >
    let prev = head!.entry_hash
    for (let i = 0; i < count; i++) {
      const sequence = Number(head!.sequence) + 1 + i
      const payload = JSON.stringify({ fabricated: sequence })
      const row = {
        id: `fabricated-${sequence}`,
        sequence,
        agent_id: "mallory",
        event_type: "refusal",
        payload,
        payload_hash: createHash("sha256").update(payload).digest("hex"),
        prev_hash: prev,
        timestamp: "2026-11-24T06:52:03.120Z"
      }
      const entry_hash = rowEntryHash({
        sequence,
        prevHash: prev,
        id: row.id,
        agentId: row.agent_id,
        eventType: row.event_type,
        payloadHash: row.payload_hash,
        timestamp: row.timestamp
      })
      await run(
        Effect.flatMap(
          LedgerSql.LedgerSql,
          ({ client }) =>
            client.withoutTransforms()`INSERT INTO signed_events ${
              client.insert({
                ...row,
                entry_hash,
                signature: null,
                key_id: null,
                attest_level: "unsigned",
                appended_at: row.timestamp
              })
            }`
        )
      )
      prev = entry_hash
    }
  }
  const checkpoint = (signer: AuditSigner.AuditSigner, options: LedgerTransparency.SignOptions = {}) =>
    runExit(LedgerTransparency.checkpointNow(origin, signer, options))
  const storedSizes = () =>
    run(Effect.map(LedgerTransparency.storedCheckpoints({ origin }), (stored) => stored.map((c) => c.treeSize)))
  return { db, origin, append, sql, stripAll, fabricate, checkpoint, storedSizes, runExit }
}

const refusalOf = (exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return "signed"
  const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  return failure instanceof LedgerTransparency.TransparencyRefusal
    ? { reason: failure.reason, sequence: failure.sequence }
    : String(exit.cause)
}

const scenarios = (target: () => { readonly db: string; readonly drop?: () => void }) => {
  const withLedger = async (body: (ledger: ReturnType<typeof ledgerAt>) => Promise<void>) => {
    const { db, drop } = target()
    try {
      await body(ledgerAt(db))
    } finally {
      drop?.()
    }
  }

  it("every signature stripped, made-up unsigned rows appended: nothing signed (library, bundle, CLI)", {
    timeout: 120_000
  }, () =>
    withLedger(async (ledger) => {
      const signer = await Effect.runPromise(AuditSigner.generate)
      const { privateKey } = keyFiles(signer)
      await ledger.append(6, signer)
      expect(Exit.isSuccess(await ledger.checkpoint(signer))).toBe(true)
      await ledger.append(3, signer)
      // The keyless writer: no row carries a signature any more, and two made-up rows follow.
      await ledger.stripAll()
      await ledger.fabricate(2)
      // Before: the ledger looked unsigned and the key signed rows 6..10, two of them made up.
      expect(refusalOf(await ledger.checkpoint(signer))).toEqual({ reason: "unsignedRow", sequence: 6 })
      expect(
        refusalOf(await ledger.runExit(EvidenceBundle.make({ origin: ledger.origin, signer, from: 9, to: 10 })))
      ).toEqual({ reason: "unsignedRow", sequence: 6 })
      const [refused, proved] = await Promise.all([
        cli("checkpoint", ledger.db, "--private-key", privateKey),
        cli("prove", ledger.db, "--private-key", privateKey, "--sequence", "10")
      ])
      expect(refused.code).toBe(1)
      expect(refused.stdout).toBe("")
      expect(refused.stderr).toContain("the row at sequence 6 is unsigned (5 unsigned rows in 6..10")
      expect(refused.stderr).toContain("--adopt-unsigned-rows")
      expect(proved.code).toBe(1)
      expect(await ledger.storedSizes()).toEqual([6])
    }))

  it("a ledger with every signature stripped before its first checkpoint: refused at row 0", {
    timeout: 120_000
  }, () =>
    withLedger(async (ledger) => {
      const signer = await Effect.runPromise(AuditSigner.generate)
      await ledger.append(4, signer)
      await ledger.stripAll()
      await ledger.fabricate(1)
      expect(refusalOf(await ledger.checkpoint(signer))).toEqual({ reason: "unsignedRow", sequence: 0 })
      expect(await ledger.storedSizes()).toEqual([])
    }))

  it("a ledger that ran unsigned, then got a key: adopted once, explicitly; later unsigned rows refused again", {
    timeout: 120_000
  }, () =>
    withLedger(async (ledger) => {
      const signer = await Effect.runPromise(AuditSigner.generate)
      await ledger.append(4)
      await ledger.append(3, signer)
      expect(refusalOf(await ledger.checkpoint(signer))).toEqual({ reason: "unsignedRow", sequence: 0 })
      const adopted = await ledger.checkpoint(signer, { adoptUnsignedRows: true })
      expect(Exit.isSuccess(adopted) && adopted.value).toMatchObject({
        size: 7,
        adopted: { count: 4, first: 0, last: 3 }
      })
      // Signed rows after it need no adoption, and none is reported.
      await ledger.append(2, signer)
      const signed = await ledger.checkpoint(signer)
      expect(Exit.isSuccess(signed) && signed.value).toMatchObject({ size: 9, adopted: undefined })
      // A mix: the writer ran without its key for one row, between signed ones.
      await ledger.append(1)
      await ledger.append(1, signer)
      expect(refusalOf(await ledger.checkpoint(signer))).toEqual({ reason: "unsignedRow", sequence: 9 })
      const mixed = await ledger.checkpoint(signer, { adoptUnsignedRows: true })
      expect(Exit.isSuccess(mixed) && mixed.value).toMatchObject({ size: 11, adopted: { count: 1, first: 9, last: 9 } })
      expect(await ledger.storedSizes()).toEqual([11, 9, 7])
    }))
}

let counter = 0
describe("a keyless writer strips every signature (SQLite)", () => {
  scenarios(() => ({ db: join(dir, `stripped-${counter++}.db`) }))
})

describe.skipIf(noPostgres)("a keyless writer strips every signature (PostgreSQL)", () => {
  scenarios(() => {
    const fresh = freshDatabase()
    return { db: fresh.url, drop: fresh.drop }
  })
})

describe("rotated keys and the layer's checkpointer", () => {
  it("rows signed by a previous key count only when it is accepted (library, checkpoint, prove, verify-receipt)", {
    timeout: 180_000
  }, async () => {
    const ledger = ledgerAt(join(dir, `rotated-${counter++}.db`))
    const [old, current, stranger] = await Effect.runPromise(
      Effect.all([AuditSigner.generate, AuditSigner.generate, AuditSigner.generate])
    )
    const oldFiles = keyFiles(old)
    const currentFiles = keyFiles(current)
    const strangerFiles = keyFiles(stranger)
    await ledger.append(3, old)
    await ledger.append(3, current)
    expect(refusalOf(await ledger.checkpoint(current))).toEqual({ reason: "unverifiedRow", sequence: 0 })
    expect(refusalOf(await ledger.checkpoint(current, { publicKeys: [stranger.publicKey] }))).toEqual({
      reason: "unverifiedRow",
      sequence: 0
    })
    // One after the other: once the accepted run has stored its checkpoint, later runs start from it.
    const cliRefused = await cli("checkpoint", ledger.db, "--private-key", currentFiles.privateKey)
    const [accepted] = await Promise.all([
      cli(
        "checkpoint",
        ledger.db,
        "--private-key",
        currentFiles.privateKey,
        "--accept-key",
        strangerFiles.publicKey,
        "--accept-key",
        oldFiles.publicKey
      )
    ])
    expect(cliRefused.code).toBe(1)
    expect(cliRefused.stderr).toContain("the row at sequence 0 does not verify (unknownKey")
    expect(accepted.code).toBe(0)
    expect(accepted.stdout.split("\n")[1]).toBe("6")
    // A receipt for a row the old key signed, against the current key's checkpoint.
    const receipt = join(dir, "rotated-receipt.json")
    const proveOld = (out: string, ...extra: ReadonlyArray<string>) =>
      cli("prove", ledger.db, "--private-key", currentFiles.privateKey, "--sequence", "1", "--out", out, ...extra)
    const [unaccepted, proven] = await Promise.all([
      proveOld(join(dir, "never-written.json")),
      proveOld(receipt, "--accept-key", oldFiles.publicKey)
    ])
    expect(unaccepted.code).toBe(1)
    expect(proven.code).toBe(0)
    const vkey = SignedNote.verifierKey(ledger.origin, current.publicKey)
    const [plain, strangerOnly, oldAccepted] = await Promise.all([
      cli("verify-receipt", receipt, "--key", vkey),
      cli("verify-receipt", receipt, "--key", vkey, "--accept-key", strangerFiles.publicKey),
      cli("verify-receipt", receipt, "--key", vkey, "--accept-key", oldFiles.publicKey)
    ])
    expect(plain.code).toBe(1)
    expect(plain.stdout).toContain("rowSignature")
    expect(strangerOnly.code).toBe(1)
    expect(oldAccepted.code).toBe(0)
    // The library call, and a forged signature by the accepted key that still fails.
    const parsed = JSON.parse(readFileSync(receipt, "utf8"))
    expect(Either.isRight(LedgerTransparency.verifyReceipt(parsed, vkey, { publicKeys: [old.publicKey] }))).toBe(true)
    const forged = { ...parsed, row: { ...parsed.row, signature: "00".repeat(64) } }
    expect(LedgerTransparency.verifyReceipt(forged, vkey, { publicKeys: [old.publicKey] })).toMatchObject({
      left: { reason: "rowSignature" }
    })
  })

  it("the layer's checkpointer never adopts unsigned rows; with no signer it makes no checkpoint", {
    timeout: 120_000
  }, async () => {
    const ledger = ledgerAt(join(dir, `layer-${counter++}.db`))
    const signer = await Effect.runPromise(AuditSigner.generate)
    const checkpoints = { origin: ledger.origin, every: "1 hour" as const }
    // Checkpoints configured without a signer: none made, rows unsigned.
    await ledger.append(3, undefined, { checkpoints })
    expect(await ledger.storedSizes()).toEqual([])
    // With the key now: the unsigned rows before it are refused (logged), nothing signed.
    await ledger.append(2, signer, { checkpoints })
    expect(await ledger.storedSizes()).toEqual([])
    // The operator adopts them once; from then on the layer's checkpoints go on by themselves.
    const adopted = await ledger.checkpoint(signer, { adoptUnsignedRows: true })
    expect(Exit.isSuccess(adopted) && adopted.value.adopted).toEqual({ count: 3, first: 0, last: 2 })
    await ledger.append(2, signer, { checkpoints })
    expect(await ledger.storedSizes()).toEqual([7, 5])
    // The key rotated: the layer's checkpoints cover the new key's rows over the old key's once it is accepted.
    const next = await Effect.runPromise(AuditSigner.generate)
    await ledger.append(1, next, { checkpoints })
    expect(await ledger.storedSizes()).toEqual([7, 5])
    await ledger.append(1, next, { checkpoints: { ...checkpoints, publicKeys: [signer.publicKey] } })
    expect(await ledger.storedSizes()).toEqual([9, 7, 5])
  })
})
