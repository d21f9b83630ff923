/**
 * GuardPolicy: each rule kind at its boundary, rule order, warnings, budgets over allowed calls only,
 * deny-by-default, hidden tools, what the ledger stores of arguments, and one clear error for a bad policy.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import type { GuardCall, Verdict } from "../src/guard/McpGuard.js"
import { repoRoot } from "./fixtures/cliBundle.js"

const call = (toolName: string, extra: Partial<GuardCall> = {}): GuardCall => ({
  sessionId: "s",
  agentId: "agent",
  serverId: "fs",
  toolName,
  ...extra
})

const allowed = (toolName: string, timestampMillis = 0) => ({ toolName, timestampMillis })

const snapshot = (
  calls: ReadonlyArray<GuardPolicy.AllowedCall> = [],
  totals: { read?: number; written?: number; now?: number; inFlight?: number } = {}
): GuardPolicy.Snapshot => ({
  allowed: calls,
  allowedRead: totals.read ?? 0,
  allowedWritten: totals.written ?? 0,
  inFlight: totals.inFlight ?? 0,
  nowMillis: totals.now ?? 0
})

const policyOf = (rules: ReadonlyArray<unknown>, extra: Record<string, unknown> = {}) =>
  Effect.runSync(GuardPolicy.decode({ version: 1, rules, ...extra }))

/** The verdict, when the policy can decide now (a test failure when it would wait on calls in flight). */
const verdictOf = (policy: GuardPolicy.GuardPolicy, c: GuardCall, s = snapshot()): Verdict => {
  const verdict = GuardPolicy.evaluate(policy, c, s)
  if ("_tag" in verdict) throw new Error(`the policy waits on calls in flight (rule ${verdict.ruleId})`)
  return verdict
}

const decisionOf = (policy: GuardPolicy.GuardPolicy, c: GuardCall, s = snapshot()) => {
  const verdict = verdictOf(policy, c, s)
  return verdict.decision._tag === "Refuse" ? verdict.decision.ruleId : verdict.decision._tag
}

