/**
 * What a user installs: `npm pack` (which builds on `prepack`), the tarball unpacked into two scratch apps
 * whose other dependencies resolve from this project's own install (no registry, no second better-sqlite3
 * build): one with the MCP SDK, one without it (a ledger-only application). Every public module and subpath
 * entry point is imported, the installed bin run, and a consumer file type-checked under strict settings
 * with `skipLibCheck: false`. The README's install line is resolved by npm exactly as written.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { repoRoot } from "./fixtures/cliBundle.js"

const run = promisify(execFile)
const root = fs.mkdtempSync(join(tmpdir(), "agent-ledger-pack-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

const app = join(root, "app")
const installed = join(app, "node_modules", "agent-ledger")
/** A ledger-only application: the same install without the optional MCP SDK. */
const appNoSdk = join(root, "app-no-sdk")
let files: ReadonlyArray<string> = []
let tarball = ""

/** The subsystem entry points (package.json `exports`), each with its folder's index module. */
const SUBPATHS = ["audit", "guard", "journal", "ledger", "serve", "transparency"] as const

/** The namespaces a folder's index module exports. */
const namespacesOf = (file: string): Array<string> =>
  Array.from(fs.readFileSync(file, "utf8").matchAll(/^export \* as (\w+) from/gm), (match) => match[1]!).sort()

/** Unpacks the tarball into `dir` and links this project's install into it, leaving out `omit`. */
const installApp = async (dir: string, omit: ReadonlyArray<string>) => {
  const target = join(dir, "node_modules", "agent-ledger")
  fs.mkdirSync(target, { recursive: true })
  await run("tar", ["-xzf", tarball, "-C", target, "--strip-components=1"])
  for (const entry of fs.readdirSync(join(repoRoot, "node_modules"))) {
    if (entry.startsWith(".") || entry === "agent-ledger") continue
    if (entry.startsWith("@")) {
      // Scoped packages one by one, so that one package of a scope can be left out.
      fs.mkdirSync(join(dir, "node_modules", entry), { recursive: true })
      for (const inner of fs.readdirSync(join(repoRoot, "node_modules", entry))) {
        if (omit.includes(`${entry}/${inner}`)) continue
        fs.symlinkSync(join(repoRoot, "node_modules", entry, inner), join(dir, "node_modules", entry, inner))
      }
      continue
    }
    fs.symlinkSync(join(repoRoot, "node_modules", entry), join(dir, "node_modules", entry))
  }
  fs.writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "app", type: "module", private: true }))
}

/** Every namespace the barrel exports (src/index.ts), so a new module is checked without editing this list. */
const PUBLIC_MODULES = Array.from(
  fs.readFileSync(join(repoRoot, "src", "index.ts"), "utf8").matchAll(/^export \* as (\w+) from/gm),
  (match) => match[1]!
).sort()

beforeAll(async () => {
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", root], {
    cwd: repoRoot,
    maxBuffer: 64 * 1024 * 1024
  })
  const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  files = packed!.files.map((f) => f.path)
  tarball = join(root, packed!.filename)
  await installApp(app, [])
  await installApp(appNoSdk, ["@modelcontextprotocol/sdk", "@modelcontextprotocol/server-filesystem"])
}, 180_000)

