import { build } from "esbuild"
import { join } from "node:path"
import { cliBundle, repoRoot } from "./fixtures/cliBundle.js"

export default async function setup() {
  await build({
    entryPoints: [join(repoRoot, "src/cli/main.ts")],
    outfile: cliBundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // The native SQLite driver cannot be bundled, nor write-file-atomic (CommonJS that reads __filename);
    // everything else is, so each spawned CLI starts fast.
    external: ["better-sqlite3", "write-file-atomic"],
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "error"
  })
}
