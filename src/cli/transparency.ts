/**
 * Transparency-log commands (docs/FORMAT.md, "Transparency"):
 * - `checkpoint <db> --private-key FILE [--origin O] [--key] [--accept-key PUB]... [--adopt-unsigned-rows]`:
 *   the ledger's signed checkpoint (or, with `--key`, the verifier key auditors check it with), over rows
 *   signed by the key or an accepted previous one (unsigned rows only when adopted);
 * - `prove <db> --private-key FILE (--sequence N | --event-id ID | --consistency OLD_CHECKPOINT)`: a receipt
 *   for one row, or a consistency proof from an older checkpoint to now;
 * - `verify-receipt RECEIPT --key VERIFIER_KEY` and `verify-consistency PROOF --key VERIFIER_KEY`: offline,
 *   with nothing but the verifier key.
 */
import { Args, Command, Options } from "@effect/cli"
import type { SqlError } from "@effect/sql/SqlError"
import { Console, Effect, Either, Option } from "effect"
import * as JournalStore from "../ledger/JournalStore.js"
import * as JournalVerifier from "../ledger/JournalVerifier.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as CallReceipt from "../transparency/CallReceipt.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { writeText } from "./AtomicFile.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { loadKeyring, loadSigner } from "./shared.js"
import * as StdStreams from "./StdStreams.js"
import { printJson, printLine } from "./TerminalText.js"

/** A file's text, or stdin's for `-`. */
const readText = (file: string, what = "input") => StdStreams.readText(file, what)

const readJson = (file: string, what: string) =>
  Effect.flatMap(readText(file, what), (text) =>
    Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: () => new InputError({ message: `${StdStreams.nameOf(file)}: not JSON` })
    }))

/** To `out` (a file written atomically), or stdout when there is none or it is `-`. */
const write = (out: Option.Option<string>, text: string) =>
  Option.match(out, {
    onNone: () => StdStreams.writeStdout(text),
    onSome: (file) => StdStreams.isStdio(file) ? StdStreams.writeStdout(text) : writeText(file, text)
  })

/** A refusal to sign or prove (a ledger or cache someone wrote): said on stderr, exit 1. */
const refused = (refusal: LedgerTransparency.TransparencyRefusal) =>
  Effect.zipRight(
    Console.error(`agent-ledger: refused: ${refusal.detail}`),
    Effect.fail(new VerificationFailed({ message: refusal.detail }))
  )

/** `effect` on the ledger; it may store the tree's subtrees and checkpoints (never a row). */
const onLedger = <A>(
  db: string,
  effect: Effect.Effect<
    A,
    SqlError | LedgerTransparency.TransparencyRefusal | LedgerTransparency.LedgerBusy,
    LedgerSql.LedgerSql
  >
) =>
  effect.pipe(
    Effect.catchTag("TransparencyRefusal", refused),
    Effect.catchTag("LedgerBusy", (busy) => new InputError({ message: `${db}: ${busy.message}` })),
    Effect.catchTag("SqlError", (error) => new InputError({ message: `${db}: ${error.message}` })),
    Effect.provide(openLedger(db, { readonly: false }))
  )

const db = Args.text({ name: "db" }).pipe(Args.withDescription("ledger database (file or postgres:// URL)"))
const privateKey = Options.text("private-key").pipe(
  Options.withDescription("the ledger's Ed25519 private key (PKCS#8 PEM; - reads stdin): it signs the checkpoint")
)
const origin = Options.text("origin").pipe(
  Options.optional,
  Options.withDescription("the log's origin, the checkpoint's first line (default: agent-ledger/<database name>)")
)
const out = Options.text("out").pipe(
  Options.optional,
  Options.withDescription("write here instead of stdout (written atomically; - is stdout)")
)
const acceptKeys = Options.text("accept-key").pipe(
  Options.repeated,
  Options.withDescription(
    "a previous (rotated-out) public key of the ledger (SPKI PEM file) whose row signatures still count; repeatable"
  )
)

/** The public keys of `--accept-key` files. */
const acceptedKeys = (files: ReadonlyArray<string>) =>
  Effect.map(loadKeyring(files), (keyring) => keyring.keyIds.flatMap((id) => Option.toArray(keyring.get(id))))

/** Says on stderr which unsigned rows a checkpoint adopted (the operator vouched for them). */
const reportAdopted = (adopted: LedgerTransparency.AdoptedRows | undefined) =>
  adopted === undefined ? Effect.void : Console.error(
    `agent-ledger: adopted ${adopted.count} unsigned row${
      adopted.count === 1 ? "" : "s"
    } (sequences ${adopted.first}..${adopted.last}): ` +
      `the checkpoint's key now vouches for them`
  )

