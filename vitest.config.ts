import { defineConfig } from "vitest/config"

/**
 * The end-to-end tier: files that start many CLI processes, kill processes mid-write, drive a browser, pack
 * and install the package, run the quick bench or the long seeded fuzz. `npm test` leaves them out so that
 * it stays within a few minutes on 2 cores; `npm run test:e2e` runs exactly these, and CI (`.ci/run`) runs
 * both tiers.
 */
export const E2E_FILES = [
  "test/CallReceipt.test.ts",
  "test/DeadLetterForgery.test.ts",
  "test/Fuzz.test.ts",
  "test/HookStandalone.test.ts",
  "test/HostileInput.test.ts",
  "test/TransparencyStripped.test.ts",
  "test/VerifyFailures.test.ts",
  "test/Crash.test.ts",
  "test/GuardCrash.test.ts",
  "test/LedgerTransparency.test.ts",
  "test/McpProxyAskToolChange.test.ts",
  "test/McpProxyProcess.test.ts",
  "test/Postgres.test.ts",
  "test/ProxyCrash.test.ts",
  "test/ServeCrash.test.ts",
  "test/ToolPinsProxy.test.ts",
  "test/TransparencyForge.test.ts",
  "test/bench.test.ts",
  "test/cli.test.ts",
  "test/cliProcess.test.ts",
  "test/cliStdio.test.ts",
  "test/cliText.test.ts",
  "test/console.test.ts",
  "test/package.test.ts"
]

const e2e = process.env.AGENT_LEDGER_TEST_TIER === "e2e"

export default defineConfig({
  test: {
    include: e2e ? E2E_FILES : ["test/**/*.test.ts"],
    exclude: e2e ? [] : E2E_FILES,
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two test files at a time even on 2 cores (vitest's default leaves one core idle): most files wait on
    // child processes, fsync and sockets, not the CPU.
    maxWorkers: 2,
    minWorkers: 1
  }
})
