/**
 * `agent-ledger verify <target>`: checks a ledger database (opened read-only), a JSONL ledger export, an
 * evidence bundle or a session journal export, detected from the file's bytes. Exit 0 when everything verifies, 1 when a check
 * fails (the first failing sequence and its kind, the counts, and every failing row up to `--max-failures`),
 * 2 on usage errors or unreadable input.
 */
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Either, Option, Schema } from "effect"
import { isUtf8 } from "node:buffer"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as AuditSigner from "../audit/AuditSigner.js"
import { describeTooDeep, findTooDeep } from "../internal/jsonDepth.js"
import * as JournalSeal from "../journal/JournalSeal.js"
import * as SessionJournal from "../journal/SessionJournal.js"
import * as LedgerExport from "../ledger/LedgerExport.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import * as EvidenceBundle from "../transparency/EvidenceBundle.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { detect, openLedger } from "./InputFile.js"
import * as Progress from "./Progress.js"
import { failureLine, loadKeyring, parsePin } from "./shared.js"
import { printJson, printLine, terminalSafe } from "./TerminalText.js"

export interface VerifyOptions {
  readonly target: string
  readonly publicKeys: ReadonlyArray<string>
  readonly pin: Option.Option<string>
  readonly requireSigned: boolean
  /** With --public-key: the sequence signing began at (rows before it may be unsigned). */
  readonly signedFrom: Option.Option<number>
  readonly allowMixed: boolean
  /** For a journal export: the ledger database whose `session.sealed` rows it must match. */
  readonly ledger: Option.Option<string>
  /** For a database: a checkpoint saved earlier that the ledger must still extend. */
  readonly checkpoint: Option.Option<string>
  /** The verifier key the checkpoint's signature is checked with. */
  readonly checkpointKey: Option.Option<string>
  /**
   * Without `checkpointKey`: go on without a trust anchor (a bundle's own key, a checkpoint's text as it is).
   * Without either, a bundle or `--checkpoint` is a usage error (exit 2).
   */
  readonly trustEmbeddedKey?: boolean | undefined
  /** How many failing rows to list (of each kind: row checks, and a bundle's inclusion proofs). */
  readonly maxFailures: number
  readonly json: boolean
}

const encodeReport = Schema.encodeSync(LedgerVerifier.VerifyReport)

/** The human-readable lines of a chain report: every failure listed (as far as the report holds them). */
const reportLines = (report: LedgerVerifier.VerifyReport): ReadonlyArray<string> => {
  const lines: Array<string> = []
  Option.map(report.firstFailure, (failure) => lines.push(`  first failure: ${failureLine(failure)}`))
  if (report.failureCount > 0) {
    lines.push(`  failing rows:  ${report.failureCount}`)
    const listed = report.failures.length
    lines.push(
      listed < report.failureCount
        ? `  failures:      the first ${listed} (--max-failures N lists more)`
        : `  failures:      ${listed}`
    )
    for (const failure of report.failures) lines.push(`    ${failureLine(failure)}`)
  }
  lines.push(`  rows checked:  ${report.rowsChecked}`)
  lines.push(
    `  attest levels: ${report.attestLevels.unsigned} unsigned (no signature to check), ${report.attestLevels.ed25519} ed25519`
  )
  if (report.attestLevels.ed25519 > 0) {
    lines.push(
      `  signatures:    ${report.signatures.valid} valid, ${report.signatures.invalid} invalid, ${report.signatures.unknownKey} by unknown keys`
    )
  }
  if (report.unknownKeyIds.length > 0) {
    lines.push(`  unknown keys:  ${report.unknownKeyIds.join(", ")} (pass their public keys with --public-key)`)
  }
  Option.map(report.head, (head) => lines.push(`  head:          sequence ${head.sequence} ${head.entryHash}`))
  Option.map(report.pin, (pin) =>
    lines.push(
      `  pin:           ${pin.sequence}:${pin.entryHash} ${pin.status}${
        pin.actualEntryHash === undefined ? "" : ` (found ${pin.actualEntryHash})`
      }`
    ))
  return lines
}