describe("GuardPolicy rules", () => {
  it("blockTools and blockServers match globs; other tools pass", () => {
    const policy = policyOf([
      { id: "no-move", kind: "blockTools", tools: ["move_*", "rm?"] },
      { id: "no-relay", kind: "blockServers", servers: ["exfil-*"] }
    ])
    expect(decisionOf(policy, call("move_file"))).toBe("no-move")
    expect(decisionOf(policy, call("rmx"))).toBe("no-move")
    expect(decisionOf(policy, call("rmxx"))).toBe("Allow")
    expect(decisionOf(policy, call("read_file", { serverId: "exfil-relay" }))).toBe("no-relay")
    expect(decisionOf(policy, call("read_file"))).toBe("Allow")
  })

  it("the first refusing rule wins; warnings are collected and do not block", () => {
    const policy = policyOf([
      { id: "watch", kind: "blockTools", tools: ["*"], action: "warn", reason: "{tool} on {server}" },
      { id: "first", kind: "blockTools", tools: ["write_*"] },
      { id: "second", kind: "blockTools", tools: ["*"] }
    ])
    const verdict = verdictOf(policy, call("write_file"), snapshot())
    expect(verdict.decision).toMatchObject({ _tag: "Refuse", ruleId: "first" })
    expect(verdict.warnings.map((w) => [w.ruleId, w.reason])).toEqual([["watch", "write_file on fs"]])
    const warnedOnly = policyOf([{ id: "watch", kind: "blockTools", tools: ["*"], action: "warn" }])
    expect(decisionOf(warnedOnly, call("x"))).toBe("Allow")
  })

  it("budgets: read refuses once reached, written counts this call's argument bytes, warn at a fraction", () => {
    const policy = policyOf([{ id: "budget", kind: "budget", read: 100, written: 50, warnAt: 0.5 }])
    expect(decisionOf(policy, call("read"), snapshot([], { read: 99 }))).toBe("Allow")
    expect(decisionOf(policy, call("read"), snapshot([], { read: 100 }))).toBe("budget")
    const args = { text: "x".repeat(30) } // 41 bytes of JSON
    expect(decisionOf(policy, call("write", { arguments: args }), snapshot([], { written: 9 }))).toBe("Allow")
    expect(decisionOf(policy, call("write", { arguments: args }), snapshot([], { written: 10 }))).toBe("budget")
    const warned = verdictOf(policy, call("read"), snapshot([], { read: 60 }))
    expect(warned.decision._tag).toBe("Allow")
    expect(warned.warnings.map((w) => w.ruleId)).toEqual(["budget"])
    expect(verdictOf(policy, call("read"), snapshot([], { read: 40 })).warnings).toEqual([])
  })

  it("maxDelegationDepth refuses above the maximum, with the reason filled in", () => {
    const policy = policyOf([{ id: "depth", kind: "maxDelegationDepth", max: 2 }])
    expect(decisionOf(policy, call("t", { delegationDepth: 2 }))).toBe("Allow")
    const verdict = verdictOf(policy, call("t", { delegationDepth: 3 }), snapshot())
    expect(verdict.decision).toMatchObject({ ruleId: "depth", reason: "delegation depth 3 exceeds 2" })
  })

  it("callLimit counts per tool by default, at the boundary; per: rule counts the rule's tools together", () => {
    const perTool = policyOf([{ id: "limit", kind: "callLimit", tools: ["write_*"], max: 2 }])
    const one = [allowed("write_file"), allowed("read_file")]
    expect(decisionOf(perTool, call("write_file"), snapshot(one))).toBe("Allow") // 1 of 2 used
    const two = [...one, allowed("write_file")]
    expect(decisionOf(perTool, call("write_file"), snapshot(two))).toBe("limit") // 2 of 2 used
    expect(decisionOf(perTool, call("write_x"), snapshot(two))).toBe("Allow") // another tool: its own count
    expect(decisionOf(perTool, call("read_file"), snapshot(two))).toBe("Allow") // not in scope
    // The same tool under a look-alike name is the same tool.
    expect(decisionOf(perTool, call("WRITE_FILE "), snapshot(two))).toBe("limit")
    const perRule = policyOf([{ id: "limit", kind: "callLimit", tools: ["write_*"], max: 2, per: "rule" }])
    expect(decisionOf(perRule, call("write_x"), snapshot(one))).toBe("Allow")
    expect(decisionOf(perRule, call("write_x"), snapshot([...one, allowed("write_y")]))).toBe("limit")
    // A server scope: calls on other servers are not counted.
    const scoped = policyOf([{ id: "limit", kind: "callLimit", servers: ["fs"], max: 1 }])
    expect(decisionOf(scoped, call("t"), snapshot([{ ...allowed("t"), serverId: "other" }]))).toBe("Allow")
    expect(decisionOf(scoped, call("t"), snapshot([{ ...allowed("t"), serverId: "fs" }]))).toBe("limit")
    expect(() => policyOf([{ id: "limit", kind: "callLimit", max: 1, per: "session" }])).toThrow(/per/)
  })

  it("look-alike names are caught: trailing space, case, fullwidth letters, invisible code points", () => {
    const policy = policyOf([{ id: "no-write", kind: "blockTools", tools: ["write_file"] }], { hideRefusedTools: true })
    for (
      const name of [
        "write_file ",
        " write_file",
        "WRITE_FILE",
        "Write_File",
        "ｗｒｉｔｅ＿ｆｉｌｅ",
        "write_\u200bfile",
        "write_file\u00ad"
      ]
    ) {
      expect(decisionOf(policy, call(name)), JSON.stringify(name)).toBe("no-write")
      expect(GuardPolicy.isVisible(policy, "fs", name), JSON.stringify(name)).toBe(false)
    }
    expect(decisionOf(policy, call("write_files"))).toBe("Allow")
    expect(decisionOf(policy, call("write file"))).toBe("Allow")
    // Patterns are normalized alike; servers too.
    const servers = policyOf([{ id: "no-relay", kind: "blockServers", servers: ["EXFIL-*"] }])
    expect(decisionOf(servers, call("read_file", { serverId: "ｅｘｆｉｌ-relay " }))).toBe("no-relay")
    // Deny by default: a look-alike of a listed tool is that tool.
    const deny = policyOf([{ id: "reads", kind: "allowTools", tools: ["read_file"] }], { defaultAction: "deny" })
    expect(decisionOf(deny, call("READ_FILE"))).toBe("Allow")
    expect(decisionOf(deny, call("read_filé"))).toBe(GuardPolicy.DEFAULT_DENY_RULE)
    expect(GuardPolicy.normalizeName(" ＷＲＩＴＥ_File\u200d ")).toBe("write_file")
  })

  it("hideRefusedTools also hides tools a callLimit of 0 always refuses (not a warn-only one)", () => {
    const policy = policyOf([
      { id: "never", kind: "callLimit", tools: ["delete_*"], max: 0 },
      { id: "watch", kind: "callLimit", tools: ["move_file"], max: 0, action: "warn" },
      { id: "twice", kind: "callLimit", tools: ["write_file"], max: 2 }
    ], { hideRefusedTools: true })
    expect(GuardPolicy.isVisible(policy, "fs", "delete_file")).toBe(false)
    expect(GuardPolicy.isVisible(policy, "fs", "DELETE_FILE ")).toBe(false)
    expect(decisionOf(policy, call("delete_file"))).toBe("never")
    expect(GuardPolicy.isVisible(policy, "fs", "move_file")).toBe(true)
    expect(GuardPolicy.isVisible(policy, "fs", "write_file")).toBe(true)
  })

  it("argument matchers do not recurse on the value's depth", () => {
    const deep = (n: number, leaf: unknown): unknown => {
      let v = leaf
      for (let i = 0; i < n; i++) v = { a: [v] }
      return v
    }
    expect(GuardPolicy.sameJson(deep(10_000, 1), deep(10_000, 1))).toBe(true)
    expect(GuardPolicy.sameJson(deep(10_000, 1), deep(10_000, 2))).toBe(false)
    expect(GuardPolicy.sameJson({ a: 1, b: [1, { c: null }] }, { b: [1, { c: null }], a: 1 })).toBe(true)
    expect(GuardPolicy.sameJson({ a: 1 }, { a: 1, b: 2 })).toBe(false)
    expect(GuardPolicy.sameJson([1, 2], { 0: 1, 1: 2 })).toBe(false)
    const policy = policyOf([
      { id: "exact", kind: "arguments", tools: ["q"], path: "v", match: { equals: { x: [1, 2] } } }
    ])
    expect(decisionOf(policy, call("q", { arguments: { v: deep(10_000, 1) } }))).toBe("exact")
    expect(decisionOf(policy, call("q", { arguments: { v: { x: [1, 2] } } }))).toBe("Allow")
  })

  it("rateLimit counts allowed calls inside the window only", () => {
    const policy = policyOf([{ id: "rate", kind: "rateLimit", max: 2, windowSeconds: 10 }])
    const calls = [allowed("a", 1_000), allowed("b", 5_000), allowed("c", 9_000)]
    expect(decisionOf(policy, call("d"), snapshot(calls, { now: 12_000 }))).toBe("rate") // b, c in window
    expect(decisionOf(policy, call("d"), snapshot(calls, { now: 15_000 }))).toBe("Allow") // only c
  })

  it("sequence: a matching call after a matching one within the last N allowed calls", () => {
    const policy = policyOf([
      { id: "exfil", kind: "sequence", after: ["read_*"], then: ["http_*", "send_*"], within: 2 }
    ])
    expect(decisionOf(policy, call("http_post"), snapshot([allowed("read_file")]))).toBe("exfil")
    expect(decisionOf(policy, call("http_post"), snapshot([allowed("read_file"), allowed("x")]))).toBe("exfil")
    expect(decisionOf(policy, call("http_post"), snapshot([allowed("read_file"), allowed("x"), allowed("y")])))
      .toBe("Allow")
    expect(decisionOf(policy, call("list"), snapshot([allowed("read_file")]))).toBe("Allow")
  })

  it("argument matchers: regex, equals and oneOf on a path; a missing value does not satisfy", () => {
    const policy = policyOf([
      { id: "select-only", kind: "arguments", tools: ["query"], path: "sql", match: { regex: "^\\s*SELECT\\b" } },
      { id: "mode", kind: "arguments", tools: ["open"], path: "options.mode", match: { oneOf: ["r", "rb"] } },
      { id: "first", kind: "arguments", tools: ["copy"], path: "paths.0", match: { equals: "/tmp/a" } }
    ])
    expect(decisionOf(policy, call("query", { arguments: { sql: "SELECT 1" } }))).toBe("Allow")
    expect(decisionOf(policy, call("query", { arguments: { sql: "DROP TABLE t" } }))).toBe("select-only")
    expect(decisionOf(policy, call("query", { arguments: {} }))).toBe("select-only")
    expect(decisionOf(policy, call("open", { arguments: { options: { mode: "rb" } } }))).toBe("Allow")
    expect(decisionOf(policy, call("open", { arguments: { options: { mode: "w" } } }))).toBe("mode")
    expect(decisionOf(policy, call("copy", { arguments: { paths: ["/tmp/a", "/x"] } }))).toBe("Allow")
    expect(decisionOf(policy, call("copy", { arguments: { paths: ["/x"] } }))).toBe("first")
  })

  it("deny by default: only listed tools run; refused tools are hidden from tools/list when asked", () => {
    const policy = policyOf([
      { id: "reads", kind: "allowTools", tools: ["read_*", "list_*"] },
      { id: "no-secrets", kind: "blockTools", tools: ["read_secret"] },
      { id: "watch", kind: "blockTools", tools: ["list_all"], action: "warn" }
    ], { defaultAction: "deny", hideRefusedTools: true })
    expect(decisionOf(policy, call("read_file"))).toBe("Allow")
    expect(decisionOf(policy, call("write_file"))).toBe(GuardPolicy.DEFAULT_DENY_RULE)
    expect(decisionOf(policy, call("read_secret"))).toBe("no-secrets")
    expect(GuardPolicy.isVisible(policy, "fs", "read_file")).toBe(true)
    expect(GuardPolicy.isVisible(policy, "fs", "write_file")).toBe(false)
    expect(GuardPolicy.isVisible(policy, "fs", "read_secret")).toBe(false)
    expect(GuardPolicy.isVisible(policy, "fs", "list_all")).toBe(true)
    const shown = policyOf([{ id: "no-secrets", kind: "blockTools", tools: ["read_secret"] }])
    expect(GuardPolicy.isVisible(shown, "fs", "read_secret")).toBe(true)
  })
})

