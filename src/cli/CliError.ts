/**
 * The CLI's two kinds of unhappy ending, and the exit codes they map to:
 * - `InputError` (exit 2): the command could not do its job with what it was given (missing or unreadable
 *   file, not a ledger, bad option value, corrupted export line). One line on stderr, never a stack trace.
 * - `VerificationFailed` (exit 1): the input was read fine and a check failed; the report was already printed.
 */
import { Data } from "effect"

export class InputError extends Data.TaggedError("InputError")<{
  readonly message: string
}> {}

export class VerificationFailed extends Data.TaggedError("VerificationFailed")<{
  readonly message: string
}> {}

export const EXIT_OK = 0
export const EXIT_VERIFY_FAILED = 1
export const EXIT_USAGE = 2
/** A bug in agent-ledger itself (a defect), not a problem with the input. */
export const EXIT_INTERNAL = 70
/** Stopped by a signal (Ctrl-C): 128 + SIGINT, as shells report it. */
export const EXIT_INTERRUPTED = 130
