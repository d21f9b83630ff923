/**
 * The hostile suite: `agent-ledger mcp-proxy` between a misbehaving client (raw JSON-RPC lines: junk,
 * batches, missing and duplicate ids, deep and huge arguments, lone surrogates, `__proto__` keys, 50 calls
 * in flight) and a misbehaving server (test/fixtures/hostileMcpServer.js: malformed output, no answer,
 * notification floods, double answers, huge results, a changing tool list, a crash mid-answer). Each case
 * asserts what the client got (exactly one answer per request), the journal, the ledger, and that
 * `agent-ledger verify` passes on the database. Two proxy processes in all, to stay fast on a busy machine.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { checkSealed, ledgerRows, proxyArgs, RawClient, verifyCli, workspace } from "./fixtures/proxyProcess.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-hostile-"))
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }))

const policy = {
  version: 1,
  hideRefusedTools: true,
  rules: [{ id: "no-write", kind: "blockTools", tools: ["write_file"] }]
}

const deepJson = (levels: number): string => "{\"a\":".repeat(levels) + "1" + "}".repeat(levels)
const callLine = (id: unknown, name: string, argumentsJson: string) =>
  `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"method":"tools/call","params":{"name":${
    JSON.stringify(name)
  },"arguments":${argumentsJson}}}`

describe("mcp-proxy against a hostile client", () => {
  it("junk, batches, missing and duplicate ids, deep and huge arguments, lone surrogates, __proto__, 50 in flight", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws))
    await client.initialize()

    // Junk lines and a batch: one JSON-RPC error each, with id null (a batch is not an MCP message).
    client.line("this is not json")
    client.line("{\"jsonrpc\":\"2.0\",")
    client.line("[{\"jsonrpc\":\"2.0\",\"id\":\"b1\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"}}]")
    client.line("{\"jsonrpc\":\"2.0\",\"id\":{\"an\":\"object\"},\"method\":\"tools/call\"}")
    // A line over the 10 MiB the proxy reads: skipped and answered, the session goes on.
    client.line(callLine("too-long", "echo", JSON.stringify({ blob: "z".repeat(11 * 1024 * 1024) })))
    await client.until((received) => received.filter((m) => m.id === null).length === 5)
    expect(client.received.filter((m) => m.id === null).map((m) => m.error.code)).toEqual([
      -32700,
      -32700,
      -32600,
      -32600,
      -32600
    ])

    // Missing ids: never forwarded, refused on the record. Duplicate ids: the second gets an error.
    client.send({ method: "tools/call", params: { name: "write_file", arguments: { path: "/etc/passwd" } } })
    client.call("dup", "slow", { ms: 300 })
    client.call("dup", "echo", {})

    // Deep, huge, ill-formed Unicode and __proto__ arguments.
    client.line(callLine("deep", "echo", deepJson(10_000)))
    client.line(callLine("just-over", "echo", deepJson(300)))
    // Under the proxy's 256 levels but over the guard's policy default of 64: refused by the guard.
    client.line(callLine("over-policy", "echo", deepJson(100)))
    client.line(callLine("deep-ok", "echo", deepJson(60)))
    client.call("huge", "echo", { blob: "y".repeat(1_000_000) })
    client.line(callLine("surrogate-arg", "write_file", "{\"path\":\"\\ud800\"}"))
    client.line(callLine("surrogate-name", "echo\udc00", "{\"text\":\"\\udfff\"}"))
    client.line(callLine("proto", "echo", "{\"__proto__\":{\"polluted\":true},\"constructor\":{\"prototype\":1}}"))
    client.line(callLine("proto-refused", "write_file", "{\"__proto__\":{\"path\":\"x\"}}"))

    // 50 calls in flight at once.
    const many = Array.from({ length: 50 }, (_, i) => `many-${i}`)
    for (const id of many) client.call(id, "slow", { ms: 200 })

    const ids = [
      "deep",
      "just-over",
      "over-policy",
      "deep-ok",
      "huge",
      "surrogate-arg",
      "surrogate-name",
      "proto",
      "proto-refused",
      ...many
    ]
    await client.until(() => ids.every((id) => client.answersTo(id).length > 0) && client.answersTo("dup").length === 2)
    // Exactly one answer per request (two for the duplicated id: its error, then the first call's result).
    for (const id of ids) expect(client.answersTo(id), String(id)).toHaveLength(1)
    expect(client.answersTo("dup").map((m) => m.error?.code ?? "result")).toEqual([-32600, "result"])
    const resultOf = (id: string) => client.answersTo(id)[0]!.result
    const textOf = (id: string) => JSON.stringify(client.answersTo(id)[0])
    expect(textOf("deep")).toContain("arguments-too-deep")
    expect(textOf("just-over")).toContain("arguments-too-deep")
    expect(textOf("over-policy")).toContain("arguments-too-deep")
    expect(resultOf("deep-ok").isError).not.toBe(true)
    expect(resultOf("huge").content[0].text).toHaveLength(1_000_000 + 11)
    expect(textOf("surrogate-arg")).toContain("no-write")
    // Passed through unchanged, own `__proto__` key and all.
    expect(JSON.parse(resultOf("proto").content[0].text)).toEqual(
      JSON.parse("{\"__proto__\":{\"polluted\":true},\"constructor\":{\"prototype\":1}}")
    )
    expect(textOf("proto-refused")).toContain("no-write")
    for (const id of many) expect(resultOf(id).content[0].text).toBe("slow")
    expect(client.junk).toEqual([])

    expect(await client.end()).toMatchObject({ code: 0 })
    // The upstream never saw a refused, batched, id-less or duplicated call.
    const called = client.stderr.match(/^called .*$/gm) ?? []
    expect(called.filter((line) => line === "called write_file")).toEqual([])
    expect(client.answersTo("too-long")).toEqual([])
    expect(called.filter((line) => line === "called slow")).toHaveLength(51)

    const { exported, last, ledgerOk } = await checkSealed(ws)
    expect(ledgerOk).toBe(true)
    expect(last).toMatchObject({ length: exported.entries.length, head_hash: exported.headHash })
    // Every call that got a tool answer or a duplicate-id error is journaled (the surrogate-named one,
    // whatever the guard made of its name, included).
    // Journal v2: one `call` entry per decision; each allowed (pending) call has exactly one `outcome`
    // entry naming it, and here every one ended with the upstream's answer.
    const calls = exported.entries.filter((e) => e.kind === "call")
    const outcomes = exported.entries.filter((e) => e.kind === "outcome")
    expect(calls.length).toBe(1 + 2 + ids.length)
    const pending = calls.filter((e) => e.outcome === "pending").map((e) => e.sequence)
    expect(outcomes.map((e) => e.callSequence).sort((a, b) => a! - b!)).toEqual(pending)
    expect(new Set(outcomes.map((e) => e.outcome))).toEqual(new Set(["result"]))
    expect(calls.filter((e) => e.outcome === "refused").length).toBe(calls.length - pending.length)
    expect(exported.entries.length).toBe(calls.length + outcomes.length)
    const rules = ledgerRows(ws.db).refusals.map((r) => r.decision.ruleId)
    expect(rules.filter((rule) => rule === "arguments-too-deep")).toHaveLength(3)
    expect(rules).toContain("tool-call-without-id")
    expect(rules).toContain("duplicate-request-id")
    expect(rules.filter((rule) => rule === "no-write")).toHaveLength(2)
    expect((await verifyCli(ws.db)).code).toBe(0)
  })
})

describe("mcp-proxy in front of a hostile server", () => {
  it("malformed output, no answer, floods, double answers, huge results, a changing tool list, a crash", async () => {
    const ws = workspace(tempRoot, policy)
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: proxyArgs(ws, ["--call-timeout", "8"]),
      stderr: "pipe"
    })
    let stderr = ""
    transport.stderr!.on("data", (chunk) => (stderr += chunk))
    const client = new Client({ name: "hostile-server-test", version: "1.0.0" })
    const changed = new Promise<void>((resolve) =>
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve())
    )
    let logs = 0
    await client.connect(transport)
    client.fallbackNotificationHandler = async () => void logs++
    const text = (result: unknown) => (result as { content: Array<{ text: string }> }).content[0]!.text

    const listed = (await client.listTools()).tools.map((tool) => tool.name)
    expect(listed).toContain("echo")
    expect(listed).not.toContain("write_file")

    // No answer: runs alongside the rest, until the call timeout.
    const hang = client.callTool({ name: "hang", arguments: {} }).then(
      () => "answered",
      (error: Error) => error.message
    )
    expect(text(await client.callTool({ name: "malformed", arguments: {} }))).toBe("after junk")
    expect(text(await client.callTool({ name: "flood", arguments: { count: 1000 } }))).toBe("flooded")
    expect(text(await client.callTool({ name: "double", arguments: {} }))).toBe("first")
    expect(text(await client.callTool({ name: "huge", arguments: { bytes: 2_000_000 } }))).toHaveLength(2_000_000)
    expect(text(await client.callTool({ name: "change_tools", arguments: {} }))).toBe("changed")
    await changed
    expect((await client.listTools()).tools.map((tool) => tool.name)).toContain("exfiltrate")
    expect(await hang).toMatch(/did not answer within 8s/)
    // The session still works after all that, then the server crashes mid-answer.
    expect(text(await client.callTool({ name: "echo", arguments: { ok: 1 } }))).toBe("{\"ok\":1}")
    const closed = new Promise<void>((resolve) => (client.onclose = resolve))
    await expect(client.callTool({ name: "crash", arguments: {} })).rejects.toThrow()
    await closed

    expect(logs).toBeGreaterThanOrEqual(1000)
    expect(stderr).toContain("dropped an upstream answer")
    expect(stderr.split("\n").filter((line) => line.startsWith("agent-ledger: mcp-proxy:"))).toEqual([
      expect.stringContaining("the upstream server exited while the client was connected (1 call in flight")
    ])
    const { exported, last, ledgerOk } = await checkSealed(ws)
    expect(ledgerOk).toBe(true)
    // Journal v2: the calls in the order they were decided; their outcomes in the order they ended (the
    // hanging one at its timeout, wherever that fell), each naming its call.
    const calls = exported.entries.filter((e) => e.kind === "call")
    expect(calls.map((e) => [e.toolName, e.outcome])).toEqual(
      ["hang", "malformed", "flood", "double", "huge", "change_tools", "echo", "crash"].map((tool) => [tool, "pending"])
    )
    const outcomeOf = (tool: string) => {
      const call = calls.find((e) => e.toolName === tool)!
      const ended = exported.entries.filter((e) => e.kind === "outcome" && e.callSequence === call.sequence)
      expect(ended, tool).toHaveLength(1)
      return ended[0]!
    }
    for (const tool of ["malformed", "flood", "double", "huge", "change_tools", "echo"]) {
      expect(outcomeOf(tool).outcome, tool).toBe("result")
    }
    expect(outcomeOf("hang").outcome).toBe("timedOut")
    expect(outcomeOf("crash").outcome).toBe("upstreamGone")
    expect(outcomeOf("huge").bytesRead).toBeGreaterThan(2_000_000)
    expect(last).toMatchObject({ length: 16, head_hash: exported.headHash })
    expect((await verifyCli(ws.db)).code).toBe(0)
  })
})