describe("GuardPolicy with calls in flight", () => {
  it("a refusing read or total budget waits for the calls in flight; written budgets and other rules do not", () => {
    const await_ = { _tag: "AwaitInFlight", ruleId: "budget" }
    const inFlight = snapshot([allowed("read")], { read: 100, inFlight: 1 })
    expect(GuardPolicy.evaluate(policyOf([{ id: "budget", kind: "budget", read: 1000 }]), call("read"), inFlight))
      .toEqual(await_)
    expect(GuardPolicy.evaluate(policyOf([{ id: "budget", kind: "budget", total: 1000 }]), call("read"), inFlight))
      .toEqual(await_)
    // Written bytes are known when a call is allowed: no wait.
    expect(decisionOf(policyOf([{ id: "budget", kind: "budget", written: 1000 }]), call("read"), inFlight))
      .toBe("Allow")
    // A warn-only budget never blocks, so it does not wait either.
    expect(
      decisionOf(policyOf([{ id: "budget", kind: "budget", read: 1000, action: "warn" }]), call("read"), inFlight)
    ).toBe("Allow")
    // An earlier rule that refuses decides without waiting.
    const blocked = policyOf([
      { id: "no-move", kind: "blockTools", tools: ["move_file"] },
      { id: "budget", kind: "budget", read: 1000 }
    ])
    expect(decisionOf(blocked, call("move_file"), inFlight)).toBe("no-move")
    expect(GuardPolicy.evaluate(blocked, call("read"), inFlight)).toEqual(await_)
    // Nothing in flight: the budget decides on what was read.
    expect(decisionOf(blocked, call("read"), snapshot([allowed("read")], { read: 1000 }))).toBe("budget")
  })
})

