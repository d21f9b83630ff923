/**
 * `-` for stdin and stdout, as git and cosign take it: wherever the CLI reads a file (a target to verify, a
 * receipt, a proof, a checkpoint, a private key) `-` reads stdin, and wherever it writes one (an export, a
 * bundle, a receipt, a checkpoint) `-` writes stdout. Not for the ledger database itself: SQLite needs a
 * file it can seek and lock.
 *
 * Stdin is one stream per process: it is read once, by the first input named `-`; a second `-` in the same
 * command is a usage error rather than a silently empty input. A terminal on stdin is refused (the command
 * would wait for typing).
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { InputError } from "./CliError.js"

/** The name that means stdin (as input) or stdout (as output). */
export const STDIO = "-"

/**
 * What a bare `-` argument becomes before `@effect/cli` parses the command line: its parser reads a token
 * starting with `-` as an option, so `verify - --json` failed with "unknown argument '--json'". A NUL
 * cannot be in a path, so no file is mistaken for it.
 */
export const STDIO_ARG = "\u0000-"

/** `argv` with each bare `-` before a `--` made `STDIO_ARG` (what follows `--` is another program's). */
export const protectStdioArgs = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const end = argv.indexOf("--")
  return argv.map((arg, i) => arg === STDIO && (end === -1 || i < end) ? STDIO_ARG : arg)
}

export const isStdio = (file: string): boolean => file === STDIO || file === STDIO_ARG

/** A file name as the user wrote it (`-` for stdin or stdout). */
export const nameOf = (file: string): string => isStdio(file) ? STDIO : file

/** Which input read stdin, so a second `-` is refused instead of reading an exhausted stream. */
let stdinReadBy: string | undefined

const claimStdin = (what: string): Effect.Effect<void, InputError> =>
  Effect.suspend(() => {
    if (stdinReadBy !== undefined) {
      return Effect.fail(
        new InputError({ message: `-: stdin is already the ${stdinReadBy}; only one input can be -` })
      )
    }
    if (process.stdin.isTTY === true) {
      return Effect.fail(
        new InputError({ message: `-: stdin is a terminal; pipe the ${what} in (… | agent-ledger …)` })
      )
    }
    stdinReadBy = what
    return Effect.void
  })

/** All of stdin (for `what`, named in errors). */
export const readStdin = (what: string): Effect.Effect<Buffer, InputError> =>
  Effect.zipRight(
    claimStdin(what),
    Effect.try({
      try: () => fs.readFileSync(0),
      catch: (error) => new InputError({ message: `-: cannot read stdin (${String(error)})` })
    })
  )

/** The bytes of `file`, or of stdin when it is `-`. */
export const readBytes = (file: string, what: string): Effect.Effect<Buffer, InputError> =>
  isStdio(file) ? readStdin(what) : Effect.try({
    try: () => fs.readFileSync(file),
    catch: (error) =>
      new InputError({
        message: `${file}: cannot read (${(error as NodeJS.ErrnoException | undefined)?.code ?? String(error)})`
      })
  })

/** The text of `file` (UTF-8), or of stdin when it is `-`. */
export const readText = (file: string, what: string): Effect.Effect<string, InputError> =>
  Effect.map(readBytes(file, what), (bytes) => bytes.toString("utf8"))

/**
 * Stdin copied to a private temporary file (removed when the scope closes), for readers that take a path
 * (detection by content, streaming verification of a large export).
 */
export const stdinAsFile = (what: string) =>
  Effect.gen(function*() {
    yield* claimStdin(what)
    const directory = yield* Effect.acquireRelease(
      Effect.try({
        try: () => fs.mkdtempSync(path.join(os.tmpdir(), "agent-ledger-stdin-")),
        catch: (error) => new InputError({ message: `-: cannot make a temporary file (${String(error)})` })
      }),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const file = path.join(directory, "stdin")
    yield* Effect.tryPromise({
      try: () =>
        new Promise<void>((resolve, reject) => {
          const sink = fs.createWriteStream(file, { mode: 0o600 })
          sink.on("error", reject)
          sink.on("finish", () => resolve())
          process.stdin.on("error", reject)
          process.stdin.pipe(sink)
        }),
      catch: (error) => new InputError({ message: `-: cannot read stdin (${String(error)})` })
    })
    return file
  })

/** Writes `text` to stdout. */
export const writeStdout = (text: string): Effect.Effect<void> => Effect.sync(() => void process.stdout.write(text))