const verifierKey = Options.text("key").pipe(
  Options.withDescription("the verifier key: <origin>+<key id>+<base64 key> (agent-ledger checkpoint --key)")
)

/** The origin given, else the ledger's (kept by its first checkpoint), else one from the database's name. */
const originOf = (target: string, given: Option.Option<string>) =>
  Option.match(given, {
    onSome: Effect.succeed,
    onNone: () =>
      LedgerTransparency.originOf(target).pipe(
        Effect.catchTag("SqlError", (error) => new InputError({ message: `${target}: ${error.message}` })),
        Effect.provide(openLedger(target, { readonly: false }))
      )
  })

export const checkpointCommand = Command.make(
  "checkpoint",
  {
    db,
    privateKey,
    origin,
    out,
    key: Options.boolean("key").pipe(Options.withDescription("print the verifier key instead of the checkpoint")),
    acceptKeys,
    adoptUnsignedRows: Options.boolean("adopt-unsigned-rows").pipe(
      Options.withDescription(
        "also sign over rows since the last checkpoint that carry no signature (a ledger that ran without a key): " +
          "you vouch for them; by default the first unsigned row is refused (exit 1)"
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const signer = yield* loadSigner(options.privateKey)
      const name = yield* originOf(options.db, options.origin)
      if (options.key) return yield* write(options.out, `${SignedNote.verifierKey(name, signer.publicKey)}\n`)
      const publicKeys = yield* acceptedKeys(options.acceptKeys)
      const { adopted, note } = yield* onLedger(
        options.db,
        LedgerTransparency.checkpointNow(name, signer, { publicKeys, adoptUnsignedRows: options.adoptUnsignedRows })
      )
      yield* reportAdopted(adopted)
      yield* write(options.out, note)
    })
).pipe(Command.withDescription(commandHelp(
  "print the ledger's signed checkpoint (C2SP tlog-checkpoint as a signed note), or its verifier key",
  [
    "agent-ledger checkpoint ./agent-ledger.db --private-key ./keys/agent-ledger-ed25519.pem --out checkpoint.txt",
    "agent-ledger checkpoint ./agent-ledger.db --private-key ./keys/agent-ledger-ed25519.pem --key",
    "agent-ledger checkpoint ./agent-ledger.db --private-key new.pem --accept-key old.pub.pem > checkpoint.txt",
    "agent-ledger checkpoint ./agent-ledger.db --private-key key.pem --adopt-unsigned-rows > checkpoint.txt"
  ],
  [0, 1, 2, 70, 130]
)))

/** A checkpoint note and what it says. */
interface Saved {
  readonly note: string
  readonly checkpoint: SignedNote.Checkpoint
  /** Whether its signature was checked (a key was given). */
  readonly signatureChecked: boolean
}

/**
 * A checkpoint note from `what`: its signature checked with `verifier` when there is one (a checkpoint of
 * another key, or another log, is rejected: exit 1), else only parsed. Unparseable: exit 2.
 */
const checkpointFrom = (what: string, note: string, verifier: SignedNote.Verifier | undefined) =>
  Effect.gen(function*() {
    if (verifier === undefined) {
      const parsed = SignedNote.parseCheckpoint(note.slice(0, Math.max(0, note.lastIndexOf("\n\n")) + 1))
      if (Either.isLeft(parsed)) return yield* new InputError({ message: `${what}: ${parsed.left.message}` })
      return { note, checkpoint: parsed.right, signatureChecked: false } satisfies Saved
    }
    const checked = LedgerTransparency.checkpointOf(note, verifier)
    if (Either.isRight(checked)) return { note, checkpoint: checked.right, signatureChecked: true } satisfies Saved
    if (checked.left.reason === "malformed") {
      return yield* new InputError({ message: `${what}: ${checked.left.message}` })
    }
    yield* Console.error(`agent-ledger: ${what}: ${checked.left.message}`)
    return yield* new VerificationFailed({ message: checked.left.message })
  })

/** A stored checkpoint (`latest`, or a tree size) of `origin`, from the ledger's `checkpoints` table. */
const storedCheckpoint = (database: string, name: string, which: string, verifier: SignedNote.Verifier | undefined) =>
  Effect.gen(function*() {
    const size = which === "latest" ? undefined : Number(which)
    if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) {
      return yield* new InputError({ message: `--stored-checkpoint takes a tree size or latest, got ${which}` })
    }
    const stored = yield* onLedger(database, LedgerTransparency.storedCheckpoints({ origin: name }))
    const found = size === undefined ? stored[0] : stored.find((c) => c.treeSize === size)
    if (found === undefined) {
      return yield* new InputError({
        message: `${database}: no stored checkpoint of ${name}${size === undefined ? "" : ` at ${size} leaves`} ` +
          `(list them with agent-ledger checkpoints)`
      })
    }
    return yield* checkpointFrom(`the stored checkpoint at ${found.treeSize} leaves`, found.note, verifier)
  })

