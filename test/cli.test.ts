/**
 * End-to-end tests of the `agent-ledger` CLI: each runs the binary as a separate process (node + tsx, as
 * `npm run cli` does) on files in a temp directory, and checks exit codes, output and the files.
 */
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Layer } from "effect"
import { execFile, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { afterAll, beforeAll } from "vitest"
import * as SqlAuditSink from "../src/SqlAuditSink.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sharedSqlite, sqliteWithClient } from "./fixtures/ledgerSql.js"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-cli-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI as a child process (asynchronously, so the test worker stays responsive). */
const cli = (...args: ReadonlyArray<string>): Promise<Run> =>
  new Promise((resolve) => {
    execFile(process.execPath, [cliBundle, ...args], {
      cwd: dir,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
      timeout: 120_000,
      maxBuffer: 64 * 1024 * 1024
    }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
      resolve({ code, stdout, stderr })
    })
  })

const path = (name: string) => join(dir, name)
const sha256File = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex")

const demo = (db: string, ...extra: ReadonlyArray<string>) =>
  cli("demo", "--db", db, "--sessions", "4", "--calls", "40", "--session-out", `${db}.session.json`, ...extra)

/** Copies a ledger (closed, so no -wal) to a new name, for a test that tampers with it. */
const copyLedger = (from: string, to: string) => {
  fs.copyFileSync(from, to)
  return to
}

const withDb = <A>(file: string, f: (db: Database.Database) => A): A => {
  const db = new Database(file)
  try {
    return f(db)
  } finally {
    db.close()
  }
}

const rowCount = (file: string) =>
  withDb(file, (db) => (db.prepare("SELECT COUNT(*) AS n FROM signed_events").get() as { n: number }).n)

let ledger: string

beforeAll(async () => {
  ledger = path("base.db")
  const run = await demo(ledger)
  if (run.code !== 0) throw new Error(`demo failed (${run.code}): ${run.stdout}\n${run.stderr}`)
})

describe("demo", () => {
  it("prints the summary, leaves a ledger that verifies, and writes the session journal export", async () => {
    const db = path("demo.db")
    const run = await demo(db)
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/sessions:\s+4/)
    expect(run.stdout).toMatch(/calls:\s+160/)
    expect(run.stdout).toMatch(/verify:\s+OK/)
    const appended = Number(/rows appended:\s+(\d+)/.exec(run.stdout)?.[1])
    expect(appended).toBeGreaterThan(0)
    expect(rowCount(db)).toBe(appended)
    expect((await cli("verify", db)).code).toBe(0)
    expect((await cli("verify", `${db}.session.json`)).code).toBe(0)
  })

  it("re-running on the same file extends the same chain", async () => {
    const db = copyLedger(ledger, path("rerun.db"))
    const before = rowCount(db)
    const run = await demo(db, "--seed", "7")
    expect(run.code).toBe(0)
    const after = rowCount(db)
    expect(after).toBeGreaterThan(before)
    const v = await cli("verify", db, "--json")
    expect(v.code).toBe(0)
    expect(JSON.parse(v.stdout).report.rowsChecked).toBe(after)
  })

  it("rejects a database path in a missing directory", async () => {
    const run = await demo(path("missing-dir/x.db"))
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("missing-dir")
    expect(run.stderr).not.toMatch(/\n\s+at /)
  })
})

