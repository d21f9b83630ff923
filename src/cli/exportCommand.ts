/**
 * `agent-ledger export <db>`: the ledger (or a range of it) as JSON Lines for offline verification
 * (docs/FORMAT.md, "Ledger export v1"), streamed page by page so memory stays flat; or, with `--bundle`,
 * an evidence bundle: the rows with their inclusion proofs against one signed checkpoint and the public
 * keys (docs/FORMAT.md, "Evidence bundle").
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Option, Stream } from "effect"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as LedgerExport from "../ledger/LedgerExport.js"
import * as EvidenceBundle from "../transparency/EvidenceBundle.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import { writeText } from "./AtomicFile.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import * as Progress from "./Progress.js"
import { loadKeyring, loadSigner, writeLines } from "./shared.js"
import * as StdStreams from "./StdStreams.js"

export interface ExportOptions {
  readonly db: string
  readonly from: Option.Option<number>
  readonly to: Option.Option<number>
  readonly out: Option.Option<string>
  readonly bundle: Option.Option<string>
  readonly privateKey: Option.Option<string>
  readonly origin: Option.Option<string>
  readonly publicKeys: ReadonlyArray<string>
}

const checkSequence = (name: string, value: Option.Option<number>) =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (n) =>
      Number.isSafeInteger(n) && n >= 0
        ? Effect.succeed(n)
        : Effect.fail(new InputError({ message: `--${name} must be a non-negative integer, got ${n}` }))
  })

export const runExport = (options: ExportOptions) =>
  Effect.gen(function*() {
    const from = yield* checkSequence("from", options.from)
    const to = yield* checkSequence("to", options.to)
    if (from !== undefined && to !== undefined && from > to) {
      return yield* new InputError({ message: `--from ${from} is after --to ${to}` })
    }
    if (Option.isSome(options.bundle)) return yield* writeBundle(options, options.bundle.value, from, to)
    if (Option.isSome(options.privateKey) || Option.isSome(options.origin) || options.publicKeys.length > 0) {
      return yield* new InputError({ message: "--private-key, --origin and --public-key go with --bundle" })
    }
    // `-` is stdout, as when --out is not given.
    const out = Option.getOrUndefined(Option.filter(options.out, (file) => !StdStreams.isStdio(file)))
    const progress = Progress.make("exported rows")
    let header: LedgerExport.ExportHeader | undefined
    const lines = LedgerExport.exportLines({ from, to }).pipe(
      Stream.zipWithIndex,
      Stream.tap(([line, i]) =>
        i === 0 ? Effect.sync(() => header = JSON.parse(line) as LedgerExport.ExportHeader) : progress.update(i)
      ),
      Stream.map(([line]) => line)
    )
    const written = yield* writeLines(lines, out).pipe(
      Effect.provide(openLedger(options.db, { readonly: true })),
      Effect.catchTags({
        SqlError: (error) => new InputError({ message: `${options.db}: ${error.message}` }),
        ExportAnchorMissing: (error) => new InputError({ message: `${options.db}: ${error.message}` })
      })
    )
    yield* progress.finish
    if (from !== undefined && header !== undefined && header.row_count === 0) {
      yield* Console.error(
        `agent-ledger: warning: --from ${from} is past the head of ${options.db}; nothing was exported`
      )
    }
    if (out !== undefined) yield* Console.error(`agent-ledger: exported ${written - 1} rows to ${out}`)
  })

/** `--bundle OUT`: the rows, their inclusion proofs against a checkpoint signed now, the public keys. */
const writeBundle = (options: ExportOptions, file: string, from: number | undefined, to: number | undefined) =>
  Effect.gen(function*() {
    if (Option.isSome(options.out)) {
      return yield* new InputError({ message: "--bundle writes its own file: drop --out" })
    }
    if (Option.isNone(options.privateKey)) {
      return yield* new InputError({ message: "--bundle needs --private-key: the ledger's key signs the checkpoint" })
    }
    const signer = yield* loadSigner(options.privateKey.value)
    const keyring = yield* loadKeyring(options.publicKeys)
    const publicKeys = keyring.keyIds.flatMap((id) => Option.toArray(keyring.get(id)))
    const bundle = yield* Effect.flatMap(
      // The origin given, else the ledger's own (kept by its first checkpoint), else from the database's name.
      Option.match(options.origin, { onSome: Effect.succeed, onNone: () => LedgerTransparency.originOf(options.db) }),
      (origin) => EvidenceBundle.make({ from, to, origin, signer, publicKeys })
    ).pipe(
      Effect.provide(openLedger(options.db, { readonly: false })),
      Effect.catchTags({
        SqlError: (error) => new InputError({ message: `${options.db}: ${error.message}` }),
        BundleError: (error) => new InputError({ message: `${options.db}: ${error.message}` }),
        // A ledger or cache someone wrote: nothing is signed or written (exit 1).
        TransparencyRefusal: (refusal) =>
          Effect.zipRight(
            Console.error(`agent-ledger: refused: ${refusal.detail}`),
            Effect.fail(new VerificationFailed({ message: refusal.detail }))
          )
      })
    )
    const known = new Set([signer.publicKey, ...publicKeys].map(AuditSigner.keyIdOf))
    const missing = new Set(
      bundle.rows.flatMap(({ row }) => row.key_id !== null && !known.has(row.key_id) ? [row.key_id] : [])
    )
    if (missing.size > 0) {
      yield* Console.error(
        `agent-ledger: warning: rows signed by ${[...missing].join(", ")}, whose public key is not in the bundle: ` +
          `pass it with --public-key, or the bundle's signatures cannot be checked`
      )
    }
    const text = `${JSON.stringify(bundle, null, 1)}\n`
    yield* StdStreams.isStdio(file) ? StdStreams.writeStdout(text) : writeText(file, text)
    yield* Console.error(
      `agent-ledger: bundled rows ${bundle.from_sequence}..${bundle.to_sequence} with their proofs to ${
        StdStreams.isStdio(file) ? "stdout" : file
      }; ` +
        `verifier key ${bundle.verifier_key}`
    )
  })