/** The receipt or proof as JSON, to `out`. */
const writeJson = (target: Option.Option<string>, value: unknown) =>
  write(target, `${JSON.stringify(value, null, 2)}\n`)

export const proveCommand = Command.make(
  "prove",
  {
    db,
    privateKey: privateKey.pipe(Options.optional),
    origin,
    out,
    acceptKeys,
    key: Options.text("key").pipe(
      Options.optional,
      Options.withDescription("without --private-key: the verifier key a saved or stored checkpoint is checked with")
    ),
    sequence: Options.integer("sequence").pipe(Options.optional, Options.withDescription("the row to prove")),
    call: Options.text("call").pipe(
      Options.optional,
      Options.withDescription("SESSION:SEQ: prove a tool call (its journal entry, chained to a sealed head)")
    ),
    eventId: Options.text("event-id").pipe(Options.optional, Options.withDescription("the row to prove, by event id")),
    consistency: Options.text("consistency").pipe(
      Options.optional,
      Options.withDescription(
        "an older checkpoint file (- reads stdin): prove the ledger grew from it without a rewrite"
      )
    ),
    checkpoint: Options.text("checkpoint").pipe(
      Options.optional,
      Options.withDescription(
        "prove against this saved checkpoint file (- reads stdin) instead of signing a new one (no private key needed)"
      )
    ),
    storedCheckpoint: Options.text("stored-checkpoint").pipe(
      Options.optional,
      Options.withDescription(
        "prove against a checkpoint kept in the ledger (a tree size, or latest) instead of signing one (no key needed)"
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const signer = yield* Option.match(options.privateKey, {
        onNone: () => Effect.succeed(undefined),
        onSome: (file) => loadSigner(file)
      })
      const name = yield* originOf(options.db, options.origin)
      if (signer !== undefined && Option.isSome(options.key)) {
        return yield* new InputError({ message: "--key is for proofs without --private-key (the key gives it)" })
      }
      const verifierText = signer === undefined
        ? Option.getOrUndefined(options.key)
        : SignedNote.verifierKey(name, signer.publicKey)
      const verifier = verifierText === undefined ? undefined : yield* Either.match(
        SignedNote.parseVerifierKey(verifierText),
        {
          onLeft: (error) => Effect.fail(new InputError({ message: `--key: ${error.message}` })),
          onRight: Effect.succeed
        }
      )
      if (Option.isSome(options.checkpoint) && Option.isSome(options.storedCheckpoint)) {
        return yield* new InputError({ message: "give --checkpoint or --stored-checkpoint, not both" })
      }
      // The checkpoint proven against: given (saved or stored; nothing is signed), or signed now.
      const savedFile = options.checkpoint
      const given = Option.isSome(savedFile)
        ? Option.some(
          yield* Effect.flatMap(readText(savedFile.value, "checkpoint"), (note) =>
            checkpointFrom(StdStreams.nameOf(savedFile.value), note, verifier))
        )
        : Option.isSome(options.storedCheckpoint)
        ? Option.some(yield* storedCheckpoint(options.db, name, options.storedCheckpoint.value, verifier))
        : Option.none<Saved>()
      if (Option.isSome(given) && !given.value.signatureChecked) {
        yield* Console.error(
          "agent-ledger: warning: the checkpoint's signature was not checked (no --key or --private-key): " +
            "the proof is checked against its root only"
        )
      }
      const target = (): Effect.Effect<
        { readonly note: string; readonly size: number; readonly root: Uint8Array },
        InputError | VerificationFailed
      > =>
        Option.match(given, {
          onSome: ({ checkpoint, note }) =>
            Effect.succeed({ note, size: checkpoint.treeSize, root: checkpoint.rootHash }),
          onNone: () =>
            signer === undefined
              ? Effect.fail(
                new InputError({
                  message: "nothing to prove against: give --private-key to sign a new checkpoint, or " +
                    "--checkpoint FILE / --stored-checkpoint SIZE|latest to prove against one (no key needed)"
                })
              )
              : Effect.map(
                Effect.flatMap(
                  acceptedKeys(options.acceptKeys),
                  (publicKeys) =>
                    onLedger(options.db, LedgerTransparency.checkpointNow(name, signer, { publicKeys }))
                ),
                ({ note, rootHash, size }) => ({ note, size, root: rootHash })
              )
        })
      const olderFile = options.consistency
      if (Option.isSome(olderFile)) {
        const older = yield* Effect.flatMap(readText(olderFile.value, "older checkpoint"), (note) =>
          checkpointFrom(StdStreams.nameOf(olderFile.value), note, verifier))
        const newer = yield* target()
        const { proof } = yield* onLedger(
          options.db,
          LedgerTransparency.consistencyProof(
            older.checkpoint.treeSize,
            older.checkpoint.rootHash,
            newer.size,
            newer.root
          )
        )
        const made = LedgerTransparency.consistencyFrom(older.note, newer.note, proof)
        yield* checkBeforeWriting(made, verifierText, LedgerTransparency.verifyConsistencyProof)
        return yield* writeJson(options.out, made)
      }
      // A call: the seal row that seals its entry is the row proven (the first seal of the session that
      // covers the entry and that the checkpoint covers).
      const call = Option.isSome(options.call) ? yield* parseCall(options.call.value) : undefined
      const callTarget = call === undefined ? undefined : yield* target()
      const sealRow = call === undefined ? undefined : yield* onLedger(
        options.db,
        LedgerSql.use(Effect.map(JournalVerifier.sealsBySession, (seals) =>
          (seals.get(call.sessionId) ?? []).find((seal) =>
            seal.length > call.sequence && seal.ledgerSequence < callTarget!.size
          )))
      )
      if (call !== undefined && sealRow === undefined) {
        return yield* new InputError({
          message: `entry ${call.sequence} of session ${call.sessionId} is not sealed in the checkpoint's ` +
            `${callTarget!.size} rows (no session.sealed row covers it yet: prove it once the session is sealed)`
        })
      }
      const rows = yield* onLedger(
        options.db,
        Effect.flatMap(LedgerSql.LedgerSql, ({ client }) => {
          const sql = client.withoutTransforms()
          if (sealRow !== undefined) {
            return sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE sequence = ${sealRow.ledgerSequence}`
          }
          return Option.match(options.sequence, {
            onSome: (n) =>
              sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE sequence = ${n}`,
            onNone: () =>
              sql<Record<string, unknown>>`SELECT * FROM signed_events WHERE id = ${
                Option.getOrElse(options.eventId, () =>
                  "")
              }`
          })
        })
      )
      const found = rows[0]
      if (found === undefined) {
        return yield* new InputError({ message: "no such row (give --sequence N or --event-id ID of a ledger row)" })
      }
      const sequence = Number(found.sequence)
      const against = callTarget ?? (yield* target())
      if (sequence >= against.size) {
        return yield* new InputError({
          message: `row ${sequence} came after the checkpoint (${against.size} leaves): prove it against a newer one`
        })
      }
      const receipt = yield* onLedger(options.db, LedgerTransparency.receiptOfStoredRow(found, against))
      if (call !== undefined && sealRow !== undefined) {
        const stored = yield* onLedger(
          options.db,
          Effect.catchTag(
            JournalStore.readSession(call.sessionId),
            "JournalRowError",
            (error) =>
              Effect.fail(new LedgerTransparency.TransparencyRefusal({ reason: "unprovable", detail: error.message }))
          )
        )
        const entries = stored.filter((entry) =>
          Number(entry.seq) >= call.sequence && Number(entry.seq) < sealRow.length
        )
        const made = CallReceipt.make(call.sessionId, entries, receipt)
        yield* checkBeforeWriting(
          made,
          verifierText,
          (input, key) => CallReceipt.verify(input, key, { allowUnsigned: true })
        )
        return yield* writeJson(options.out, made)
      }
      // The row's signature policy is the auditor's: here only that the row's signature holds if it has one.
      const publicKeys = yield* acceptedKeys(options.acceptKeys)
      yield* checkBeforeWriting(
        receipt,
        verifierText,
        (input, key) => LedgerTransparency.verifyReceipt(input, key, { allowUnsigned: true, publicKeys })
      )
      yield* writeJson(options.out, receipt)
    })
).pipe(Command.withDescription(commandHelp(
  "write a receipt for one row (the row, its inclusion proof, a signed checkpoint) or a consistency proof",
  [
    "agent-ledger prove ./agent-ledger.db --private-key key.pem --sequence 42 --out receipt.json",
    "agent-ledger prove ./agent-ledger.db --event-id 0193... --checkpoint published.txt --key \"agent-ledger/ledger+1a2b3c4d+AW...\"",
    "agent-ledger prove ./agent-ledger.db --sequence 42 --stored-checkpoint latest",
    "agent-ledger prove ./agent-ledger.db --private-key key.pem --consistency checkpoint-monday.txt --out grew.json"
  ],
  [0, 1, 2, 70, 130]
)))