describe("hostile row values in the CLI's text output", () => {
  it("a row cannot forge lines, clear the screen or reorder text in stats and dlq list", async () => {
    const db = path("hostile.db")
    const hostile = "evil\u001b[2J\nverify: OK\r\u202e\u009b31m"
    await Effect.runPromise(
      Effect.gen(function*() {
        const sink = yield* SqlAuditSink.SqlAuditSink
        yield* sink.append(refusalEvent(hostile, 0))
        yield* sink.deadLetter(refusalEvent(hostile, 1), `reason with ${hostile}`)
      }).pipe(
        Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(sqliteWithClient({ filename: db }))))
      )
    )
    for (const args of [["stats", db], ["dlq", "list", db]]) {
      const run = await cli(...args)
      expect(run.code).toBe(0)
      expect(run.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/)
      expect(run.stdout.split("\n").some((line) => line.startsWith("verify: OK"))).toBe(false)
      expect(run.stdout).toContain("evil\\u{001b}[2J\\u{000a}verify: OK")
      // JSON output escapes them too, and a JSON reader still gets the exact value.
      const json = await cli(...args, "--json")
      expect(json.stdout.trimEnd()).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e]/)
      expect(json.stdout).toContain("\\u009b")
    }
    expect(Object.keys(JSON.parse((await cli("stats", db, "--json")).stdout).refusalsByAgent)).toEqual([hostile])
    const letters = JSON.parse((await cli("dlq", "list", db, "--json")).stdout).deadLetters
    expect(letters[0].agent_id).toBe(hostile)
  })
})

describe("what an unpinned export proves", () => {
  it("a mid-chain export with its first rows dropped and the header rewritten: OK, but the report says what is not proven; a pin catches it", async () => {
    const out = path("mid.jsonl")
    expect((await cli("export", ledger, "--from", "5", "--to", "20", "--out", out)).code).toBe(0)
    const [header, ...rows] = fs.readFileSync(out, "utf8").trim().split("\n")
    const h = JSON.parse(header!)
    const dropped = rows.slice(3)
    const forged = path("mid-forged.jsonl")
    fs.writeFileSync(
      forged,
      [
        JSON.stringify({
          ...h,
          from_sequence: h.from_sequence + 3,
          row_count: dropped.length,
          prev_hash: JSON.parse(rows[2]!).entry_hash
        }),
        ...dropped
      ].join("\n") + "\n"
    )
    const run = await cli("verify", forged)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("NOT that the header is the ledger's")
    expect(JSON.parse((await cli("verify", forged, "--json")).stdout).pinned).toBe(false)
    // The head of row 5 was kept by the operator: pinning it proves rows 5..7 are gone.
    const pin = `5:${JSON.parse(rows[0]!).entry_hash}`
    const pinned = await cli("verify", forged, "--pin", pin)
    expect(pinned.code).toBe(1)
    expect(pinned.stdout).not.toContain("NOT that the header")
  })
})

describe("signature downgrades", () => {
  it("a stripped signature fails the default verify as a downgrade; --allow-mixed accepts it; --signed-from declares a switch", async () => {
    const keyDir = path("downgrade-keys")
    const signed = path("downgrade.db")
    const run = await demo(signed, "--sign", "--key-dir", keyDir)
    expect(run.code).toBe(0)
    const pub = /public key (\S+\.pub\.pem)/.exec(run.stdout)![1]!
    const stripped = copyLedger(signed, path("downgrade-stripped.db"))
    withDb(
      stripped,
      (db) =>
        db.exec(
          "UPDATE signed_events SET signature = NULL, key_id = NULL, attest_level = 'unsigned' WHERE sequence = 3"
        )
    )
    const failed = await cli("verify", stripped, "--public-key", pub)
    expect(failed.code).toBe(1)
    expect(failed.stdout).toContain("sequence 3: downgrade")
    // Every signature stripped: still a downgrade, since the key says the ledger is signed.
    const allStripped = copyLedger(signed, path("downgrade-all.db"))
    withDb(
      allStripped,
      (db) => db.exec("UPDATE signed_events SET signature = NULL, key_id = NULL, attest_level = 'unsigned'")
    )
    expect((await cli("verify", allStripped, "--public-key", pub)).stdout).toContain("sequence 0: downgrade")
    expect((await cli("verify", stripped, "--public-key", pub, "--allow-mixed")).code).toBe(0)

    // A ledger that started unsigned and switched: the demo finds the switch; verify is told it.
    const switched = path("switched.db")
    expect((await demo(switched)).code).toBe(0)
    const signedRun = await demo(switched, "--sign", "--key-dir", keyDir)
    expect(signedRun.code).toBe(0)
    const firstSigned = withDb(
      switched,
      (db) =>
        (db.prepare("SELECT MIN(sequence) AS s FROM signed_events WHERE attest_level = 'ed25519'").get() as {
          s: number
        }).s
    )
    const switchedPub = /public key (\S+\.pub\.pem)/.exec(signedRun.stdout)![1]!
    expect((await cli("verify", switched, "--public-key", switchedPub)).code).toBe(1)
    expect((await cli("verify", switched, "--public-key", switchedPub, "--signed-from", String(firstSigned))).code)
      .toBe(0)
  })
})

