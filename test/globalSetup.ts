import { build } from "esbuild"
import { join } from "node:path"
import { cliBundle, repoRoot, writerBundle } from "./fixtures/cliBundle.js"

export default async function setup() {
  // The ledger writer thread's entry, bundled like the CLI (and beside it, where the bundled CLI looks for
  // it): every ledger a test opens starts one, and through tsx its start-up would take seconds.
  await build({
    entryPoints: [join(repoRoot, "src/ledger/LedgerWriterWorker.ts")],
    outfile: writerBundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["better-sqlite3"],
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "error"
  })
  process.env.AGENT_LEDGER_WRITER_ENTRY = writerBundle
  await build({
    entryPoints: [join(repoRoot, "src/cli/main.ts")],
    outfile: cliBundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // The native SQLite driver cannot be bundled;
    // everything else is, so each spawned CLI starts fast.
    external: ["better-sqlite3"],
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "error"
  })
}
