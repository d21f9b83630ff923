/**
 * The CLI speaks like the tools operators know: help without type boilerplate or colour codes when piped,
 * with EXAMPLES and EXIT CODES; "did you mean" for a mistyped command or option, one `agent-ledger:` line
 * on stderr and exit 2; durations as `7m12s`; a warning for `export --from` past the head.
 */
import { execFile } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { COMMANDS } from "../src/cli/Cli.js"
import { colourAllowed, distance, unknownCommand } from "../src/cli/Help.js"
import { formatDuration } from "../src/cli/TerminalText.js"
import { cliBundle } from "./fixtures/cliBundle.js"

const dir = mkdtempSync(join(tmpdir(), "agent-ledger-clitext-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [cliBundle, ...args],
      { cwd: dir, env: { ...process.env, ...env } },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr })
    )
  })

const ANSI = /\u001b\[/

describe("--help", () => {
  for (const command of COMMANDS) {
    it(`${command} --help: examples, exit codes, no type blurbs, no colour codes when piped`, async () => {
      const help = await cli([command, "--help"])
      expect(help.code).toBe(0)
      expect(help.stdout).not.toMatch(ANSI)
      expect(help.stdout).not.toContain("A user-defined piece of text.")
      expect(help.stdout).not.toContain("A true or false value.")
      expect(help.stdout).toContain("EXAMPLES")
      expect(help.stdout).toContain("agent-ledger ")
      expect(help.stdout).toContain("EXIT CODES")
      expect(help.stdout).toMatch(/^\s+2\s+usage error/m)
    })
  }

  it("optional options say so once, in brackets on the usage line, with placeholders for their values", async () => {
    const help = await cli(["verify", "--help"])
    expect(help.stdout).not.toContain("This setting is optional")
    expect(help.stdout).not.toMatch(/^--[a-z-]+ (text|integer)\b/m)
    expect(help.stdout).toMatch(/^\$ agent-ledger verify \[--public-key FILE\]\.\.\. \[--pin SEQ:HASH\] /m)
    expect(help.stdout).toMatch(/^--pin SEQ:HASH \(optional\)$/m)
    expect(help.stdout).toMatch(/^--public-key FILE \(optional, repeatable\)$/m)
    const keygen = await cli(["keygen", "--help"])
    expect(keygen.stdout).toMatch(/^--out DIR$/m) // required: no brackets, no "(optional)"
  })

  it("agent-ledger --help lists every command with a one-line description", async () => {
    const help = await cli(["--help"])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^USAGE\n  agent-ledger <command> \[options\]$/m)
    for (const command of COMMANDS) expect(help.stdout).toMatch(new RegExp(`^  ${command} +[a-z][^\\n]{10,}$`, "m"))
  })

  it("no arguments: the help on stderr and exit 2", async () => {
    const run = await cli([])
    expect(run.code).toBe(2)
    expect(run.stdout).toBe("")
    expect(run.stderr).toContain("agent-ledger <command> [options]")
  })

  it("colour follows the terminal: hasColors (NO_COLOR, TERM=dumb) on a TTY, FORCE_COLOR even through a pipe", async () => {
    const terminal = { isTTY: true }
    expect(colourAllowed(terminal, { TERM: "xterm-256color" })).toBe(true)
    expect(colourAllowed(terminal, { TERM: "dumb" })).toBe(false)
    expect(colourAllowed(terminal, { TERM: "xterm-256color", NO_COLOR: "1" })).toBe(false)
    expect(colourAllowed({ isTTY: false }, { TERM: "xterm-256color" })).toBe(false)
    expect(colourAllowed({ isTTY: false }, { FORCE_COLOR: "1" })).toBe(true)
    expect(colourAllowed(terminal, { TERM: "xterm-256color", FORCE_COLOR: "0" })).toBe(false)
    expect((await cli(["verify", "--help"], { FORCE_COLOR: "1" })).stdout).toMatch(ANSI)
    expect((await cli(["verify", "--help"], { NO_COLOR: "1" })).stdout).not.toMatch(ANSI)
  })
})