export const command = Command.make(
  "export",
  {
    db: Args.text({ name: "db" }).pipe(Args.withDescription("ledger database")),
    from: Options.integer("from").pipe(Options.optional, Options.withDescription("first sequence (inclusive)")),
    to: Options.integer("to").pipe(Options.optional, Options.withDescription("last sequence (inclusive)")),
    out: Options.text("out").pipe(
      Options.optional,
      Options.withDescription("output file, written atomically (default, or -: stdout)")
    ),
    bundle: Options.text("bundle").pipe(
      Options.optional,
      Options.withDescription(
        "write an evidence bundle here instead (- is stdout): the rows, their proofs, a signed checkpoint"
      )
    ),
    privateKey: Options.text("private-key").pipe(
      Options.optional,
      Options.withDescription(
        "with --bundle: the ledger's Ed25519 private key (PKCS#8 PEM; - reads stdin); it signs the checkpoint"
      )
    ),
    origin: Options.text("origin").pipe(
      Options.optional,
      Options.withDescription("with --bundle: the log's origin (default: agent-ledger/<database name>)")
    ),
    publicKeys: Options.text("public-key").pipe(
      Options.repeated,
      Options.withDescription("with --bundle: more public keys to include (rotated-out signers of rows in the range)")
    )
  },
  runExport
).pipe(Command.withDescription(commandHelp(
  "export ledger rows as JSON Lines for offline verification, or as an evidence bundle with proofs (--bundle)",
  [
    "agent-ledger export ./agent-ledger.db --out rows.jsonl",
    "agent-ledger export ./agent-ledger.db --from 100 --to 199",
    "agent-ledger export ./agent-ledger.db --from 100 --to 199 --bundle evidence.json --private-key key.pem"
  ]
)))
