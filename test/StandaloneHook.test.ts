/**
 * `StandaloneHook.handle` in-process: each event decided on a ledger opened for it alone and closed after
 * (what one `agent-ledger hook --db` process does), so the only state carried between events is what the
 * ledger stores. The processes themselves, their lock and concurrency are in test/HookStandalone.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as StandaloneHook from "../src/serve/StandaloneHook.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const payload = (name: string, change: Record<string, unknown> = {}): unknown => ({
  ...JSON.parse(fs.readFileSync(join(fixtures, `${name}.json`), "utf8")),
  ...change
})

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [{ kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 5 }]
}))

const ledger = () => join(fs.mkdtempSync(join(os.tmpdir(), "standalone-hook-")), "ledger.db")

/** One event on its own ledger opening, as one hook process decides it. */
const event = (filename: string, raw: unknown) =>
  Effect.scoped(
    StandaloneHook.handle({ policy, agentId: "alice" }, raw).pipe(
      Effect.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
    )
  )

const rows = (filename: string) => {
  const db = new Database(filename, { readonly: true })
  try {
    return db.prepare("SELECT seq, kind, outcome, tool_name, call_seq FROM journal_entries ORDER BY seq").all()
  } finally {
    db.close()
  }
}

describe("StandaloneHook", () => {
  it.effect("resumes the session from the stored journal: the sequence rule sees an earlier event's call", () =>
    Effect.gen(function*() {
      const filename = ledger()
      expect(yield* event(filename, payload("PreToolUse-Read"))).toEqual({ _tag: "Output", output: {} })
      // A PostToolUse naming another tool under that tool_use_id ends nothing.
      expect(yield* event(filename, payload("PostToolUse-Read", { tool_name: "Bash" }))).toEqual({
        _tag: "Output",
        output: {}
      })
      expect(rows(filename)).toHaveLength(1)
      expect(yield* event(filename, payload("PostToolUse-Read"))).toEqual({ _tag: "Output", output: {} })
      const fetched = yield* event(filename, payload("PreToolUse-WebFetch"))
      expect(fetched).toMatchObject({
        _tag: "Output",
        output: { hookSpecificOutput: { permissionDecision: "deny" } }
      })
      expect(JSON.stringify(fetched)).toMatch(/rule read-then-fetch/)
      expect(rows(filename)).toEqual([
        { seq: 0, kind: "call", outcome: "pending", tool_name: "Read", call_seq: 0 },
        { seq: 1, kind: "outcome", outcome: "result", tool_name: "Read", call_seq: 0 },
        { seq: 2, kind: "call", outcome: "refused", tool_name: "WebFetch", call_seq: 2 }
      ])
    }))

  it.effect("refuses on a stored journal that does not verify (an edited column) and appends nothing", () =>
    Effect.gen(function*() {
      const filename = ledger()
      yield* event(filename, payload("PreToolUse-Read"))
      const db = new Database(filename)
      db.prepare("UPDATE journal_entries SET tool_name = 'Grep' WHERE seq = 0").run()
      db.close()
      const answer = yield* event(filename, payload("PreToolUse-Bash"))
      expect(JSON.stringify(answer)).toMatch(
        /rule journal-unverified\): the session's stored journal does not verify at entry 0 \(column: tool_name/
      )
      expect(yield* event(filename, payload("SessionEnd"))).toMatchObject({ _tag: "Failed" })
      expect(rows(filename)).toHaveLength(1)
    }))

  it.effect("refuses another agent's session", () =>
    Effect.gen(function*() {
      const filename = ledger()
      yield* Effect.scoped(
        StandaloneHook.handle({ policy, agentId: "mallory" }, payload("PreToolUse-Read")).pipe(
          Effect.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
        )
      )
      const answer = yield* event(filename, payload("PreToolUse-Bash"))
      expect(JSON.stringify(answer)).toMatch(/rule session-of-another-agent\): session .* belongs to agent mallory/)
      expect(rows(filename)).toHaveLength(1)
    }))
})
