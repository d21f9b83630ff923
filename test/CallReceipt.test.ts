/**
 * A receipt for one tool call, through the CLI on a real signed ledger: `prove --call SESSION:SEQ` gives the
 * call's stored entry chained to a sealed head and the seal row's inclusion proof against a signed
 * checkpoint; `verify-receipt` checks it with the verifier key alone, and rejects every forgery tried here:
 * a changed call, a cut chain, another session's seal, another key.
 */
import { Effect, Either, Option } from "effect"
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { decodeEntryBody } from "../src/internal/journalEntryFormat.js"
import * as CallReceipt from "../src/transparency/CallReceipt.js"
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-call-receipt-"))
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

/** The session ids stored in the ledger, and their entries' (seq, outcome). */
const storedSessions = async (db: string) => {
  const { default: Database } = await import("better-sqlite3")
  const conn = new Database(db, { readonly: true })
  try {
    return conn.prepare("SELECT session_id, seq, kind, outcome FROM journal_entries ORDER BY session_id, seq")
      .all() as ReadonlyArray<{ session_id: string; seq: number; kind: string; outcome: string }>
  } finally {
    conn.close()
  }
}

describe("prove --call and verify-receipt", () => {
  it("any call of a sealed session is provable offline; forgeries are rejected", async () => {
    const db = join(dir, "ledger.db")
    expect((await cli("keygen", "--out", join(dir, "keys"))).code).toBe(0)
    const key = join(dir, "keys", "agent-ledger-ed25519.pem")
    const demo = await cli("demo", "--db", db, "--sessions", "2", "--calls", "12")
    expect(demo.code, demo.stderr).toBe(0)
    const entries = await storedSessions(db)
    expect(entries.length).toBeGreaterThan(0)
    const refused = entries.find((e) => e.outcome === "refused")!
    const allowed = entries.find((e) => e.kind === "call" && e.outcome !== "refused")!
    const made = await cli("checkpoint", db, "--private-key", key, "--adopt-unsigned-rows")
    expect(made.code, made.stderr).toBe(0)
    const vkey = (await cli("checkpoint", db, "--private-key", key, "--key")).stdout.trim()
    /** Proofs against the stored checkpoint: read-only, so they run side by side. */
    const proveCall = (call: string, ...out: ReadonlyArray<string>) =>
      cli("prove", db, "--stored-checkpoint", "latest", "--key", vkey, "--call", call, ...out)

    const [proveRefused, proveAllowed, missing] = await Promise.all([
      ...[refused, allowed].map((entry) =>
        proveCall(`${entry.session_id}:${entry.seq}`, "--out", join(dir, `call-${entry.seq}.json`))
      ),
      // An entry that does not exist is not provable.
      proveCall(`${allowed.session_id}:100000`)
    ])
    expect(proveRefused!.code, proveRefused!.stderr).toBe(0)
    expect(proveAllowed!.code, proveAllowed!.stderr).toBe(0)
    expect(missing!.code).not.toBe(0)
    expect(missing!.stderr).toContain("not sealed")
    const verified = await cli(
      "verify-receipt",
      join(dir, `call-${allowed.seq}.json`),
      "--key",
      vkey,
      "--allow-unsigned"
    )
    expect(verified.code, verified.stdout + verified.stderr).toBe(0)
    expect(verified.stdout).toContain(`entry ${allowed.seq} of session "${allowed.session_id}"`)
    expect(verified.stdout).toContain("allowed")
    const refusedReceipt = JSON.parse(readFileSync(join(dir, `call-${refused.seq}.json`), "utf8"))
    const provenRefusal = Either.getOrThrow(CallReceipt.verify(refusedReceipt, vkey, { allowUnsigned: true }))
    expect(provenRefusal.entry).toMatchObject({ sequence: refused.seq, allowed: false, outcome: "refused" })

    const receipt = JSON.parse(readFileSync(join(dir, `call-${allowed.seq}.json`), "utf8"))
    expect(receipt.format).toBe("agent-ledger/call-receipt/v1")
    /** What the verifier says of a forged receipt: the same check `verify-receipt` runs. */
    const forged = (_name: string, value: unknown) =>
      Either.match(CallReceipt.verify(value, vkey, { allowUnsigned: true }), {
        onLeft: (failure) => ({ code: 1, stdout: failure.message }),
        onRight: () => ({ code: 0, stdout: "OK" })
      })
    // The call's tool renamed in its body (re-hashed so the entry's own hash matches): the chain breaks.
    const body = Buffer.from(receipt.entries[0].body, "base64")
    const fields = decodeEntryBody(body)
    if (typeof fields === "string") throw new Error(fields)
    const renamed = Buffer.from(
      body.toString("latin1").replace(fields.toolName, fields.toolName.replace(/./, "X")),
      "latin1"
    )
    const { createHash } = await import("node:crypto")
    const rehashed = {
      ...receipt,
      entries: [
        {
          ...receipt.entries[0],
          body: renamed.toString("base64"),
          entry_hash: createHash("sha256").update(renamed).digest("hex")
        },
        ...receipt.entries.slice(1)
      ]
    }
    const renamedResult = forged("renamed.json", rehashed)
    expect(renamedResult.code).toBe(1)
    expect(renamedResult.stdout).toContain("does not link")
    // The entry changed without re-hashing.
    const flipped = {
      ...receipt,
      entries: [{ ...receipt.entries[0], body: renamed.toString("base64") }, ...receipt.entries.slice(1)]
    }
    expect((forged("flipped.json", flipped)).stdout).toContain("does not hash")
    // The chain cut short of the sealed head.
    if (receipt.entries.length > 1) {
      expect((forged("cut.json", { ...receipt, entries: receipt.entries.slice(0, -1) })).code).toBe(1)
    }
    // Another session's seal (a real, proven seal row, but not this session's).
    const other = entries.find((e) => e.session_id !== allowed.session_id)!
    const otherOut = join(dir, "other.json")
    expect((await proveCall(`${other.session_id}:${other.seq}`, "--out", otherOut)).code).toBe(0)
    const otherSeal = JSON.parse(readFileSync(otherOut, "utf8")).seal
    expect(forged("other.json", JSON.parse(readFileSync(otherOut, "utf8"))).code).toBe(0)
    expect((forged("swapped.json", { ...receipt, seal: otherSeal })).stdout).toContain("the seal is of session")
    // Another key.
    const otherKey = SignedNote.verifierKey(
      "agent-ledger/ledger",
      (await Effect.runPromise(AuditSigner.generate)).publicKey
    )
    expect(Either.isLeft(CallReceipt.verify(receipt, otherKey, { allowUnsigned: true }))).toBe(true)
    // The demo's ledger is not signed: by default the seal row must carry the key's signature.
    expect(Either.getLeft(CallReceipt.verify(receipt, vkey)).pipe(Option.map((f) => f.reason))).toEqual(
      Option.some("rowSignature")
    )
  }, 180_000)
})
