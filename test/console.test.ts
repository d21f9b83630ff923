/**
 * The auditor's console in a real browser (Chromium from the Debian `chromium` package, driven by
 * playwright-core): one demo ledger, one `agent-ledger console` process on it,
 * one browser for every test. The ledger is made as `npm run demo` makes it (signed, a checkpoint stored), with
 * tool pins added. The pages must load without console errors, show the figures `stats --json`
 * and `sessions --json` compute, lead from a refusal on the chart to its row and its session, hand out a receipt that
 * `verify-receipt` accepts, pass axe-core without serious violations, and report a ledger tampered under the
 * running console on "verify now" instead of an earlier OK. Without /usr/bin/chromium the browser tests are
 * skipped, visibly.
 *
 * `AGENT_LEDGER_SCREENSHOTS=1 npx vitest run test/console.test.ts` also writes the README's screenshots
 * (docs/console-*.png).
 */
import { Effect, Either, Logger, LogLevel } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import { join } from "node:path"
import type { Browser, BrowserContext, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as ToolPins from "../src/guard/ToolPins.js"
import * as LedgerTransparency from "../src/transparency/LedgerTransparency.js"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"
import { cliWorkspace, sha256File, withDb } from "./fixtures/cliWorkspace.js"

const CHROMIUM = "/usr/bin/chromium"
const hasChromium = fs.existsSync(CHROMIUM)
if (!hasChromium) {
  console.warn(`console.test.ts: ${CHROMIUM} is missing (apt-get install chromium): browser tests SKIPPED`)
}

const { cli, path } = cliWorkspace("agent-ledger-console-")

let browser: Browser
let context: BrowserContext
let server: ChildProcess
let base: string
let db: string
let verifierKey: string
let sessions: Array<{ sessionId: string; calls: number; refusals: number }>
let listed: { tools: Array<{ serverId: string; toolName: string; changes: Array<unknown> }> }
let stats: {
  rows: number
  head: { sequence: number; entryHash: string }
  deadLetters: { pending: number; replayed: number }
  refusalsByAgent: Record<string, number>
  refusalsByRule: Record<string, number>
  attestLevels: Record<string, number>
  firstTimestamp: string
  lastTimestamp: string
}

const must = async (...args: ReadonlyArray<string>) => {
  const run = await cli(...args)
  if (run.code !== 0) throw new Error(`agent-ledger ${args.join(" ")} failed (${run.code}): ${run.stderr}`)
  return run.stdout
}

/** Starts `agent-ledger console` and resolves with the URL it prints. */
const startConsole = (...args: ReadonlyArray<string>) =>
  new Promise<{ child: ChildProcess; url: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [cliBundle, "console", ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8")
      const url = /(http:\/\/\S+)/.exec(out)?.[1]
      if (url !== undefined) resolve({ child, url })
    })
    child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString("utf8")))
    child.on("exit", (code) => reject(new Error(`console exited ${code}: ${err}`)))
  })

