/**
 * The verifiers' contract, run in-process through the CLI's own `run`: one exit-code rule for every verifier
 * (0 verified, 1 evidence rejected, 2 unusable input or usage), a trust anchor required by default
 * (`--checkpoint-key`, or an explicit `--trust-embedded-key`), the checkpoint's origin checked against the
 * key's name, and proof hashes read as strict standard base64 (vectors).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import Database from "better-sqlite3"
import { Effect, Either, Schedule } from "effect"
import { execFile } from "node:child_process"
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { AuditQueue } from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { run } from "../src/cli/Cli.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { refusalEvent } from "./fixtures/events.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-verifiers-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const path = (name: string) => join(dir, name)

/** The CLI in this process: its exit code (what it prints goes to the test's output). */
const cli = (...args: ReadonlyArray<string>) =>
  Effect.runPromise(run(["node", "agent-ledger", ...args]).pipe(Effect.provide(NodeContext.layer)))

const writeJson = (name: string, value: unknown) => {
  writeFileSync(path(name), JSON.stringify(value))
  return path(name)
}

const writeText = (name: string, text: string) => {
  writeFileSync(path(name), text)
  return path(name)
}

const db = path("ledger.db")
let signer: AuditSigner.AuditSigner
let other: AuditSigner.AuditSigner
let vkey: string
let otherKey: string
let receipt: any
let consistency: any
let bundle: any
const origin = "agent-ledger/ledger"

beforeAll(async () => {
  signer = await Effect.runPromise(AuditSigner.generate)
  other = await Effect.runPromise(AuditSigner.generate)
  writeFileSync(path("key.pem"), AuditSigner.exportPem(signer).privateKeyPem)
  writeFileSync(path("other.pem"), AuditSigner.exportPem(other).privateKeyPem)
  writeFileSync(path("key.pub.pem"), AuditSigner.exportPem(signer).publicKeyPem)
  vkey = SignedNote.verifierKey(origin, signer.publicKey)
  otherKey = SignedNote.verifierKey(origin, other.publicKey)
  const append = (from: number, count: number) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const queue = yield* AuditQueue
        for (let i = from; i < from + count; i++) yield* queue.submit(refusalEvent("verifiers", i))
        yield* queue.drainPending("10 seconds")
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename: db, signer, synchronous: "NORMAL" })))
    )
  await append(0, 20)
  expect(await cli("prove", db, "--private-key", path("key.pem"), "--sequence", "0", "--out", path("r0.json")))
    .toBe(0)
  await append(20, 13)
  expect(await cli("checkpoint", db, "--private-key", path("key.pem"))).toBe(0)
  expect(await cli("prove", db, "--private-key", path("key.pem"), "--sequence", "5", "--out", path("receipt.json")))
    .toBe(0)
  receipt = JSON.parse(readFileSync(path("receipt.json"), "utf8"))
  writeFileSync(path("old.txt"), JSON.parse(readFileSync(path("r0.json"), "utf8")).checkpoint)
  expect(
    await cli("prove", db, "--private-key", path("key.pem"), "--consistency", path("old.txt"), "--out", path("c.json"))
  )
    .toBe(0)
  consistency = JSON.parse(readFileSync(path("c.json"), "utf8"))
  expect(
    await cli(
      "export",
      db,
      "--from",
      "2",
      "--to",
      "9",
      "--bundle",
      path("bundle.json"),
      "--private-key",
      path("key.pem")
    )
  ).toBe(0)
  bundle = JSON.parse(readFileSync(path("bundle.json"), "utf8"))
}, 300_000)

