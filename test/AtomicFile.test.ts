/**
 * Files the CLI hands to someone else (exports, receipts, bundles) survive a crash mid-write: a writer that
 * the kernel stops half-way through the file (a file-size limit, `ulimit -f`, below the file's size) leaves
 * the previous file whole, never a truncated one in its place. (A plain `writeFileSync` leaves the first
 * half of the new content there.)
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { repoRoot } from "./fixtures/cliBundle.js"

const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-atomic-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("AtomicFile.writeText", () => {
  it("a writer stopped mid-write leaves the previous file whole", () => {
    const file = join(dir, "export.json")
    const previous = "z".repeat(64 * 1024)
    fs.writeFileSync(file, previous)
    // 1 MiB limit (1024 blocks of 1 KiB), a 4 MiB write: the kernel stops it a quarter of the way in.
    const child = spawnSync("bash", [
      "-c",
      `ulimit -f 1024 && exec "${process.execPath}" --import tsx test/fixtures/atomicWriter.ts "$0" ${4 * 1024 * 1024}`,
      file
    ], { cwd: repoRoot, encoding: "utf8" })
    expect(child.status === 0 && child.signal === null, `the writer was not stopped: ${child.stderr}`).toBe(false)
    expect(fs.readFileSync(file, "latin1")).toBe(previous)
    // Nothing but the file itself is left behind in its folder under its name.
    expect(fs.readdirSync(dir).filter((name) => name === "export.json")).toEqual(["export.json"])
  }, 60_000)
})