describe("mistakes get one line on stderr, exit 2, and a suggestion", () => {
  it("a mistyped command: did you mean", async () => {
    const run = await cli(["verfy", "x.db"])
    expect(run.code).toBe(2)
    expect(run.stdout).toBe("")
    expect(run.stderr.trim()).toMatch(/^agent-ledger: unknown command 'verfy'; did you mean 'verify'\?/)
    expect(run.stderr.trim().split("\n")).toHaveLength(1)
  })

  it("a mistyped option names the option", async () => {
    const run = await cli(["verify", "--pinn", "3:ab", "x.db"])
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toBe(
      "agent-ledger: unknown option '--pinn' for verify; did you mean '--pin'? (see agent-ledger verify --help)"
    )
  })

  it("an option without its value names the option and its placeholder", async () => {
    const run = await cli(["verify", "l.db", "--pin"])
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toBe(
      "agent-ledger: option '--pin' needs a value: --pin SEQ:HASH (see agent-ledger verify --help)"
    )
    const followed = await cli(["verify", "--pin", "--json", "l.db"])
    expect(followed.stderr.trim()).toMatch(/^agent-ledger: option '--pin' needs a value/)
  })

  it("a non-integer says so in English, naming the option", async () => {
    const run = await cli(["demo", "--sessions", "abc"])
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toBe(
      "agent-ledger: option '--sessions' takes a whole number, not 'abc' (see agent-ledger demo --help)"
    )
    expect((await cli(["demo", "--sessions=1.5"])).stderr).toContain("takes a whole number, not '1.5'")
  })

  it("conflicting options are refused, not silently resolved", async () => {
    const run = await cli(["prove", "x.db", "--private-key", "k.pem", "--sequence", "1", "--event-id", "e"])
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toBe(
      "agent-ledger: --sequence and --event-id cannot be used together (see agent-ledger prove --help)"
    )
  })

  it("a missing argument is one prefixed line, without colour codes", async () => {
    const run = await cli(["stats"], { FORCE_COLOR: "1" })
    expect(run.code).toBe(2)
    expect(run.stderr).not.toMatch(ANSI)
    expect(run.stderr.trim().split("\n")).toHaveLength(1)
    expect(run.stderr).toMatch(/^agent-ledger: /)
  })

  it("did-you-mean picks the closest command, and only a close one", () => {
    expect(distance("verfy", "verify")).toBe(1)
    expect(unknownCommand("stat", COMMANDS)).toContain("did you mean 'stats'")
    expect(unknownCommand("frobnicate", COMMANDS)).not.toContain("did you mean")
  })
})

describe("output", () => {
  it("durations read like 850ms, 7.3s, 7m12s, 1h02m", () => {
    expect(formatDuration(850)).toBe("850ms")
    expect(formatDuration(7_300)).toBe("7.3s")
    expect(formatDuration(7 * 60_000 + 12_000)).toBe("7m12s")
    expect(formatDuration(3_600_000 + 2 * 60_000 + 5_000)).toBe("1h02m")
  })

  it("export --from past the head warns that nothing was exported", async () => {
    const db = join(dir, "small.db")
    const demo = await cli([
      "demo",
      "--db",
      db,
      "--sessions",
      "1",
      "--calls",
      "10",
      "--session-out",
      join(dir, "s.json")
    ])
    expect(demo.code).toBe(0)
    expect(demo.stdout).toMatch(/elapsed: +\d+(ms|\.\ds)/)
    const run = await cli(["export", db, "--from", "100000"])
    expect(run.code).toBe(0)
    expect(run.stderr).toContain("agent-ledger: warning: --from 100000 is past the head")
    expect(run.stdout.trim().split("\n")).toHaveLength(1) // the header only
  })

  it("demo writes its session export beside its database and ends with the next commands, which work", async () => {
    const sub = join(dir, "ledgers")
    mkdirSync(sub)
    const demo = await cli(["demo", "--db", join(sub, "team.db"), "--sessions", "2", "--calls", "10"])
    expect(demo.code).toBe(0)
    expect(existsSync(join(sub, "team-session.json"))).toBe(true)
    expect(existsSync(join(dir, "agent-ledger-session.json"))).toBe(false)
    const next = demo.stdout.split("\nnext:\n")[1]!.trim().split("\n").map((line) => line.trim())
    // The console first (a server: not run here; test/console.test.ts drives it), then commands that end.
    expect(next[0]).toBe(`agent-ledger console ${join(sub, "team.db")}`)
    expect(next[1]).toBe(`agent-ledger verify ${join(sub, "team.db")}`)
    for (const step of next.slice(1, 4)) {
      const run = await cli(step.split(" ").slice(1))
      expect(run.code, step).toBe(0)
    }
  })
})
