/**
 * The load generator of the serve bench (bench/serve.ts), run as its own process (bundled, plain `node`):
 * the load comes from a second process, as a Claude Code or an MCP client would, not from the process that
 * also spawns and times the servers. One job per run, given as JSON in argv[2]; its figures are printed as
 * one JSON line on stdout.
 *
 * Every HTTP request goes through a keep-alive `http.Agent` with one socket per client, with the same
 * headers and bodies whichever server is driven (serve or the bare server), so the two differ only in what
 * the server does.
 *
 * Jobs:
 * - `latency`: `calls` sequential `PreToolUse` requests, each timed, each followed (untimed) by its
 *   `PostToolUse`; p50/p99 of the `PreToolUse`s.
 * - `saturation`: `clients` closed-loop clients (one session each), `warmup` `PreToolUse`/`PostToolUse`
 *   pairs each, then `pairs` timed pairs each; requests per second and p99 of every timed request.
 * - `mcp`: `read_text_file` through serve (`/mcp/NAME`, the SDK's Streamable HTTP client, bearer token) and
 *   the same call on the upstream directly (the SDK's stdio client on the same server command), alternating
 *   blocks of `calls`; the median of each.
 * - `mixed`: `clients` hook clients as in `saturation` and `mcpClients` MCP clients calling
 *   `read_text_file` through serve in a closed loop for as long as the hook clients run; rates and p99s of
 *   each.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js"
import * as http from "node:http"

interface Hooks {
  readonly url: string
  readonly token: string
  readonly tag: string
}

export type Job =
  | Hooks & { readonly kind: "latency"; readonly calls: number; readonly warmup: number }
  | Hooks & { readonly kind: "saturation"; readonly clients: number; readonly pairs: number; readonly warmup: number }
  | {
    readonly kind: "mcp"
    readonly url: string
    readonly token: string
    readonly direct: { readonly command: string; readonly args: ReadonlyArray<string> }
    readonly file: string
    readonly calls: number
    readonly blocks: number
  }
  | Hooks & {
    readonly kind: "mixed"
    readonly mcpUrl: string
    readonly file: string
    readonly clients: number
    readonly mcpClients: number
    readonly pairs: number
    readonly warmup: number
  }

/** The PostToolUse's result: 2,000 bytes read, the size of a small source file. */
const CONTENT = "x".repeat(2000)

const hook = (sessionId: string, event: "PreToolUse" | "PostToolUse" | "SessionEnd", id: number) =>
  Buffer.from(JSON.stringify({
    session_id: sessionId,
    transcript_path: "/tmp/bench.jsonl",
    cwd: "/home/dev/shop",
    permission_mode: "default",
    hook_event_name: event,
    ...(event === "SessionEnd" ? { reason: "other" } : {
      tool_name: "Read",
      tool_input: { file_path: `/home/dev/shop/src/file${id % 50}.ts` },
      tool_use_id: `toolu_bench_${id}`
    }),
    ...(event === "PostToolUse" ? { tool_response: { type: "text", file: { content: CONTENT } } } : {})
  }))

/** One client's connection: one keep-alive socket, reused for every request. */
const poster = (target: Hooks) => {
  const url = new URL(target.url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const post = (body: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const request = http.request(url, {
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          authorization: `Bearer ${target.token}`
        }
      }, (response) => {
        response.on("data", () => {})
        response.on("end", () =>
          response.statusCode === 200 ? resolve() : reject(new Error(`a hook was answered ${response.statusCode}`)))
        response.on("error", reject)
      })
      request.on("error", reject)
      request.end(body)
    })
  return { post, close: () => agent.destroy() }
}

const now = () => Number(process.hrtime.bigint()) / 1e6

/** Latencies in a growable typed array (no boxed numbers on the hot path). */
const samples = () => {
  let values = new Float64Array(1024)
  let length = 0
  return {
    push: (v: number) => {
      if (length === values.length) {
        const grown = new Float64Array(values.length * 2)
        grown.set(values)
        values = grown
      }
      values[length++] = v
    },
    get length() {
      return length
    },
    quantile: (p: number) => {
      if (length === 0) return Number.NaN
      const sorted = values.slice(0, length).sort()
      return sorted[Math.min(length - 1, Math.max(0, Math.ceil(p * length) - 1))]!
    }
  }
}

const latency = async (job: Extract<Job, { kind: "latency" }>) => {
  const client = poster(job)
  const session = `${job.tag}-lat`
  const pre = samples()
  for (let i = 0; i < job.warmup + job.calls; i++) {
    const start = now()
    await client.post(hook(session, "PreToolUse", i))
    if (i >= job.warmup) pre.push(now() - start)
    await client.post(hook(session, "PostToolUse", i))
  }
  await client.post(hook(session, "SessionEnd", 0))
  client.close()
  return { calls: job.calls, p50Ms: pre.quantile(0.5), p99Ms: pre.quantile(0.99) }
}