describe("what the ledger stores of arguments", () => {
  const args = { path: "/home/u/.ssh/id_ed25519", content: "-----BEGIN KEY-----", mode: 384 }

  it("by default only a salted hash and the size: no value of the arguments", () => {
    const policy = policyOf([])
    const stored = GuardPolicy.storedArguments(policy, "write_file", args, "salt-1") as Record<string, unknown>
    expect(Object.keys(stored).sort()).toEqual(["bytes", "sha256"])
    expect(stored.bytes).toBe(JSON.stringify(args).length)
    expect(JSON.stringify(stored)).not.toContain("ssh")
    // Salted per ledger: the same arguments hash differently under another salt, identically under the same.
    const again = GuardPolicy.storedArguments(policy, "write_file", {
      mode: 384,
      content: args.content,
      path: args.path
    }, "salt-1")
    expect(again).toEqual(stored)
    expect(GuardPolicy.storedArguments(policy, "write_file", args, "salt-2")).not.toEqual(stored)
  })

  it("per tool: stored fields as given, hashed fields as hashes, the rest dropped", () => {
    const policy = policyOf([], { argumentStorage: { "write_*": { store: ["path"], hash: ["content"] } } })
    const stored = GuardPolicy.storedArguments(policy, "write_file", args, "salt") as {
      fields: Record<string, unknown>
    }
    expect(stored.fields.path).toBe(args.path)
    expect(stored.fields.content).toMatchObject({ bytes: JSON.stringify(args.content).length })
    expect(JSON.stringify(stored)).not.toContain("BEGIN KEY")
    expect("mode" in stored.fields).toBe(false)
  })
})

