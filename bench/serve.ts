/**
 * What `agent-ledger serve` costs, measured from a second process: serve (the bundled CLI, in its own
 * process, SQLite ledger on a file, the official filesystem MCP server as its `--config` upstream) and a
 * bare Node HTTP server in its own process that reads the body and answers `{}` (the bound: what any HTTP
 * hook costs), both driven over loopback by the load generator (bench/serveLoad.ts, bundled, its own
 * process), with the same keep-alive connections (one socket per client), headers, bodies and concurrency.
 *
 * - `serve.hookDecisionP99Ms`: p99 latency of an allowed `PreToolUse` (bearer token checked, the policy's
 *   rules read, the call journaled in the ledger), sequential requests, each followed (untimed) by its
 *   `PostToolUse`; beside the bare server's p99 for the same requests.
 * - `serve.requestsPerSecond`: requests per second at saturation: 32 closed-loop clients (one session each,
 *   `PreToolUse`/`PostToolUse` pairs); beside the bare server's requests per second for the same clients
 *   and requests (on 2 cores that bound is partly the generator's own limit: it shares the machine).
 * - `serve.mcpCallOverheadMs`: median latency of an MCP `read_text_file` through serve (`/mcp/files`, the
 *   SDK's Streamable HTTP client, guard and journal) minus the same call on the filesystem server directly
 *   (the SDK's stdio client, no HTTP, no guard), alternating blocks; beside the direct call's median (its
 *   bound). A difference of medians: it can come out near zero on a noisy machine.
 * - `serve.mixedRequestsPerSecond`, `serve.mixedHookDecisionP99Ms`: hook clients (as at saturation) and
 *   MCP clients (closed-loop `read_text_file`) at once: hook requests plus MCP calls per second, and the
 *   p99 of the `PreToolUse`s under that load.
 */
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { bundleForNode } from "../test/fixtures/nodeBundle.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, cliBundle, figure, median } from "./harness.js"
import type { Job } from "./serveLoad.js"

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..")
const fsServer = join(repoRoot, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")

const policy = {
  version: 1,
  rules: [
    {
      kind: "blockTools",
      id: "no-env-files",
      tools: ["Read"],
      when: [{ path: "file_path", match: { pathGlob: ["**/.env"] } }]
    },
    { kind: "blockTools", id: "no-curl", tools: ["Bash"], when: [{ path: "command", match: { regex: "\\bcurl\\b" } }] },
    { kind: "sequence", id: "read-then-fetch", after: ["Read"], then: ["WebFetch"], within: 5 },
    { kind: "blockTools", id: "no-move", tools: ["move_file"] },
    { kind: "rateLimit", id: "rate", max: 1_000_000, windowSeconds: 60 }
  ]
}

const BARE_SERVER = `
const http = require("node:http")
http.createServer((req, res) => {
  req.on("data", () => {})
  req.on("end", () => { res.setHeader("content-type", "application/json"); res.end("{}") })
}).listen(0, "127.0.0.1", function () { console.error("listening on http://127.0.0.1:" + this.address().port + " ") })
`

const started = (child: ChildProcess) =>
  new Promise<string>((resolve, reject) => {
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
      const match = /listening on (http:\/\/\S+) /.exec(stderr)
      if (match !== null) resolve(match[1]!)
    })
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${stderr}`)))
  })

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

const SATURATION_CLIENTS = 32
const MIXED_HOOK_CLIENTS = 16
const MIXED_MCP_CLIENTS = 4

/** Runs one load-generator job in its own process; its JSON result. */
const generate = <A>(generator: string, job: Job) =>
  new Promise<A>((resolve, reject) => {
    let stdout = ""
    let stderr = ""
    const child = spawn(process.execPath, [generator, JSON.stringify(job)], { stdio: ["ignore", "pipe", "pipe"] })
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
    child.once("exit", (code) =>
      code === 0
        ? resolve(JSON.parse(stdout) as A)
        : reject(new Error(`the load generator (${job.kind}) exited ${code}: ${stderr}`)))
  })

interface Latency {
  readonly p50Ms: number
  readonly p99Ms: number
}
interface Saturation {
  readonly perSecond: number
  readonly p99Ms: number
}
interface McpCall {
  readonly serveMs: number
  readonly directMs: number
}
interface Mixed {
  readonly perSecond: number
  readonly preToolUseP99Ms: number
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const dir = fs.mkdtempSync(join(mode.dir, "serve-"))
  const cli = await cliBundle(mode)
  const generator = join(dir, "serveLoad.mjs")
  await bundleForNode(join(repoRoot, "bench/serveLoad.ts"), generator)
  fs.writeFileSync(join(dir, "policy.json"), JSON.stringify(policy))
  const token = "al_bench-token"
  const { createHash } = await import("node:crypto")
  fs.writeFileSync(join(dir, "tokens.txt"), `bench sha256:${createHash("sha256").update(token).digest("hex")}\n`)
  const root = join(dir, "files")
  fs.mkdirSync(root)
  const file = join(root, "notes.txt")
  fs.writeFileSync(file, "x".repeat(2000))
  const upstream = { command: process.execPath, args: [fsServer, root] }
  fs.writeFileSync(join(dir, "config.json"), JSON.stringify({ mcp: { files: upstream } }))
  const serve = spawn(process.execPath, [
    cli,
    "serve",
    "--db",
    join(dir, "ledger.db"),
    "--policy",
    join(dir, "policy.json"),
    "--tokens",
    join(dir, "tokens.txt"),
    "--config",
    join(dir, "config.json"),
    "--listen",
    "127.0.0.1:0",
    "--rate",
    "1000000"
  ], { stdio: ["ignore", "ignore", "pipe"] })
  const bare = spawn(process.execPath, ["-e", BARE_SERVER], { stdio: ["ignore", "ignore", "pipe"] })
  try {
    const serveBase = await started(serve)
    const serveUrl = `${serveBase}/v1/hooks/claude-code`
    const bareUrl = await started(bare)
    const calls = mode.size(2000, 30)
    const pairs = mode.size(100, 3)
    const warmup = mode.size(10, 1)
    const p99s: Array<number> = []
    const bareP99s: Array<number> = []
    const rates: Array<number> = []
    const bareRates: Array<number> = []
    const mixedRates: Array<number> = []
    const mixedP99s: Array<number> = []
    for (let round = 0; round < mode.rounds; round++) {
      const latency = (url: string, tag: string) =>
        generate<Latency>(generator, { kind: "latency", url, token, tag, calls, warmup: 20 })
      const saturation = (url: string, tag: string) =>
        generate<Saturation>(generator, {
          kind: "saturation",
          url,
          token,
          tag,
          clients: SATURATION_CLIENTS,
          pairs,
          warmup
        })
      bareP99s.push((await latency(bareUrl, `bare-${round}`)).p99Ms)
      p99s.push((await latency(serveUrl, `p99-${round}`)).p99Ms)
      bareRates.push((await saturation(bareUrl, `bare-${round}`)).perSecond)
      rates.push((await saturation(serveUrl, `rate-${round}`)).perSecond)
      const mixed = await generate<Mixed>(generator, {
        kind: "mixed",
        url: serveUrl,
        mcpUrl: `${serveBase}/mcp/files`,
        token,
        tag: `mixed-${round}`,
        file,
        clients: MIXED_HOOK_CLIENTS,
        // Each MCP session is an upstream process: one in the quick run.
        mcpClients: mode.size(MIXED_MCP_CLIENTS, 1),
        pairs,
        warmup
      })
      mixedRates.push(mixed.perSecond)
      mixedP99s.push(mixed.preToolUseP99Ms)
    }
    // The MCP call, through serve and direct, in alternating blocks within one generator run.
    const mcp = await generate<McpCall>(generator, {
      kind: "mcp",
      url: `${serveBase}/mcp/files`,
      token,
      direct: upstream,
      file,
      calls: mode.size(200, 20),
      blocks: mode.rounds * 2
    })
    return {
      "serve.hookDecisionP99Ms": bounded(median(p99s), "ms", median(bareP99s)),
      "serve.requestsPerSecond": bounded(median(rates), "requests/s", median(bareRates)),
      "serve.mcpCallOverheadMs": bounded(mcp.serveMs - mcp.directMs, "ms", mcp.directMs),
      "serve.mixedRequestsPerSecond": figure(median(mixedRates), "requests/s"),
      "serve.mixedHookDecisionP99Ms": figure(median(mixedP99s), "ms")
    }
  } finally {
    await Promise.all([stop(serve), stop(bare)])
  }
}