/**
 * What `prove` writes is first checked as the auditor will check it (with the key when there is one): a
 * receipt or proof that would not verify is never written (exit 1).
 */
const checkBeforeWriting = (
  made: unknown,
  key: string | undefined,
  check: (input: unknown, key: string) => Either.Either<unknown, LedgerTransparency.ProofFailure>
) =>
  key === undefined ? Effect.void : Either.match(check(made, key), {
    onRight: () => Effect.void,
    onLeft: (failure) =>
      Effect.zipRight(
        Console.error(`agent-ledger: refused: what would be written does not verify (${failure.message})`),
        Effect.fail(new VerificationFailed({ message: failure.message }))
      )
  })

/**
 * The verifiers' one exit-code rule: 0 verified, 1 the evidence is rejected (a signature, a row or a proof
 * that does not hold, another key's or another log's checkpoint), 2 the input is unusable (not JSON, not the
 * format, a malformed hash or key) or the command was misused.
 */
const verifyWith = (
  kind: string,
  file: string,
  key: string,
  check: (input: unknown, key: string) => Either.Either<unknown, LedgerTransparency.ProofFailure>,
  describeOk: (value: never) => string
) =>
  Effect.gen(function*() {
    const input = yield* readJson(file, kind)
    const name = StdStreams.nameOf(file)
    const result = check(input, key)
    if (Either.isRight(result)) return yield* printLine(`${kind} ${name}: OK (${describeOk(result.right as never)})`)
    if (result.left.reason === "malformed") return yield* new InputError({ message: `${name}: ${result.left.message}` })
    yield* printLine(`${kind} ${name}: FAILED (${result.left.message})`)
    return yield* new VerificationFailed({ message: result.left.message })
  })

