import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
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
