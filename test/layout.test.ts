/**
 * The layout is the architecture (STYLE.md "Layout"): one folder per subsystem, imports that only go down
 * cli → serve / console → AuditLedger → guard / query → transparency / journal → ledger → audit → internal. Drawn from the real import
 * statements of every module under src/, so a new module that reaches back up fails here.
 */
import * as fs from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { repoRoot } from "./fixtures/cliBundle.js"

const src = join(repoRoot, "src")

/** Each layer's rank: a module may import its own folder and folders of strictly lower rank. */
const RANK: Record<string, number> = {
  internal: 0,
  audit: 1,
  ledger: 2,
  journal: 3,
  transparency: 3,
  guard: 4,
  query: 4,
  "AuditLedger.ts": 5,
  serve: 6,
  console: 6,
  "index.ts": 7,
  cli: 8
}

const layerOf = (file: string): string => relative(src, file).split("/")[0]!

const modules = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? modules(join(dir, entry.name))
      : entry.name.endsWith(".ts")
      ? [join(dir, entry.name)]
      : []
  )

const importsOf = (file: string): Array<string> =>
  Array.from(
    fs.readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g),
    (match) => resolve(dirname(file), match[1]!.replace(/\.js$/, ".ts"))
  )

const edges = modules(src).flatMap((file) => importsOf(file).map((target) => ({ file, target })))

describe("the source layout", () => {
  it("puts every module in a known layer", () => {
    expect(modules(src).map(layerOf).filter((layer) => RANK[layer] === undefined)).toEqual([])
  })

  it("has imports that only go down (or stay in their own folder)", () => {
    expect(edges.length).toBeGreaterThan(50)
    const upward = edges.filter(({ file, target }) => {
      const from = layerOf(file)
      const to = layerOf(target)
      return from !== to && RANK[to]! >= RANK[from]!
    }).map(({ file, target }) => `${relative(src, file)} -> ${relative(src, target)}`)
    expect(upward).toEqual([])
  })

  it("keeps the MCP SDK an optional dependency: only src/cli/McpSdk.ts loads it, and only lazily", () => {
    const sdkImport = /(?:from|import)\s*\(?\s*"@modelcontextprotocol\/sdk/
    const sdkUsers = modules(src).filter((file) => sdkImport.test(fs.readFileSync(file, "utf8")))
    expect(sdkUsers.map((file) => relative(src, file))).toEqual(["cli/McpSdk.ts"])
    const loader = fs.readFileSync(join(src, "cli", "McpSdk.ts"), "utf8")
    expect(loader).not.toMatch(/^import[^(]*"@modelcontextprotocol\/sdk/m)
  })

  it("opens each subsystem folder with an index module that says what it may import", () => {
    for (const folder of ["audit", "ledger", "journal", "transparency", "guard", "query", "serve", "console"]) {
      const index = fs.readFileSync(join(src, folder, "index.ts"), "utf8")
      expect(index.startsWith("/**"), folder).toBe(true)
      expect(index, folder).toMatch(/May import:/)
    }
  })
})

describe("the test tiers", () => {
  it("names only test files that exist in the end-to-end tier, and npm test runs every other one", async () => {
    const { E2E_FILES } = await import("../vitest.config.js")
    const root = join(src, "..")
    for (const file of E2E_FILES) expect(fs.existsSync(join(root, file)), file).toBe(true)
    expect(new Set(E2E_FILES).size).toBe(E2E_FILES.length)
  })
})
