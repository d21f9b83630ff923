/**
 * Files the CLI writes for someone else to check later (session exports, receipts, proofs, evidence
 * bundles) are written atomically: to a temporary file beside the target, fsync'd, then renamed over it,
 * and the folder fsync'd. A crash, a full disk or a file-size limit mid-write leaves the previous file
 * whole, never a truncated one in its place.
 *
 * Not `write-file-atomic`: it writes the content with one `write(2)` and does not check how much was
 * written, so a short write (a full disk, `ulimit -f`) is renamed over the target as a truncated file, and
 * reported as success (test/AtomicFile.test.ts found it). `fs.writeFileSync` loops until every byte is
 * written and throws otherwise.
 */
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { InputError } from "./CliError.js"

const writeAtomically = (file: string, text: string): void => {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`)
  try {
    const fd = fs.openSync(temp, "wx", 0o644)
    try {
      fs.writeFileSync(fd, text)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(temp, file)
  } catch (error) {
    fs.rmSync(temp, { force: true })
    throw error
  }
  // The rename is durable once the folder is (best effort: not every platform opens a folder).
  try {
    const folder = fs.openSync(path.dirname(file), "r")
    try {
      fs.fsyncSync(folder)
    } finally {
      fs.closeSync(folder)
    }
  } catch {
    // a folder that cannot be opened for fsync: the file itself is complete
  }
}

/**
 * Writes `text` to `file` atomically; an `InputError` naming the file when it cannot. Synchronous: it runs
 * in shutdown finalizers of processes about to exit, where a pending promise would be cut off.
 */
export const writeText = (file: string, text: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => writeAtomically(file, text),
    catch: (error) =>
      new InputError({
        message: `${file}: cannot write (${(error as NodeJS.ErrnoException | undefined)?.code ?? String(error)})`
      })
  })
