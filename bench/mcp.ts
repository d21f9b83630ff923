/**
 * What the guard proxy adds to an allowed tool call: the official filesystem MCP server called directly
 * and through `agent-ledger mcp-proxy` (policy with a block rule, a budget and a sequence rule; journal,
 * ledger on a SQLite file), by the SDK's `Client` over stdio, on loopback pipes, in alternating rounds.
 *
 * `mcp.proxiedCallMs` is the median latency of an allowed `read_text_file` through the proxy, beside the
 * direct call as its bound; `mcp.proxyOverheadMs` is their difference (target: under 1 ms).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, figure, median } from "./harness.js"

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
  for (let i = 0; i < 20; i++) await client.callTool({ name: "read_text_file", arguments: { path: file } })
  const samples: Array<number> = []
  for (let i = 0; i < calls; i++) {
    const start = process.hrtime.bigint()
    const result = await client.callTool({ name: "read_text_file", arguments: { path: file } })
    samples.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (result.isError === true) throw new Error(`the benchmark's read was refused: ${JSON.stringify(result)}`)
  }
  return median(samples)
}

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
  const calls = mode.size(400, 40)

  const direct = () =>
    connected(
      new StdioClientTransport({ command: process.execPath, args: [fsServer, root], stderr: "ignore" }),
      (client) => callLatency(client, file, calls)
    )
  const proxied = (round: number, extra: ReadonlyArray<string> = []) =>
    connected(
      new StdioClientTransport({
        command: process.execPath,
        args: [
          "--import",
          "tsx",
          join(repoRoot, "src/cli/main.ts"),
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
      (client) => callLatency(client, file, calls)
    )

  const directs: Array<number> = []
  const proxies: Array<number> = []
  const failClosed: Array<number> = []
  for (let round = 0; round < mode.rounds; round++) {
    directs.push(await direct())
    proxies.push(await proxied(round))
    // Fail-closed: every call waits for its journal entry's commit (write-ahead) before it is forwarded.
    failClosed.push(await proxied(mode.rounds + round, ["--fail-closed"]))
  }
  const directMs = median(directs)
  const proxiedMs = median(proxies)
  const failClosedMs = median(failClosed)
  return {
    "mcp.proxiedCallMs": bounded(proxiedMs, "ms", directMs),
    "mcp.proxyOverheadMs": figure(proxiedMs - directMs, "ms"),
    "mcp.failClosedCallOverheadMs": figure(failClosedMs - directMs, "ms")
  }
}