const emit = (
  options: VerifyOptions,
  kind: string,
  ok: boolean,
  text: ReadonlyArray<string>,
  json: Record<string, unknown>
) =>
  Effect.gen(function*() {
    if (options.json) {
      yield* printJson({ target: options.target, kind, ok, ...json })
    } else {
      yield* printLine(`${kind} ${options.target}: ${ok ? "OK" : "FAILED"}`)
      for (const line of text) yield* printLine(line)
    }
    if (!ok) return yield* new VerificationFailed({ message: `${options.target} did not verify` })
  })

/**
 * Readable private keys in the database's directory: whoever can rewrite the database can then usually
 * re-sign a rewritten history that verifies, so the signatures prove less than they seem to.
 */
export const privateKeysBeside = (database: string): ReadonlyArray<string> => {
  const directory = path.dirname(path.resolve(database))
  let names: ReadonlyArray<string>
  try {
    names = fs.readdirSync(directory)
  } catch {
    return []
  }
  return names.filter((name) => name.endsWith(".pem")).map((name) => path.join(directory, name)).filter((file) => {
    try {
      const head = fs.readFileSync(file, "utf8").slice(0, 4096)
      return /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(head)
    } catch {
      return false
    }
  })
}

const warnAboutKeysBeside = (database: string) =>
  Effect.forEach(privateKeysBeside(database), (file) =>
    Console.error(terminalSafe(
      `warning: the private key ${file} is readable next to the database: whoever can rewrite the database ` +
        `can re-sign it. Keep signing keys where the ledger's writers cannot read them (docs/OPERATIONS.md).`
    )), { discard: true })

const verifyDatabase = (options: VerifyOptions, verifyOptions: LedgerVerifier.VerifyLedgerOptions) =>
  Effect.gen(function*() {
    if (Option.isSome(options.checkpoint)) {
      yield* requireTrustAnchor(options, "--checkpoint", "the checkpoint's text without checking its signature")
    }
    yield* warnAboutKeysBeside(options.target)
    const progress = Progress.make("verified rows")
    const report = yield* Effect.gen(function*() {
      // The total, for a progress line with a percentage (rows appended meanwhile are checked too).
      const { client } = yield* LedgerSql.LedgerSql
      const [counted] = yield* client<{ n: number }>`SELECT CAST(COUNT(*) AS INTEGER) AS n FROM signed_events`
      const total = Number(counted?.n ?? 0)
      return yield* LedgerVerifier.verifyLedger({
        ...verifyOptions,
        onProgress: (rows) => progress.update(rows, Math.max(total, rows))
      })
    }).pipe(
      Effect.ensuring(progress.finish),
      Effect.provide(openLedger(options.target, { readonly: true })),
      Effect.catchTag(
        "SqlError",
        (error) => new InputError({ message: `${options.target}: cannot read the ledger (${error.message})` })
      )
    )
    const pinned = yield* Option.match(options.checkpoint, {
      onNone: () => Effect.succeedNone,
      onSome: (file) => Effect.asSome(checkCheckpoint(options, file))
    })
    const ok = report.ok && Option.match(pinned, { onNone: () => true, onSome: (p) => p.ok })
    return yield* emit(
      options,
      "ledger",
      ok,
      [
        ...reportLines(report),
        ...Option.match(pinned, { onNone: () => [], onSome: (p) => [`  checkpoint:    ${p.line}`] })
      ],
      {
        report: encodeReport(report),
        ...Option.match(pinned, {
          onNone: () => ({}),
          onSome: (p) => ({ checkpoint: { file: p.file, ok: p.ok, detail: p.line } })
        })
      }
    )
  })