/** A hash of the proof rewritten: URL-safe alphabet, or padding dropped. */
const urlSafe = (hash: string) => hash.replace(/\+/g, "-").replace(/\//g, "_")
const unpadded = (hash: string) => hash.replace(/=+$/, "")
/** A proof hash with `+` or `/` (so its URL-safe spelling differs), from `list`. */
const respellable = (list: ReadonlyArray<string>) => list.findIndex((h) => /[+/]/.test(h))

describe("verify-receipt and verify-consistency: 0 verified, 1 rejected, 2 unusable", () => {
  it("verify-receipt", async () => {
    const at = respellable(receipt.inclusion_proof)
    expect(at).toBeGreaterThanOrEqual(0)
    const respelled = (f: (h: string) => string) => ({
      ...receipt,
      inclusion_proof: receipt.inclusion_proof.map((h: string, i: number) => i === at ? f(h) : h)
    })
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, number]> = [
      ["verified", [path("receipt.json"), "--key", vkey], 0],
      [
        "row rewritten",
        [writeJson("r1.json", { ...receipt, row: { ...receipt.row, agent_id: "x" } }), "--key", vkey],
        1
      ],
      [
        "row signature forged",
        [writeJson("r2.json", { ...receipt, row: { ...receipt.row, signature: "ab".repeat(64) } }), "--key", vkey],
        1
      ],
      ["another key", [path("receipt.json"), "--key", otherKey], 1],
      ["proof hash dropped", [
        writeJson("r3.json", { ...receipt, inclusion_proof: receipt.inclusion_proof.slice(1) }),
        "--key",
        vkey
      ], 1],
      ["URL-safe proof hash", [writeJson("r4.json", respelled(urlSafe)), "--key", vkey], 2],
      ["unpadded proof hash", [writeJson("r5.json", respelled(unpadded)), "--key", vkey], 2],
      ["not JSON", [writeText("r6.json", "{"), "--key", vkey], 2],
      ["not a receipt", [writeJson("r7.json", { format: "x" }), "--key", vkey], 2],
      ["a bad key", [path("receipt.json"), "--key", "not-a-key"], 2],
      ["no such file", [path("missing.json"), "--key", vkey], 2],
      ["no key", [path("receipt.json")], 2]
    ]
    const codes: Array<number> = []
    for (const [, args] of cases) codes.push(await cli("verify-receipt", ...args))
    expect(Object.fromEntries(cases.map(([name], i) => [name, codes[i]]))).toEqual(
      Object.fromEntries(cases.map(([name, , code]) => [name, code]))
    )
  })

  it("verify-consistency", async () => {
    const at = respellable(consistency.proof)
    const respelled = (f: (h: string) => string) => ({
      ...consistency,
      proof: consistency.proof.map((h: string, i: number) => i === at ? f(h) : h)
    })
    const flipped = Buffer.from(consistency.proof[0], "base64")
    flipped[0] = flipped[0]! ^ 1
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, number]> = [
      ["verified", [path("c.json"), "--key", vkey], 0],
      [
        "proof hash changed",
        [
          writeJson("c1.json", { ...consistency, proof: [flipped.toString("base64"), ...consistency.proof.slice(1)] }),
          "--key",
          vkey
        ],
        1
      ],
      ["another key", [path("c.json"), "--key", otherKey], 1],
      ...(at >= 0
        ? [["URL-safe proof hash", [writeJson("c2.json", respelled(urlSafe)), "--key", vkey], 2] as const]
        : []),
      ["unpadded proof hash", [writeJson("c3.json", respelled(unpadded)), "--key", vkey], 2],
      ["not a proof", [writeJson("c4.json", []), "--key", vkey], 2]
    ]
    const codes: Array<number> = []
    for (const [, args] of cases) codes.push(await cli("verify-consistency", ...args))
    expect(Object.fromEntries(cases.map(([name], i) => [name, codes[i]]))).toEqual(
      Object.fromEntries(cases.map(([name, , code]) => [name, code]))
    )
  })
})

