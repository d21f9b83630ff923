/**
 * What `agent-ledger serve` costs a Claude Code hook: serve (the bundled CLI, in its own process, SQLite
 * ledger on a file) driven over loopback HTTP with keep-alive from this process, beside a bare Node HTTP
 * server in its own process that reads the body and answers `{}` (the bound: what any HTTP hook costs).
 *
 * - `serve.hookDecisionP99Ms`: p99 latency of an allowed `PreToolUse` (bearer token checked, the policy's
 *   rules read, the call journaled), sequential requests, each followed (untimed) by its `PostToolUse`.
 * - `serve.hookRequestsPerSecond`: `PreToolUse`/`PostToolUse` pairs' requests per second with 16 in flight
 *   (one session per client), beside the bare server's requests per second at the same concurrency.
 */
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { bundleForNode } from "../test/fixtures/nodeBundle.js"
import type { BenchMode, Figures } from "./harness.js"
import { bounded, median, quantile } from "./harness.js"

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..")

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

const hook = (sessionId: string, event: "PreToolUse" | "PostToolUse", id: number) => ({
  session_id: sessionId,
  transcript_path: "/tmp/bench.jsonl",
  cwd: "/home/dev/shop",
  permission_mode: "default",
  hook_event_name: event,
  tool_name: "Read",
  tool_input: { file_path: `/home/dev/shop/src/file${id % 50}.ts` },
  tool_use_id: `toolu_bench_${id}`,
  ...(event === "PostToolUse" ? { tool_response: { type: "text", file: { content: "x".repeat(2000) } } } : {})
})

const post = async (url: string, token: string, body: unknown): Promise<void> => {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body)
  })
  await response.text()
  if (response.status !== 200) throw new Error(`the bench's hook was answered ${response.status}`)
}

/** p99 milliseconds of `calls` sequential PreToolUse requests (each followed by its PostToolUse). */
const decisionP99 = async (url: string, token: string, calls: number, session: string): Promise<number> => {
  const samples: Array<number> = []
  for (let i = 0; i < calls + 20; i++) {
    const start = process.hrtime.bigint()
    await post(url, token, hook(session, "PreToolUse", i))
    if (i >= 20) samples.push(Number(process.hrtime.bigint() - start) / 1e6)
    await post(url, token, hook(session, "PostToolUse", i))
  }
  return quantile(samples, 0.99)
}

/** Requests per second with `clients` sessions in flight, `perClient` pairs each. */
const throughput = async (url: string, token: string, clients: number, perClient: number, tag: string) => {
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; i < perClient; i++) {
      await post(url, token, hook(`${tag}-${c}`, "PreToolUse", i))
      await post(url, token, hook(`${tag}-${c}`, "PostToolUse", i))
    }
  }))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  return (clients * perClient * 2) / seconds
}

export const run = async (mode: BenchMode): Promise<Figures> => {
  const dir = fs.mkdtempSync(join(mode.dir, "serve-"))
  const cli = join(dir, "cli.mjs")
  await bundleForNode(join(repoRoot, "src/cli/main.ts"), cli)
  // Its writer thread beside it, where the bundled CLI looks (an MCP client passes the child no env of ours).
  await bundleForNode(join(repoRoot, "src/ledger/LedgerWriterWorker.ts"), join(dir, "LedgerWriterWorker.mjs"))
  fs.writeFileSync(join(dir, "policy.json"), JSON.stringify(policy))
  const token = "al_bench-token"
  const { createHash } = await import("node:crypto")
  fs.writeFileSync(join(dir, "tokens.txt"), `bench sha256:${createHash("sha256").update(token).digest("hex")}\n`)
  const serve = spawn(process.execPath, [
    cli,
    "serve",
    "--db",
    join(dir, "ledger.db"),
    "--policy",
    join(dir, "policy.json"),
    "--tokens",
    join(dir, "tokens.txt"),
    "--listen",
    "127.0.0.1:0",
    "--rate",
    "1000000"
  ], { stdio: ["ignore", "ignore", "pipe"] })
  const bare = spawn(process.execPath, ["-e", BARE_SERVER], { stdio: ["ignore", "ignore", "pipe"] })
  try {
    const serveUrl = `${await started(serve)}/v1/hooks/claude-code`
    const bareUrl = await started(bare)
    const calls = mode.size(2000, 30)
    const p99s: Array<number> = []
    const bareP99s: Array<number> = []
    const rates: Array<number> = []
    const bareRates: Array<number> = []
    for (let round = 0; round < mode.rounds; round++) {
      bareP99s.push(await decisionP99(bareUrl, token, calls, `bare-${round}`))
      p99s.push(await decisionP99(serveUrl, token, calls, `p99-${round}`))
      const perClient = mode.size(100, 3)
      bareRates.push(await throughput(bareUrl, token, 16, perClient, `bare-${round}`))
      rates.push(await throughput(serveUrl, token, 16, perClient, `rate-${round}`))
    }
    return {
      "serve.hookDecisionP99Ms": bounded(median(p99s), "ms", median(bareP99s)),
      "serve.hookRequestsPerSecond": bounded(median(rates), "requests/s", median(bareRates))
    }
  } finally {
    await Promise.all([stop(serve), stop(bare)])
  }
}