/** The ledger against a checkpoint saved earlier: its tree must extend the checkpoint's (RFC 6962 roots). */
const checkCheckpoint = (options: VerifyOptions, file: string) =>
  Effect.gen(function*() {
    const note = yield* Effect.try({
      try: () => fs.readFileSync(file, "utf8"),
      catch: (error) => new InputError({ message: `${file}: cannot read (${String(error)})` })
    })
    // A checkpoint of another key or another log is evidence rejected (exit 1); one that is not a
    // checkpoint at all is unusable input (exit 2).
    const signed = yield* Option.match(options.checkpointKey, {
      // Without a key (--trust-embedded-key), the note's text is taken as it is: the comparison still finds
      // a rewrite or a cut of what the file says, not that the key holder said it.
      onNone: () => Effect.succeed(Either.right<string>(note.slice(0, Math.max(0, note.lastIndexOf("\n\n")) + 1))),
      onSome: (key) =>
        Either.match(SignedNote.parseVerifierKey(key), {
          onLeft: (error) => Effect.fail(new InputError({ message: `--checkpoint-key: ${error.message}` })),
          onRight: (verifier) =>
            Either.match(LedgerTransparency.checkpointOf(note, verifier), {
              onLeft: (failure) =>
                failure.reason === "malformed"
                  ? Effect.fail(new InputError({ message: `${file}: ${failure.message}` }))
                  : Effect.succeed(Either.left<string>(failure.message)),
              onRight: () => Effect.succeed(Either.right<string>(note.slice(0, note.lastIndexOf("\n\n") + 1)))
            })
        })
    })
    if (Either.isLeft(signed)) return { file, ok: false, line: `${file} FAILED: ${signed.left}` }
    const checkpoint = yield* Either.match(SignedNote.parseCheckpoint(signed.right), {
      onLeft: (error) => Effect.fail(new InputError({ message: `${file}: ${error.message}` })),
      onRight: Effect.succeed
    })
    const merkle = yield* LedgerTransparency.tree.pipe(
      Effect.provide(openLedger(options.target, { readonly: true })),
      Effect.mapError((error) =>
        error._tag === "InputError" ? error : new InputError({ message: `${options.target}: ${error.message}` })
      )
    )
    const unpinned = Option.isNone(options.checkpointKey) ? " (its signature NOT checked: --trust-embedded-key)" : ""
    return Either.match(LedgerTransparency.checkAgainst(merkle, checkpoint), {
      onLeft: (failure) => ({ file, ok: false, line: `${file} FAILED: ${failure.detail}` }),
      onRight: () => ({
        file,
        ok: true,
        line: `${file}: the ledger (${merkle.size} rows) extends its ${checkpoint.treeSize} leaves${unpinned}`
      })
    })
  })

/** What an export verified without a pin proves, and what it does not (the header is not authenticated). */
const UNPINNED_EXPORT_NOTE = [
  "  unpinned:      proves that these rows are intact and link to each other and to the header's anchor;",
  "                 NOT that the header is the ledger's: rows dropped at either end under a rewritten header",
  "                 go unnoticed. Pass --pin SEQ:HASH from a head you kept to prove the range."
]

const verifyLedgerExport = (options: VerifyOptions, verifyOptions: LedgerVerifier.VerifyLedgerOptions) =>
  Effect.gen(function*() {
    const result = yield* LedgerExport.verifyExportFile(options.target, {
      keyring: verifyOptions.keyring,
      pin: verifyOptions.pin,
      requireSigned: verifyOptions.requireSigned,
      signedFrom: verifyOptions.signedFrom,
      allowMixed: verifyOptions.allowMixed,
      maxFailures: verifyOptions.maxFailures
    }).pipe(Effect.mapError((error) => new InputError({ message: error.message })))
    const h = result.header
    const pinned = verifyOptions.pin !== undefined
    const lines = [
      `  range:         sequences ${h.from_sequence}..${h.to_sequence ?? "(none)"} (${h.row_count} rows per header)`,
      ...(result.complete ? [] : ["  incomplete:    the rows do not end where the header says (lines cut off?)"]),
      ...reportLines(result.report),
      ...(pinned ? [] : UNPINNED_EXPORT_NOTE)
    ]
    return yield* emit(options, "ledger export", result.ok, lines, {
      header: h,
      pinned,
      complete: result.complete,
      report: encodeReport(result.report)
    })
  })

/**
 * Evidence is checked against a key the auditor trusts: without `--checkpoint-key` it is a usage error
 * (exit 2) naming the flag, unless `--trust-embedded-key` says to go on without one.
 */
const requireTrustAnchor = (options: VerifyOptions, what: string, instead: string) =>
  Option.isSome(options.checkpointKey) || options.trustEmbeddedKey === true ? Effect.void : Effect.fail(
    new InputError({
      message: `${what} is checked against the log's verifier key you trust: pass --checkpoint-key VKEY ` +
        `(agent-ledger checkpoint --key), or --trust-embedded-key to trust ${instead}`
    })
  )

