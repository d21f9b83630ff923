/**
 * `agent-ledger demo --mcp`: a real interception. A scripted MCP client (the official SDK's `Client`)
 * talks to `agent-ledger mcp-proxy`, started as a child process in front of the official filesystem MCP
 * server, over stdio, in a scratch directory: one allowed read, then a read-then-write, a blocked tool and
 * a dotfile read, each refused by a rule of the policy. Then the ledger is verified and the session's
 * journal checked against its seal, as `agent-ledger verify` would.
 */
import { Console, Effect, Option } from "effect"
import * as fs from "node:fs"
import * as NodeModule from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import * as JournalSeal from "../journal/JournalSeal.js"
import * as SessionJournal from "../journal/SessionJournal.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerStats from "../ledger/LedgerStats.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import { InputError, VerificationFailed } from "./CliError.js"
import * as McpSdk from "./McpSdk.js"

/** The demo's policy: the shape of examples/policy.json, for the filesystem server's tools. */
export const MCP_DEMO_POLICY = {
  version: 1,
  hideRefusedTools: true,
  rules: [
    { id: "no-move", kind: "blockTools", tools: ["move_file"], reason: "{tool} is not allowed in this workspace" },
    {
      id: "no-read-then-write",
      kind: "sequence",
      after: ["read_*"],
      then: ["write_file", "edit_file"],
      within: 3,
      reason: "{tool} right after reading a file looks like copying data out"
    },
    {
      id: "no-dotfiles",
      kind: "arguments",
      tools: ["read_*"],
      path: "path",
      match: { regex: "^(?!.*/\\.)" },
      reason: "dotfiles (keys, credentials) are off limits"
    }
  ],
  argumentStorage: { "read_*": { store: ["path"] } }
}

/** The filesystem server's command: the installed package when there is one, else through npx. */
const filesystemServer = (): ReadonlyArray<string> => {
  try {
    const entry = NodeModule.createRequire(import.meta.url).resolve(
      "@modelcontextprotocol/server-filesystem/dist/index.js"
    )
    return [process.execPath, entry]
  } catch {
    return ["npx", "-y", "@modelcontextprotocol/server-filesystem"]
  }
}

const textOf = (result: unknown): string =>
  ((result as { content?: ReadonlyArray<{ text?: string }> }).content ?? []).map((part) => part.text ?? "").join("")

export const runMcpDemo = (options: { readonly db: string; readonly sessionOut: string }) =>
  Effect.gen(function*() {
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "agent-ledger-mcp-demo-"))
    const files = path.join(scratch, "workspace")
    fs.mkdirSync(files)
    fs.writeFileSync(path.join(files, "notes.txt"), "Quarterly numbers: revenue up 12%.\n")
    fs.writeFileSync(path.join(files, ".env"), "API_KEY=sk-demo-not-a-real-key\n")
    const policyFile = path.join(scratch, "policy.json")
    fs.writeFileSync(policyFile, JSON.stringify(MCP_DEMO_POLICY, null, 2))
    const sessionId = `mcp-demo-${Date.now()}`
    // This very CLI, as a child process: the same node flags (a TypeScript loader when run from source).
    const proxyArgs = [
      ...process.execArgv,
      process.argv[1]!,
      "mcp-proxy",
      "--db",
      options.db,
      "--policy",
      policyFile,
      "--session",
      sessionId,
      "--export-session",
      options.sessionOut,
      "--",
      ...filesystemServer(),
      files
    ]
    yield* Console.log(`agent-ledger demo --mcp: the guard proxy in front of @modelcontextprotocol/server-filesystem`)
    yield* Console.log(`  workspace:  ${files}`)
    yield* Console.log(`  policy:     ${policyFile}`)

    const steps: ReadonlyArray<readonly [string, string, Record<string, unknown>]> = [
      ["read a note", "read_text_file", { path: path.join(files, "notes.txt") }],
      ["write what it read", "write_file", { path: path.join(files, "copy.txt"), content: "Quarterly numbers" }],
      ["move a file", "move_file", { source: path.join(files, "notes.txt"), destination: path.join(files, "x.txt") }],
      ["read the .env file", "read_text_file", { path: path.join(files, ".env") }]
    ]
    const { Client, StdioClientTransport } = yield* McpSdk.stdioClient
    yield* Effect.tryPromise({
      try: async () => {
        const client = new Client({ name: "demo-agent", version: "1.0.0" })
        await client.connect(new StdioClientTransport({ command: process.execPath, args: proxyArgs, stderr: "ignore" }))
        try {
          const tools = (await client.listTools()).tools.map((tool) => tool.name)
          console.log(`  tools:      ${tools.length} listed by the server through the proxy (move_file hidden)`)
          for (const [what, name, args] of steps) {
            const result = await client.callTool({ name, arguments: args })
            const text = textOf(result).split("\n")[0] ?? ""
            console.log(`  ${what.padEnd(20)} ${result.isError === true ? "REFUSED" : "allowed"}  ${text}`)
          }
        } finally {
          await client.close()
        }
      },
      catch: (error) =>
        new InputError({ message: `demo --mcp: ${error instanceof Error ? error.message : String(error)}` })
    })

    const { report, seal, stats } = yield* Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyLedger()
      const stats = yield* LedgerStats.stats()
      const exported = yield* SessionJournal.verifyExport(JSON.parse(fs.readFileSync(options.sessionOut, "utf8")))
      const seal = JournalSeal.check(exported, yield* JournalSeal.sealsOf(sessionId))
      return { report, seal, stats }
    }).pipe(
      Effect.provide(LedgerSql.layerFor(options.db)),
      Effect.mapError((error) => new InputError({ message: `demo --mcp: ${error.message}` }))
    )
    fs.rmSync(scratch, { recursive: true, force: true })
    yield* Console.log(`  ledger:     ${options.db}: ${stats.rows} rows, verify ${report.ok ? "OK" : "FAILED"}`)
    yield* Console.log(
      `  refusals:   ${Object.entries(stats.refusalsByRule).map(([rule, n]) => `${rule} ${n}`).join(", ")}`
    )
    yield* Console.log(`  journal:    ${options.sessionOut}: ${seal.status} (${seal.detail})`)
    yield* Console.log(`  next:       agent-ledger stats ${options.db}`)
    yield* Console.log(`              agent-ledger verify ${options.sessionOut} --ledger ${options.db}`)
    if (!report.ok || seal.status !== "sealed" || Option.isNone(seal.seal)) {
      return yield* new VerificationFailed({ message: "the demo's ledger or journal did not verify" })
    }
  })
