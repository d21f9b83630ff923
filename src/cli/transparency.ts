/**
 * Transparency-log commands (docs/FORMAT.md, "Transparency"):
 * - `checkpoint <db> --private-key FILE [--origin O] [--key]`: the ledger's signed checkpoint (or, with
 *   `--key`, the verifier key auditors check it with);
 * - `prove <db> --private-key FILE (--sequence N | --event-id ID | --consistency OLD_CHECKPOINT)`: a receipt
 *   for one row, or a consistency proof from an older checkpoint to now;
 * - `verify-receipt RECEIPT --key VERIFIER_KEY` and `verify-consistency PROOF --key VERIFIER_KEY`: offline,
 *   with nothing but the verifier key.
 */
import { Args, Command, Options } from "@effect/cli"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, Option } from "effect"
import * as fs from "node:fs"
import type * as AuditSigner from "../audit/AuditSigner.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { loadSigner } from "./shared.js"
import { printLine } from "./TerminalText.js"

const readText = (file: string) =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (error) => new InputError({ message: `${file}: cannot read (${String(error)})` })
  })

const readJson = (file: string) =>
  Effect.flatMap(readText(file), (text) =>
    Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: () => new InputError({ message: `${file}: not JSON` })
    }))

const write = (out: Option.Option<string>, text: string) =>
  Option.match(out, {
    onNone: () => Effect.sync(() => process.stdout.write(text)),
    onSome: (file) =>
      Effect.try({
        try: () => fs.writeFileSync(file, text),
        catch: (error) => new InputError({ message: `${file}: cannot write (${String(error)})` })
      })
  })

/** `effect` on the ledger; it may store the tree's subtrees and checkpoints (never a row). */
const onLedger = <A>(db: string, effect: Effect.Effect<A, SqlError, LedgerSql.LedgerSql>) =>
  effect.pipe(
    Effect.mapError((error) => new InputError({ message: `${db}: ${error.message}` })),
    Effect.provide(openLedger(db, { readonly: false }))
  )

const db = Args.text({ name: "db" }).pipe(Args.withDescription("ledger database (file or postgres:// URL)"))
const privateKey = Options.text("private-key").pipe(
  Options.withDescription("the ledger's Ed25519 private key (PKCS#8 PEM): it signs the checkpoint")
)
const origin = Options.text("origin").pipe(
  Options.optional,
  Options.withDescription("the log's origin, the checkpoint's first line (default: agent-ledger/<database name>)")
)
const out = Options.text("out").pipe(Options.optional, Options.withDescription("write here instead of stdout"))
const verifierKey = Options.text("key").pipe(
  Options.withDescription("the verifier key: <origin>+<key id>+<base64 key> (agent-ledger checkpoint --key)")
)

const originOf = (target: string, given: Option.Option<string>) =>
  Option.getOrElse(given, () => LedgerTransparency.defaultOrigin(target))

export const checkpointCommand = Command.make(
  "checkpoint",
  {
    db,
    privateKey,
    origin,
    key: Options.boolean("key").pipe(Options.withDescription("print the verifier key instead of the checkpoint"))
  },
  (options) =>
    Effect.gen(function*() {
      const signer = yield* loadSigner(options.privateKey)
      const name = originOf(options.db, options.origin)
      if (options.key) return yield* printLine(SignedNote.verifierKey(name, signer.publicKey))
      const { note } = yield* onLedger(options.db, LedgerTransparency.checkpointNow(name, signer))
      yield* write(Option.none(), note)
    })
).pipe(Command.withDescription(commandHelp(
  "print the ledger's signed checkpoint (C2SP tlog-checkpoint as a signed note), or its verifier key",
  [
    "agent-ledger checkpoint ./agent-ledger.db --private-key ./keys/agent-ledger-ed25519.pem > checkpoint.txt",
    "agent-ledger checkpoint ./agent-ledger.db --private-key ./keys/agent-ledger-ed25519.pem --key"
  ]
)))