/** A JSON file given as the target: `what` names it in the error. */
const readJsonTarget = (target: string, what: string) =>
  Effect.try({
    try: () => {
      const bytes = fs.readFileSync(target)
      // JSON is UTF-8: bytes that are not would be read as U+FFFD, text the file does not hold.
      if (!isUtf8(bytes)) throw new Error("not valid UTF-8")
      return JSON.parse(bytes.toString("utf8")) as unknown
    },
    catch: (error) => new InputError({ message: `${target}: cannot read the ${what} (${String(error)})` })
  }).pipe(Effect.filterOrElse(
    (json) => findTooDeep(json) === undefined,
    (json) => new InputError({ message: `${target}: not a ${what}: ${describeTooDeep(findTooDeep(json)!)}` })
  ))

/** Every row whose inclusion proof fails, as far as `--max-failures` lists them. */
const unprovenLines = (count: number, listed: ReadonlyArray<number>): ReadonlyArray<string> =>
  count === 0 ? [] : [
    listed.length < count
      ? `  unproven:      the first ${listed.length} of ${count} (--max-failures N lists more)`
      : `  unproven:      ${count}`,
    ...listed.map((sequence) =>
      `    sequence ${sequence}: notIncluded — its proof does not lead to the checkpoint's root`
    )
  ]

/** What a bundle checked with its own key proves, and what it does not. */
const UNPINNED_BUNDLE_NOTE = [
  "  unpinned key:  the checkpoint verified with the key written in the bundle, which whoever made the file",
  "                 chose: pass --checkpoint-key with the log's verifier key you trust to prove the rows are its."
]

const verifyBundle = (options: VerifyOptions, keyring: AuditSigner.Keyring, pin: LedgerVerifier.Pin | undefined) =>
  Effect.gen(function*() {
    yield* requireTrustAnchor(
      options,
      "an evidence bundle",
      "the key written in the bundle, which whoever made the file chose"
    )
    const json = yield* readJsonTarget(options.target, "bundle")
    const result = yield* Either.match(
      EvidenceBundle.verify(json, {
        verifierKey: Option.getOrUndefined(options.checkpointKey),
        keyring,
        requireSigned: options.requireSigned,
        signedFrom: Option.getOrUndefined(options.signedFrom),
        allowMixed: options.allowMixed,
        maxFailures: options.maxFailures
      }),
      {
        onLeft: (error) => Effect.fail(new InputError({ message: `${options.target}: ${error.message}` })),
        onRight: Effect.succeed
      }
    )
    const bundle = result.bundle
    const rows = bundle.rows.length
    const cp = result.checkpoint
    // A pin from an earlier run must match the bundled row at its sequence.
    const pinRow = pin === undefined ? undefined : bundle.rows.find(({ row }) => row.sequence === pin.sequence)
    const pinOk = pin === undefined || pinRow?.row.entry_hash === pin.entryHash ||
      (pin.sequence === bundle.from_sequence - 1 && bundle.rows[0]?.row.prev_hash === pin.entryHash)
    const ok = result.ok && pinOk
    return yield* emit(options, "evidence bundle", ok, [
      `  range:         sequences ${bundle.from_sequence}..${bundle.to_sequence} (${rows} rows)`,
      `  checkpoint:    ${cp.origin}, ${cp.treeSize} leaves, root ${Buffer.from(cp.rootHash).toString("base64")}`,
      ...Option.match(result.checkpointProblem, {
        onNone: () => [`  signature:     the checkpoint is signed by ${cp.origin}`],
        onSome: (problem) => [`  signature:     FAILED: ${problem}`]
      }),
      `  inclusion:     ${result.proven} of ${rows} rows proven in the checkpoint's tree${
        Option.match(result.firstUnproven, { onNone: () => "", onSome: (s) => ` (first unproven: sequence ${s})` })
      }`,
      ...unprovenLines(rows - result.proven, result.unproven),
      ...(result.complete ? [] : ["  incomplete:    the rows are not exactly the stated range, each once, in order"]),
      ...reportLines(result.report),
      ...(pin === undefined
        ? []
        : [`  pin:           ${pin.sequence}:${pin.entryHash} ${pinOk ? "matched" : "NOT in the bundle as pinned"}`]),
      ...(result.keyPinned ? [] : UNPINNED_BUNDLE_NOTE)
    ], {
      range: { from: bundle.from_sequence, to: bundle.to_sequence, rows },
      checkpoint: {
        origin: cp.origin,
        treeSize: cp.treeSize,
        rootHash: Buffer.from(cp.rootHash).toString("base64"),
        ok: Option.isNone(result.checkpointProblem),
        problem: Option.getOrNull(result.checkpointProblem)
      },
      keyPinned: result.keyPinned,
      proven: result.proven,
      firstUnproven: Option.getOrNull(result.firstUnproven),
      unprovenCount: rows - result.proven,
      unproven: result.unproven,
      complete: result.complete,
      ...(pin === undefined ? {} : { pin: { ...pin, ok: pinOk } }),
      report: encodeReport(result.report)
    })
  })