const isCallReceipt = (input: unknown): boolean =>
  typeof input === "object" && input !== null &&
  (input as { format?: unknown }).format === CallReceipt.CALL_RECEIPT_FORMAT

/** `call 3 of session S (read_file on fs by agent-7: allowed, result), sealed at row 12 of <origin> at N leaves` */
const describeCall = (proven: CallReceipt.ProvenCall): string => {
  const { entry, outcome } = proven
  const decision = entry.kind === "outcome"
    ? `the outcome ${entry.outcome} of call ${entry.callSequence}`
    : entry.allowed
    ? `allowed, ${outcome === undefined ? entry.outcome : outcome.outcome}`
    : "refused"
  return `entry ${entry.sequence} of session ${JSON.stringify(entry.sessionId)} (${JSON.stringify(entry.toolName)} on ${
    JSON.stringify(entry.serverId)
  } by ${
    JSON.stringify(entry.agentId)
  }: ${decision}), sealed at row ${proven.sealSequence} of ${proven.checkpoint.origin} at ${proven.checkpoint.treeSize} leaves`
}

/** `SESSION:SEQ` (the session id may itself hold colons: the sequence is after the last one). */
const parseCall = (text: string) => {
  const at = text.lastIndexOf(":")
  const sequence = Number(text.slice(at + 1))
  return at <= 0 || !/^\d+$/.test(text.slice(at + 1)) || !Number.isSafeInteger(sequence)
    ? Effect.fail(new InputError({ message: `--call: expected SESSION:SEQ, got ${JSON.stringify(text)}` }))
    : Effect.succeed({ sessionId: text.slice(0, at), sequence })
}

