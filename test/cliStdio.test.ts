/**
 * `-` is stdin or stdout wherever the CLI reads or writes a file, checked through real pipes: exports,
 * bundles, receipts, proofs and checkpoints written to stdout verify when piped back into stdin (and fail
 * when tampered with on the way); a private key can come from stdin; the database itself cannot; a second
 * `-` in one command is refused rather than read as empty.
 */
import { Either } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as SignedNote from "../src/transparency/SignedNote.js"
import { cliBundle } from "./fixtures/cliBundle.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-stdio-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const db = join(dir, "ledger.db")
const keyDir = join(dir, "keys")
let privateKey = ""
let publicKey = ""
let verifierKey = ""

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** The CLI with `stdin` piped in (an empty pipe when not given), stdout and stderr captured. */
const cli = (args: ReadonlyArray<string>, stdin: string | Buffer = "") =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(process.execPath, [cliBundle, ...args], { cwd: dir, stdio: ["pipe", "pipe", "pipe"] })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk))
    child.stderr.on("data", (chunk: Buffer) => err.push(chunk))
    child.on("error", reject)
    child.on("close", (code) =>
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }))
    child.stdin.on("error", () => {}) // a command that refuses before reading closes the pipe early
    child.stdin.end(stdin)
  })

beforeAll(async () => {
  const demo = await cli(["demo", "--db", db, "--sign", "--key-dir", keyDir, "--sessions", "2", "--calls", "20"])
  expect(demo.code, demo.stderr).toBe(0)
  privateKey = join(keyDir, readdirSync(keyDir).find((f) => f.endsWith(".pem") && !f.endsWith(".pub.pem"))!)
  publicKey = privateKey.replace(/\.pem$/, ".pub.pem")
  // What `checkpoint --key` prints, without a process: the log is named after the database file.
  const pem = Either.getOrThrow(AuditSigner.publicKeyFromPem(readFileSync(publicKey, "utf8")))
  verifierKey = SignedNote.verifierKey("agent-ledger/ledger", pem)
}, 60_000)

describe("- for stdin and stdout", () => {
  it("export --out - | verify -: the export verifies from stdin; a tampered one fails (exit 1)", async () => {
    const exported = await cli(["export", db, "--out", "-"])
    expect(exported.code, exported.stderr).toBe(0)
    expect(exported.stdout.split("\n")[0]).toContain("agent-ledger/ledger-export")
    const ok = await cli(["verify", "-", "--public-key", publicKey], exported.stdout)
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/^ledger export -: OK/m)
    const lines = exported.stdout.split("\n")
    lines[2] = lines[2]!.replace(/"agent_id":"[^"]*"/, "\"agent_id\":\"someone-else\"")
    const tampered = await cli(["verify", "-", "--public-key", publicKey], lines.join("\n"))
    expect(tampered.code).toBe(1)
    expect(tampered.stdout).toMatch(/^ledger export -: FAILED/m)
    expect(tampered.stdout).not.toContain("agent-ledger-stdin-") // named as the user named it
  })

  it("checkpoint --private-key - --out -, then verify DB --checkpoint - (key and checkpoint each from stdin)", async () => {
    const checkpoint = await cli(["checkpoint", db, "--private-key", "-", "--out", "-"], readFileSync(privateKey))
    expect(checkpoint.code, checkpoint.stderr).toBe(0)
    expect(checkpoint.stdout).toContain("\n\n— ")
    const ok = await cli(
      ["verify", db, "--public-key", publicKey, "--checkpoint", "-", "--checkpoint-key", verifierKey],
      checkpoint.stdout
    )
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain("extends its")
  })

  it("prove --out - | verify-receipt -, and prove --consistency - --out - | verify-consistency -", async () => {
    const receipt = await cli(["prove", db, "--private-key", privateKey, "--sequence", "1", "--out", "-"])
    expect(receipt.code, receipt.stderr).toBe(0)
    const ok = await cli(["verify-receipt", "-", "--key", verifierKey], receipt.stdout)
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/^receipt -: OK/m)
    const json = JSON.parse(receipt.stdout)
    json.row.agent_id = "someone-else"
    expect((await cli(["verify-receipt", "-", "--key", verifierKey], JSON.stringify(json))).code).toBe(1)

    const older = await cli(["checkpoint", db, "--private-key", privateKey])
    const proof = await cli(
      ["prove", db, "--private-key", privateKey, "--consistency", "-", "--out", "-"],
      older.stdout
    )
    expect(proof.code, proof.stderr).toBe(0)
    const consistent = await cli(["verify-consistency", "-", "--key", verifierKey], proof.stdout)
    expect(consistent.code, consistent.stderr).toBe(0)
  })

  it("export --bundle - | verify -, and a journal export from stdin", async () => {
    const bundle = await cli(["export", db, "--bundle", "-", "--private-key", privateKey])
    expect(bundle.code, bundle.stderr).toBe(0)
    const ok = await cli(["verify", "-", "--checkpoint-key", verifierKey], bundle.stdout)
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/^evidence bundle -: OK/m)
    const journal = readdirSync(dir).find((f) => f.endsWith(".json"))
    expect(journal).toBeDefined()
    const fromStdin = await cli(["verify", "-"], readFileSync(join(dir, journal!)))
    expect(fromStdin.code, fromStdin.stderr).toBe(0)
    expect(fromStdin.stdout).toMatch(/^journal export -: OK/m)
  })

  it("refuses the database on stdin, and a second - in one command (exit 2)", async () => {
    const database = await cli(["verify", "-"], readFileSync(db))
    expect(database.code).toBe(2)
    expect(database.stderr).toContain("not from stdin")
    const twice = await cli(
      ["prove", db, "--private-key", "-", "--consistency", "-", "--out", "-"],
      readFileSync(privateKey)
    )
    expect(twice.code).toBe(2)
    expect(twice.stderr).toContain("only one input can be -")
  })
})