describe("the packed package", () => {
  it("ships the built code, its types, the bin and the docs, and no source maps or tests", () => {
    for (const file of ["dist/index.js", "dist/index.d.ts", "dist/cli/main.js", "docs/FORMAT.md", "package.json"]) {
      expect(files).toContain(file)
    }
    expect(files.filter((f) => f.endsWith(".map"))).toEqual([])
    expect(files.filter((f) => f.startsWith("test/") || f.startsWith("src/"))).toEqual([])
    const manifest = JSON.parse(fs.readFileSync(join(installed, "package.json"), "utf8"))
    expect(Object.keys(manifest.peerDependencies)).toContain("effect")
    expect(manifest.dependencies?.effect).toBeUndefined()
    // The MCP SDK is an optional peer: a ledger-only install does not pull it (nor its ~90 packages).
    expect(manifest.dependencies?.["@modelcontextprotocol/sdk"]).toBeUndefined()
    expect(manifest.peerDependencies["@modelcontextprotocol/sdk"]).toBeDefined()
    expect(manifest.peerDependenciesMeta["@modelcontextprotocol/sdk"]).toEqual({ optional: true })
    for (const subpath of SUBPATHS) {
      expect(files).toContain(`dist/${subpath}/index.js`)
      expect(files).toContain(`dist/${subpath}/index.d.ts`)
    }
  })

  it("imports each subsystem's entry point (agent-ledger/<folder>), with and without the MCP SDK", async () => {
    const script = `const out = {}
for (const subpath of ${
      JSON.stringify(SUBPATHS)
    }) out[subpath] = Object.keys(await import("agent-ledger/" + subpath)).sort()
out.root = Object.keys(await import("agent-ledger")).length
console.log(JSON.stringify(out))`
    for (const dir of [app, appNoSdk]) {
      const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: dir })
      const found = JSON.parse(stdout) as Record<string, unknown>
      for (const subpath of SUBPATHS) {
        expect(found[subpath], `${dir}: ${subpath}`).toEqual(namespacesOf(join(repoRoot, "src", subpath, "index.ts")))
      }
      expect(found.root).toBe(PUBLIC_MODULES.length)
    }
    // The SDK really is absent from the ledger-only app (so the imports above did not need it).
    const probe =
      `import("@modelcontextprotocol/sdk/client/stdio.js").then(() => console.log("present"), () => console.log("absent"))`
    expect((await run(process.execPath, ["--input-type=module", "-e", probe], { cwd: appNoSdk })).stdout.trim())
      .toBe("absent")
  })

  it("runs the bin without the MCP SDK; mcp-proxy then says how to install it (exit 2)", async () => {
    const bin = join(appNoSdk, "node_modules", "agent-ledger", "dist", "cli", "main.js")
    const help = await run(process.execPath, [bin, "--help"], { cwd: appNoSdk })
    expect(help.stdout).toContain("verify")
    const policy = join(appNoSdk, "policy.json")
    fs.copyFileSync(join(repoRoot, "examples", "policy.json"), policy)
    const proxy = await run(
      process.execPath,
      [bin, "mcp-proxy", "--db", join(appNoSdk, "l.db"), "--policy", policy, "--", process.execPath, "-e", ""],
      { cwd: appNoSdk }
    ).then(() => ({ code: 0, stderr: "" }), (error) => ({ code: error.code as number, stderr: String(error.stderr) }))
    expect(proxy.code).toBe(2)
    expect(proxy.stderr).toContain("npm install @modelcontextprotocol/sdk@^1.32")
    expect(proxy.stderr.trim().split("\n")).toHaveLength(1)
  })

  it("the README's install line resolves as written (no ERESOLVE, effect 3, no MCP SDK)", async () => {
    const readme = fs.readFileSync(join(repoRoot, "README.md"), "utf8")
    const line = /^npm install agent-ledger (.+)$/m.exec(readme)
    expect(line).not.toBeNull()
    const scratch = join(root, "install-line")
    fs.mkdirSync(scratch)
    fs.writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "scratch", private: true }))
    // The tarball stands in for `agent-ledger`; the rest of the line is the README's, word for word.
    // Resolution only (a lockfile): no tarball downloads, no better-sqlite3 build.
    const result = await run(
      "npm",
      [
        "install",
        "--package-lock-only",
        "--ignore-scripts",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        tarball,
        ...line![1]!.trim().split(/\s+/)
      ],
      { cwd: scratch, maxBuffer: 64 * 1024 * 1024 }
    ).catch((error) => error as { code: number; stderr: string })
    const stderr = String((result as { stderr?: string }).stderr ?? "")
    if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENOTCACHED/.test(stderr)) {
      console.warn(`SKIPPED: the npm registry cannot be reached to resolve the install line: ${stderr.split("\n")[0]}`)
      return
    }
    expect(stderr).not.toContain("ERESOLVE")
    const lock = JSON.parse(fs.readFileSync(join(scratch, "package-lock.json"), "utf8")) as {
      packages: Record<string, { version?: string }>
    }
    expect(lock.packages["node_modules/effect"]?.version).toMatch(/^3\./)
    expect(lock.packages["node_modules/@modelcontextprotocol/sdk"]).toBeUndefined()
    expect(lock.packages["node_modules/better-sqlite3"]).toBeDefined()
  }, 180_000)

  it("imports every public module from the installed package", async () => {
    const script = `import * as L from "agent-ledger"; console.log(JSON.stringify(Object.fromEntries(
      Object.entries(L).map(([k, v]) => [k, Object.keys(v).length]))))`
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: app })
    const modules = JSON.parse(stdout) as Record<string, number>
    expect(Object.keys(modules).sort()).toEqual(PUBLIC_MODULES)
    for (const name of PUBLIC_MODULES) expect(modules[name], name).toBeGreaterThan(0)
  })

  it("runs `agent-ledger --help` through the installed bin", async () => {
    const manifest = JSON.parse(fs.readFileSync(join(installed, "package.json"), "utf8"))
    const bin = join(installed, manifest.bin["agent-ledger"])
    expect(fs.readFileSync(bin, "utf8").startsWith("#!/usr/bin/env node")).toBe(true)
    const { stdout } = await run(process.execPath, [bin, "--help"], { cwd: app })
    for (const command of ["demo", "verify", "export", "dlq", "stats", "keygen"]) expect(stdout).toContain(command)
  })

  it("type-checks a consumer under strict, exactOptionalPropertyTypes and skipLibCheck: false", async () => {
    fs.writeFileSync(
      join(app, "consumer.ts"),
      `import { Effect, Option } from "effect"
import { AuditEvent, AuditLedger, AuditQueue, LedgerVerifier, SessionJournal } from "agent-ledger"
import { McpGuard } from "agent-ledger/guard"
import { MerkleTree } from "agent-ledger/transparency"

export const outcome: McpGuard.CallOutcome = { _tag: "Result", bytesRead: 1 }
export const root: Uint8Array = MerkleTree.leafHash(new Uint8Array([1]))

export const program = (filename: string) =>
  Effect.gen(function*() {
    const journal = yield* SessionJournal.make("session-1")
    yield* journal.record({
      toolName: "t", serverId: "s", agentId: "a", bytesRead: 1, bytesWritten: 0, delegationDepth: 0, allowed: false
    })
    const queue = yield* AuditQueue.AuditQueue
    const receipt: Option.Option<AuditQueue.AuditReceipt> = yield* queue.submitRefusalAndWait(
      "a",
      new AuditEvent.ToolCall({ toolName: "t", serverId: "s" }),
      new AuditEvent.Refuse({ ruleId: "R", reason: "r" })
    )
    const report = yield* LedgerVerifier.verifyLedger()
    return { receipt, ok: report.ok, flow: yield* journal.dataFlow }
  }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename, maxBatch: 64 })))
`
    )
    fs.writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          lib: ["ES2022"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          noEmit: true,
          types: ["node"]
        },
        files: ["consumer.ts"]
      })
    )
    const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc")
    const result = await run(process.execPath, [tsc, "-p", app], { cwd: app }).catch((error) => error)
    expect(`${result.stdout ?? ""}${result.stderr ?? ""}`).toBe("")
  }, 180_000)
})