/** A checkpoint file signed by this ledger's key (as `name`): its note and what it says. */
const readCheckpoint = (file: string, name: string, signer: AuditSigner.AuditSigner) =>
  Effect.gen(function*() {
    const note = yield* readText(file)
    const verifier = Either.getOrThrow(SignedNote.parseVerifierKey(SignedNote.verifierKey(name, signer.publicKey)))
    const checkpoint = yield* Either.match(
      Either.flatMap(SignedNote.verifyNote(note, verifier), SignedNote.parseCheckpoint),
      {
        onLeft: (error) => Effect.fail(new InputError({ message: `${file}: ${error.message}` })),
        onRight: Effect.succeed
      }
    )
    return { note, checkpoint }
  })

export const proveCommand = Command.make(
  "prove",
  {
    db,
    privateKey,
    origin,
    out,
    sequence: Options.integer("sequence").pipe(Options.optional, Options.withDescription("the row to prove")),
    eventId: Options.text("event-id").pipe(Options.optional, Options.withDescription("the row to prove, by event id")),
    consistency: Options.text("consistency").pipe(
      Options.optional,
      Options.withDescription("an older checkpoint file: prove the ledger grew from it without a rewrite")
    ),
    checkpoint: Options.text("checkpoint").pipe(
      Options.optional,
      Options.withDescription("prove the row against this saved checkpoint (of this key) instead of a new one")
    )
  },
  (options) =>
    Effect.gen(function*() {
      const signer = yield* loadSigner(options.privateKey)
      const name = originOf(options.db, options.origin)
      if (Option.isSome(options.consistency)) {
        if (Option.isSome(options.checkpoint)) {
          return yield* new InputError({ message: "--consistency starts from its own checkpoint: drop --checkpoint" })
        }
        const { checkpoint: older, note: oldNote } = yield* readCheckpoint(options.consistency.value, name, signer)
        const { consistent, proof } = yield* onLedger(
          options.db,
          LedgerTransparency.onStoredTree((merkle) => {
            const consistent = LedgerTransparency.checkAgainst(merkle, older)
            return {
              consistent,
              proof: Either.isLeft(consistent) ? undefined : LedgerTransparency.consistencyOf(
                merkle,
                older.treeSize,
                oldNote,
                LedgerTransparency.signCheckpoint(merkle, name, signer)
              )
            }
          })
        )
        if (Either.isLeft(consistent) || proof === undefined) {
          const message = Either.isLeft(consistent) ? consistent.left.message : "no proof"
          yield* printLine(`agent-ledger: ${message}`)
          return yield* new VerificationFailed({ message })
        }
        return yield* write(options.out, `${JSON.stringify(proof, null, 2)}\n`)
      }
      const row = yield* onLedger(
        options.db,
        Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => {
          const sql = client.withoutTransforms()
          return Option.match(options.sequence, {
            onSome: (n) => sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE sequence = ${n}`,
            onNone: () =>
              sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE id = ${
                Option.getOrElse(options.eventId, () => "")
              }`
          })
        })
      )
      const found = row[0]
      if (found === undefined) {
        return yield* new InputError({ message: "no such row (give --sequence N or --event-id ID of a ledger row)" })
      }
      const { appended_at: _appendedAt, ...stored } = found
      const proven = { ...stored, sequence: Number(stored.sequence) } as LedgerTransparency.Receipt["row"]
      const saved = yield* Option.match(options.checkpoint, {
        onNone: () => Effect.succeedNone,
        onSome: (file) => Effect.asSome(readCheckpoint(file, name, signer))
      })
      if (Option.isSome(saved) && proven.sequence >= saved.value.checkpoint.treeSize) {
        return yield* new InputError({
          message: `row ${proven.sequence} came after the checkpoint (${saved.value.checkpoint.treeSize} leaves): ` +
            `prove it against a newer one`
        })
      }
      const receipt = yield* onLedger(
        options.db,
        LedgerTransparency.onStoredTree((merkle) =>
          Option.match(saved, {
            onNone: () =>
              Either.right(LedgerTransparency.receiptOf(
                proven,
                merkle,
                LedgerTransparency.signCheckpoint(merkle, name, signer),
                merkle.size
              )),
            // The ledger must still hold the checkpoint's tree, or the receipt would prove a history it rewrote.
            onSome: ({ checkpoint, note }) =>
              Either.map(
                LedgerTransparency.checkAgainst(merkle, checkpoint),
                () => LedgerTransparency.receiptOf(proven, merkle, note, checkpoint.treeSize)
              )
          })
        )
      )
      if (Either.isLeft(receipt)) {
        yield* printLine(`agent-ledger: ${receipt.left.message}`)
        return yield* new VerificationFailed({ message: receipt.left.message })
      }
      yield* write(options.out, `${JSON.stringify(receipt.right, null, 2)}\n`)
    })
).pipe(Command.withDescription(commandHelp(
  "write a receipt for one row (the row, its inclusion proof, a signed checkpoint) or a consistency proof",
  [
    "agent-ledger prove ./agent-ledger.db --private-key key.pem --sequence 42 --out receipt.json",
    "agent-ledger prove ./agent-ledger.db --private-key key.pem --event-id 0193... --checkpoint published.txt",
    "agent-ledger prove ./agent-ledger.db --private-key key.pem --consistency checkpoint-monday.txt --out grew.json"
  ],
  [0, 1, 2, 70, 130]
)))

