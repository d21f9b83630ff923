/**
 * What a user installs: `npm pack` (which builds on `prepack`), the tarball unpacked into a scratch app
 * whose other dependencies resolve from this project's own install (no registry, no second better-sqlite3
 * build), then every public module imported, the installed bin run, and a consumer file type-checked under
 * strict settings with `skipLibCheck: false`.
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
let files: ReadonlyArray<string> = []

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
  fs.mkdirSync(installed, { recursive: true })
  await run("tar", ["-xzf", join(root, packed!.filename), "-C", installed, "--strip-components=1"])
  // The app's other dependencies: this project's own install, linked entry by entry.
  for (const entry of fs.readdirSync(join(repoRoot, "node_modules"))) {
    if (entry.startsWith(".") || entry === "agent-ledger") continue
    fs.symlinkSync(join(repoRoot, "node_modules", entry), join(app, "node_modules", entry))
  }
  fs.writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", type: "module", private: true }))
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
  })

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
