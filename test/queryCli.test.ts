/**
 * `agent-ledger show`, `log` and `sessions` as operators run them: text and `--json`, filters, hostile and
 * bad input (one stderr line, exit 2), and `log --follow` as `tail -f`: it prints what is there, then a row
 * appended by another process, and ends on SIGINT with exit 130. The process-level promises (exit codes,
 * stdout/stderr, signals) run the bundled CLI as a child; the matrix of inputs runs `Cli.run` in this process
 * (a spawned CLI costs seconds on a loaded machine).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Console, Effect } from "effect"
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { run } from "../src/cli/Cli.js"
import { cliBundle } from "./fixtures/cliBundle.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"
import { append, appendJournal, laterRefusal, SEEDED } from "./fixtures/queryLedger.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-querycli-"))
const db = join(dir, "ledger.db")

const cli = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [cliBundle, ...args],
      { cwd: dir },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr })
    )
  })

/** `Cli.run` in this process, its console captured: what the CLI would exit with and print. */
const inProcess = (args: ReadonlyArray<string>) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const out: Array<string> = []
      const err: Array<string> = []
      const base = yield* Console.consoleWith(Effect.succeed)
      const capture: Console.Console = {
        ...base,
        log: (...parts) => Effect.sync(() => void out.push(parts.join(" "))),
        error: (...parts) => Effect.sync(() => void err.push(parts.join(" "))),
        unsafe: {
          ...base.unsafe,
          log: (...parts) => void out.push(parts.join(" ")),
          error: (...parts) => void err.push(parts.join(" "))
        }
      }
      const code = yield* run(["node", "agent-ledger", ...args]).pipe(Effect.withConsole(capture))
      return { code, stdout: out.map((line) => `${line}\n`).join(""), stderr: err.map((line) => `${line}\n`).join("") }
    }).pipe(Effect.provide(NodeContext.layer))
  )

const lines = (text: string) => text.split("\n").filter((line) => line.length > 0)
const jsonLines = (text: string) => lines(text).map((line) => JSON.parse(line) as Record<string, unknown>)