const verifyWith = (
  kind: string,
  file: string,
  key: string,
  check: (input: unknown, key: string) => Either.Either<unknown, LedgerTransparency.ProofFailure>,
  describeOk: (value: never) => string
) =>
  Effect.gen(function*() {
    const input = yield* readJson(file)
    const result = check(input, key)
    if (Either.isRight(result)) return yield* printLine(`${kind} ${file}: OK (${describeOk(result.right as never)})`)
    yield* printLine(`${kind} ${file}: FAILED (${result.left.message})`)
    return yield* new VerificationFailed({ message: result.left.message })
  })

export const verifyReceiptCommand = Command.make(
  "verify-receipt",
  {
    receipt: Args.text({ name: "receipt" }).pipe(Args.withDescription("a receipt file (prove --sequence)")),
    key: verifierKey
  },
  (options) =>
    verifyWith(
      "receipt",
      options.receipt,
      options.key,
      LedgerTransparency.verifyReceipt,
      (checkpoint: SignedNote.Checkpoint) => `the row is leaf of ${checkpoint.origin} at ${checkpoint.treeSize} leaves`
    )
).pipe(Command.withDescription(commandHelp(
  "check a receipt offline: the checkpoint's signature, the row's hashes, its inclusion proof",
  ["agent-ledger verify-receipt receipt.json --key \"agent-ledger/ledger+1a2b3c4d+AW...\""],
  [0, 1, 2, 70]
)))

export const verifyConsistencyCommand = Command.make(
  "verify-consistency",
  {
    proof: Args.text({ name: "proof" }).pipe(Args.withDescription("a consistency proof file (prove --consistency)")),
    key: verifierKey
  },
  (options) =>
    verifyWith(
      "consistency proof",
      options.proof,
      options.key,
      LedgerTransparency.verifyConsistencyProof,
      (r: { readonly old: SignedNote.Checkpoint; readonly new: SignedNote.Checkpoint }) =>
        `${r.old.treeSize} leaves are a prefix of ${r.new.treeSize}`
    )
).pipe(Command.withDescription(commandHelp(
  "check offline that an older checkpoint's log is a prefix of a newer one's (nothing rewritten)",
  ["agent-ledger verify-consistency grew.json --key \"agent-ledger/ledger+1a2b3c4d+AW...\""],
  [0, 1, 2, 70]
)))