describe("verify: evidence needs a trust anchor; a checkpoint of another key or log is rejected", () => {
  it("evidence bundles", async () => {
    const stripped = structuredClone(bundle)
    stripped.public_keys = []
    for (const { row } of stripped.rows) Object.assign(row, { signature: null, key_id: null, attest_level: "unsigned" })
    const respelled = structuredClone(bundle)
    respelled.rows[0].inclusion_proof = respelled.rows[0].inclusion_proof.map(unpadded)
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, number]> = [
      ["verified", [path("bundle.json"), "--checkpoint-key", vkey], 0],
      ["no key", [path("bundle.json")], 2],
      ["the bundle's own key, explicitly", [path("bundle.json"), "--trust-embedded-key"], 0],
      ["another key", [path("bundle.json"), "--checkpoint-key", otherKey], 1],
      ["every signature and key stripped", [writeJson("b1.json", stripped), "--checkpoint-key", vkey], 1],
      ["stripped, with the bundle's own key", [writeJson("b1.json", stripped), "--trust-embedded-key"], 1],
      ["unpadded proof hashes", [writeJson("b2.json", respelled), "--checkpoint-key", vkey], 2],
      ["not a bundle", [writeJson("b3.json", { ...bundle, rows: 1 }), "--checkpoint-key", vkey], 2]
    ]
    const codes: Array<number> = []
    for (const [, args] of cases) codes.push(await cli("verify", ...args))
    expect(Object.fromEntries(cases.map(([name], i) => [name, codes[i]]))).toEqual(
      Object.fromEntries(cases.map(([name, , code]) => [name, code]))
    )
  })

  it("a database against a saved checkpoint", async () => {
    const saved = readFileSync(path("old.txt"), "utf8")
    const [, size, root] = saved.split("\n")
    // Signed by the ledger's key, under its name, but for another log: the origin is not the key's name.
    const elsewhere = SignedNote.signNote(
      SignedNote.formatCheckpoint({
        origin: "example.org/another-log",
        treeSize: Number(size),
        rootHash: Buffer.from(root!, "base64")
      }),
      origin,
      (bytes) => AuditSigner.signNote(signer, bytes),
      signer.publicKey
    )
    writeFileSync(path("elsewhere.txt"), elsewhere)
    writeFileSync(path("garbage.txt"), "not a checkpoint\n")
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, number]> = [
      ["verified", ["--checkpoint", path("old.txt"), "--checkpoint-key", vkey], 0],
      ["no key", ["--checkpoint", path("old.txt")], 2],
      ["its text, explicitly unsigned", ["--checkpoint", path("old.txt"), "--trust-embedded-key"], 0],
      ["another key", ["--checkpoint", path("old.txt"), "--checkpoint-key", otherKey], 1],
      ["another log's origin", ["--checkpoint", path("elsewhere.txt"), "--checkpoint-key", vkey], 1],
      ["not a checkpoint", ["--checkpoint", path("garbage.txt"), "--checkpoint-key", vkey], 2],
      ["a bad key", ["--checkpoint", path("old.txt"), "--checkpoint-key", "nope"], 2]
    ]
    const codes: Array<number> = []
    for (const [, args] of cases) codes.push(await cli("verify", db, "--public-key", path("key.pub.pem"), ...args))
    expect(Object.fromEntries(cases.map(([name], i) => [name, codes[i]]))).toEqual(
      Object.fromEntries(cases.map(([name, , code]) => [name, code]))
    )
  })
})

describe("proof hashes: strict standard base64 (docs/FORMAT.md)", () => {
  const hash = Buffer.alloc(32, 0xfb) // base64 "+/v7…" : both alphabets' differing characters
  const standard = hash.toString("base64")
  it.each([
    ["standard, padded", standard, true],
    ["URL-safe alphabet", hash.toString("base64url") + "=", false],
    ["URL-safe, unpadded (base64url)", hash.toString("base64url"), false],
    ["unpadded", standard.slice(0, -1), false],
    ["padding doubled", `${standard}=`, false],
    ["non-canonical last character", `${standard.slice(0, -2)}9=`, false],
    ["whitespace", ` ${standard}`, false],
    ["line break", `${standard.slice(0, 20)}\n${standard.slice(20)}`, false],
    ["31 bytes", Buffer.alloc(31, 1).toString("base64"), false],
    ["33 bytes", Buffer.alloc(33, 1).toString("base64"), false]
  ])("%s", (_, text, ok) => {
    expect(LedgerTransparency.decodeHash(text) !== undefined).toBe(ok)
    expect(Either.isRight(LedgerTransparency.decodeHashes([standard, text]))).toBe(ok)
  })

  it("a signature line in URL-safe or unpadded base64 is a malformed note", () => {
    const note = readFileSync(path("old.txt"), "utf8")
    const verifier = Either.getOrThrow(SignedNote.parseVerifierKey(vkey))
    expect(Either.isRight(SignedNote.verifyNote(note, verifier))).toBe(true)
    const line = note.trimEnd().split("\n").at(-1)!
    const signature = line.split(" ").at(-1)!
    for (const respelled of [unpadded(signature), urlSafe(signature)]) {
      if (respelled === signature) continue
      const result = SignedNote.verifyNote(note.replace(signature, respelled), verifier)
      expect(Either.isLeft(result) && result.left.reason).toBe("malformed")
    }
  })
})