describe("signing keys kept apart from the ledger", () => {
  it("demo refuses a --key-dir that is the database's own directory", async () => {
    const run = await demo(path("beside.db"), "--sign", "--key-dir", path("."))
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("apart from the ledger")
  })

  it("verify warns on stderr when a private key is readable next to the database, and still verifies", async () => {
    const dir = path("key-beside")
    fs.mkdirSync(dir)
    const db = join(dir, "ledger.db")
    expect((await demo(db)).code).toBe(0)
    const quiet = await cli("verify", db)
    expect(quiet.stderr).not.toContain("private key")
    expect((await cli("keygen", "--out", dir)).code).toBe(0)
    const warned = await cli("verify", db)
    expect(warned.code).toBe(0)
    expect(warned.stderr).toContain(
      `private key ${join(dir, "agent-ledger-ed25519.pem")} is readable next to the database`
    )
  })
})

describe("process behaviour", () => {
  it("demo with --sign and a path in a missing directory: exit 2 and no key files are written", async () => {
    const run = await demo(path("nowhere/x.db"), "--sign")
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("nowhere")
    expect(fs.existsSync(path("nowhere"))).toBe(false)
  })

  it("an unwritable --session-out fails before anything is simulated", async () => {
    const db = path("unwritten.db")
    const run = await cli("demo", "--db", db, "--session-out", path("nowhere/s.json"))
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("s.json")
    expect(fs.existsSync(db)).toBe(false)
  })

  // As root every path is writable, so the check is run as an unprivileged user (needs root and setpriv).
  const othersCanReach = (file: string): boolean => {
    // Every directory above the file must be searchable by other users (o+x), the file readable (o+r).
    for (let p = dirname(file); p !== dirname(p); p = dirname(p)) {
      if ((fs.statSync(p).mode & 0o001) === 0) return false
    }
    return (fs.statSync(file).mode & 0o004) !== 0
  }
  const canDropPrivileges = process.getuid?.() === 0 && fs.existsSync("/usr/bin/setpriv") &&
    othersCanReach(cliBundle) && othersCanReach(join(repoRoot, "node_modules/better-sqlite3/package.json"))
  if (!canDropPrivileges) {
    console.log(
      "skipping the unwritable-directory test: needs root, /usr/bin/setpriv and a checkout other users can read"
    )
  }
  it.skipIf(!canDropPrivileges)("a database in a directory the user cannot write: exit 2 naming it", async () => {
    const locked = path("locked")
    fs.mkdirSync(locked, { mode: 0o755 })
    fs.chmodSync(dir, 0o755)
    const run = await new Promise<Run>((resolve) => {
      execFile(
        "/usr/bin/setpriv",
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          process.execPath,
          cliBundle,
          "demo",
          "--db",
          join(locked, "x.db"),
          "--session-out",
          join(locked, "s.json")
        ],
        { cwd: "/" },
        (error, stdout, stderr) =>
          resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
      )
    })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(`${locked} is not writable`)
    expect(fs.readdirSync(locked)).toEqual([])
  })

  it("export to a full device is a one-line error, not a crash", async () => {
    const run = await cli("export", ledger, "--out", "/dev/full")
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("ENOSPC")
    expect(run.stderr).not.toMatch(/\n\s+at /)
  })

  /** Runs the CLI with stdout closed before it writes anything (as `| head` does, early). */
  const withClosedStdout = async (...args: ReadonlyArray<string>) => {
    const child = spawn(process.execPath, [cliBundle, ...args], { cwd: dir })
    let stderr = ""
    child.stderr.on("data", (d) => (stderr += d))
    child.stdout.destroy()
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)))
    return { code, stderr }
  }

  it("a reader closing stdout early (| head) is quiet, and the exit code is still the command's", async () => {
    expect(await withClosedStdout("stats", ledger)).toEqual({ code: 0, stderr: "" })
    const db = copyLedger(ledger, path("tampered-closed.db"))
    withDb(db, (d) => d.prepare("UPDATE signed_events SET agent_id = 'mallory' WHERE sequence = 1").run())
    expect(await withClosedStdout("verify", db)).toEqual({ code: 1, stderr: "" })
  })

  it("stdout on a full disk: one line on stderr and exit 2", async () => {
    const full = fs.openSync("/dev/full", "w")
    const child = spawn(process.execPath, [cliBundle, "stats", ledger], { cwd: dir, stdio: ["ignore", full, "pipe"] })
    fs.closeSync(full)
    let stderr = ""
    child.stderr!.on("data", (d) => (stderr += d))
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)))
    expect(code).toBe(2)
    expect(stderr.trim()).toBe("agent-ledger: cannot write the output (ENOSPC)")
  })

  it("a refused export leaves an existing --out file as it was, and no partial file", async () => {
    const db = copyLedger(ledger, path("gap.db"))
    withDb(db, (d) => d.prepare("DELETE FROM signed_events WHERE sequence = 2").run())
    const out = path("keep.jsonl")
    fs.writeFileSync(out, "previous export\n")
    const run = await cli("export", db, "--from", "3", "--out", out)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("no row at sequence 2")
    expect(fs.readFileSync(out, "utf8")).toBe("previous export\n")
    expect(fs.readdirSync(dir).filter((f) => f.includes(".partial-"))).toEqual([])
  })

  it("Ctrl-C during the demo exits 130 after flushing what was queued: the ledger verifies", async () => {
    const db = path("interrupted.db")
    const child = spawn(process.execPath, [
      cliBundle,
      "demo",
      "--db",
      db,
      "--sessions",
      "5000",
      "--calls",
      "50",
      "--session-out",
      path("interrupted.json")
    ], { cwd: dir })
    // Wait until the ledger file exists (the demo is under way), then interrupt it.
    // Interrupt once refusals are reaching the ledger (the demo is under way and will run for a long time).
    const rows = () =>
      fs.existsSync(db)
        ? withDb(db, (d) => (d.prepare("SELECT COUNT(*) AS n FROM signed_events").get() as { n: number }).n)
        : 0
    while (child.exitCode === null) {
      const n = await Promise.resolve().then(() => {
        try {
          return rows()
        } catch {
          return 0 // the schema is still being created
        }
      })
      if (n > 0) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    child.kill("SIGINT")
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)))
    expect(code).toBe(130)
    const v = await cli("verify", db, "--json")
    expect(v.code).toBe(0)
    expect(JSON.parse(v.stdout).report.rowsChecked).toBeGreaterThan(0)
  })
})