/** The ledger at `db` verified, and the export compared with its last seal of the session. */
const checkSeal = (db: string, exported: SessionJournal.JournalExport) =>
  Effect.gen(function*() {
    const report = yield* LedgerVerifier.verifyLedger()
    const seals = yield* JournalSeal.sealsOf(exported.sessionId)
    return { ledgerOk: report.ok, check: JournalSeal.check(exported, seals) }
  }).pipe(
    Effect.provide(openLedger(db, { readonly: true })),
    Effect.catchTag("SqlError", (error) =>
      new InputError({ message: `${db}: cannot read the ledger (${error.message})` }))
  )

const verifyJournalExport = (options: VerifyOptions) =>
  Effect.gen(function*() {
    const json = yield* readJsonTarget(options.target, "journal export")
    const outcome = yield* SessionJournal.verifyExport(json).pipe(
      Effect.map((exported) => ({ ok: true as const, exported })),
      Effect.catchTag("IntegrityViolation", (violation) => Effect.succeed({ ok: false as const, violation })),
      Effect.catchTag("InvalidExport", (error) => new InputError({ message: `${options.target}: ${error.message}` }))
    )
    if (outcome.ok) {
      const entries = outcome.exported.entries.length
      const sealed = yield* Option.match(options.ledger, {
        onNone: () => Effect.succeedNone,
        onSome: (db) => Effect.asSome(checkSeal(db, outcome.exported))
      })
      const ok = Option.match(sealed, {
        onNone: () => true,
        onSome: (s) => s.ledgerOk && (s.check.status === "sealed" || s.check.status === "sealedPrefix")
      })
      return yield* emit(options, "journal export", ok, [
        `  session:       ${outcome.exported.sessionId}`,
        `  entries:       ${entries}`,
        `  head:          ${outcome.exported.headHash}`,
        ...Option.match(sealed, {
          onNone: () => [],
          onSome: (s) => [
            ...(s.ledgerOk ? [] : [`  ledger:        ${Option.getOrThrow(options.ledger)} does NOT verify`]),
            `  seal:          ${s.check.status}: ${s.check.detail}`
          ]
        })
      ], {
        sessionId: outcome.exported.sessionId,
        entries,
        headHash: outcome.exported.headHash,
        ...Option.match(sealed, {
          onNone: () => ({}),
          onSome: (s) => ({
            ledger: Option.getOrThrow(options.ledger),
            ledgerOk: s.ledgerOk,
            seal: {
              status: s.check.status,
              detail: s.check.detail,
              ledgerSequence: Option.getOrNull(Option.map(s.check.seal, (seal) => seal.sequence)),
              length: Option.getOrNull(Option.map(s.check.seal, (seal) => seal.length))
            }
          })
        })
      })
    }
    const v = outcome.violation
    return yield* emit(options, "journal export", false, [
      `  first failure: sequence ${v.sequence}: ${v.field} — expected ${v.expected}, found ${v.actual}`
    ], { failure: { sequence: v.sequence, field: v.field, expected: v.expected, actual: v.actual } })
  })

