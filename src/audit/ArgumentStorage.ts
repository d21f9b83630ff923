/**
 * What the ledger keeps of a tool call's arguments. A signed, append-only ledger cannot forget, and
 * arguments hold secrets and personal data, so by default a row keeps only a salted digest of them and
 * their size: `{ "sha256": …, "bytes": … }`. `Tools` (the guard policy's `argumentStorage`, and the
 * `argumentStorage` option of `AuditLedger`'s layers) says per tool, by glob pattern, which top-level fields
 * are kept as given (`store`), as salted digests (`hash`) or not at all (`drop`).
 *
 * One implementation for every path: the MCP guard (`GuardPolicy.storedArguments`) and the tool calls an
 * application builds with `AuditEvent.toolCall`, which reads the `ArgumentStorage` service.
 *
 * **The digest** (docs/FORMAT.md, "Argument digests"): lowercase hex SHA-256 of the UTF-8 bytes of
 * `salt + JCS(value)`, where `salt` is the ledger's 64 hex characters (`LedgerSql.argumentSalt`, 32 random
 * bytes kept in `agent_ledger_settings`) and JCS is RFC 8785 JSON. One salt per ledger, so
 * - an auditor handed a value (and the salt, by whoever holds the database) checks it with `digest`;
 * - equal values have equal digests within one ledger (repeated calls can be told apart from different
 *   ones), and unrelated digests across ledgers;
 * - whoever holds only rows, exports, receipts or evidence bundles (none carries the salt) cannot test
 *   guesses: that takes the 256-bit salt. Whoever holds the database holds the salt and *can* test guesses
 *   of short or predictable values (a yes/no, a user id): `drop` such fields, and keep the database as
 *   private as the arguments themselves.
 */
import canonicalize from "canonicalize"
import { Context, Layer, Schema } from "effect"
import { sha256Hex } from "../internal/encoding.js"
import { jsonBytes } from "../internal/jsonSize.js"
import { globMatch } from "../internal/toolNames.js"
import type { JsonValue } from "./AuditEvent.js"

/** How one argument field reaches the ledger. */
export const FieldStorage = Schema.Literal("store", "hash", "drop")
export type FieldStorage = typeof FieldStorage.Type

/** One tool's storage: fields listed by name; `otherFields` for the rest (default `drop`). */
export const ToolStorage = Schema.Struct({
  store: Schema.optional(Schema.Array(Schema.String)),
  hash: Schema.optional(Schema.Array(Schema.String)),
  drop: Schema.optional(Schema.Array(Schema.String)),
  /** Fields not listed; default `drop`. */
  otherFields: Schema.optional(FieldStorage)
})
export type ToolStorage = typeof ToolStorage.Type

/**
 * Per tool (glob patterns as keys, compared as `GuardPolicy.normalizeName` gives names; first match wins),
 * which argument fields the ledger stores. A tool no key matches gets the digest and size only.
 */
export const Tools = Schema.Record({ key: Schema.String, value: ToolStorage })
export type Tools = typeof Tools.Type

/** Every top-level field of every tool's arguments kept as given (beside the whole arguments' digest). */
export const storeAll: Tools = { "*": { otherFields: "store" } }

/** A salted digest and the size: what a row keeps of a value it does not store. */
export interface Digest {
  readonly sha256: string
  readonly bytes: number
}

/**
 * `{ sha256, bytes }` of a value: SHA-256 of `salt` followed by the value's RFC 8785 JSON, and its size as
 * JSON in UTF-8. What an auditor runs to check a value against a row.
 */
export const digest = (value: unknown, salt: string): Digest => {
  let json: string | undefined
  try {
    json = canonicalize(JSON.parse(JSON.stringify(value ?? null)) as object)
  } catch {
    json = undefined
  }
  return { sha256: sha256Hex(salt + (json ?? "")), bytes: jsonBytes(value) }
}

const asJson = (value: unknown): JsonValue => {
  try {
    return JSON.parse(JSON.stringify(value ?? null)) as JsonValue
  } catch {
    return null
  }
}

/**
 * The arguments as the ledger stores them. Default: `{ sha256, bytes }` of the whole arguments. With a
 * `tools` entry for the tool (and arguments that are an object): `{ sha256, bytes, fields }`, where
 * `fields` holds the stored fields as given and the hashed ones as `{ sha256, bytes }`; dropped fields are
 * left out.
 */
export const storedArguments = (
  tools: Tools | undefined,
  toolName: string,
  args: unknown,
  salt: string
): JsonValue => {
  const whole = digest(args, salt)
  const entry = Object.entries(tools ?? {}).find(([pattern]) => globMatch(pattern, toolName))
  if (entry === undefined || typeof args !== "object" || args === null || Array.isArray(args)) return { ...whole }
  const storage = entry[1]
  const modeOf = (field: string): FieldStorage =>
    storage.store?.includes(field) ? "store" : storage.hash?.includes(field)
      ? "hash"
      : storage.drop?.includes(field)
      ? "drop"
      : storage.otherFields ?? "drop"
  const fields: Record<string, JsonValue> = {}
  for (const [field, value] of Object.entries(args)) {
    const mode = modeOf(field)
    if (mode === "store") fields[field] = asJson(value)
    else if (mode === "hash") fields[field] = { ...digest(value, salt) }
  }
  return { ...whole, fields }
}

/**
 * Where `AuditEvent.toolCall` learns how to store arguments: the ledger's salt and the per-tool `tools`.
 * `AuditLedger`'s layers provide it (the salt from the ledger's settings, `tools` from their
 * `argumentStorage` option); without a ledger (a `MemorySink` test) provide `layer({ salt })`.
 */
export class ArgumentStorage extends Context.Tag("agent-ledger/ArgumentStorage")<ArgumentStorage, {
  readonly salt: string
  readonly tools: Tools | undefined
  /** `storedArguments(tools, toolName, args, salt)`. */
  readonly store: (toolName: string, args: JsonValue) => JsonValue
}>() {}

export const make = (options: { readonly salt: string; readonly tools?: Tools | undefined }): ArgumentStorage["Type"] =>
  ArgumentStorage.of({
    salt: options.salt,
    tools: options.tools,
    store: (toolName, args) => storedArguments(options.tools, toolName, args, options.salt)
  })

export const layer = (options: { readonly salt: string; readonly tools?: Tools | undefined }) =>
  Layer.succeed(ArgumentStorage, make(options))
