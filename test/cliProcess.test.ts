/**
 * End-to-end tests of the `agent-ledger` CLI as a process: signals, pipes, files it must not write, and
 * hostile row values in its text output (split from cli.test.ts so the two run on separate workers).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { beforeAll } from "vitest"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"
import type { Run } from "./fixtures/cliWorkspace.js"
import { cliWorkspace, copyLedger, withDb } from "./fixtures/cliWorkspace.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const { cli, demo, dir, path, baseLedger } = cliWorkspace("agent-ledger-cli-process-")

let ledger: string

beforeAll(async () => {
  ledger = await baseLedger()
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

describe("a ledger writer thread that cannot start", () => {
  /** The CLI with the writer thread's entry pointing at a file that does not exist (a broken bundle). */
  const withoutWriter = (args: ReadonlyArray<string>): Promise<Run> =>
    new Promise((resolve) => {
      const child = execFile(process.execPath, [cliBundle, ...args], {
        cwd: dir,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1", AGENT_LEDGER_WRITER_ENTRY: path("no-such-writer.mjs") },
        timeout: 60_000
      }, (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
      })
      // mcp-proxy's client side stays open: the proxy must end on its own, not because stdin closed.
      if (args[0] !== "mcp-proxy") child.stdin?.end()
      else setTimeout(() => child.stdin?.end(), 20_000).unref()
    })

  it("demo and mcp-proxy say so and exit 2 instead of running a guard whose audit rows go nowhere", async () => {
    for (
      const args of [
        ["demo", "--db", path("no-writer-demo.db"), "--sessions", "1", "--calls", "5"],
        [
          "mcp-proxy",
          "--db",
          path("no-writer-proxy.db"),
          "--policy",
          join(repoRoot, "examples/policy.json"),
          "--",
          process.execPath,
          "-e",
          "setTimeout(() => {}, 60000)"
        ]
      ]
    ) {
      const started = Date.now()
      const run = await withoutWriter(args)
      expect(run.code).toBe(2)
      expect(run.stderr).toContain("could not start (entryNotFound)")
      expect(run.stderr).toContain("no-such-writer.mjs")
      expect(run.stdout).not.toContain("OK")
      expect(Date.now() - started).toBeLessThan(15_000)
    }
  })
})