describe("verify", () => {
  it("a database: exit 0 and never modifies the file", async () => {
    const before = sha256File(ledger)
    const run = await cli("verify", ledger)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("ledger")
    expect(run.stdout).toContain("OK")
    expect(run.stdout).toContain("unsigned")
    expect(sha256File(ledger)).toBe(before)
  })

  it("an UPDATE of one row: exit 1 naming that sequence", async () => {
    const db = copyLedger(ledger, path("tampered.db"))
    withDb(db, (d) => d.prepare("UPDATE signed_events SET agent_id = 'mallory' WHERE sequence = 3").run())
    const run = await cli("verify", db)
    expect(run.code).toBe(1)
    expect(run.stdout).toContain("FAILED")
    expect(run.stdout).toMatch(/sequence 3: entryHash/)
    const json = JSON.parse((await cli("verify", db, "--json")).stdout)
    expect(json.ok).toBe(false)
    expect(json.report.firstFailure.sequence).toBe(3)
    expect(json.report.firstFailure.kind).toBe("entryHash")
  })

  it("a deleted row: exit 1 with a gap", async () => {
    const db = copyLedger(ledger, path("deleted.db"))
    withDb(db, (d) => d.prepare("DELETE FROM signed_events WHERE sequence = 2").run())
    const run = await cli("verify", db, "--json")
    expect(run.code).toBe(1)
    expect(JSON.parse(run.stdout).report.firstFailure).toMatchObject({ sequence: 3, kind: "gap" })
  })

  it("--pin: the head verifies; a rewritten pinned hash fails", async () => {
    const head = withDb(
      ledger,
      (d) =>
        d.prepare("SELECT sequence, entry_hash FROM signed_events ORDER BY sequence DESC LIMIT 1").get() as {
          sequence: number
          entry_hash: string
        }
    )
    expect((await cli("verify", ledger, "--pin", `${head.sequence}:${head.entry_hash}`)).code).toBe(0)
    const wrong = `${head.sequence}:${"ab".repeat(32)}`
    const run = await cli("verify", ledger, "--pin", wrong)
    expect(run.code).toBe(1)
    expect(run.stdout).toContain("rewritten")
  })

  it("a journal export: a tampered entry exits 1", async () => {
    const file = path("journal.json")
    const exported = JSON.parse(fs.readFileSync(`${ledger}.session.json`, "utf8"))
    exported.entries[1].bytesRead += 1
    fs.writeFileSync(file, JSON.stringify(exported))
    const run = await cli("verify", file)
    expect(run.code).toBe(1)
    expect(run.stdout).toMatch(/sequence 1: entryHash/)
  })
})