/**
 * `clients` closed-loop hook clients, each `warmup` pairs (untimed), then, once every client is warm,
 * `pairs` timed pairs; what they did after the warm-up and how long it took (until the last one is done).
 */
const hookLoad = async (
  target: Hooks,
  clients: number,
  warmup: number,
  pairs: number,
  onWarm: (start: number) => void = () => {}
) => {
  const all = samples()
  const pre = samples()
  let warming = clients
  let go!: (start: number) => void
  const warm = new Promise<number>((resolve) => (go = resolve))
  const ended = await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const client = poster(target)
    const session = `${target.tag}-${c}`
    for (let i = 0; i < warmup + pairs; i++) {
      if (i === warmup && --warming === 0) {
        const start = now()
        onWarm(start)
        go(start)
      }
      if (i === warmup) await warm
      const start = now()
      await client.post(hook(session, "PreToolUse", i))
      const middle = now()
      await client.post(hook(session, "PostToolUse", i))
      if (i >= warmup) {
        all.push(middle - start)
        pre.push(middle - start)
        all.push(now() - middle)
      }
    }
    const end = now()
    await client.post(hook(session, "SessionEnd", 0))
    client.close()
    return end
  }))
  const ms = Math.max(...ended) - (await warm)
  return { all, pre, ms }
}

const saturation = async (job: Extract<Job, { kind: "saturation" }>) => {
  const { all, ms, pre } = await hookLoad(job, job.clients, job.warmup, job.pairs)
  return {
    requests: all.length,
    perSecond: all.length / (ms / 1000),
    p99Ms: all.quantile(0.99),
    preToolUseP99Ms: pre.quantile(0.99)
  }
}

const mcpClient = async (url: string, token: string, name: string) => {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${token}` } }
  })
  const client = new Client({ name, version: "1.0.0" })
  await client.connect(transport)
  return {
    client,
    close: async () => {
      await transport.terminateSession().catch(() => {})
      await client.close()
    }
  }
}

const read = async (client: Client, file: string) => {
  const result = await client.callTool({ name: "read_text_file", arguments: { path: file } })
  if (result.isError === true) throw new Error(`read_text_file failed: ${JSON.stringify(result.content)}`)
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const mcp = async (job: Extract<Job, { kind: "mcp" }>) => {
  const served = await mcpClient(job.url, job.token, "bench-served")
  const direct = new Client({ name: "bench-direct", version: "1.0.0" })
  await direct.connect(new StdioClientTransport({ command: job.direct.command, args: [...job.direct.args] }))
  const viaServe: Array<number> = []
  const viaDirect: Array<number> = []
  const block = async (client: Client, into: Array<number>, record: boolean) => {
    for (let i = 0; i < job.calls; i++) {
      const start = now()
      await read(client, job.file)
      if (record) into.push(now() - start)
    }
  }
  await block(direct, viaDirect, false)
  await block(served.client, viaServe, false)
  for (let b = 0; b < job.blocks; b++) {
    await block(direct, viaDirect, true)
    await block(served.client, viaServe, true)
  }
  await served.close()
  await direct.close()
  return { calls: viaServe.length, serveMs: median(viaServe), directMs: median(viaDirect) }
}

const mixed = async (job: Extract<Job, { kind: "mixed" }>) => {
  const clients = await Promise.all(
    Array.from({ length: job.mcpClients }, (_, c) => mcpClient(job.mcpUrl, job.token, `bench-mixed-${c}`))
  )
  for (const { client } of clients) await read(client, job.file)
  // The MCP clients call for as long as the hook clients run (warm-up included); what they did from the
  // end of the warm-up on is counted.
  let from = Number.POSITIVE_INFINITY
  let done = false
  const mcpCalls = samples()
  const hooks = hookLoad(job, job.clients, job.warmup, job.pairs, (start) => (from = start)).finally(
    () => (done = true)
  )
  const [{ all, ms, pre }] = await Promise.all([
    hooks,
    ...clients.map(async ({ client }) => {
      while (!done) {
        const start = now()
        await read(client, job.file)
        if (start >= from && !done) mcpCalls.push(now() - start)
      }
    })
  ])
  await Promise.all(clients.map((c) => c.close()))
  const seconds = ms / 1000
  return {
    hookPerSecond: all.length / seconds,
    mcpPerSecond: mcpCalls.length / seconds,
    perSecond: (all.length + mcpCalls.length) / seconds,
    preToolUseP99Ms: pre.quantile(0.99),
    mcpCallP99Ms: mcpCalls.quantile(0.99)
  }
}

const run = (job: Job) => {
  switch (job.kind) {
    case "latency":
      return latency(job)
    case "saturation":
      return saturation(job)
    case "mcp":
      return mcp(job)
    case "mixed":
      return mixed(job)
  }
}

run(JSON.parse(process.argv[2]!) as Job).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  },
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
