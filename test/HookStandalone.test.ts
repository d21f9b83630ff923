/**
 * `agent-ledger hook --db --policy` (no server) as Claude Code runs it: one process per hook event, fed the
 * recorded payloads on stdin. The session's state lives only in the ledger's stored journal, so each test
 * shows a later process seeing what an earlier one recorded: a sequence rule across processes, a
 * `PostToolUse` ending the call an earlier `PreToolUse` decided, concurrent processes serialised on the
 * ledger's lock (a rate limit counts every one of them, sequences distinct), and a tampered stored entry
 * refusing the next call instead of extending the chain.
 */
import Database from "better-sqlite3"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliBundle } from "./fixtures/cliBundle.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const payload = (name: string, change: Record<string, unknown> = {}) =>
  Buffer.from(JSON.stringify({ ...JSON.parse(fs.readFileSync(join(fixtures, `${name}.json`), "utf8")), ...change }))

const run = (args: ReadonlyArray<string>, input: Buffer = Buffer.alloc(0)) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [cliBundle, ...args],
      { timeout: 30_000 },
      (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    )
    child.stdin!.end(input)
  })

const setup = (rules: ReadonlyArray<unknown>) => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "hook-standalone-"))
  const db = join(dir, "ledger.db")
  const policy = join(dir, "policy.json")
  fs.writeFileSync(policy, JSON.stringify({ version: 1, rules }))
  const hook = async (input: Buffer) => {
    const result = await run(["hook", "--db", db, "--policy", policy, "--agent", "alice"], input)
    expect(result.code).toBe(0)
    return JSON.parse(result.stdout) as Record<string, any>
  }
  const rows = () => {
    const ledger = new Database(db, { readonly: true })
    try {
      return ledger.prepare("SELECT seq, kind, outcome, agent_id, tool_name FROM journal_entries ORDER BY seq")
        .all() as Array<
          { seq: number; kind: string; outcome: string; agent_id: string; tool_name: string }
        >
    } finally {
      ledger.close()
    }
  }
  return { dir, db, policy, hook, rows }
}

const decisionOf = (answer: Record<string, any>) => answer.hookSpecificOutput?.permissionDecision ?? "none"

