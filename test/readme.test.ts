/**
 * The README's code must be the code that compiles and runs: each ```ts block of the README is the
 * matching file of examples/ (which `npm run typecheck` compiles), except for the import path and the
 * file's first comment line. The quickstart is also run.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { program } from "../examples/quickstart.js"
// The README's TestClock recipe is a test file of its own: importing it runs its tests here.
import "../examples/testing.js"

const root = resolve(import.meta.dirname, "..")
const readme = fs.readFileSync(join(root, "README.md"), "utf8")
const blocks = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (m) => m[1]!)

const asInReadme = (example: string) =>
  fs.readFileSync(join(root, "examples", example), "utf8")
    .split("\n").slice(1).join("\n")
    .replace(`from "../src/index.js"`, `from "agent-ledger"`)

describe("README", () => {
  it("shows each file of examples/ verbatim, quickstart first, and no other TypeScript", () => {
    const examples = fs.readdirSync(join(root, "examples")).filter((file) => file.endsWith(".ts"))
    expect(blocks[0]).toBe(asInReadme("quickstart.ts"))
    expect(blocks).toHaveLength(examples.length)
    for (const example of examples) expect(blocks, example).toContain(asInReadme(example))
  })

  it("names the two set-up commands", () => {
    expect(readme).toContain("npm install && npm run demo")
    expect(readme).toContain("npm test")
    expect(readme).toContain("docs/FORMAT.md")
  })

  it.live("the quickstart journals the call, appends the refusal and verifies the ledger", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-readme-"))
      const result = yield* program(join(dir, "quickstart.db")).pipe(
        Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      )
      expect(result.journal.totalInvocations).toBe(1)
      expect(result.ledger.ok).toBe(true)
      expect(result.ledger.rowsChecked).toBe(1)
      expect(Option.getOrThrow(result.ledger.head).sequence).toBe(0)
    }))
})