describe("loading a policy", () => {
  const errorOf = (input: unknown) => Effect.runSync(Effect.flip(GuardPolicy.decode(input)))

  it("one error that names the field", () => {
    expect(errorOf({ version: 1, rules: [{ id: "a", kind: "blockTools", tools: [3] }] })).toMatchObject({
      path: "rules.0.tools.0"
    })
    expect(errorOf({ version: 2, rules: [] }).path).toBe("version")
    expect(errorOf({ version: 1, rules: [{ id: "a", kind: "nope" }] }).path).toMatch(/^rules\.0/)
    expect(errorOf({ version: 1, rules: [], extra: true }).path).toBe("extra")
    const badRegex = errorOf({
      version: 1,
      rules: [{ id: "a", kind: "blockTools" }, { id: "q", kind: "arguments", path: "sql", match: { regex: "(" } }]
    })
    expect(badRegex.path).toBe("rules.1.match.regex")
    expect(badRegex.message).toContain("rules.1.match.regex")
    expect(errorOf({ version: 1, rules: [{ id: "a", kind: "blockTools" }, { id: "a", kind: "blockTools" }] }).path)
      .toBe("rules.1.id")
  })

  it.effect("a file that is not JSON is an error too; the example policy loads", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(GuardPolicy.load(join(repoRoot, "nope.json")))
      expect(missing._tag).toBe("PolicyError")
      const example = yield* GuardPolicy.load(join(repoRoot, "examples", "policy.json"))
      expect(example.rules.map((rule) => rule.kind)).toContain("sequence")
    }))
})