describe("agent-ledger hook --db (standalone)", () => {
  it(
    "decides each event against the journal earlier processes stored: .env denied, Read then WebFetch denied, PostToolUse ends the call",
    async () => {
      const { db, hook, rows } = setup([
        {
          kind: "blockTools",
          id: "no-env-files",
          tools: ["Read"],
          when: [{ path: "file_path", match: { pathGlob: ["**/.env"] } }]
        },
        { kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 5 }
      ])
      expect(await hook(payload("SessionStart"))).toEqual({})
      expect(await hook(payload("PreToolUse-Read"))).toEqual({})
      // A later process: the call the earlier one decided is ended with the result's bytes.
      expect(await hook(payload("PostToolUse-Read"))).toEqual({})
      const fetched = await hook(payload("PreToolUse-WebFetch"))
      expect(decisionOf(fetched)).toBe("deny")
      expect(fetched.hookSpecificOutput.permissionDecisionReason).toMatch(/rule read-then-fetch/)
      const env = await hook(payload("PreToolUse-Read-env"))
      expect(env.hookSpecificOutput.permissionDecisionReason).toMatch(/rule no-env-files/)
      // A second PreToolUse of a tool_use_id already decided (by another process) is refused.
      expect(await hook(payload("PreToolUse-Read"))).toMatchObject({
        hookSpecificOutput: {
          permissionDecision: "deny",
          permissionDecisionReason: expect.stringMatching(/duplicate-tool-use-id/)
        }
      })
      expect(rows().map((r) => [r.seq, r.kind, r.outcome, r.agent_id, r.tool_name])).toEqual([
        [0, "call", "pending", "alice", "Read"],
        [1, "outcome", "result", "alice", "Read"],
        [2, "call", "refused", "alice", "WebFetch"],
        [3, "call", "refused", "alice", "Read"],
        [4, "call", "refused", "alice", "Read"]
      ])
      const toolResponse = JSON.parse(fs.readFileSync(join(fixtures, "PostToolUse-Read.json"), "utf8")).tool_response
      const log = await run(["log", db, "--session", "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"])
      expect(log.code).toBe(0)
      expect(log.stdout).toContain(
        `Read@claude-code  session=9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d:0  outcome=result  read=${
          Buffer.byteLength(JSON.stringify(toolResponse))
        }`
      )
      expect(log.stdout).toMatch(/refuse +WebFetch@claude-code +rule=read-then-fetch/)
      // SessionEnd seals the journal (a session.sealed row after the three refusals); everything verifies.
      expect(await hook(payload("SessionEnd"))).toEqual({})
      const verified = await run(["verify", db])
      expect(verified.stdout).toMatch(/rows checked: +4\n/)
      expect(verified.stdout).toMatch(/1 sessions, 5 entries checked against their seals/)
      expect(verified.code).toBe(0)
    },
    120_000
  )

  it(
    "serialises concurrent processes of one session: a rate limit counts all of them, sequences distinct, the chain verifies",
    async () => {
      const { db, hook, policy, rows } = setup([
        { kind: "rateLimit", id: "shell-rate", tools: ["Bash"], max: 3, windowSeconds: 600 }
      ])
      const answers = await Promise.all(
        [0, 1, 2, 3].map((i) => hook(payload("PreToolUse-Bash", { tool_use_id: `toolu_parallel_${i}` })))
      )
      expect(answers.map(decisionOf).sort()).toEqual(["deny", "none", "none", "none"])
      expect(answers.find((a) => decisionOf(a) === "deny")!.hookSpecificOutput.permissionDecisionReason).toMatch(
        /rule shell-rate/
      )
      const stored = rows()
      expect(stored.map((r) => r.seq)).toEqual([0, 1, 2, 3])
      expect(stored.map((r) => r.outcome).sort()).toEqual(["pending", "pending", "pending", "refused"])
      const verified = await run(["verify", db])
      expect(verified.code).toBe(0)
      // A hook that cannot get the ledger's lock within --timeout denies the call and appends nothing.
      const holder = new Database(`${db}.hook-lock`)
      holder.exec("BEGIN IMMEDIATE")
      try {
        const waited = await run(
          ["hook", "--db", db, "--policy", policy, "--agent", "alice", "--timeout", "1"],
          payload("PreToolUse-Bash", { tool_use_id: "toolu_waits" })
        )
        expect(JSON.parse(waited.stdout).hookSpecificOutput.permissionDecisionReason).toMatch(
          /another hook held the ledger's lock .* for 1s/
        )
      } finally {
        holder.exec("ROLLBACK")
        holder.close()
      }
      expect(rows()).toHaveLength(4)
    },
    120_000
  )

  it("refuses a call when the stored journal was tampered with, and appends nothing to it", async () => {
    const { db, hook, rows } = setup([
      { kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 5 }
    ])
    expect(await hook(payload("PreToolUse-Read"))).toEqual({})
    const ledger = new Database(db)
    const { body } = ledger.prepare("SELECT body FROM journal_entries WHERE seq = 0").get() as { body: Buffer }
    body[body.length - 20] = body[body.length - 20]! ^ 0x01 // the entry's bytesWritten, no longer what its entry_hash covers
    ledger.prepare("UPDATE journal_entries SET body = ? WHERE seq = 0").run(body)
    ledger.close()
    const answer = await hook(payload("PreToolUse-Bash"))
    expect(decisionOf(answer)).toBe("deny")
    expect(answer.hookSpecificOutput.permissionDecisionReason).toMatch(
      /rule journal-unverified\): the session's stored journal does not verify at entry 0 \(entryHash/
    )
    expect(rows()).toHaveLength(1)
    // A PostToolUse cannot end a call in a broken journal either: exit 2, one line on stderr.
    const dir = fs.mkdtempSync(join(os.tmpdir(), "hook-standalone-"))
    fs.writeFileSync(join(dir, "p.json"), JSON.stringify({ version: 1, rules: [] }))
    const post = await run(["hook", "--db", db, "--policy", join(dir, "p.json")], payload("PostToolUse-Read"))
    expect(post.code).toBe(2)
    expect(post.stderr).toMatch(/does not verify at entry 0/)
    // PostgreSQL is not supported standalone: a PreToolUse is denied saying so.
    const pg = await run(
      ["hook", "--db", "postgres://nobody@127.0.0.1:9/x", "--policy", join(dir, "p.json")],
      payload("PreToolUse-Read")
    )
    expect(pg.code).toBe(0)
    expect(JSON.parse(pg.stdout).hookSpecificOutput.permissionDecisionReason).toMatch(
      /not supported in standalone mode/
    )
  }, 120_000)
})