describe("export", () => {
  it("export then verify the export: exit 0, and a mid-chain range verifies from its anchor", async () => {
    const out = path("all.jsonl")
    expect((await cli("export", ledger, "--out", out)).code).toBe(0)
    const lines = fs.readFileSync(out, "utf8").trim().split("\n")
    expect(lines.length).toBe(rowCount(ledger) + 1)
    expect(JSON.parse(lines[0]!).format).toBe("agent-ledger/ledger-export/v1")
    expect((await cli("verify", out)).code).toBe(0)

    const part = path("part.jsonl")
    expect((await cli("export", ledger, "--from", "2", "--to", "5", "--out", part)).code).toBe(0)
    const partLines = fs.readFileSync(part, "utf8").trim().split("\n")
    expect(partLines.length).toBe(5)
    const header = JSON.parse(partLines[0]!)
    expect(header).toMatchObject({ from_sequence: 2, to_sequence: 5, row_count: 4 })
    expect(header.prev_hash).toBe(JSON.parse(lines[2]!).entry_hash)
    expect((await cli("verify", part)).code).toBe(0)
    expect((await cli("verify", part, "--pin", `1:${header.prev_hash}`)).code).toBe(0)
    expect((await cli("verify", part, "--pin", `1:${"0".repeat(64)}`)).code).toBe(1)
  })

  it("export to stdout is the same as to a file", async () => {
    const run = await cli("export", ledger, "--to", "3")
    expect(run.code).toBe(0)
    expect(run.stdout.trim().split("\n")).toHaveLength(5)
    const out = path("to3.jsonl")
    expect((await cli("export", ledger, "--to", "3", "--out", out)).code).toBe(0)
    expect(run.stdout).toBe(fs.readFileSync(out, "utf8"))
  })

  it("a tampered export line exits 1; a truncated export exits 1; a corrupted line exits 2 naming the line", async () => {
    const out = path("t.jsonl")
    await cli("export", ledger, "--out", out)
    const lines = fs.readFileSync(out, "utf8").trim().split("\n")

    const tampered = path("tampered.jsonl")
    const row = JSON.parse(lines[3]!)
    row.payload = row.payload.replace("agent", "agenT")
    fs.writeFileSync(tampered, [...lines.slice(0, 3), JSON.stringify(row), ...lines.slice(4)].join("\n") + "\n")
    const t = await cli("verify", tampered)
    expect(t.code).toBe(1)
    expect(t.stdout).toMatch(/sequence 2: payloadHash/)

    const truncated = path("truncated.jsonl")
    fs.writeFileSync(truncated, lines.slice(0, -1).join("\n") + "\n")
    const tr = await cli("verify", truncated)
    expect(tr.code).toBe(1)
    expect(tr.stdout).toContain("incomplete")

    const corrupted = path("corrupted.jsonl")
    fs.writeFileSync(corrupted, [...lines.slice(0, 4), "{not json", ...lines.slice(5)].join("\n") + "\n")
    const c = await cli("verify", corrupted)
    expect(c.code).toBe(2)
    expect(c.stderr).toContain("line 5")
  })
})

