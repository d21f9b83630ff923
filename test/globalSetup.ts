import { join } from "node:path"
import { cliBundle, repoRoot, writerBundle } from "./fixtures/cliBundle.js"
import { bundleForNode } from "./fixtures/nodeBundle.js"

export default async function setup() {
  // The ledger writer thread's entry, bundled like the CLI (and beside it, where the bundled CLI looks for
  // it): every ledger a test opens starts one, and through tsx its start-up would take seconds.
  await bundleForNode(join(repoRoot, "src/ledger/LedgerWriterWorker.ts"), writerBundle)
  process.env.AGENT_LEDGER_WRITER_ENTRY = writerBundle
  // The CLI, so each spawned CLI starts fast.
  await bundleForNode(join(repoRoot, "src/cli/main.ts"), cliBundle)
}
