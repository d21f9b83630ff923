/**
 * What a CLI target file is, decided from its bytes (never from its name): a SQLite ledger database, a
 * JSON Lines ledger export, or a session journal export. Every way a path can be unusable becomes one
 * `InputError` line naming the path.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import { LEDGER_EXPORT_FORMAT } from "../ledger/LedgerExport.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import { BUNDLE_FORMAT } from "../transparency/EvidenceBundle.js"
import { InputError } from "./CliError.js"

export type TargetKind = "sqlite" | "ledgerExport" | "journalExport" | "bundle"

const SQLITE_MAGIC = Buffer.from("SQLite format 3\u0000", "latin1")
const JOURNAL_EXPORT_FORMATS: ReadonlySet<string> = new Set(["agent-ledger/journal/v1", "agent-ledger/journal/v2"])

const describeFsError = (error: unknown): string => {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case "ENOENT":
      return "no such file"
    case "EACCES":
    case "EPERM":
      return "permission denied"
    case "EISDIR":
      return "is a directory, not a file"
    default:
      return code ?? String(error)
  }
}

/** The path must name a readable regular file. */
export const requireFile = (path: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => {
      const stat = fs.statSync(path)
      if (stat.isDirectory()) throw Object.assign(new Error("directory"), { code: "EISDIR" })
      fs.accessSync(path, fs.constants.R_OK)
    },
    catch: (error) => new InputError({ message: `${path}: ${describeFsError(error)}` })
  })

const readHead = (path: string, bytes: number): Effect.Effect<Buffer, InputError> =>
  Effect.try({
    try: () => {
      const fd = fs.openSync(path, "r")
      try {
        const buffer = Buffer.alloc(bytes)
        const read = fs.readSync(fd, buffer, 0, bytes, 0)
        return buffer.subarray(0, read)
      } finally {
        fs.closeSync(fd)
      }
    },
    catch: (error) => new InputError({ message: `${path}: ${describeFsError(error)}` })
  })

const formatOf = (text: string): unknown => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null ? (value as { format?: unknown }).format : undefined
  } catch {
    return undefined
  }
}

/** Detects what kind of agent-ledger file `path` is. */
export const detect = (path: string): Effect.Effect<TargetKind, InputError> =>
  Effect.gen(function*() {
    // A PostgreSQL ledger is named by its URL; it is a database like a SQLite file.
    if (LedgerSql.isPostgresUrl(path)) return "sqlite"
    yield* requireFile(path)
    const head = yield* readHead(path, 64 * 1024)
    if (head.subarray(0, SQLITE_MAGIC.length).equals(SQLITE_MAGIC)) return "sqlite"
    const text = head.toString("utf8")
    const firstLine = text.split("\n", 1)[0] ?? ""
    if (formatOf(firstLine) === LEDGER_EXPORT_FORMAT) return "ledgerExport"
    if (text.trimStart().startsWith("{")) {
      const whole = yield* Effect.try({
        try: () => fs.readFileSync(path, "utf8"),
        catch: (error) => new InputError({ message: `${path}: ${describeFsError(error)}` })
      })
      const format = formatOf(whole)
      if (typeof format === "string" && JOURNAL_EXPORT_FORMATS.has(format)) return "journalExport"
      if (format === BUNDLE_FORMAT) return "bundle"
    }
    return yield* new InputError({
      message: `${path}: not an agent-ledger database, ledger export (JSONL), evidence bundle or journal export`
    })
  })

/**
 * The ledger's database (`LedgerSql`) on an existing ledger file. `readonly` opens it without write access (what `verify`,
 * `export`, `stats` and `dlq list` use, so checking a database can never change it). Fails with an
 * `InputError` when the file is not SQLite or lacks the ledger schema.
 */
export const openLedger = (
  path: string,
  options: { readonly readonly: boolean }
): Layer.Layer<LedgerSql.LedgerSql, InputError> => {
  if (LedgerSql.isPostgresUrl(path)) {
    // PostgreSQL: the schema is created (or upgraded) when missing; reads never change rows.
    return LedgerSql.layerPg({ url: path, maxConnections: 2 }).pipe(
      Layer.mapError((error) =>
        new InputError({
          message: error._tag === "LedgerOpenError" ? error.message : `${LedgerSql.redactUrl(path)}: ${error.message}`
        })
      )
    )
  }
  const client = SqliteClient.layer({ filename: path, readonly: options.readonly, disableWAL: options.readonly })
  const checked = Layer.effectDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const tables = yield* sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table'`.pipe(
      Effect.mapError(() => new InputError({ message: `${path}: not a SQLite database` }))
    )
    const names = new Set(tables.map((t) => t.name))
    if (!names.has("signed_events") || !names.has("signed_events_dlq")) {
      return yield* new InputError({ message: `${path}: SQLite database without the agent-ledger schema` })
    }
  }))
  const opened = Layer.provideMerge(checked, client).pipe(
    Layer.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Layer.failCause(cause as Cause.Cause<never>)
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure) && failure.value instanceof InputError) return Layer.fail(failure.value)
      return Layer.fail(
        new InputError({ message: `${path}: cannot open as a SQLite database (${Cause.squash(cause)})` })
      )
    })
  )
  return Layer.unwrapEffect(Effect.as(requireFile(path), Layer.provide(LedgerSql.fromSqlClient, opened)))
}
