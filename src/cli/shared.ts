/**
 * Pieces several CLI commands share: option parsing (`--pin`, `--public-key`), key file names, the
 * one-line description of a verification failure, and writing a stream of lines to a file or stdout.
 */
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as AuditSigner from "../audit/AuditSigner.js"
import type * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import { InputError } from "./CliError.js"
import * as StdStreams from "./StdStreams.js"

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

/** The signer of a `--private-key` file (`-`: the PEM on stdin); an unreadable or invalid key is a usage error. */
export const loadSigner = (file: string): Effect.Effect<AuditSigner.AuditSigner, InputError> =>
  (StdStreams.isStdio(file)
    ? Effect.flatMap(StdStreams.readText(file, "private key"), AuditSigner.fromPrivateKeyPem)
    : AuditSigner.loadPrivateKeyFile(file)).pipe(
      Effect.mapError((error) => error._tag === "InputError" ? error : new InputError({ message: error.message }))
    )

/** The keyring of the `--public-key` files; an unreadable or invalid key file is a usage error. */
export const loadKeyring = (files: ReadonlyArray<string>): Effect.Effect<AuditSigner.Keyring, InputError> =>
  AuditSigner.loadKeyring(files).pipe(Effect.mapError((error) => new InputError({ message: error.message })))

/** Where a key pair named `name` lives in `directory`. */
export const keyFiles = (directory: string, name: string) => ({
  privateKey: path.join(directory, `${name}.pem`),
  publicKey: path.join(directory, `${name}.pub.pem`)
})

/**
 * `sequence 17: entryHash — entry_hash does not match the row`; a stored journal's broken entry:
 * `session S entry 4: journal — ...`.
 */
export const failureLine = (failure: LedgerVerifier.VerifyFailure): string =>
  failure.sessionId === undefined
    ? `sequence ${failure.sequence}: ${failure.kind} — ${failure.message}`
    : `session ${JSON.stringify(failure.sessionId)} entry ${failure.sequence}: ${failure.kind} — ${failure.message}`

/** A file can be created (or truncated) at `file`: its directory exists and is writable. */
export const requireWritableFile = (file: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => {
      if (fs.existsSync(file)) {
        if (fs.statSync(file).isDirectory()) throw new Error("is a directory")
        fs.accessSync(file, fs.constants.W_OK)
      } else {
        fs.accessSync(path.dirname(path.resolve(file)), fs.constants.W_OK)
      }
    },
    catch: (error) =>
      new InputError({
        message: `${file}: cannot write here (${
          (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such directory" : (error as Error).message
        })`
      })
  })

/** Writing to stdout failed; the entry point (main.ts) reports that and sets the exit code. */
class StdoutFailed extends Error {}

/**
 * Writes `text` and waits until it is flushed, so memory stays flat and a write error (EPIPE, ENOSPC)
 * fails this effect instead of crashing the process or hanging.
 */
const writeChunk = (
  out: NodeJS.WritableStream,
  text: string,
  file: string | undefined
): Effect.Effect<void, InputError | StdoutFailed> =>
  Effect.async<void, InputError | StdoutFailed>((resume) => {
    out.write(text, (error) =>
      resume(
        error === null || error === undefined
          ? Effect.void
          : Effect.fail(
            file === undefined
              ? new StdoutFailed()
              : new InputError({
                message: `${file}: cannot write (${(error as NodeJS.ErrnoException).code ?? error.message})`
              })
          )
      ))
  })

const ignoreStreamError = () => {}

/**
 * Writes each line of `lines` with a newline to `file`, or to stdout when `file` is undefined. Returns
 * the number of lines written (-1 when stdout failed, e.g. its reader closed it).
 *
 * A regular file is written under a temporary name and renamed into place only once every line is
 * written: a failed or interrupted export never leaves a truncated file, nor destroys the previous one.
 */
export const writeLines = <E, R>(
  lines: Stream.Stream<string, E, R>,
  file: string | undefined
): Effect.Effect<number, E | InputError, R> => {
  // Only a regular file (or a new one) is replaced by rename; a device or FIFO (/dev/stdout, a named pipe)
  // is written in place.
  const renameIntoPlace = file !== undefined && (!fs.existsSync(file) || fs.statSync(file).isFile())
  const partial = file === undefined ? undefined : renameIntoPlace ? `${file}.partial-${process.pid}` : file
  const write = Effect.acquireUseRelease(
    Effect.try({
      try: () => {
        const out: NodeJS.WritableStream = partial === undefined
          ? process.stdout
          : fs.createWriteStream(partial, { fd: fs.openSync(partial, "w") })
        // Errors reach each write's callback; this listener only keeps them from crashing the process.
        out.on("error", ignoreStreamError)
        return out
      },
      catch: (error) => new InputError({ message: `${file}: cannot write (${String(error)})` })
    }),
    (out) =>
      Stream.runFold(
        Stream.mapEffect(
          Stream.grouped(lines, 256),
          (chunk) => Effect.as(writeChunk(out, Array.from(chunk).join("\n") + "\n", file), chunk.length)
        ),
        0,
        (total, n) => total + n
      ).pipe(Effect.catchIf((error) => error instanceof StdoutFailed, () => Effect.succeed(-1))),
    (out) =>
      out === process.stdout
        ? Effect.sync(() => out.off("error", ignoreStreamError))
        : Effect.async<void>((resume) => {
          const stream = out as fs.WriteStream
          if (stream.destroyed) return resume(Effect.void)
          stream.once("close", () => resume(Effect.void))
          stream.end()
        })
  )
  if (file === undefined || partial === undefined || partial === file) return write
  return write.pipe(
    Effect.tap(() =>
      Effect.try({
        try: () => fs.renameSync(partial, file),
        catch: (error) => new InputError({ message: `${file}: cannot write (${String(error)})` })
      })
    ),
    Effect.onExit((exit) =>
      exit._tag === "Success" ? Effect.void : Effect.sync(() => fs.rmSync(partial, { force: true }))
    )
  )
}
