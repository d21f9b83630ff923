/**
 * End-to-end tests of the `agent-ledger` CLI: each runs the binary as a separate process (node + tsx, as
 * `npm run cli` does) on files in a temp directory, and checks exit codes, output and the files.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { beforeAll } from "vitest"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import type { Run } from "./fixtures/cliWorkspace.js"
import { cliWorkspace, copyLedger, rowCount, sha256File, withDb } from "./fixtures/cliWorkspace.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { sharedSqlite } from "./fixtures/ledgerSql.js"

const { cli, demo, dir, path, baseLedger } = cliWorkspace("agent-ledger-cli-")

let ledger: string

beforeAll(async () => {
  ledger = await baseLedger()
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

  it("--checkpoint (npm run demo) signs with a key kept apart and stores a checkpoint receipts are proven against", async () => {
    const db = path("checkpointed.db")
    const keyDir = path("checkpointed-keys")
    const run = await demo(db, "--checkpoint", "--key-dir", keyDir)
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/signing:\s+ed25519 key/)
    const vkey = /checkpoint:\s+stored, (\d+) rows, .*; verifier key (\S+)/.exec(run.stdout)
    expect(Number(vkey?.[1])).toBe(rowCount(db))
    expect(run.stdout).toContain(`agent-ledger console ${db}`)
    // No private key beside the database; the key directory holds the pair.
    expect(fs.readdirSync(dir).filter((file) => file.endsWith(".pem"))).toEqual([])
    expect(fs.readdirSync(keyDir).some((file) => file.endsWith(".ed25519.pem"))).toBe(true)
    const receipt = path("checkpointed-receipt.json")
    const proved = await cli(
      "prove",
      db,
      "--stored-checkpoint",
      "latest",
      "--key",
      vkey![2]!,
      "--sequence",
      "1",
      "--out",
      receipt
    )
    expect(proved.stderr).toBe("")
    expect((await cli("verify-receipt", receipt, "--key", vkey![2]!)).code).toBe(0)
    // The database's own directory is refused as the key directory, with --checkpoint as with --sign.
    const beside = await demo(path("beside.db"), "--checkpoint", "--key-dir", dir)
    expect(beside.code).toBe(2)
    expect(beside.stderr).toContain("keep signing keys apart from the ledger")
    // A ledger earlier runs wrote unsigned: the demo signs its own rows but adopts none of the unsigned ones.
    const mixed = copyLedger(ledger, path("checkpointed-mixed.db"))
    const rerun = await demo(mixed, "--checkpoint", "--key-dir", keyDir)
    expect(rerun.code).toBe(0)
    expect(rerun.stdout).toMatch(/checkpoint:\s+not stored: .*--adopt-unsigned-rows vouches for them/)
    expect(JSON.parse((await cli("checkpoints", mixed, "--json")).stdout)).toEqual([])
  })

  it("rejects a database path in a missing directory", async () => {
    const run = await demo(path("missing-dir/x.db"))
    expect(run.code).toBe(2)
    expect(run.stderr).toContain("missing-dir")
    expect(run.stderr).not.toMatch(/\n\s+at /)
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
