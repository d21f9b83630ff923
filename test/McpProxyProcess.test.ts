/**
 * `agent-ledger mcp-proxy` as a process in front of the scripted server (test/fixtures/hostileMcpServer.js),
 * driven by raw JSON-RPC lines or the official SDK client: every request gets exactly one answer whatever
 * its depth or size; the upstream inherits the proxy's environment (and `--env`); the sealed journal holds
 * calls in flight at every kind of ending; a full disk at shutdown loses no refusal silently; how each call
 * ended (result, error answer and its bytes, timeout, upstream gone) and what the proxy refuses itself
 * (duplicate ids, tool calls without an id) are on the record.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  checkSealed,
  exportedJournal,
  hostileServer,
  ledgerRows,
  proxyArgs,
  RawClient,
  workspace
} from "./fixtures/proxyProcess.js"

const tempRoot = mkdtempSync(join(tmpdir(), "agent-ledger-proxy-"))
/** tmpfs mounts of the full-disk test, unmounted before the directory is removed. */
const mounts: Array<string> = []
afterAll(() => {
  for (const dir of mounts) spawnSync("umount", [dir])
  rmSync(tempRoot, { recursive: true, force: true })
})

const policy = {
  version: 1,
  rules: [
    { id: "no-write", kind: "blockTools", tools: ["write_file"] },
    { id: "read-budget", kind: "budget", read: 100_000 }
  ]
}

/** JSON text of an object nested `levels` deep (JSON.stringify itself cannot write one this deep). */
const deepJson = (levels: number): string => "{\"a\":".repeat(levels) + "\"bottom\"" + "}".repeat(levels)