export const runVerify = (options: VerifyOptions) =>
  Effect.gen(function*() {
    const pin = yield* Option.match(options.pin, {
      onNone: () => Effect.succeed(undefined),
      onSome: parsePin
    })
    if (!Number.isSafeInteger(options.maxFailures) || options.maxFailures < 0) {
      return yield* new InputError({
        message: `--max-failures must be a non-negative integer, got ${options.maxFailures}`
      })
    }
    const keyring = yield* loadKeyring(options.publicKeys)
    const kind = yield* detect(options.target)
    const signing = {
      requireSigned: options.requireSigned,
      signedFrom: Option.getOrUndefined(options.signedFrom),
      allowMixed: options.allowMixed,
      maxFailures: options.maxFailures
    }
    switch (kind) {
      case "sqlite":
        if (Option.isSome(options.ledger)) {
          return yield* new InputError({ message: "--ledger applies to journal exports (checked against its seals)" })
        }
        return yield* verifyDatabase(options, { keyring, pin, ...signing })
      case "ledgerExport":
        if (Option.isSome(options.ledger) || Option.isSome(options.checkpoint)) {
          return yield* new InputError({
            message: "--ledger applies to journal exports, --checkpoint to databases"
          })
        }
        return yield* verifyLedgerExport(options, { keyring, pin, ...signing })
      case "journalExport":
        if (
          pin !== undefined || options.publicKeys.length > 0 || options.requireSigned ||
          Option.isSome(options.signedFrom) || options.allowMixed || Option.isSome(options.checkpoint)
        ) {
          return yield* new InputError({
            message:
              "--pin, --public-key, --require-signed, --signed-from and --allow-mixed apply to ledgers, not journal exports"
          })
        }
        return yield* verifyJournalExport(options)
      case "bundle":
        if (Option.isSome(options.ledger) || Option.isSome(options.checkpoint)) {
          return yield* new InputError({
            message: "--ledger applies to journal exports, --checkpoint to databases (a bundle carries its checkpoint)"
          })
        }
        return yield* verifyBundle(options, keyring, pin)
    }
  })

export const command = Command.make(
  "verify",
  {
    target: Args.text({ name: "target" }).pipe(
      Args.withDescription("a ledger database, a JSONL ledger export, an evidence bundle or a session journal export")
    ),
    publicKeys: Options.text("public-key").pipe(
      Options.repeated,
      Options.withDescription("SPKI PEM public key to check signatures with (repeat for rotated keys)")
    ),
    pin: Options.text("pin").pipe(
      Options.optional,
      Options.withDescription("SEQ:HASH from an earlier run that must still be in the chain")
    ),
    requireSigned: Options.boolean("require-signed").pipe(
      Options.withDescription("fail on unsigned rows, even without --public-key")
    ),
    signedFrom: Options.integer("signed-from").pipe(
      Options.optional,
      Options.withDescription(
        "with --public-key: the sequence signing began at; rows before it may be unsigned (default 0: every row signed)"
      )
    ),
    allowMixed: Options.boolean("allow-mixed").pipe(
      Options.withDescription(
        "accept unsigned rows anywhere (by default an unsigned row in a signed ledger is a downgrade)"
      )
    ),
    checkpoint: Options.text("checkpoint").pipe(
      Options.optional,
      Options.withDescription(
        "for a database: a checkpoint saved earlier (agent-ledger checkpoint); the ledger must still extend it"
      )
    ),
    checkpointKey: Options.text("checkpoint-key").pipe(
      Options.optional,
      Options.withDescription(
        "the verifier key to check --checkpoint's signature (or an evidence bundle's) with; required for either"
      )
    ),
    trustEmbeddedKey: Options.boolean("trust-embedded-key").pipe(
      Options.withDescription(
        "without --checkpoint-key: trust the key written in the bundle (or a checkpoint's unsigned text): proves " +
          "nothing about who made it"
      )
    ),
    ledger: Options.text("ledger").pipe(
      Options.optional,
      Options.withDescription(
        "for a journal export: the ledger database whose session.sealed rows it must match (the ledger is verified too)"
      )
    ),
    maxFailures: Options.integer("max-failures").pipe(
      Options.withDefault(LedgerVerifier.DEFAULT_MAX_FAILURES),
      Options.withDescription(
        `list at most N failing rows, in row order (default ${LedgerVerifier.DEFAULT_MAX_FAILURES}; the count is always exact)`
      )
    ),
    json: Options.boolean("json").pipe(Options.withDescription("print the report as one JSON object"))
  },
  runVerify
).pipe(Command.withDescription(commandHelp(
  "verify a ledger database, a JSONL export, an evidence bundle or a session journal export offline (never modifies it)",
  [
    "agent-ledger verify ./agent-ledger.db --public-key ./keys/agent-ledger-ed25519.pub.pem",
    "agent-ledger verify rows.jsonl --pin 99:<entry hash of row 99>",
    "agent-ledger verify ./session.json --ledger ./agent-ledger.db",
    "agent-ledger verify evidence.json --checkpoint-key 'agent-ledger/prod+1a2b3c4d+AV...'",
    "agent-ledger verify postgres://auditor@db:5432/ledger --json"
  ],
  [0, 1, 2, 70, 130]
)))