describe("read-only proofs, stored checkpoints, the ledger's own origin", () => {
  const onDb = <A, E>(file: string, effect: Effect.Effect<A, E, LedgerSql.LedgerSql>) =>
    Effect.runPromise(Effect.provide(effect, LedgerSql.layerSqlite({ filename: file })) as Effect.Effect<A, unknown>)
  const storedSizes = () =>
    onDb(db, Effect.map(LedgerTransparency.storedCheckpoints(), (list) => list.map((c) => c.treeSize)))

  it("prove against a saved or stored checkpoint without the private key: nothing is signed", async () => {
    const before = await storedSizes()
    expect(before).toEqual([33, 20])
    const receiptAt = (name: string) => JSON.parse(readFileSync(path(name), "utf8"))
    expect(
      await cli(
        "prove",
        db,
        "--sequence",
        "7",
        "--stored-checkpoint",
        "latest",
        "--key",
        vkey,
        "--out",
        path("ro1.json")
      )
    )
      .toBe(0)
    expect(receiptAt("ro1.json").tree_size).toBe(33)
    expect(
      await cli("prove", db, "--sequence", "7", "--stored-checkpoint", "20", "--key", vkey, "--out", path("ro2.json"))
    )
      .toBe(0)
    expect(receiptAt("ro2.json").tree_size).toBe(20)
    // A saved file and no key at all: its signature is not checked here, the proof against its root is.
    expect(await cli("prove", db, "--sequence", "3", "--checkpoint", path("old.txt"), "--out", path("ro3.json"))).toBe(
      0
    )
    expect(
      await cli(
        "prove",
        db,
        "--consistency",
        path("old.txt"),
        "--stored-checkpoint",
        "latest",
        "--key",
        vkey,
        "--out",
        path("ro4.json")
      )
    ).toBe(0)
    const verified = await Promise.all([
      cli("verify-receipt", path("ro1.json"), "--key", vkey),
      cli("verify-receipt", path("ro2.json"), "--key", vkey),
      cli("verify-receipt", path("ro3.json"), "--key", vkey),
      cli("verify-consistency", path("ro4.json"), "--key", vkey)
    ])
    expect(verified).toEqual([0, 0, 0, 0])
    expect(await storedSizes()).toEqual(before)
    // Usage: nothing to prove against, a size never checkpointed, both sources: exit 2.
    expect(await cli("prove", db, "--sequence", "3")).toBe(2)
    expect(await cli("prove", db, "--sequence", "3", "--stored-checkpoint", "21", "--key", vkey)).toBe(2)
    expect(await cli("prove", db, "--sequence", "3", "--stored-checkpoint", "20", "--checkpoint", path("old.txt")))
      .toBe(2)
    // Another key's view of the stored checkpoint: rejected (exit 1), nothing written.
    expect(await cli("prove", db, "--sequence", "3", "--stored-checkpoint", "latest", "--key", otherKey)).toBe(1)
  })

  it("a checkpoint planted in the table: listed as not signed, refused as a proof target, skipped as an anchor", async () => {
    const [, size, root] = readFileSync(path("old.txt"), "utf8").split("\n")
    const planted = SignedNote.signNote(
      SignedNote.formatCheckpoint({ origin, treeSize: 40, rootHash: Buffer.from(root!, "base64") }),
      origin,
      (bytes) => AuditSigner.signNote(other, bytes),
      other.publicKey
    )
    expect(size).toBe("20")
    await onDb(
      db,
      Effect.flatMap(
        LedgerSql.LedgerSql,
        ({ client }) =>
          client`INSERT INTO checkpoints (origin, tree_size, note, created_at) VALUES (${origin}, 40, ${planted}, 'x')`
      )
    )
    const listed = await new Promise<string>((resolve) =>
      execFile(
        process.execPath,
        [cliBundle, "checkpoints", db, "--key", vkey, "--json"],
        (_, stdout) => resolve(stdout)
      )
    )
    expect(JSON.parse(listed).map((c: { treeSize: number; signed: boolean }) => [c.treeSize, c.signed])).toEqual([
      [40, false],
      [33, true],
      [20, true]
    ])
    expect(await cli("prove", db, "--sequence", "3", "--stored-checkpoint", "latest", "--key", vkey)).toBe(1)
    // The key holder's next checkpoint does not take it as its last one (it would be "truncated"): it is skipped.
    expect(await cli("checkpoint", db, "--private-key", path("key.pem"))).toBe(0)
  })

  it("the default origin is kept by the first checkpoint: renaming or copying the file does not change it", async () => {
    const named = path("named.db")
    await Effect.runPromise(
      Effect.gen(function*() {
        const queue = yield* AuditQueue
        for (let i = 0; i < 3; i++) yield* queue.submit(refusalEvent("named", i))
        yield* queue.drainPending("10 seconds")
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename: named, signer, synchronous: "NORMAL" })))
    )
    // Before any checkpoint it follows the file's name.
    expect(await onDb(named, LedgerTransparency.originOf(named))).toBe("agent-ledger/named")
    expect(await cli("prove", named, "--private-key", path("key.pem"), "--sequence", "0", "--out", path("n0.json")))
      .toBe(0)
    copyFileSync(named, path("renamed.db"))
    expect(await onDb(path("renamed.db"), LedgerTransparency.originOf(path("renamed.db")))).toBe("agent-ledger/named")
    expect(
      await cli(
        "prove",
        path("renamed.db"),
        "--private-key",
        path("key.pem"),
        "--sequence",
        "1",
        "--out",
        path("n1.json")
      )
    ).toBe(0)
    const checkpointOf = (file: string) => JSON.parse(readFileSync(path(file), "utf8")).checkpoint as string
    expect(checkpointOf("n1.json").split("\n")[0]).toBe("agent-ledger/named")
    // The auditor's one verifier key checks receipts from both files.
    const namedKey = SignedNote.verifierKey("agent-ledger/named", signer.publicKey)
    expect(await cli("verify-receipt", path("n0.json"), "--key", namedKey)).toBe(0)
    expect(await cli("verify-receipt", path("n1.json"), "--key", namedKey)).toBe(0)
  })
})