export const verifyReceiptCommand = Command.make(
  "verify-receipt",
  {
    receipt: Args.text({ name: "receipt" }).pipe(
      Args.withDescription("a receipt file (prove --sequence, --event-id or --call; - reads stdin)")
    ),
    key: verifierKey,
    allowUnsigned: Options.boolean("allow-unsigned").pipe(
      Options.withDescription(
        "accept an unsigned row (a ledger that is not signed); by default the row must be signed by the key"
      )
    ),
    acceptKeys
  },
  (options) =>
    Effect.flatMap(acceptedKeys(options.acceptKeys), (publicKeys) =>
      verifyWith(
        "receipt",
        options.receipt,
        options.key,
        (input, key) =>
          isCallReceipt(input)
            ? Either.map(CallReceipt.verify(input, key, { allowUnsigned: options.allowUnsigned }), describeCall)
            : Either.map(
              LedgerTransparency.verifyReceipt(input, key, { allowUnsigned: options.allowUnsigned, publicKeys }),
              (checkpoint) => `the row is leaf of ${checkpoint.origin} at ${checkpoint.treeSize} leaves`
            ),
        (description: string) => description
      ))
).pipe(Command.withDescription(commandHelp(
  "check a receipt offline: the checkpoint's signature, the row's hashes and signature (by the same key), its inclusion proof",
  ["agent-ledger verify-receipt receipt.json --key \"agent-ledger/ledger+1a2b3c4d+AW...\""],
  [0, 1, 2, 70]
)))

export const verifyConsistencyCommand = Command.make(
  "verify-consistency",
  {
    proof: Args.text({ name: "proof" }).pipe(
      Args.withDescription("a consistency proof file (prove --consistency; - reads stdin)")
    ),
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

/** One stored checkpoint as `checkpoints` shows it; `signed`: whether its signature by `--key` holds. */
const describeStored = (stored: LedgerTransparency.StoredCheckpoint, verifier: SignedNote.Verifier | undefined) => {
  const text = stored.note.slice(0, Math.max(0, stored.note.lastIndexOf("\n\n")) + 1)
  const parsed = SignedNote.parseCheckpoint(text)
  const rootHash = Either.isRight(parsed) ? Buffer.from(parsed.right.rootHash).toString("base64") : null
  const checked = verifier === undefined ? undefined : LedgerTransparency.checkpointOf(stored.note, verifier)
  return {
    origin: stored.origin,
    treeSize: stored.treeSize,
    rootHash,
    createdAt: stored.createdAt,
    ...(checked === undefined ? {} : {
      signed: Either.isRight(checked) && checked.right.treeSize === stored.treeSize,
      ...(Either.isLeft(checked) ? { problem: checked.left.message } : {})
    }),
    note: stored.note
  }
}

export const checkpointsCommand = Command.make(
  "checkpoints",
  {
    db,
    origin: Options.text("origin").pipe(Options.optional, Options.withDescription("only the checkpoints of this log")),
    key: Options.text("key").pipe(
      Options.optional,
      Options.withDescription(
        "check each one's signature with this verifier key (anyone who can write the database can write the table)"
      )
    ),
    json: Options.boolean("json").pipe(Options.withDescription("print them as one JSON array, notes included"))
  },
  (options) =>
    Effect.gen(function*() {
      const verifier = yield* Option.match(options.key, {
        onNone: () => Effect.succeed(undefined),
        onSome: (key) =>
          Either.match(SignedNote.parseVerifierKey(key), {
            onLeft: (error) => Effect.fail(new InputError({ message: `--key: ${error.message}` })),
            onRight: Effect.succeed
          })
      })
      const stored = yield* LedgerTransparency.storedCheckpoints({ origin: Option.getOrUndefined(options.origin) })
        .pipe(
          Effect.catchTag("SqlError", (error) => new InputError({ message: `${options.db}: ${error.message}` })),
          Effect.provide(openLedger(options.db, { readonly: true }))
        )
      const described = stored.map((s) => describeStored(s, verifier))
      if (options.json) return yield* printJson(described)
      if (described.length === 0) return yield* printLine(`no checkpoints stored in ${options.db}`)
      for (const c of described) {
        const signed = c.signed === undefined ? "" : c.signed ? "  signed by the key" : "  NOT signed by the key"
        yield* printLine(
          `${c.origin}  ${c.treeSize} leaves  root ${c.rootHash ?? "(unreadable)"}  ${c.createdAt}${signed}`
        )
      }
    })
).pipe(Command.withDescription(commandHelp(
  "list the signed checkpoints kept in the ledger (newest first), to prove against without the private key",
  [
    "agent-ledger checkpoints ./agent-ledger.db",
    "agent-ledger checkpoints ./agent-ledger.db --key \"agent-ledger/ledger+1a2b3c4d+AW...\" --json",
    "agent-ledger prove ./agent-ledger.db --sequence 42 --stored-checkpoint latest --key \"agent-ledger/ledger+1a2b3c4d+AW...\""
  ]
)))