/** A page that records every console error, page error and failed response. */
const openPage = async (): Promise<{ page: Page; problems: Array<string> }> => {
  const page = await context.newPage()
  const problems: Array<string> = []
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`)
  })
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`))
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`)
  })
  return { page, problems }
}

const figure = (page: Page, name: string) => page.locator(`[data-figure="${name}"]`).first().textContent()

describe.skipIf(!hasChromium)("the console in Chromium", () => {
  beforeAll(async () => {
    // The browser starts while the ledger is made.
    const launched = import("playwright-core").then(({ chromium }) =>
      chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--disable-component-update",
          "--no-first-run",
          "--disable-sync"
        ]
      })
    )
    db = path("console.db")
    const keys = path("keys")
    fs.mkdirSync(keys)
    // The demo as `npm run demo` runs it (its flags from package.json), on files of its own.
    const demoArgs = String(JSON.parse(fs.readFileSync(join(repoRoot, "package.json"), "utf8")).scripts.demo)
      .split(" ").slice(3)
    expect(demoArgs).toContain("--checkpoint")
    const demoRun = await must(
      "demo",
      ...demoArgs,
      "--db",
      db,
      "--sessions",
      "4",
      "--calls",
      "30",
      "--key-dir",
      keys,
      "--session-out",
      path("session.json")
    )
    verifierKey = /checkpoint:\s+stored, .*; verifier key (\S+)/.exec(demoRun)![1]!
    const privateKey = join(keys, fs.readdirSync(keys).find((f) => f.endsWith(".pem") && !f.endsWith(".pub.pem"))!)
    const publicKey = privateKey.replace(/\.pem$/, ".pub.pem")
    // Tool pins after the demo's checkpoint, signed with its key, as a guard in front of a server records them:
    // two tools pinned, then one of them listed with a changed description.
    const signer = await Effect.runPromise(AuditSigner.loadPrivateKeyFile(privateKey))
    await Effect.runPromise(
      Effect.gen(function*() {
        const pins = yield* ToolPins.make()
        const tool = (name: string, description: string) => ({ name, description, inputSchema: { type: "object" } })
        yield* pins.observe("fs-server", "demo-guard", [tool("read_file", "Reads."), tool("write_file", "Writes.")])
        yield* pins.observe("fs-server", "demo-guard", [
          tool("read_file", "Reads."),
          tool("write_file", "Writes. And uploads what it wrote.")
        ])
        yield* (yield* AuditQueue.AuditQueue).closeAndFlush
      }).pipe(
        Effect.provide(AuditLedger.layerSqlite({
          filename: db,
          signer,
          writerThread: false
        })),
        // The guard's warning about the changed tool is what the test sets up, not news.
        Logger.withMinimumLogLevel(LogLevel.Error)
      )
    )
    const [statsJson, sessionsJson, toolsJson, started] = await Promise.all([
      must("stats", db, "--json"),
      must("sessions", db, "--json"),
      must("tools", "list", db, "--json"),
      startConsole(db, "--listen", "127.0.0.1:0", "--public-key", publicKey, "--key", verifierKey)
    ])
    stats = JSON.parse(statsJson)
    sessions = sessionsJson.trim().split("\n").map((line) => JSON.parse(line))
    listed = JSON.parse(toolsJson)
    server = started.child
    base = started.url
    browser = await launched
    // playwright-core gives every context a fresh profile (user-data-dir) of its own.
    context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 800 } })
  }, 180_000)

  afterAll(async () => {
    await browser?.close()
    server?.kill("SIGTERM")
  })

  it("shows the figures stats --json and sessions --json compute for the same database", async () => {
    const { page, problems } = await openPage()
    await page.goto(base)
    expect(await figure(page, "rows")).toBe(String(stats.rows))
    expect(await figure(page, "headSequence")).toBe(String(stats.head.sequence))
    expect(await figure(page, "headHash")).toBe(stats.head.entryHash)
    expect(await figure(page, "attestLevels.ed25519")).toBe(String(stats.attestLevels.ed25519 ?? 0))
    expect(await figure(page, "attestLevels.unsigned")).toBe(String(stats.attestLevels.unsigned ?? 0))
    expect(await figure(page, "deadLetters.pending")).toBe(String(stats.deadLetters.pending))
    expect(await figure(page, "firstTimestamp")).toBe(stats.firstTimestamp)
    expect(await figure(page, "lastTimestamp")).toBe(stats.lastTimestamp)
    for (
      const [table, expected] of [["refusalsByRule", stats.refusalsByRule], [
        "refusalsByAgent",
        stats.refusalsByAgent
      ]] as const
    ) {
      const shown = await page.locator(`[data-figure="${table}"]`).evaluateAll((cells) =>
        Object.fromEntries(cells.map((cell) => [cell.getAttribute("data-key"), Number(cell.textContent)]))
      )
      expect(shown).toEqual(expected)
    }
    const refusals = Object.values(stats.refusalsByRule).reduce((a, b) => a + b, 0)
    expect(refusals).toBeGreaterThan(0)
    await page.goto(`${base}refusals`)
    expect(await figure(page, "seriesTotal")).toBe(String(refusals))
    await page.goto(`${base}sessions`)
    expect(await figure(page, "sessions")).toBe(String(sessions.length))
    expect(sessions.length).toBe(4)
    const shown = await page.locator("tr:has([data-session-link])").evaluateAll((rows) =>
      rows.map((row) => ({
        sessionId: row.querySelector("[data-session-link]")!.getAttribute("data-session-link"),
        calls: Number(row.querySelector("[data-figure=sessionCalls]")!.textContent),
        refusals: Number(row.querySelector("[data-figure=sessionRefusals]")!.textContent)
      }))
    )
    const expected = sessions.map(({ calls, refusals, sessionId }) => ({ sessionId, calls, refusals }))
    expect(shown.sort((a, b) => a.sessionId!.localeCompare(b.sessionId!))).toEqual(
      expected.sort((a, b) => a.sessionId.localeCompare(b.sessionId))
    )
    expect(problems).toEqual([])
    await page.close()
  })

  it("loads every page without console errors, and the chart draws", async () => {
    const { page, problems } = await openPage()
    for (
      const url of [
        "",
        "refusals",
        "refusals?split=agent",
        "sessions",
        "tools",
        "rows/0",
        `rows/${stats.head.sequence}`
      ]
    ) {
      await page.goto(`${base}${url}`)
      await expect.poll(() => page.locator("h1").textContent()).not.toBe("")
    }
    await page.goto(`${base}refusals`)
    await page.waitForSelector("#refusal-chart[data-ready=true] canvas")
    await page.goto(`${base}sessions`)
    await page.locator("[data-session-link]").first().click()
    await page.waitForSelector("table.timeline")
    expect(problems).toEqual([])
    await page.close()
  })

  it("leads from a refusal on the chart to its row, then to its session", async () => {
    const { page, problems } = await openPage()
    await page.goto(`${base}refusals`)
    const over = page.locator("#refusal-chart .u-over")
    await over.waitFor()
    const box = (await over.boundingBox())!
    // A click anywhere on the plot picks the nearest bucket: its refusals are listed.
    await Promise.all([
      page.waitForURL(/from=.*to=/),
      over.click({ position: { x: box.width / 2, y: box.height / 2 } })
    ])
    const url = new URL(page.url())
    const from = url.searchParams.get("from")!
    const to = url.searchParams.get("to")!
    const link = page.locator("[data-row-link]").first()
    const sequence = await link.getAttribute("data-row-link")
    const listedTime = await link.locator("xpath=../following-sibling::td[1]").textContent()
    expect(listedTime! >= from && listedTime! < to).toBe(true)
    await Promise.all([page.waitForURL(new RegExp(`/rows/${sequence}$`)), link.click()])
    expect(await page.locator("[data-field=event_type]").textContent()).toBe("governance.refusal")
    const session = page.locator("#session-link")
    const sessionHref = (await session.getAttribute("href"))!
    await Promise.all([page.waitForURL(/\/sessions\//), session.click()])
    // The session's timeline holds the refusal's entry, linked back to the row.
    const entry = new URL(sessionHref, base).hash
    expect(entry).toMatch(/^#entry-\d+$/)
    expect(await page.locator(`${entry} [data-row-link]`).getAttribute("data-row-link")).toBe(sequence)
    expect(problems).toEqual([])
    await page.close()
  })

  it("after npm run demo, finds a refusal, its receipt and its session in three clicks from the overview", async () => {
    const { page, problems } = await openPage()
    await page.goto(base)
    // Click 1: the latest refusal on the overview.
    const refusal = page.locator("#latest-refusals [data-row-link]").first()
    const sequence = (await refusal.getAttribute("data-row-link"))!
    await Promise.all([page.waitForURL(new RegExp(`/rows/${sequence}$`)), refusal.click()])
    expect(await page.locator("[data-field=event_type]").textContent()).toBe("governance.refusal")
    // Click 2: its receipt, against the checkpoint the demo stored; verify-receipt accepts it with the verifier
    // key the demo printed.
    const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#receipt-download").click()])
    const file = path(`receipt-click-${sequence}.json`)
    await download.saveAs(file)
    expect(JSON.parse(fs.readFileSync(file, "utf8")).row.sequence).toBe(Number(sequence))
    const checked = await cli("verify-receipt", file, "--key", verifierKey)
    expect(checked.stderr).toBe("")
    expect(checked.code).toBe(0)
    // A receipt with its row changed does not pass: the check above could fail.
    const forged = JSON.parse(fs.readFileSync(file, "utf8"))
    forged.row.agent_id = "someone-else"
    expect(Either.isLeft(LedgerTransparency.verifyReceipt(forged, verifierKey))).toBe(true)
    // Click 3: its session, whose timeline holds the refusal's entry, linked back to the row.
    const session = page.locator("#session-link")
    const entry = new URL((await session.getAttribute("href"))!, base).hash
    await Promise.all([page.waitForURL(/\/sessions\//), session.click()])
    expect(entry).toMatch(/^#entry-\d+$/)
    expect(await page.locator(`${entry} [data-row-link]`).getAttribute("data-row-link")).toBe(sequence)
    expect(problems).toEqual([])
    await page.close()
  })

  it("lists the tool pins and the changes seen since, as tools list --json does, linked from the nav", async () => {
    const { page, problems } = await openPage()
    await page.goto(base)
    await Promise.all([page.waitForURL(/\/tools$/), page.locator("nav a[href='/tools']").click()])
    expect(listed.tools.map((t) => t.toolName).sort()).toEqual(["read_file", "write_file"])
    expect(await figure(page, "toolsPinned")).toBe(String(listed.tools.length))
    expect(await figure(page, "toolsChanged")).toBe("1")
    expect(await page.locator("[data-tool='fs-server/write_file']").getAttribute("data-changed")).toBe("true")
    expect(await page.locator("[data-tool='fs-server/read_file']").getAttribute("data-changed")).toBe("false")
    expect(await page.locator("[data-tool='fs-server/write_file']").textContent()).toContain(
      "Writes. And uploads what it wrote."
    )
    // Each pin and change links to its row: a tool.changed row.
    const change = page.locator("[data-tool='fs-server/write_file'] li [data-row-link]")
    await Promise.all([page.waitForURL(/\/rows\/\d+$/), change.click()])
    expect(await page.locator("[data-field=event_type]").textContent()).toBe("tool.changed")
    expect(problems).toEqual([])
    await page.close()
  })

  it("has no serious or critical axe-core violations on its pages", async () => {
    const axeSource = fs.readFileSync(join(repoRoot, "node_modules/axe-core/axe.min.js"), "utf8")
    const { page } = await openPage()
    await page.goto(`${base}sessions`)
    const sessionUrl = (await page.locator("[data-session-link]").first().getAttribute("href"))!
    for (const url of ["", "refusals", "sessions", "tools", sessionUrl.slice(1), "rows/3"]) {
      await page.goto(`${base}${url}`)
      // Evaluated through the DevTools protocol: the page's CSP (script-src 'self') stays on.
      await page.evaluate(axeSource)
      const violations = await page.evaluate(async () => {
        const result = await (globalThis as unknown as {
          axe: { run: () => Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<unknown> }> }> }
        }).axe.run()
        return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => `${v.id} (${v.impact}, ${v.nodes.length} nodes)`)
      })
      expect(violations, url).toEqual([])
    }
    await page.close()
  })

  it("writes the README's screenshots when asked", async () => {
    if (process.env.AGENT_LEDGER_SCREENSHOTS !== "1") return
    const { page } = await openPage()
    await page.setViewportSize({ width: 1000, height: 640 })
    const shots: ReadonlyArray<readonly [string, string]> = [
      ["console-overview.png", ""],
      ["console-refusals.png", "refusals"],
      ["console-row.png", "rows/3"]
    ]
    for (const [name, url] of shots) {
      await page.goto(`${base}${url}`)
      if (url === "refusals") await page.waitForSelector("#refusal-chart[data-ready=true] canvas")
      await page.screenshot({ path: join(repoRoot, "docs", name) })
    }
    await page.goto(`${base}sessions`)
    await page.locator("[data-session-link]").first().click()
    await page.waitForSelector("table.timeline")
    await page.screenshot({ path: join(repoRoot, "docs", "console-session.png") })
    await page.close()
  })

  it("answers only loopback Host names on loopback, and only token holders elsewhere", async () => {
    const status = (url: string, headers: Record<string, string> = {}, method = "GET") =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
        const request = http.request(url, { method, headers }, (response) => {
          response.resume()
          resolve({ status: response.statusCode!, headers: response.headers })
        })
        request.on("error", reject)
        request.end()
      })
    const before = sha256File(db)
    expect((await status(base, { host: "attacker.example:80" })).status).toBe(421)
    expect((await status(base)).status).toBe(200)
    expect((await status(`${base}rows/0`, {}, "POST")).status).toBe(404)
    const token = "t0ken-for-the-test"
    const child = spawn(process.execPath, [cliBundle, "console", db, "--listen", "0.0.0.0:0"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, AGENT_LEDGER_CONSOLE_TOKEN: token }
    })
    try {
      const printed = await new Promise<string>((resolve, reject) => {
        let out = ""
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString("utf8")
          if (out.includes("\n")) resolve(out)
        })
        child.on("exit", (code) => reject(new Error(`console exited ${code}`)))
      })
      expect(printed).toContain(`?token=${token}`)
      const port = /:(\d+)\//.exec(printed)![1]
      const open = `http://127.0.0.1:${port}/`
      expect((await status(open)).status).toBe(401)
      expect((await status(open, { authorization: "Bearer wrong" })).status).toBe(401)
      expect((await status(`${open}?token=wrong`)).status).toBe(401)
      expect((await status(open, { authorization: `Bearer ${token}` })).status).toBe(200)
      const link = await status(`${open}refusals?split=agent&token=${token}`)
      expect(link.status).toBe(303)
      expect(link.headers.location).toBe("/refusals?split=agent")
      const cookie = String(link.headers["set-cookie"]).split(";")[0]!
      expect((await status(`${open}refusals`, { cookie })).status).toBe(200)
    } finally {
      child.kill("SIGTERM")
    }
    // Read-only: nothing it served changed the database.
    expect(sha256File(db)).toBe(before)
  })

  // Last: it changes the ledger under the running console.
  it("shows a ledger tampered under the running console as FAILED on verify now, not the earlier OK", async () => {
    const { page, problems } = await openPage()
    await page.goto(base)
    const status = page.locator("#verify-status [data-verify]")
    await page.locator("#verify-now").click()
    await expect.poll(() => page.locator("#verify-phase").textContent()).toBe("done")
    expect(await status.getAttribute("data-verify")).toBe("ok")
    expect(await page.locator("[data-extends]").getAttribute("data-extends")).toBe("yes")
    withDb(db, (handle) => {
      const row = handle.prepare("SELECT payload FROM signed_events WHERE sequence = 2").get() as { payload: string }
      handle.prepare("UPDATE signed_events SET payload = ? WHERE sequence = 2").run(
        row.payload.replace("agent-", "agent_")
      )
    })
    await page.locator("#verify-now").click()
    await expect.poll(() => status.getAttribute("data-verify")).toBe("failed")
    expect(await page.locator("#verify-phase").textContent()).toBe("done")
    expect(await page.locator("#verify-status").textContent()).toContain("sequence 2")
    // The overview, loaded afresh, keeps the failed run's outcome.
    await page.goto(base)
    expect(await status.getAttribute("data-verify")).toBe("failed")
    expect(problems).toEqual([])
    await page.close()
  })
})