describe("a checkpoint writer that cannot get the write lock", () => {
  it("retries on its busy schedule, then fails with LedgerBusy and stores nothing; once the lock is free it succeeds", async () => {
    const filename = path("busy.db")
    const signer = await Effect.runPromise(AuditSigner.generate)
    await Effect.runPromise(
      Effect.gen(function*() {
        const queue = yield* AuditQueue
        for (let i = 0; i < 20; i++) yield* queue.submit(refusalEvent("busy", i))
        yield* queue.drainPending("10 seconds")
      }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, signer, synchronous: "NORMAL" })))
    )
    // Another writer holds the lock (a connection of its own, as another process would).
    const holder = new Database(filename)
    holder.exec("BEGIN IMMEDIATE")
    const checkpoint = LedgerTransparency.checkpointNow("example.org/busy", signer, {
      busyRetrySchedule: Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(2)))
    })
    const ledger = LedgerSql.layerSqlite({ filename, busyTimeout: "30 millis" })
    let refused: Either.Either<unknown, unknown>
    try {
      refused = await Effect.runPromise(Effect.either(checkpoint).pipe(Effect.provide(ledger)))
    } finally {
      holder.exec("ROLLBACK")
    }
    expect(Either.isLeft(refused)).toBe(true)
    const busy = Either.isLeft(refused) ? refused.left : undefined
    expect(busy).toBeInstanceOf(LedgerTransparency.LedgerBusy)
    expect(busy).toMatchObject({ operation: "checkpoint", attempts: 3 })
    expect((busy as LedgerTransparency.LedgerBusy).detail).toMatch(/^SQLITE_BUSY/)
    expect(holder.prepare("SELECT COUNT(*) AS n FROM checkpoints").get()).toEqual({ n: 0 })
    // The lock released: the same call succeeds.
    const made = await Effect.runPromise(checkpoint.pipe(Effect.provide(ledger)))
    expect(made.size).toBe(20)
    expect(holder.prepare("SELECT COUNT(*) AS n FROM checkpoints").get()).toEqual({ n: 1 })
    holder.close()
  })
})
