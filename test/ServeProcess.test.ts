/**
 * The CLI end to end, as a Claude Code user runs it: `token new`, `serve` in its own process, `hook` as
 * the command hook fed the recorded payloads on stdin; the denial of `Read ./.env` and then of `WebFetch`
 * in the ledger; SIGTERM seals the open session and flushes; `hook` fails closed when serve is down.
 */
import Database from "better-sqlite3"
import type { ChildProcess } from "node:child_process"
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { cliBundle } from "./fixtures/cliBundle.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const payload = (name: string) => fs.readFileSync(join(fixtures, `${name}.json`))

const run = (args: ReadonlyArray<string>, options: { input?: Buffer; env?: Record<string, string> } = {}) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [cliBundle, ...args],
      { env: { ...process.env, ...options.env }, timeout: 20_000 },
      (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    )
    child.stdin!.end(options.input ?? "")
  })

const children: Array<ChildProcess> = []
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL")
})

/** Starts serve on a free port; resolves with its URL once it listens. */
const startServe = (args: ReadonlyArray<string>) =>
  new Promise<{ child: ChildProcess; url: string; stderr: () => string }>((resolve, reject) => {
    const child = spawn(process.execPath, [cliBundle, "serve", "--listen", "127.0.0.1:0", ...args], {
      stdio: ["ignore", "ignore", "pipe"]
    })
    children.push(child)
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
      const match = /listening on (http:\/\/[^\s]+) /.exec(stderr)
      if (match !== null) resolve({ child, url: match[1]!, stderr: () => stderr })
    })
    child.once("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)))
  })

describe("agent-ledger serve, hook and token", () => {
  it("takes a Claude Code session from token to denials in the ledger, and seals it on SIGTERM", async () => {
    const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-process-"))
    const db = join(dir, "ledger.db")
    const policy = join(dir, "policy.json")
    fs.writeFileSync(
      policy,
      JSON.stringify({
        version: 1,
        rules: [
          {
            kind: "blockTools",
            id: "no-env-files",
            tools: ["Read"],
            when: [{ path: "file_path", match: { pathGlob: ["**/.env"] } }]
          },
          { kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 10 }
        ]
      })
    )
    const minted = await run(["token", "new", "--agent", "alice-laptop"])
    expect(minted.code).toBe(0)
    const token = /^token: +(\S+)$/m.exec(minted.stdout)![1]!
    const line = /^tokens line: +(.+)$/m.exec(minted.stdout)![1]!
    expect(line).toMatch(/^alice-laptop sha256:[0-9a-f]{64}$/)
    fs.writeFileSync(join(dir, "tokens.txt"), `${line}\n`)

    const serve = await startServe(["--db", db, "--policy", policy, "--tokens", join(dir, "tokens.txt")])
    const hook = (name: string, env: Record<string, string> = { AGENT_LEDGER_TOKEN: token }) =>
      run(["hook", "--url", `${serve.url}/v1/hooks/claude-code`], { input: payload(name), env })

    // Claude Code's HTTP hook posts the same JSON the command hook reads on stdin.
    const httpHook = async (name: string) => {
      const response = await fetch(`${serve.url}/v1/hooks/claude-code`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: payload(name)
      })
      expect(response.status).toBe(200)
      return (await response.json()) as Record<string, any>
    }
    expect(await httpHook("SessionStart")).toEqual({})
    expect(await httpHook("PreToolUse-Read")).toEqual({})
    expect(await httpHook("PostToolUse-Read")).toEqual({})
    // The command hook, as a process: stdin to serve, serve's answer on stdout.
    const env = JSON.parse((await hook("PreToolUse-Read-env")).stdout)
    expect(env.hookSpecificOutput.permissionDecision).toBe("deny")
    expect(env.hookSpecificOutput.permissionDecisionReason).toMatch(/rule no-env-files/)
    const fetched = await httpHook("PreToolUse-WebFetch")
    expect(fetched.hookSpecificOutput.permissionDecisionReason).toMatch(/rule read-then-fetch/)
    // A wrong token: serve answers 401, and the command hook fails closed.
    const stranger = JSON.parse((await hook("PreToolUse-Read", { AGENT_LEDGER_TOKEN: "al_wrong" })).stdout)
    expect(stranger.hookSpecificOutput.permissionDecision).toBe("deny")
    expect(stranger.hookSpecificOutput.permissionDecisionReason).toMatch(/401/)

    // SIGTERM with the session still open: it is sealed, the queue flushed, then the process exits.
    const exited = new Promise<number | null>((resolve) => serve.child.once("exit", resolve))
    serve.child.kill("SIGTERM")
    expect(await exited).toBe(130)
    expect(serve.stderr()).toMatch(/sealing 1 open session/)

    const ledger = new Database(db, { readonly: true })
    const rows = ledger.prepare("SELECT agent_id, event_type, payload FROM signed_events ORDER BY sequence")
      .all() as Array<{ agent_id: string; event_type: string; payload: string }>
    ledger.close()
    expect(rows.map((r) => [r.agent_id, r.event_type, JSON.parse(r.payload).decision?.ruleId ?? null])).toEqual([
      ["alice-laptop", "governance.refusal", "no-env-files"],
      ["alice-laptop", "governance.refusal", "read-then-fetch"],
      ["alice-laptop", "session.sealed", null]
    ])
  }, 60_000)

  it("fails closed when serve is down: a PreToolUse is denied, other events exit 2", async () => {
    const url = "http://127.0.0.1:9/v1/hooks/claude-code"
    const env = { AGENT_LEDGER_TOKEN: "al_x" }
    const pre = await run(["hook", "--url", url, "--timeout", "2"], { input: payload("PreToolUse-Read"), env })
    expect(pre.code).toBe(0)
    expect(JSON.parse(pre.stdout).hookSpecificOutput.permissionDecision).toBe("deny")
    // Not JSON, and no token: still a denial (the event cannot be told, so it is treated as a PreToolUse).
    const garbage = await run(["hook", "--url", url], {
      input: Buffer.from("not json"),
      env: { AGENT_LEDGER_TOKEN: "" }
    })
    expect(JSON.parse(garbage.stdout).hookSpecificOutput.permissionDecisionReason).toMatch(/AGENT_LEDGER_TOKEN/)
    const post = await run(["hook", "--url", url, "--timeout", "2"], { input: payload("PostToolUse-Read"), env })
    expect(post.code).toBe(2)
    expect(post.stderr).toMatch(/^agent-ledger: hook: serve at/)
  }, 60_000)

  it("refuses to start without a usable tokens file or listen address", async () => {
    const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-process-"))
    const policy = join(dir, "policy.json")
    fs.writeFileSync(policy, JSON.stringify({ version: 1, rules: [] }))
    fs.writeFileSync(join(dir, "tokens.txt"), "alice sha256:abc\n")
    const bad = await run(["serve", "--db", join(dir, "l.db"), "--policy", policy, "--tokens", join(dir, "tokens.txt")])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/tokens\.txt:1: /)
  }, 60_000)
})
