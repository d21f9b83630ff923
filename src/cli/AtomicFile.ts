/**
 * Files the CLI writes for someone else to check later (session exports, receipts, proofs, evidence
 * bundles) are written atomically: to a temporary file beside the target, fsync'd, then renamed over it
 * (`write-file-atomic`). A crash or a full disk mid-write leaves the previous file whole, never a
 * truncated one in its place.
 */
import { Effect } from "effect"
import writeFileAtomic from "write-file-atomic"
import { InputError } from "./CliError.js"

/**
 * Writes `text` to `file` atomically; an `InputError` naming the file when it cannot. Synchronous: it runs
 * in shutdown finalizers of processes about to exit, where a pending promise would be cut off.
 */
export const writeText = (file: string, text: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => writeFileAtomic.sync(file, text, { fsync: true }),
    catch: (error) =>
      new InputError({
        message: `${file}: cannot write (${(error as NodeJS.ErrnoException | undefined)?.code ?? String(error)})`
      })
  })