describe("signed ledgers and keygen", () => {
  it("verifies with the public key, reports unknown keys without it, and keygen writes a usable pair", async () => {
    const db = path("signed.db")
    const keyDir = path("demo-keys")
    const run = await demo(db, "--sign", "--key-dir", keyDir)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain("ed25519 key")
    // The key pair lives in --key-dir, never beside the database, and the output says where.
    const pub = /public key (\S+\.pub\.pem)/.exec(run.stdout)?.[1]
    expect(pub?.startsWith(keyDir)).toBe(true)
    expect(fs.readdirSync(path(".")).filter((name) => name.startsWith("signed.db") && name.endsWith(".pem"))).toEqual(
      []
    )
    const privateKey = pub!.replace(/\.pub\.pem$/, ".pem")
    expect(fs.statSync(privateKey).mode & 0o777).toBe(0o600)
    // A re-run keeps the same key.
    const demoKeyId = /ed25519 key ([0-9a-f]{16})/.exec(run.stdout)?.[1]
    const rerun = await demo(db, "--sign", "--key-dir", keyDir)
    expect(rerun.stdout).toContain(`ed25519 key ${demoKeyId},`)
    const ok = await cli("verify", db, "--public-key", pub!)
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/signatures:\s+\d+ valid, 0 invalid, 0 by unknown keys/)

    const without = await cli("verify", db)
    expect(without.code).toBe(1)
    expect(without.stdout).toContain("unknown key")

    const keys = path("keys")
    const kg = await cli("keygen", "--out", keys)
    expect(kg.code).toBe(0)
    const keyId = /key id:\s+([0-9a-f]{16})/.exec(kg.stdout)?.[1]
    expect(keyId).toBeDefined()
    expect(fs.statSync(join(keys, "agent-ledger-ed25519.pem")).mode & 0o777).toBe(0o600)
    // Another key is not the signing key: the rows stay unverifiable.
    const other = await cli("verify", db, "--public-key", join(keys, "agent-ledger-ed25519.pub.pem"), "--json")
    expect(other.code).toBe(1)
    expect(JSON.parse(other.stdout).report.firstFailure.kind).toBe("unknownKey")
    // keygen never overwrites a key.
    const again = await cli("keygen", "--out", keys)
    expect(again.code).toBe(2)
    expect(again.stderr).toContain("already exists")
  })
})

describe("dlq", () => {
  it("replay twice appends once, marks an event already in the chain without a second row, and the chain verifies", async () => {
    const db = copyLedger(ledger, path("dlq.db"))
    // Break the table so three appends land in the dead-letter table, through the real sink.
    withDb(db, (d) => d.exec("ALTER TABLE signed_events RENAME COLUMN agent_id TO agent_id_broken"))
    const outcomes = await Effect.runPromise(
      Effect.gen(function*() {
        const sink = yield* SqlAuditSink.SqlAuditSink
        return yield* Effect.forEach([1, 2, 3], (n) => sink.append(refusalEvent("agent-dlq", 10_000 + n)))
      }).pipe(
        Effect.provide(
          SqlAuditSink.layer().pipe(Layer.provideMerge(sharedSqlite({ filename: db })))
        ),
        quietly
      )
    )
    expect(outcomes.map((o) => o._tag)).toEqual(["DlqLanded", "DlqLanded", "DlqLanded"])
    withDb(db, (d) => {
      d.exec("ALTER TABLE signed_events RENAME COLUMN agent_id_broken TO agent_id")
      // A dead letter whose event is already in the chain (e.g. a retry that did land).
      d.exec(
        `INSERT INTO signed_events_dlq (id, agent_id, event_type, payload, payload_hash, timestamp, failure_reason, failed_at)
              SELECT id, agent_id, event_type, payload, payload_hash, timestamp, 'test', '2026-11-24T00:00:00.000Z'
              FROM signed_events WHERE sequence = 0`
      )
    })
    const before = rowCount(db)

    const list = await cli("dlq", "list", db, "--json")
    expect(list.code).toBe(0)
    expect(JSON.parse(list.stdout).deadLetters.filter((l: any) => l.replayed_at === null).length).toBe(4)

    const dry = await cli("dlq", "replay", db, "--dry-run")
    expect(dry.code).toBe(0)
    expect(dry.stdout).toContain("4 dead letters would be replayed")
    expect(rowCount(db)).toBe(before)

    const first = await cli("dlq", "replay", db)
    expect(first.code).toBe(0)
    expect(first.stdout).toContain("replayed 4 of 4")
    expect(first.stdout).toContain("1 were already in the chain")
    expect(rowCount(db)).toBe(before + 3)

    const second = await cli("dlq", "replay", db)
    expect(second.code).toBe(0)
    expect(second.stdout).toContain("replayed 0 of 0")
    expect(rowCount(db)).toBe(before + 3)

    expect((await cli("verify", db)).code).toBe(0)
    const stats = JSON.parse((await cli("stats", db, "--json")).stdout)
    expect(stats.deadLetters).toEqual({ pending: 0, replayed: 4 })
    expect(stats.rows).toBe(before + 3)
  })
})