describe("mcp-proxy: every request gets exactly one answer", () => {
  it("a 10,000-deep call, a 5 MB call, a 3 MB call and a result too deep to relay each get one answer; later calls work", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws))
    await client.initialize()
    client.line(
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"value":${
        deepJson(10_000)
      }}}}`
    )
    client.call(2, "echo", { value: "x".repeat(5_000_000) })
    client.call(3, "deep", { depth: 10_000 })
    client.call(4, "echo", { value: "after" })
    // Under the guard's 4 MiB argument limit: relayed whole both ways (last: its result uses the read budget).
    client.call(5, "echo", { value: "y".repeat(3_000_000) })
    await client.until(() => [1, 2, 3, 4, 5].every((id) => client.answersTo(id).length > 0))
    for (const id of [1, 2, 3, 4, 5]) expect(client.answersTo(id)).toHaveLength(1)
    // Refused by a named rule before the guard: a tool result, the upstream never sees it.
    expect(client.answersTo(1)[0]!.result).toMatchObject({ isError: true })
    expect(JSON.stringify(client.answersTo(1)[0]!.result)).toContain("arguments-too-deep")
    // Over the guard's 4 MiB argument limit: refused unread, as a tool result; the upstream never sees it.
    expect(client.answersTo(2)[0]!.result).toMatchObject({ isError: true })
    expect(JSON.stringify(client.answersTo(2)[0]!.result)).toContain("arguments-too-large")
    expect(client.answersTo(5)[0]!.result.content[0].text).toHaveLength(3_000_000 + 12)
    // The upstream's answer cannot be serialised for the client: an error answer instead.
    expect(client.answersTo(3)[0]).toMatchObject({ error: { code: -32603 } })
    expect(client.answersTo(4)[0]!.result.content[0].text).toBe("{\"value\":\"after\"}")
    expect(client.junk).toEqual([])
    expect(await client.end()).toMatchObject({ code: 0 })
    expect(client.stderr.match(/^called .*$/gm)).toEqual(["called deep", "called echo", "called echo"])
    const { exported, last, ledgerOk } = await checkSealed(ws)
    expect(exported.entries.map((e) => [e.toolName, e.kind, e.outcome])).toEqual([
      ["echo", "call", "refused"],
      ["echo", "call", "refused"],
      ["deep", "call", "pending"],
      // The upstream answered (its bytes count), the proxy could not relay it: an error answer instead.
      ["deep", "outcome", "result"],
      ["echo", "call", "pending"],
      ["echo", "outcome", "result"],
      ["echo", "call", "pending"],
      ["echo", "outcome", "result"]
    ])
    // The too-deep result counts its bytes toward the read budget (not 0).
    expect(exported.entries[3]!.bytesRead).toBeGreaterThan(2 * 10_000)
    expect(last).toMatchObject({ length: 8, head_hash: exported.headHash })
    expect(ledgerOk).toBe(true)
    expect(ledgerRows(ws.db).refusals.map((r) => r.decision.ruleId)).toEqual([
      "arguments-too-deep",
      "arguments-too-large"
    ])
  })
})

describe("mcp-proxy: the upstream's environment", () => {
  it("is the proxy's own plus --env KEY=VALUE (which wins), as the server reports it", async () => {
    const ws = workspace(tempRoot, policy)
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: proxyArgs(ws, ["--env", "API_TOKEN=from-flag", "--env", "OVERRIDDEN=flag", "--env", "WITH_EQUALS=a=b"]),
      env: { PATH: process.env.PATH ?? "", HOME: "/tmp", CLIENT_SECRET: "from-client-config", OVERRIDDEN: "client" },
      stderr: "ignore"
    })
    const client = new Client({ name: "env-test", version: "1.0.0" })
    await client.connect(transport)
    const result = await client.callTool({ name: "env", arguments: {} })
    await client.close()
    const env = JSON.parse((result.content as Array<{ text: string }>)[0]!.text)
    expect(env).toMatchObject({
      CLIENT_SECRET: "from-client-config",
      API_TOKEN: "from-flag",
      OVERRIDDEN: "flag",
      WITH_EQUALS: "a=b",
      HOME: "/tmp"
    })
  })

  it("an --env without = is a usage error naming it", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws, ["--env", "NOVALUE"]))
    expect(await client.exited).toMatchObject({ code: 2 })
    expect(client.stderr.trim()).toBe("agent-ledger: mcp-proxy: --env NOVALUE: expected KEY=VALUE")
  })
})

/** Waits until `read()` matches `pattern` (the upstream fixture reports each call it receives on stderr). */
const untilText = async (read: () => string, pattern: RegExp, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs
  while (!pattern.test(read())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; got ${read().slice(-2000)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe("mcp-proxy: the sealed journal holds the calls in flight at every ending", () => {
  const endings = ["SIGTERM", "SIGINT", "stdin EOF", "SDK client close"] as const
  for (const ending of endings) {
    // Under the policy's read budget, a call decided while `hang` is in flight waits for it to end (its
    // bytes are not known yet): the session ends with one call in flight and one waiting for its decision.
    it(`${ending} with a call in flight and one waiting on it: both are answered, the call is journaled before the seal`, async () => {
      const ws = workspace(tempRoot, policy)
      if (ending === "SDK client close") {
        const transport = new StdioClientTransport({ command: process.execPath, args: proxyArgs(ws), stderr: "pipe" })
        let stderr = ""
        transport.stderr?.on("data", (chunk) => (stderr += String(chunk)))
        const client = new Client({ name: "ending-test", version: "1.0.0" })
        await client.connect(transport)
        await client.callTool({ name: "echo", arguments: {} })
        const hanging = client.callTool({ name: "hang", arguments: {} }).catch((error: unknown) => error)
        await untilText(() => stderr, /^called hang$/m)
        const waiting = client.callTool({ name: "echo", arguments: { after: "hang" } }).catch((error: unknown) => error)
        await client.close()
        await hanging
        await waiting
      } else {
        const client = new RawClient(proxyArgs(ws))
        await client.initialize()
        client.call(1, "echo")
        await client.answer(1)
        client.call(2, "hang")
        await untilText(() => client.stderr, /^called hang$/m)
        client.call(3, "echo", { after: "hang" })
        if (ending === "stdin EOF") {
          expect(await client.end()).toMatchObject({ code: 0 })
        } else {
          client.child.kill(ending)
          const exit = await client.exited
          expect(exit.code).toBe(130)
          // The client, still there, got one answer for the call in flight and one for the call waiting.
          for (const id of [2, 3]) {
            expect(client.answersTo(id)).toEqual([
              expect.objectContaining({ error: expect.objectContaining({ code: -32002 }) })
            ])
          }
        }
        expect(client.stderr.match(/^called .*$/gm)).toEqual(["called echo", "called hang"])
      }
      const { exported, last, ledgerOk } = await checkSealed(ws)
      expect(exported.entries.map((e) => [e.toolName, e.kind, e.outcome])).toEqual([
        ["echo", "call", "pending"],
        ["echo", "outcome", "result"],
        ["hang", "call", "pending"],
        ["hang", "outcome", "interrupted"]
      ])
      expect(last).toMatchObject({ length: 4, head_hash: exported.headHash })
      expect(ledgerOk).toBe(true)
    })
  }
})

/** A small tmpfs to fill up (needs root and mount rights; the test is skipped without them). */
const mountTmpfs = (dir: string, size: string): boolean => {
  mkdirSync(dir, { recursive: true })
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]).status === 0
  if (mounted) mounts.push(dir)
  return mounted
}
const fillUp = (dir: string) => {
  const fd = openSync(join(dir, "filler"), "w")
  const chunk = Buffer.alloc(64 * 1024, 1)
  try {
    for (;;) writeSync(fd, chunk)
  } catch {
    // ENOSPC: the disk is full.
  } finally {
    closeSync(fd)
  }
  // The last few bytes, so not even one more page fits.
  const small = openSync(join(dir, "filler-small"), "w")
  try {
    for (;;) writeSync(small, Buffer.alloc(512, 1))
  } catch {
    // full
  } finally {
    closeSync(small)
  }
}

describe("mcp-proxy --fail-closed: shutdown on a full disk loses no refusal silently", () => {
  const disk = join(tempRoot, "small-disk")
  const mounted = mountTmpfs(disk, "3m")
  if (!mounted) console.log("skipping the full-disk test: cannot mount a tmpfs (needs root and mount rights)")

  it.skipIf(!mounted)(
    "the SDK client closes while the ledger's disk is full: every answered refusal is in the ledger, the dead letters or a LOST line",
    async () => {
      const ws = workspace(tempRoot, policy)
      const db = join(disk, "ledger.db")
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: proxyArgs({ ...ws, db }, ["--fail-closed", "--spill", ws.spill]),
        stderr: "pipe"
      })
      let stderr = ""
      transport.stderr!.on("data", (chunk) => (stderr += chunk))
      const client = new Client({ name: "full-disk", version: "1.0.0" })
      await client.connect(transport)
      const refused: Array<string> = []
      const refuse = async () => {
        const result = await client.callTool({ name: "write_file", arguments: { path: "x", n: refused.length } })
        expect(result.isError).toBe(true)
        refused.push((result.content as Array<{ text: string }>)[0]!.text)
      }
      await refuse() // lands in the ledger: the disk still has room
      fillUp(disk)
      for (let i = 0; i < 5; i++) await refuse()
      await client.close()

      const exported = exportedJournal(ws)
      const refusedEntries = exported.entries.filter((e) => !e.allowed).map((e) => e.sequence)
      expect(refusedEntries).toHaveLength(6)
      rmSync(join(disk, "filler"))
      const { deadLetters, refusals, seals } = ledgerRows(db)
      const lostLines = (text: string) =>
        text.split("\n").filter((line) => line.startsWith("{\"lost\":")).map((line) => JSON.parse(line))
      const spilled = existsSync(ws.spill) ? lostLines(readFileSync(ws.spill, "utf8")) : []
      const onStderr = lostLines(stderr)
      expect(onStderr.map((l) => l.event.id).sort()).toEqual(spilled.map((l) => l.event.id).sort())
      const where = (sequence: number) =>
        refusals.some((r) => r.journal?.sequence === sequence)
          ? "ledger"
          : deadLetters.some((d) => JSON.parse(d.payload).journal?.sequence === sequence)
          ? "dead letters"
          : spilled.some((l) => l.event.journal?.sequence === sequence)
          ? "LOST"
          : "nowhere"
      const places = refusedEntries.map(where)
      expect(places).not.toContain("nowhere")
      expect(places[0]).toBe("ledger")
      expect(places).toContain("LOST")
      // The seal too: in the ledger, or written out whole.
      const sealLost = spilled.some((l) => l.event.action?.customKind === "session.sealed")
      expect(sealLost || seals.some((s) => s.length === exported.entries.length)).toBe(true)
    }
  )
})

describe("mcp-proxy: the upstream at the end", () => {
  // A regression guard: on a loaded machine the SDK transport's own SIGTERM (2 s after closing stdin) can
  // fire before the proxy is done, so this passes without the proxy's SIGTERM too.
  it("a server that ignores its stdin closing is stopped when the proxy is done, not left behind", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws, [], [process.execPath, hostileServer, "--ignore-eof"]))
    await client.initialize()
    client.call(1, "echo")
    await client.answer(1)
    const pid = Number(/^pid (\d+)$/m.exec(client.stderr)?.[1])
    expect(pid).toBeGreaterThan(0)
    expect(await client.end()).toMatchObject({ code: 0 })
    await expect.poll(() => {
      try {
        process.kill(pid, 0)
        return "running"
      } catch {
        return "gone"
      }
    }, { timeout: 10_000 }).toBe("gone")
  })
})

describe("mcp-proxy: how a call ended is on the record", () => {
  it("--call-timeout: the client gets one JSON-RPC error, the call is journaled, a late answer is dropped", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws, ["--call-timeout", "1"]))
    await client.initialize()
    client.call("late", "slow", { ms: 2500 })
    client.call("never", "hang")
    for (const id of ["late", "never"]) {
      expect(await client.answer(id)).toMatchObject({ error: { code: -32001 } })
    }
    // The late answer arrives and is dropped: still one answer, and the session goes on.
    await client.until(() => client.stderr.includes("dropped an upstream answer"))
    client.call("after", "echo", {})
    await client.answer("after")
    expect(client.answersTo("late")).toHaveLength(1)
    expect(await client.end()).toMatchObject({ code: 0 })
    const { exported, last, ledgerOk } = await checkSealed(ws)
    // Under the read budget, `hang` is decided once `slow` has ended (timed out): its bytes were not known.
    expect(exported.entries.map((e) => [e.toolName, e.kind, e.outcome, e.bytesRead])).toEqual([
      ["slow", "call", "pending", 0],
      ["slow", "outcome", "timedOut", 0],
      ["hang", "call", "pending", 0],
      ["hang", "outcome", "timedOut", 0],
      ["echo", "call", "pending", 0],
      ["echo", "outcome", "result", expect.any(Number)]
    ])
    expect(last).toMatchObject({ length: 6 })
    expect(ledgerOk).toBe(true)
  })

  it("JSON-RPC error answers are completed with their bytes (3 × 1 MiB of error data)", async () => {
    const ws = workspace(tempRoot, { version: 1, rules: [] })
    const client = new RawClient(proxyArgs(ws))
    await client.initialize()
    for (const id of [1, 2, 3]) client.call(id, "error_answer", { bytes: 1024 * 1024 })
    for (const id of [1, 2, 3]) expect(await client.answer(id)).toMatchObject({ error: { code: -32000 } })
    expect(await client.end()).toMatchObject({ code: 0 })
    const { exported } = await checkSealed(ws)
    expect(exported.entries).toHaveLength(6)
    const outcomes = exported.entries.filter((e) => e.kind === "outcome")
    expect(outcomes.map((e) => e.outcome)).toEqual(["errorAnswer", "errorAnswer", "errorAnswer"])
    for (const entry of outcomes) expect(entry.bytesRead).toBeGreaterThan(1024 * 1024)
  })

  for (
    const [how, tool, detail] of [
      ["crashes mid-answer", "crash", "the upstream server exited"],
      ["sends a message over the transport's limit", "oversize", "over the transport's limit"]
    ] as const
  ) {
    it(`an upstream that ${how}: one line, a non-zero exit, calls in flight answered and journaled`, async () => {
      // No read budget here: under one, the second call would wait for `hang` to end (its bytes are not
      // known), and the point is two calls in flight when the upstream goes.
      const ws = workspace(tempRoot, {
        version: 1,
        rules: [{ id: "no-write", kind: "blockTools", tools: ["write_file"] }]
      })
      const client = new RawClient(proxyArgs(ws))
      await client.initialize()
      client.call(1, "hang")
      client.call(2, tool)
      const exit = await client.exited
      expect(exit.code).toBe(2)
      const lines = client.stderr.split("\n").filter((line) => line.startsWith("agent-ledger: mcp-proxy:"))
      expect(lines).toHaveLength(1)
      expect(lines[0]).toContain(detail)
      expect(lines[0]).toContain("2 calls in flight ended UpstreamGone")
      for (const id of [1, 2]) {
        expect(client.answersTo(id)).toEqual([expect.objectContaining({ error: expect.anything() })])
      }
      const { exported, last, ledgerOk } = await checkSealed(ws)
      expect(exported.entries.map((e) => [e.toolName, e.kind, e.outcome])).toEqual([
        ["hang", "call", "pending"],
        [tool, "call", "pending"],
        ["hang", "outcome", "upstreamGone"],
        [tool, "outcome", "upstreamGone"]
      ])
      expect(last).toMatchObject({ length: 4 })
      expect(ledgerOk).toBe(true)
    })
  }
})

describe("mcp-proxy: request ids", () => {
  it("a duplicate in-flight id gets a JSON-RPC error and is journaled; a tools/call without an id is never forwarded", async () => {
    const ws = workspace(tempRoot, policy)
    const client = new RawClient(proxyArgs(ws))
    await client.initialize()
    client.call(5, "slow", { ms: 1000 })
    client.call(5, "echo", { second: true })
    client.send({ method: "tools/call", params: { name: "env", arguments: {} } })
    client.send({ method: "tools/call", params: { name: "write_file", arguments: {} } })
    await client.until(() => client.answersTo(5).length === 2)
    expect(client.answersTo(5)).toEqual([
      expect.objectContaining({ error: expect.objectContaining({ code: -32600 }) }),
      expect.objectContaining({ result: { content: [{ type: "text", text: "slow" }] } })
    ])
    client.call(6, "echo", {})
    await client.answer(6)
    expect(await client.end()).toMatchObject({ code: 0 })
    // The upstream saw the first call 5 and call 6, nothing else.
    expect(client.stderr.match(/^called .*$/gm)).toEqual(["called slow", "called echo"])
    const { exported, last, ledgerOk } = await checkSealed(ws)
    expect(exported.entries.map((e) => [e.toolName, e.kind, e.outcome])).toEqual([
      ["slow", "call", "pending"],
      ["echo", "call", "refused"],
      ["env", "call", "refused"],
      ["write_file", "call", "refused"],
      ["slow", "outcome", "result"],
      ["echo", "call", "pending"],
      ["echo", "outcome", "result"]
    ])
    expect(last).toMatchObject({ length: 7 })
    expect(ledgerOk).toBe(true)
    expect(ledgerRows(ws.db).refusals.map((r) => r.decision.ruleId)).toEqual([
      "duplicate-request-id",
      "tool-call-without-id",
      "tool-call-without-id"
    ])
  })
})