beforeAll(() => Effect.runPromise(append(db, SEEDED)))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("agent-ledger log / show / sessions", () => {
  it("log: one line per row, filters, --limit, --json", async () => {
    const all = await cli(["log", db])
    expect(all.code).toBe(0)
    expect(lines(all.stdout)).toHaveLength(8)
    expect(lines(all.stdout)[3]).toBe(
      "#3  2026-11-24T06:03:00.000Z  agent-a  refuse  write_file@fs  rule=no-write  session=s1:3"
    )
    const filtered = await inProcess(["log", db, "--agent", "agent-a", "--decision", "refuse", "--json"])
    expect(jsonLines(filtered.stdout).map((e) => e.ledgerSequence)).toEqual([0, 3, 4])
    const last = await inProcess(["log", db, "--session", "s1", "--limit", "2", "--json"])
    expect(jsonLines(last.stdout).map((e) => e.ledgerSequence)).toEqual([3, 6])
    const window = await inProcess([
      "log",
      db,
      "--since",
      "2026-11-24T06:02:00Z",
      "--until",
      "2026-11-24T07:04:00+01:00"
    ])
    expect(lines(window.stdout).map((l) => l.split(" ")[0])).toEqual(["#2", "#3", "#4"])
  })

  it("hostile and bad input: nothing found for an injection, exit 2 with one line for what cannot be a query", async () => {
    const injection = await inProcess([
      "log",
      db,
      "--agent",
      "' OR '1'='1",
      "--rule",
      "x\"; DROP TABLE signed_events; --"
    ])
    expect([injection.code, injection.stdout]).toEqual([0, ""])
    expect(lines((await inProcess(["log", db])).stdout)).toHaveLength(8)
    for (
      const [args, message] of [
        [["log", db, "--since", "yesterday"], /--since: 'yesterday' is not a time/],
        [["log", db, "--since", "2026-11-24T06:00:00"], /has no time zone/],
        [["log", db, "--until", "2026-02-30"], /not a valid date/],
        [["log", db, "--since", "2h", "--until", "2020-01-01"], /until: is before since/],
        [["log", db, "--decision", "maybe"], /--decision: expected allow or refuse/],
        [["log", db, "--limit", "0"], /--limit/],
        [["log", db, "--limit", "999999999999"], /limit: must be a whole number from 1/],
        [["show", db, "01936f2a-5c00-7a3b-8c4d-000000000000"], /no ledger row/],
        [["show", db, "3; DROP TABLE signed_events"], /neither a sequence number nor an event id/],
        [["sessions", db, "show", "nope"], /no session nope/],
        [["sessions", db, "frob", "x"], /expected 'sessions <db>' or 'sessions <db> show ID'/],
        [["log", join(dir, "missing.db")], /missing\.db: no such file/]
      ] as const
    ) {
      const run = await inProcess(args)
      expect(run.code, args.join(" ")).toBe(2)
      expect(run.stdout, args.join(" ")).toBe("")
      expect(lines(run.stderr), args.join(" ")).toHaveLength(1)
      expect(run.stderr, args.join(" ")).toMatch(message)
    }
  })

  it("the process: exit 2 and one stderr line for an unknown row", async () => {
    const missing = await cli(["show", db, "99"])
    expect([missing.code, missing.stdout, lines(missing.stderr)]).toEqual([2, "", ["agent-ledger: no ledger row 99"]])
  })

  it("show: by sequence and by event id, with the covering seal", async () => {
    const text = await inProcess(["show", db, "3"])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain("session:    s1 entry 3")
    expect(text.stdout).toMatch(/sealed by:  row 6 \(5 entries/)
    const json = await inProcess(["show", db, SEEDED[3].id, "--json"])
    const shown = JSON.parse(json.stdout) as { row: { sequence: number }; seal: { ledgerSequence: number } }
    expect([shown.row.sequence, shown.seal.ledgerSequence]).toEqual([3, 6])
  })

  it("sessions: the list, and one session's journal with totals", async () => {
    const list = await inProcess(["sessions", db])
    expect(lines(list.stdout).map((l) => l.split("  ")[0])).toEqual(["s1", "s2", "s3", "s4"])
    expect(lines(list.stdout)[0]).toContain("calls=5  refusals=2  sealed(5)")
    const detail = JSON.parse((await inProcess(["sessions", db, "show", "s1", "--json"])).stdout) as {
      totals: { calls: number; refusals: number }
      entries: ReadonlyArray<{ ledgerSequence: number }>
    }
    expect(detail.totals).toMatchObject({ calls: 5, refusals: 2 })
    expect(detail.entries.map((e) => e.ledgerSequence)).toEqual([0, 3])
  })

  it("log --follow: the last matches, then a row another process appends, until SIGINT (exit 130)", async () => {
    const child = spawn(process.execPath, [cliBundle, "log", db, "--follow", "--agent", "agent-a", "--limit", "2"], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => stderr += chunk.toString())
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    let waiting: (() => void) | undefined
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
      waiting?.()
    })
    const printed = (pattern: RegExp) =>
      new Promise<void>((resolve) => {
        waiting = () => pattern.test(stdout) && resolve()
        waiting()
      })
    await printed(/^#6 /m)
    expect(lines(stdout).map((l) => l.split(" ")[0])).toEqual(["#4", "#6"])
    await Effect.runPromise(append(db, [laterRefusal(60, 7)]))
    await printed(/^#8 /m)
    child.kill("SIGINT")
    expect(await exited).toBe(130)
    expect(lines(stdout).map((l) => l.split(" ")[0])).toEqual(["#4", "#6", "#8"])
    expect(stderr).toContain("interrupted")
  }, 20_000)
})

describe("agent-ledger log / sessions with a stored journal", () => {
  it("log --decision allow lists the allowed calls with their outcome and bytes; sessions show totals them", async () => {
    await Effect.runPromise(appendJournal(db))
    const allowed = lines((await inProcess(["log", db, "--decision", "allow"])).stdout)
    expect(allowed).toHaveLength(2)
    expect(allowed[0]).toMatch(
      /^-  \S+  agent-a  allow  read_file@fs  session=j1:0  outcome=result  read=100  written=10$/
    )
    expect(allowed[1]).toMatch(/allow  list_dir@fs  session=j1:3  outcome=pending/)
    const detail = (await inProcess(["sessions", db, "show", "j1"])).stdout
    expect(detail).toContain("calls:      3 (1 refused)")
    expect(detail).toContain("data:       100 bytes read, 17 bytes written\n")
    expect(detail).toMatch(/#9 .* refuse  upload@fs  rule=no-upload  session=j1:2/)
  })
})

describe.skipIf(noPostgres)("agent-ledger log / show / sessions on PostgreSQL", () => {
  let url = ""
  let drop = () => {}
  beforeAll(async () => {
    ;({ url, drop } = freshDatabase())
    await Effect.runPromise(append(url, SEEDED))
  })
  afterAll(() => drop())

  it("takes a postgres:// URL wherever it takes a file", async () => {
    expect(lines((await cli(["log", url, "--rule", "no-write"])).stdout).map((l) => l.split(" ")[0])).toEqual(["#3"])
    expect((await inProcess(["show", url, "3"])).stdout).toMatch(/sealed by:  row 6/)
    expect(lines((await inProcess(["sessions", url])).stdout)).toHaveLength(4)
  })
})
