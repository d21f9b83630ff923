/**
 * What the guard proxy adds to an allowed tool call: the official filesystem MCP server called directly
 * and through `agent-ledger mcp-proxy` (policy with a block rule, a budget and a sequence rule; journal,
 * ledger on a SQLite file), by the SDK's `Client` over stdio, on loopback pipes, in alternating rounds.
 *
 * `mcp.proxiedCallMs` is the median latency of an allowed `read_text_file` through the proxy, beside the
 * direct call as its bound; `mcp.refusedCallMs` the median latency of a refused call (`move_file`, blocked:
 * journaled and appended to the ledger) on the same connection, interleaved with the allowed calls, beside
 * the allowed call (target: no more; docs/PERFORMANCE.md, "MCP proxy", says what each is made of);
 * `mcp.proxyOverheadMs` is the proxy's latency over the direct call, beside a bare byte relay's
 * (`mcp.relayOverheadMs`, a process piping stdio to the server, measured in the same rounds; target: at
 * most 0.5 ms more). The proxy runs as the bundled CLI (as an install runs it), not through a loader.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, cliBundle, figure, median } from "./harness.js"

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..")
const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")

const policy = {
  version: 1,
  rules: [
    { id: "no-move", kind: "blockTools", tools: ["move_file"] },
    { id: "read-budget", kind: "budget", read: 1_000_000_000 },
    { id: "no-read-then-write", kind: "sequence", after: ["read_*"], then: ["write_file"], within: 3 }
  ]
}

/** Median milliseconds of `calls` allowed reads on a connected client, after a warm-up. */
const callLatency = async (client: Client, file: string, calls: number): Promise<number> => {
  for (let i = 0; i < 10; i++) await client.callTool({ name: "read_text_file", arguments: { path: file } })
  const samples: Array<number> = []
  for (let i = 0; i < calls; i++) {
    const start = process.hrtime.bigint()
    const result = await client.callTool({ name: "read_text_file", arguments: { path: file } })
    samples.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (result.isError === true) throw new Error(`the benchmark's read was refused: ${JSON.stringify(result)}`)
  }
  return median(samples)
}

/**
 * Median milliseconds of `calls` allowed reads and of `calls` refused calls (`move_file`, blocked by the
 * policy) on one connection, after a warm-up of each: one of each in turn, so a load spike on this shared
 * machine falls on both alike (measured one block after the other, a 30-call quick run could put a refusal
 * anywhere from 0.35 to 1.5 times an allowed call).
 */
const allowedAndRefused = async (client: Client, file: string, calls: number) => {
  const read = () => client.callTool({ name: "read_text_file", arguments: { path: file } })
  const refused = () =>
    client.callTool({ name: "move_file", arguments: { source: file, destination: `${file}.moved` } })
  for (let i = 0; i < 10; i++) {
    await read()
    await refused()
  }
  const allowed: Array<number> = []
  const refusals: Array<number> = []
  for (let i = 0; i < calls; i++) {
    let start = process.hrtime.bigint()
    const result = await read()
    allowed.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (result.isError === true) throw new Error(`the benchmark's read was refused: ${JSON.stringify(result)}`)
    start = process.hrtime.bigint()
    const refusal = await refused()
    refusals.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (refusal.isError !== true) throw new Error(`the benchmark's move was not refused: ${JSON.stringify(refusal)}`)
  }
  return { allowed: median(allowed), refused: median(refusals) }
}

/** A bare relay: a process that pipes its stdio to the server's, bytes only (what any proxy must cost). */
const RELAY = `import { spawn } from "node:child_process"
const child = spawn(process.argv[2], process.argv.slice(3), { stdio: ["pipe", "pipe", "ignore"] })
process.stdin.pipe(child.stdin)
child.stdout.pipe(process.stdout)
child.on("exit", (code) => process.exit(code ?? 0))
`

const connected = async <A>(transport: StdioClientTransport, use: (client: Client) => Promise<A>): Promise<A> => {
  const client = new Client({ name: "bench", version: "1.0.0" })
  await client.connect(transport)
  try {
    return await use(client)
  } finally {
    await client.close()
  }
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const dir = fs.mkdtempSync(join(mode.dir, "mcp-"))
  const root = join(dir, "files")
  fs.mkdirSync(root)
  const file = join(root, "note.txt")
  fs.writeFileSync(file, "a line of text that an agent reads\n".repeat(30))
  const policyFile = join(dir, "policy.json")
  fs.writeFileSync(policyFile, JSON.stringify(policy))
  const relay = join(dir, "relay.mjs")
  fs.writeFileSync(relay, RELAY)
  const cli = await cliBundle(mode)
  const calls = mode.size(400, 30)

  const direct = () =>
    connected(
      new StdioClientTransport({ command: process.execPath, args: [fsServer, root], stderr: "ignore" }),
      (client) => callLatency(client, file, calls)
    )
  const relayed = () =>
    connected(
      new StdioClientTransport({
        command: process.execPath,
        args: [relay, process.execPath, fsServer, root],
        stderr: "ignore"
      }),
      (client) => callLatency(client, file, calls)
    )
  const proxied = (round: number, extra: ReadonlyArray<string> = []) =>
    connected(
      new StdioClientTransport({
        command: process.execPath,
        args: [
          cli,
          "mcp-proxy",
          "--db",
          join(dir, `ledger-${round}.db`),
          "--policy",
          policyFile,
          ...extra,
          "--",
          process.execPath,
          fsServer,
          root
        ],
        cwd: repoRoot,
        stderr: "ignore"
      }),
      (client) => allowedAndRefused(client, file, calls)
    )

  const directs: Array<number> = []
  const relays: Array<number> = []
  const allowed: Array<number> = []
  const refused: Array<number> = []
  const failClosed: Array<number> = []
  for (let round = 0; round < mode.rounds; round++) {
    directs.push(await direct())
    relays.push(await relayed())
    const proxy = await proxied(round)
    allowed.push(proxy.allowed)
    refused.push(proxy.refused)
    // Fail-closed: every call waits for its journal entry's commit (write-ahead) before it is forwarded.
    failClosed.push((await proxied(mode.rounds + round, ["--fail-closed"])).allowed)
  }
  const directMs = median(directs)
  const proxiedMs = median(allowed)
  const relayOverhead = median(relays) - directMs
  return {
    "mcp.proxiedCallMs": bounded(proxiedMs, "ms", directMs),
    "mcp.refusedCallMs": bounded(median(refused), "ms", proxiedMs),
    "mcp.relayOverheadMs": figure(relayOverhead, "ms"),
    // Beside the relay's overhead; a difference of medians, so either can come out near zero or below.
    "mcp.proxyOverheadMs": bounded(proxiedMs - directMs, "ms", relayOverhead),
    "mcp.failClosedCallOverheadMs": figure(median(failClosed) - directMs, "ms")
  }
}