describe("stats", () => {
  it("summarizes rows, refusals by rule and attest levels", async () => {
    const run = await cli("stats", ledger, "--json")
    expect(run.code).toBe(0)
    const stats = JSON.parse(run.stdout)
    expect(stats.rows).toBe(rowCount(ledger))
    expect(stats.head.sequence).toBe(stats.rows - 1)
    // Every row is a refusal or a session seal.
    expect(Object.values(stats.refusalsByRule as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(
      stats.rows - (stats.byEventType["session.sealed"] ?? 0)
    )
    expect(stats.byEventType["session.sealed"]).toBeGreaterThan(0)
    expect(stats.attestLevels).toEqual({ unsigned: stats.rows })
    const text = await cli("stats", ledger)
    expect(text.code).toBe(0)
    expect(text.stdout).toContain("refusals by rule")
  })
})

describe("bad input: one line on stderr, exit 2, no stack trace", () => {
  const expectUsage = (run: Run, fragment: string) => {
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(fragment)
    expect(run.stderr).not.toMatch(/\n\s+at /)
    expect(run.stderr.trim().split("\n").length).toBeLessThanOrEqual(2)
  }

  it("missing file", async () => expectUsage(await cli("verify", path("nope.db")), "no such file"))
  it("directory instead of file", async () => expectUsage(await cli("verify", dir), "is a directory"))
  it("not a SQLite file", async () => {
    fs.writeFileSync(path("junk.bin"), Buffer.from([0, 1, 2, 3, 255, 254]))
    expectUsage(await cli("verify", path("junk.bin")), "not an agent-ledger database")
    expectUsage(await cli("stats", path("junk.bin")), "junk.bin")
  })
  it("SQLite file without the ledger schema", async () => {
    const file = path("other.db")
    withDb(file, (d) => d.exec("CREATE TABLE t (x)"))
    expectUsage(await cli("verify", file), "without the agent-ledger schema")
    expectUsage(await cli("dlq", "replay", file), "without the agent-ledger schema")
  })
  it("bad --pin", async () => expectUsage(await cli("verify", ledger, "--pin", "12:xyz"), "bad --pin"))
  it("unreadable key file", async () =>
    expectUsage(await cli("verify", ledger, "--public-key", path("no-key.pem")), "no-key.pem"))
  it("a key file that is not a key", async () => {
    fs.writeFileSync(path("garbage.pem"), "hello")
    expectUsage(await cli("verify", ledger, "--public-key", path("garbage.pem")), "garbage.pem")
  })
  it("unknown option", async () => {
    const run = await cli("verify", ledger, "--bogus")
    expect(run.code).toBe(2)
    expect(run.stdout + run.stderr).toContain("--bogus")
  })
})
