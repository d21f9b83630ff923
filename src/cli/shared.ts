/**
 * Pieces several CLI commands share: option parsing (`--pin`, `--public-key`), key file names, the
 * one-line description of a verification failure, and writing a stream of lines to a file or stdout.
 */
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as AuditSigner from "../AuditSigner.js"
import type * as LedgerVerifier from "../LedgerVerifier.js"
import { InputError } from "./CliError.js"

/** `SEQ:HASH` → a pin; anything else is a usage error. */
export const parsePin = (text: string): Effect.Effect<LedgerVerifier.Pin, InputError> => {
  const match = /^(\d+):([0-9a-f]{64})$/.exec(text)
  const sequence = match === null ? NaN : Number(match[1])
  return match !== null && Number.isSafeInteger(sequence)
    ? Effect.succeed({ sequence, entryHash: match[2]! })
    : Effect.fail(
      new InputError({
        message: `bad --pin '${text}': expected SEQ:HASH (a sequence number and 64 lowercase hex chars)`
      })
    )
}

/** The keyring of the `--public-key` files; an unreadable or invalid key file is a usage error. */
export const loadKeyring = (files: ReadonlyArray<string>): Effect.Effect<AuditSigner.Keyring, InputError> =>
  AuditSigner.loadKeyring(files).pipe(Effect.mapError((error) => new InputError({ message: error.message })))

/** Where a key pair named `name` lives in `directory`. */
export const keyFiles = (directory: string, name: string) => ({
  privateKey: path.join(directory, `${name}.pem`),
  publicKey: path.join(directory, `${name}.pub.pem`)
})

/** `sequence 17: entryHash — entry_hash does not match the row` */
export const failureLine = (failure: LedgerVerifier.VerifyFailure): string =>
  `sequence ${failure.sequence}: ${failure.kind} — ${failure.message}`

const writeChunk = (out: NodeJS.WritableStream, text: string): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (out.write(text)) resume(Effect.void)
    else out.once("drain", () => resume(Effect.void))
  })

/**
 * Writes each line of `lines` with a newline to `file` (created or truncated), or to stdout when `file`
 * is undefined, respecting the stream's backpressure. Returns the number of lines written.
 */
export const writeLines = <E, R>(
  lines: Stream.Stream<string, E, R>,
  file: string | undefined
): Effect.Effect<number, E | InputError, R> =>
  Effect.acquireUseRelease(
    file === undefined
      ? Effect.succeed<NodeJS.WritableStream>(process.stdout)
      : Effect.try({
        try: () => fs.createWriteStream(file, { fd: fs.openSync(file, "w") }) as NodeJS.WritableStream,
        catch: (error) => new InputError({ message: `${file}: cannot write (${String(error)})` })
      }),
    (out) =>
      Stream.runFold(
        Stream.mapEffect(Stream.grouped(lines, 256), (chunk) =>
          writeChunk(out, Array.from(chunk).join("\n") + "\n").pipe(
            Effect.as(chunk.length)
          )),
        0,
        (total, n) => total + n
      ),
    (out) =>
      out === process.stdout
        ? Effect.void
        : Effect.async<void>((resume) => {
          ;(out as fs.WriteStream).end(() => resume(Effect.void))
        })
  )
