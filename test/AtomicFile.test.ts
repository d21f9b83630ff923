/**
 * Files the CLI hands to someone else (exports, receipts, bundles) survive a crash mid-write: SIGKILL at
 * random moments of a writer rewriting a file over and over leaves the file whole every time, either the
 * previous content or the next, never a truncated or mixed one.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { repoRoot } from "./fixtures/cliBundle.js"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-atomic-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const SIZE = 8 * 1024 * 1024

const killMidWrite = (file: string, afterMillis: number) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "test/fixtures/atomicWriter.ts"), file], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "inherit"]
    })
    child.stdout.once("data", () => setTimeout(() => child.kill("SIGKILL"), afterMillis))
    child.once("exit", () => resolve())
    child.once("error", reject)
  })

describe("AtomicFile.writeText", () => {
  it("a writer killed at random moments never leaves a truncated or mixed file", async () => {
    const file = join(dir, "export.json")
    fs.writeFileSync(file, "z".repeat(SIZE))
    for (let round = 0; round < 6; round++) {
      await killMidWrite(file, 150 + Math.floor(Math.random() * 400))
      const text = fs.readFileSync(file, "latin1")
      expect(text.length).toBe(SIZE)
      expect(new Set(text).size).toBe(1)
    }
  }, 120_000)
})
