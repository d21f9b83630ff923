import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Either, Exit, FastCheck as fc, Layer, Option, Schema, Stream, String as Str } from "effect"
import { createHash, createPrivateKey } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import {
  AgentAction,
  canonicalJson,
  Decision,
  DeferredAuditEvent,
  formatTimestamp,
  GOVERNANCE_REFUSAL_EVENT_TYPE,
  Refuse,
  ToolCall
} from "../src/audit/AuditEvent.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { hashBytes, lp, sha256Bytes, sha256Hex, u64, ZERO_HASH } from "../src/internal/encoding.js"
import { runMigrations } from "../src/internal/migrations.js"
import { rowEntryHash, rowEntryHashBytes } from "../src/internal/rowFormat.js"
import * as LedgerRow from "../src/ledger/LedgerRow.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import { sharedSqlite } from "./fixtures/ledgerSql.js"

// ---------------------------------------------------------------------------------------------------------
// Helpers: rows built here, independently of the sink, and inserted with plain SQL
// ---------------------------------------------------------------------------------------------------------

const BASE_MILLIS = Date.parse("2026-11-24T06:52:03.120Z")

const eventAt = (sequence: number, variant = ""): DeferredAuditEvent =>
  new DeferredAuditEvent({
    id: `019ab4f2-5a70-7000-8000-${sequence.toString(16).padStart(12, "0")}`,
    agentId: `agent-${sequence % 3}`,
    action: new ToolCall({
      toolName: "shell.exec",
      serverId: "local",
      arguments: { cmd: `rm -rf /tmp/${sequence}${variant}` }
    }),
    decision: new Refuse({ ruleId: "no-destructive-shell", reason: "destructive shell command" }),
    timestamp: DateTime.unsafeMake(BASE_MILLIS + sequence * 1_000)
  })

/** One row as row format v1 defines it; `signer` undefined makes an unsigned row. */
const rowFor = (
  event: DeferredAuditEvent,
  sequence: number,
  prevHash: string,
  signer: AuditSigner.AuditSigner | undefined
): LedgerRow.LedgerRow => {
  const payload = canonicalJson(event)
  const input = {
    sequence,
    prevHash,
    id: event.id,
    agentId: event.agentId,
    eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
    payloadHash: sha256Hex(payload),
    timestamp: formatTimestamp(event)
  }
  const entryHashBytes = rowEntryHashBytes(input)
  return {
    id: event.id,
    sequence,
    agent_id: event.agentId,
    event_type: input.eventType,
    payload,
    payload_hash: input.payloadHash,
    prev_hash: prevHash,
    entry_hash: entryHashBytes.toString("hex"),
    signature: signer === undefined ? null : signer.sign(entryHashBytes),
    key_id: signer === undefined ? null : signer.keyId,
    attest_level: signer === undefined ? "unsigned" : "ed25519",
    timestamp: input.timestamp,
    appended_at: DateTime.formatIso(DateTime.unsafeMake(BASE_MILLIS + sequence * 1_000 + 25))
  }
}

interface ChainOptions {
  readonly signerAt?: (sequence: number) => AuditSigner.AuditSigner | undefined
  readonly firstSequence?: number
  readonly prevHash?: string
  readonly event?: (sequence: number) => DeferredAuditEvent
}

const buildChain = (count: number, options: ChainOptions = {}): Array<LedgerRow.LedgerRow> => {
  const rows: Array<LedgerRow.LedgerRow> = []
  let prevHash = options.prevHash ?? ZERO_HASH
  for (let i = 0; i < count; i++) {
    const sequence = (options.firstSequence ?? 0) + i
    const row = rowFor((options.event ?? eventAt)(sequence), sequence, prevHash, options.signerAt?.(sequence))
    rows.push(row)
    prevHash = row.entry_hash
  }
  return rows
}

const signedBy = (signer: AuditSigner.AuditSigner) => () => signer

/** A fresh, migrated SQLite ledger file in a temp directory, removed after the test. */
const TempLedger = (options: { readonly transformResultNames?: (name: string) => string } = {}) =>
  Layer.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "agent-ledger-verifier-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      ),
      (dir) =>
        Layer.effectDiscard(runMigrations).pipe(
          Layer.provideMerge(sharedSqlite({ filename: join(dir, "ledger.db"), ...options }))
        )
    )
  )

const insertRows = (rows: ReadonlyArray<LedgerRow.LedgerRow>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.withTransaction(Effect.gen(function*() {
      for (let i = 0; i < rows.length; i += 100) {
        yield* sql`INSERT INTO signed_events ${sql.insert(rows.slice(i, i + 100))}`
      }
    }))
  })

const update = (column: string, value: unknown, sequence: number) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`UPDATE signed_events SET ${sql(column)} = ${value as string} WHERE sequence = ${sequence}`
  )

const firstFailure = (report: LedgerVerifier.VerifyReport) => Option.getOrThrow(report.firstFailure)

const signer = Effect.runSync(AuditSigner.generate)
const keyring = AuditSigner.Keyring.fromSigners([signer])

// ---------------------------------------------------------------------------------------------------------
// Whole chains
// ---------------------------------------------------------------------------------------------------------

describe("verifyLedger", () => {
  it.effect("a 1,000-row signed chain verifies", () =>
    Effect.gen(function*() {
      const rows = buildChain(1_000, { signerAt: signedBy(signer) })
      yield* insertRows(rows)
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({
        ok: true,
        rowsChecked: 1_000,
        failureCount: 0,
        attestLevels: { unsigned: 0, ed25519: 1_000 },
        signatures: { valid: 1_000, invalid: 0, unknownKey: 0 },
        unknownKeyIds: []
      })
      expect(report.firstFailure).toEqual(Option.none())
      expect(report.head).toEqual(Option.some({ sequence: 999, entryHash: rows[999]!.entry_hash }))
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a 1,000-row unsigned chain verifies and claims no verified signature", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(1_000))
      const report = yield* LedgerVerifier.verifyLedger()
      expect(report).toMatchObject({
        ok: true,
        rowsChecked: 1_000,
        attestLevels: { unsigned: 1_000, ed25519: 0 },
        signatures: { valid: 0, invalid: 0, unknownKey: 0 }
      })
      // Given keys, the verifier declares the ledger signed: the same rows are then downgrades.
      const signedExpected = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(signedExpected.ok).toBe(false)
      expect(firstFailure(signedExpected)).toMatchObject({ sequence: 0, kind: "downgrade" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a mixed chain counts each attest level", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(30, { signerAt: (sequence) => sequence >= 10 ? signer : undefined }))
      // A ledger that switched to signing at 10 says so with signedFrom.
      const report = yield* LedgerVerifier.verifyLedger({ keyring, signedFrom: 10 })
      expect(report).toMatchObject({
        ok: true,
        attestLevels: { unsigned: 10, ed25519: 20 },
        signatures: { valid: 20 }
      })
      const undeclared = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(firstFailure(undeclared)).toMatchObject({ sequence: 0, kind: "downgrade" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("without a keyring, signed rows are unknownKey (unverifiable), never verified", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(5, { signerAt: signedBy(signer) }))
      const report = yield* LedgerVerifier.verifyLedger()
      expect(report).toMatchObject({
        ok: false,
        failureCount: 5,
        signatures: { valid: 0, invalid: 0, unknownKey: 5 },
        unknownKeyIds: [signer.keyId]
      })
      expect(firstFailure(report)).toMatchObject({ sequence: 0, kind: "unknownKey", actual: signer.keyId })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("an empty ledger verifies with no head", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({ ok: true, rowsChecked: 0, failureCount: 0 })
      expect(report.head).toEqual(Option.none())
    }).pipe(Effect.provide(TempLedger())))

  it.effect("column names stay snake_case when the client transforms result names", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(20, { signerAt: signedBy(signer) }))
      const report = yield* LedgerVerifier.verifyLedger({ keyring, pageSize: 8 })
      expect(report).toMatchObject({ ok: true, rowsChecked: 20 })
    }).pipe(Effect.provide(TempLedger({ transformResultNames: Str.snakeToCamel }))))

  it.effect("the report encodes to JSON with null for absent parts", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(3))
      yield* update("payload", "{}", 1)
      const report = yield* LedgerVerifier.verifyLedger()
      const encoded = Schema.encodeSync(LedgerVerifier.VerifyReport)(report)
      expect(encoded.pin).toBeNull()
      expect(encoded.firstFailure).toMatchObject({ sequence: 1, kind: "payloadHash" })
      expect(JSON.parse(JSON.stringify(encoded))).toEqual(encoded)
    }).pipe(Effect.provide(TempLedger())))
})

// ---------------------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------------------

const CHAIN_LENGTH = 6
const LAST = CHAIN_LENGTH - 1

interface ColumnEdit {
  readonly column: keyof LedgerRow.LedgerRow
  readonly value: (row: LedgerRow.LedgerRow) => string | number
  /** The first failure for an edit of the row at `target`; `undefined`: the edit is not detectable. */
  readonly expected: (target: number) => Partial<LedgerVerifier.VerifyFailure> | undefined
}

const COLUMN_EDITS: ReadonlyArray<ColumnEdit> = [
  { column: "id", value: () => "tampered-id", expected: (t) => ({ sequence: t, kind: "entryHash" }) },
  {
    column: "sequence",
    value: () => 1_000,
    expected: (t) =>
      t === LAST
        ? { sequence: 1_000, kind: "gap", expected: String(LAST), actual: "1000" }
        : { sequence: t + 1, kind: "gap", expected: String(t), actual: String(t + 1) }
  },
  { column: "agent_id", value: () => "agent-mallory", expected: (t) => ({ sequence: t, kind: "entryHash" }) },
  { column: "event_type", value: () => "governance.allow", expected: (t) => ({ sequence: t, kind: "entryHash" }) },
  {
    column: "payload",
    value: (row) => row.payload.replace("rm -rf", "ls -la"),
    expected: (t) => ({ sequence: t, kind: "payloadHash" })
  },
  {
    column: "payload_hash",
    value: () => sha256Hex("another payload"),
    expected: (t) => ({ sequence: t, kind: "payloadHash" })
  },
  { column: "prev_hash", value: () => sha256Hex("another row"), expected: (t) => ({ sequence: t, kind: "link" }) },
  {
    column: "entry_hash",
    value: () => sha256Hex("another hash"),
    expected: (t) => ({ sequence: t, kind: "entryHash" })
  },
  {
    column: "signature",
    value: () => signer.sign(sha256Bytes("another row")),
    expected: (t) => ({ sequence: t, kind: "signature" })
  },
  { column: "key_id", value: () => "0123456789abcdef", expected: (t) => ({ sequence: t, kind: "unknownKey" }) },
  { column: "attest_level", value: () => "unsigned", expected: (t) => ({ sequence: t, kind: "attestLevel" }) },
  {
    column: "timestamp",
    value: (row) => row.timestamp.replace(/\.\d{3}Z$/, ".999Z"),
    expected: (t) => ({ sequence: t, kind: "entryHash" })
  },
  // appended_at is informational and in no hash (docs/FORMAT.md): an edit is not detectable by design.
  { column: "appended_at", value: () => "2030-01-01T00:00:00.000Z", expected: () => undefined }
]

describe("verifyLedger after tampering with plain SQL", () => {
  it.effect("the column edits cover every column of signed_events", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const columns = yield* sql<{ name: string }>`SELECT name FROM pragma_table_info('signed_events')`
      const edited = COLUMN_EDITS.map((edit) => edit.column).sort()
      expect(columns.map((c) => c.name).sort()).toEqual(edited)
      expect([...LedgerRow.COLUMNS].sort()).toEqual(edited)
    }).pipe(Effect.provide(TempLedger())))

  for (const target of [0, 3, LAST]) {
    for (const edit of COLUMN_EDITS) {
      const expected = edit.expected(target)
      const title = expected === undefined
        ? `editing ${edit.column} of row ${target} is not detectable (not hashed)`
        : `editing ${edit.column} of row ${target} fails with ${expected.kind} at sequence ${expected.sequence}`
      it.effect(title, () =>
        Effect.gen(function*() {
          const rows = buildChain(CHAIN_LENGTH, { signerAt: signedBy(signer) })
          yield* insertRows(rows)
          yield* update(edit.column, edit.value(rows[target]!), target)
          const report = yield* LedgerVerifier.verifyLedger({ keyring })
          if (expected === undefined) {
            expect(report.ok).toBe(true)
            return
          }
          expect(report.ok).toBe(false)
          expect(report.rowsChecked).toBe(CHAIN_LENGTH)
          expect(firstFailure(report)).toMatchObject(expected)
        }).pipe(Effect.provide(TempLedger())))
    }
  }

  it.effect("an edited entry_hash fails its row and the next row's link, and every row is still counted", () =>
    Effect.gen(function*() {
      const rows = buildChain(10, { signerAt: signedBy(signer) })
      yield* insertRows(rows)
      yield* update("entry_hash", sha256Hex("x"), 4)
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({ ok: false, rowsChecked: 10, failureCount: 2 })
      expect(firstFailure(report)).toMatchObject({
        sequence: 4,
        kind: "entryHash",
        expected: rows[4]!.entry_hash,
        actual: sha256Hex("x")
      })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("deleting a row is a gap at the next sequence", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(10, { signerAt: signedBy(signer) }))
      const sql = yield* SqlClient.SqlClient
      yield* sql`DELETE FROM signed_events WHERE sequence = 6`
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({ ok: false, rowsChecked: 9, failureCount: 1 })
      expect(firstFailure(report)).toMatchObject({ sequence: 7, kind: "gap", expected: "6", actual: "7" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("deleting the first row is a gap at sequence 1", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(4))
      const sql = yield* SqlClient.SqlClient
      yield* sql`DELETE FROM signed_events WHERE sequence = 0`
      const report = yield* LedgerVerifier.verifyLedger()
      expect(firstFailure(report)).toMatchObject({ sequence: 1, kind: "gap", expected: "0" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("swapping two rows' payloads fails payloadHash at the first of them", () =>
    Effect.gen(function*() {
      const rows = buildChain(10, { signerAt: signedBy(signer) })
      yield* insertRows(rows)
      yield* update("payload", rows[7]!.payload, 3)
      yield* update("payload", rows[3]!.payload, 7)
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({ ok: false, failureCount: 2 })
      expect(firstFailure(report)).toMatchObject({ sequence: 3, kind: "payloadHash" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("swapping payloads together with their payload hashes fails entryHash", () =>
    Effect.gen(function*() {
      const rows = buildChain(10, { signerAt: signedBy(signer) })
      yield* insertRows(rows)
      for (const [from, to] of [[7, 3], [3, 7]] as const) {
        yield* update("payload", rows[from]!.payload, to)
        yield* update("payload_hash", rows[from]!.payload_hash, to)
      }
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({ ok: false, failureCount: 2 })
      expect(firstFailure(report)).toMatchObject({ sequence: 3, kind: "entryHash" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a row that no longer decodes is malformed, with the field named, and the rest is still checked", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(6, { signerAt: signedBy(signer) }))
      yield* update("attest_level", "bogus", 2)
      const report = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(report).toMatchObject({
        ok: false,
        rowsChecked: 6,
        failureCount: 1,
        attestLevels: { ed25519: 5 },
        signatures: { valid: 5 }
      })
      const failure = firstFailure(report)
      expect(failure).toMatchObject({ sequence: 2, kind: "malformed" })
      expect(failure.message).toContain("attest_level")
    }).pipe(Effect.provide(TempLedger())))

  it.effect("an unsigned row with a signature or key_id fails attestLevel", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(4))
      yield* update("key_id", signer.keyId, 1)
      const report = yield* LedgerVerifier.verifyLedger()
      expect(firstFailure(report)).toMatchObject({ sequence: 1, kind: "attestLevel", actual: "unsigned" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a stripped signature is a downgrade by default, with or without keys; only allowMixed accepts it", () =>
    Effect.gen(function*() {
      yield* insertRows(buildChain(6, { signerAt: signedBy(signer) }))
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE signed_events SET signature = NULL, key_id = NULL, attest_level = 'unsigned'
                 WHERE sequence = 2`
      const withKeys = yield* LedgerVerifier.verifyLedger({ keyring })
      expect(withKeys.ok).toBe(false)
      expect(firstFailure(withKeys)).toMatchObject({ sequence: 2, kind: "downgrade" })
      // Without keys the signed rows are unverifiable, and the stripped one after them is still a downgrade.
      const withoutKeys = yield* LedgerVerifier.verifyLedger()
      expect(firstFailure(withoutKeys)).toMatchObject({ sequence: 2, kind: "downgrade" })
      const mixed = yield* LedgerVerifier.verifyLedger({ keyring, allowMixed: true })
      expect(mixed).toMatchObject({ ok: true, attestLevels: { unsigned: 1, ed25519: 5 } })
      const strict = yield* LedgerVerifier.verifyLedger({ keyring, requireSigned: true, allowMixed: true })
      expect(firstFailure(strict)).toMatchObject({ sequence: 2, kind: "attestLevel" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("the downgrades of a signed ledger all fail by default, even with a pin", () =>
    Effect.gen(function*() {
      const rows = buildChain(8, { signerAt: signedBy(signer) })
      const pin = { sequence: 3, entryHash: rows[3]!.entry_hash }
      const cases: ReadonlyArray<readonly [string, ReadonlyArray<LedgerRow.LedgerRow>]> = [
        [
          "every signature stripped",
          rows.map((row) => ({ ...row, signature: null, key_id: null, attest_level: "unsigned" }))
        ],
        // A payload edited, the chain recomputed from there and the signatures stripped.
        ["edited, rehashed and stripped", buildChain(8, { signerAt: (sequence) => sequence < 5 ? signer : undefined })],
        ["forged unsigned rows at the head", [
          ...rows,
          ...buildChain(2, { firstSequence: 8, prevHash: rows[7]!.entry_hash })
        ]]
      ]
      for (const [what, tampered] of cases) {
        const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(tampered), { keyring, pin })
        expect(report.ok, what).toBe(false)
        expect(Option.getOrThrow(report.firstFailure).kind, what).toBe("downgrade")
      }
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Key rotation and signatures
// ---------------------------------------------------------------------------------------------------------

describe("verifyLedger signatures and key rotation", () => {
  const oldKey = Effect.runSync(AuditSigner.generate)
  const newKey = Effect.runSync(AuditSigner.generate)
  const rotated = buildChain(10, { signerAt: (sequence) => sequence < 5 ? oldKey : newKey })

  it.effect("rows signed by a rotated-out key verify with a keyring holding both keys", () =>
    Effect.gen(function*() {
      yield* insertRows(rotated)
      const report = yield* LedgerVerifier.verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([oldKey, newKey]) })
      expect(report).toMatchObject({ ok: true, signatures: { valid: 10, invalid: 0, unknownKey: 0 } })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("without the old key its rows are unknownKey, not tampered", () =>
    Effect.gen(function*() {
      yield* insertRows(rotated)
      const report = yield* LedgerVerifier.verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([newKey]) })
      expect(report).toMatchObject({
        ok: false,
        failureCount: 5,
        signatures: { valid: 5, invalid: 0, unknownKey: 5 },
        unknownKeyIds: [oldKey.keyId]
      })
      expect(firstFailure(report)).toMatchObject({ sequence: 0, kind: "unknownKey", actual: oldKey.keyId })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("an unverifiable row never hides a tampered one", () =>
    Effect.gen(function*() {
      yield* insertRows(rotated)
      yield* update("payload", "{}", 7)
      const report = yield* LedgerVerifier.verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([newKey]) })
      expect(report.failureCount).toBe(6)
      expect(firstFailure(report)).toMatchObject({ sequence: 7, kind: "payloadHash" })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a bad signature under a known key is signature, not unknownKey", () =>
    Effect.gen(function*() {
      yield* insertRows(rotated)
      // newKey's signature of row 6, labelled as newKey's, on row 7: a valid signature of the wrong row.
      yield* update("signature", rotated[6]!.signature!, 7)
      // oldKey's key_id on a row newKey signed.
      yield* update("key_id", oldKey.keyId, 8)
      const report = yield* LedgerVerifier.verifyLedger({ keyring: AuditSigner.Keyring.fromSigners([oldKey, newKey]) })
      expect(report).toMatchObject({ ok: false, failureCount: 2, signatures: { valid: 8, invalid: 2, unknownKey: 0 } })
      expect(firstFailure(report)).toMatchObject({ sequence: 7, kind: "signature" })
    }).pipe(Effect.provide(TempLedger())))
})

// ---------------------------------------------------------------------------------------------------------
// Every failure listed
// ---------------------------------------------------------------------------------------------------------

describe("verifyLedger lists every failure (issue 20, finding 8)", () => {
  /** Four tampered rows of four kinds, an unverifiable one, and a failed pin. */
  const tampered = Effect.gen(function*() {
    const other = yield* AuditSigner.generate
    const rows = buildChain(20, { signerAt: (sequence) => sequence === 15 ? other : signer })
    yield* insertRows(rows)
    yield* update("payload", "{}", 2)
    yield* update("agent_id", "someone-else", 5)
    yield* update("signature", rows[7]!.signature!, 9)
    yield* update("attest_level", "unsigned", 12)
    return rows
  })
  const expected = [
    { sequence: 2, kind: "payloadHash" },
    { sequence: 5, kind: "entryHash" },
    { sequence: 9, kind: "signature" },
    { sequence: 12, kind: "attestLevel" },
    { sequence: 15, kind: "unknownKey" },
    { sequence: 30, kind: "pin" }
  ]
  const pin = { sequence: 30, entryHash: "a".repeat(64) }

  it.effect("each failing row is in failures, in row order, with its kind; firstFailure stays the first tamper", () =>
    Effect.gen(function*() {
      yield* tampered
      const report = yield* LedgerVerifier.verifyLedger({ keyring, pin })
      expect(report.failureCount).toBe(6)
      expect(report.failures).toHaveLength(6)
      expect(report.failures.map(({ kind, sequence }) => ({ sequence, kind }))).toEqual(expected)
      expect(firstFailure(report)).toEqual(report.failures[0])
      const encoded = Schema.encodeSync(LedgerVerifier.VerifyReport)(report)
      expect(encoded.failures.map((f) => f.kind)).toEqual(expected.map((f) => f.kind))
    }).pipe(Effect.provide(TempLedger())))

  it.effect("maxFailures bounds the list, never the count; 0 lists none", () =>
    Effect.gen(function*() {
      yield* tampered
      const two = yield* LedgerVerifier.verifyLedger({ keyring, pin, maxFailures: 2 })
      expect(two).toMatchObject({ ok: false, failureCount: 6 })
      expect(two.failures.map((f) => f.sequence)).toEqual([2, 5])
      const none = yield* LedgerVerifier.verifyLedger({ keyring, pin, maxFailures: 0 })
      expect(none).toMatchObject({ ok: false, failureCount: 6, failures: [] })
      expect(firstFailure(none)).toMatchObject({ sequence: 2 })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a ledger with a failure on every row lists the default 100", () =>
    Effect.gen(function*() {
      const rows = buildChain(250)
      yield* insertRows(rows.map((row) => ({ ...row, payload_hash: ZERO_HASH })))
      const report = yield* LedgerVerifier.verifyLedger()
      expect(report.failureCount).toBe(250)
      expect(report.failures).toHaveLength(LedgerVerifier.DEFAULT_MAX_FAILURES)
      expect(report.failures.every((f, i) => f.sequence === i && f.kind === "payloadHash")).toBe(true)
    }).pipe(Effect.provide(TempLedger())))
})

// ---------------------------------------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------------------------------------

describe("verifyLedger with a pinned head", () => {
  const rows = buildChain(10)
  const pin = { sequence: 7, entryHash: rows[7]!.entry_hash }

  it.effect("a pin still in the chain matches", () =>
    Effect.gen(function*() {
      yield* insertRows(rows)
      const report = yield* LedgerVerifier.verifyLedger({ pin })
      expect(report.ok).toBe(true)
      expect(report.pin).toEqual(Option.some({ ...pin, status: "matched" }))
    }).pipe(Effect.provide(TempLedger())))

  it.effect("after truncation the chain alone verifies, but the pin is missing", () =>
    Effect.gen(function*() {
      yield* insertRows(rows)
      const sql = yield* SqlClient.SqlClient
      yield* sql`DELETE FROM signed_events WHERE sequence >= 5`
      expect((yield* LedgerVerifier.verifyLedger()).ok).toBe(true)
      const report = yield* LedgerVerifier.verifyLedger({ pin })
      expect(report).toMatchObject({ ok: false, rowsChecked: 5, failureCount: 1 })
      expect(firstFailure(report)).toMatchObject({ sequence: 7, kind: "pin", expected: pin.entryHash })
      expect(Option.getOrThrow(report.pin).status).toBe("missing")
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a pin with another hash at its sequence is a rewrite", () =>
    Effect.gen(function*() {
      yield* insertRows(rows)
      const report = yield* LedgerVerifier.verifyLedger({ pin: { sequence: 7, entryHash: sha256Hex("old head") } })
      expect(report.ok).toBe(false)
      expect(firstFailure(report)).toMatchObject({ sequence: 7, kind: "pin", actual: rows[7]!.entry_hash })
      expect(Option.getOrThrow(report.pin).status).toBe("rewritten")
    }).pipe(Effect.provide(TempLedger())))

  it.effect("history rewritten with every hash recomputed verifies alone and fails the pin", () =>
    Effect.gen(function*() {
      const rewritten = buildChain(10, { event: (sequence) => eventAt(sequence, sequence === 3 ? "-edited" : "") })
      yield* insertRows(rewritten)
      expect((yield* LedgerVerifier.verifyLedger()).ok).toBe(true)
      const report = yield* LedgerVerifier.verifyLedger({ pin })
      expect(Option.getOrThrow(report.pin)).toMatchObject({
        status: "rewritten",
        actualEntryHash: rewritten[7]!.entry_hash
      })
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a pin on an empty ledger is missing", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyLedger({ pin })
      expect(firstFailure(report)).toMatchObject({ kind: "pin", sequence: 7 })
    }).pipe(Effect.provide(TempLedger())))
})

// ---------------------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------------------

describe("verifyLedger pagination", () => {
  // Mixed on purpose (allowMixed below): these tests are about paging, not signatures.
  const rows = buildChain(50, { signerAt: (sequence) => sequence % 2 === 0 ? signer : undefined })

  for (const pageSize of [1, 7, 10, 49, 50, 51]) {
    it.effect(`pages of ${pageSize} check every row once`, () =>
      Effect.gen(function*() {
        yield* insertRows(rows)
        const report = yield* LedgerVerifier.verifyLedger({ keyring, pageSize, allowMixed: true })
        expect(report).toMatchObject({ ok: true, rowsChecked: 50, attestLevels: { unsigned: 25, ed25519: 25 } })
        expect(report.head).toEqual(Option.some({ sequence: 49, entryHash: rows[49]!.entry_hash }))
      }).pipe(Effect.provide(TempLedger())))
  }

  for (const deleted of [13, 14]) {
    it.effect(`a gap at a page boundary is found (row ${deleted} deleted, pages of 7)`, () =>
      Effect.gen(function*() {
        yield* insertRows(rows)
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM signed_events WHERE sequence = ${deleted}`
        const report = yield* LedgerVerifier.verifyLedger({ keyring, pageSize: 7, allowMixed: true })
        expect(report).toMatchObject({ ok: false, rowsChecked: 49, failureCount: 1 })
        expect(firstFailure(report)).toMatchObject({ sequence: deleted + 1, kind: "gap", expected: String(deleted) })
      }).pipe(Effect.provide(TempLedger())))
  }

  for (const duplicated of [6, 7]) {
    it.effect(`a second row with sequence ${duplicated} (unique index dropped) is found at pages of 7`, () =>
      Effect.gen(function*() {
        yield* insertRows(rows)
        const sql = yield* SqlClient.SqlClient
        yield* sql`DROP INDEX idx_signed_events_sequence`
        yield* sql`INSERT INTO signed_events
          SELECT 'forged-' || id, sequence, agent_id, event_type, payload, payload_hash, prev_hash, entry_hash,
                 signature, key_id, attest_level, timestamp, appended_at
          FROM signed_events WHERE sequence = ${duplicated}`
        const report = yield* LedgerVerifier.verifyLedger({ keyring, pageSize: 7, allowMixed: true })
        expect(report.ok).toBe(false)
        expect(report.failureCount).toBeGreaterThanOrEqual(1)
        expect(firstFailure(report)).toMatchObject({ sequence: duplicated })
      }).pipe(Effect.provide(TempLedger())))
  }

  it.effect("onProgress sees the running row count after every page", () =>
    Effect.gen(function*() {
      yield* insertRows(rows)
      const seen: Array<number> = []
      const report = yield* LedgerVerifier.verifyLedger({
        keyring,
        pageSize: 20,
        onProgress: (n) => Effect.sync(() => seen.push(n))
      })
      expect(report.rowsChecked).toBe(50)
      expect(seen).toEqual([20, 40, 50])
    }).pipe(Effect.provide(TempLedger())))

  it.effect("a page size below 1 is a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(LedgerVerifier.verifyLedger({ pageSize: 0 }))
      expect(Exit.isFailure(exit) && Exit.causeOption(exit).pipe(Option.exists((c) => c._tag === "Die"))).toBe(true)
    }).pipe(Effect.provide(TempLedger())))
})

// ---------------------------------------------------------------------------------------------------------
// Other row sources
// ---------------------------------------------------------------------------------------------------------

describe("verifyRows and makeChecker", () => {
  const rows = buildChain(20, { signerAt: signedBy(signer) })
  const tail = rows.slice(10)

  it.effect("a source starting mid-chain verifies from its first sequence and preceding hash", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(tail), {
        keyring,
        expectedFirstSequence: 10,
        expectedFirstPrevHash: rows[9]!.entry_hash,
        pin: { sequence: 9, entryHash: rows[9]!.entry_hash }
      })
      expect(report).toMatchObject({ ok: true, rowsChecked: 10, signatures: { valid: 10 } })
      expect(Option.getOrThrow(report.pin).status).toBe("matched")
    }))

  it.effect("a mid-chain source fails a pin on the row before it whose hash is not the preceding hash", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(tail), {
        keyring,
        expectedFirstSequence: 10,
        expectedFirstPrevHash: rows[9]!.entry_hash,
        pin: { sequence: 9, entryHash: rows[8]!.entry_hash }
      })
      expect(report.ok).toBe(false)
      expect(report.failureCount).toBe(1)
      expect(Option.getOrThrow(report.pin).status).toBe("rewritten")
      expect(firstFailure(report)).toMatchObject({ sequence: 9, kind: "pin", actual: rows[9]!.entry_hash })
    }))

  it.effect("a mid-chain source with the wrong preceding hash fails the link of its first row", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(tail), {
        keyring,
        expectedFirstSequence: 10,
        expectedFirstPrevHash: rows[8]!.entry_hash
      })
      expect(firstFailure(report)).toMatchObject({
        sequence: 10,
        kind: "link",
        expected: rows[8]!.entry_hash,
        actual: rows[9]!.entry_hash
      })
    }))

  it.effect("a mid-chain source read as a whole chain fails at its first row", () =>
    Effect.gen(function*() {
      const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(tail), { keyring })
      expect(firstFailure(report)).toMatchObject({ sequence: 10, kind: "gap", expected: "0" })
    }))

  it.effect("a stream error is the effect's error, not a report", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        LedgerVerifier.verifyRows(Stream.concat(Stream.fromIterable(tail), Stream.fail("disk gone" as const)))
      )
      expect(error).toBe("disk gone")
    }))

  it("the checker reports at any point and takes undecoded rows", () => {
    const checker = LedgerVerifier.makeChecker({ keyring })
    checker.check(rows[0]!)
    expect(checker.report()).toMatchObject({ ok: true, rowsChecked: 1 })
    checker.checkUnknown({ ...rows[1]!, sequence: "1" })
    checker.checkUnknown(JSON.parse(JSON.stringify(rows[2]!)))
    const report = checker.report()
    expect(report).toMatchObject({ ok: false, rowsChecked: 3, failureCount: 1 })
    expect(firstFailure(report)).toMatchObject({ sequence: 1, kind: "malformed" })
    expect(firstFailure(report).message).toContain("sequence")
  })

  it("LedgerRow decode errors carry the path to the bad field", () => {
    const result = LedgerRow.decodeUnknownEither({ ...rows[0]!, signature: 42 })
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) expect(result.left.message).toContain("signature")
  })
})

// ---------------------------------------------------------------------------------------------------------
// docs/FORMAT.md vectors
// ---------------------------------------------------------------------------------------------------------

describe("docs/FORMAT.md ledger row v1 vectors", () => {
  const format = readFileSync(fileURLToPath(new URL("../docs/FORMAT.md", import.meta.url)), "utf8")
  const vector = (name: string): string => {
    const match = new RegExp("```\\w+ test-vector:" + name + "\\n([\\s\\S]*?)\\n```").exec(format)
    if (match === null) throw new Error(`docs/FORMAT.md has no test-vector:${name} block`)
    return match[1]!
  }
  const RowVector = Schema.Struct({ entry_hash_input_hex: Schema.String, row: LedgerRow.LedgerRow })
  const rowVectors = [0, 1].map((n) => Schema.decodeUnknownSync(RowVector)(JSON.parse(vector(`row-${n}`))))
  const PKCS8_ED25519_PREFIX = "302e020100300506032b657004220420"

  it.effect("the test key: the PEM is the seed's key, and its key_id is the one in the signed row", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.fromPrivateKeyPem(vector("row-key-pem"))
      const fromSeed = createPrivateKey({
        key: Buffer.from(PKCS8_ED25519_PREFIX + vector("row-key-seed").trim(), "hex"),
        format: "der",
        type: "pkcs8"
      })
      expect(AuditSigner.keyIdOf(fromSeed)).toBe(signer.keyId)
      expect(rowVectors[1]!.row.key_id).toBe(signer.keyId)
      expect(format).toContain(`its \`key_id\` is \`${signer.keyId}\``)
    }))

  it.effect("each row's hash input, payload hash, entry hash and signature match the code", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.fromPrivateKeyPem(vector("row-key-pem"))
      for (const { entry_hash_input_hex, row } of rowVectors) {
        const input = Buffer.concat([
          lp("agent-ledger/signed-event/v1"),
          u64(row.sequence),
          hashBytes(row.prev_hash),
          lp(row.id),
          lp(row.agent_id),
          lp(row.event_type),
          hashBytes(row.payload_hash),
          lp(row.timestamp)
        ])
        expect(input.toString("hex")).toBe(entry_hash_input_hex)
        expect(sha256Hex(input)).toBe(row.entry_hash)
        expect(sha256Hex(row.payload)).toBe(row.payload_hash)
        const hashInput = {
          sequence: row.sequence,
          prevHash: row.prev_hash,
          id: row.id,
          agentId: row.agent_id,
          eventType: row.event_type,
          payloadHash: row.payload_hash,
          timestamp: row.timestamp
        }
        expect(rowEntryHash(hashInput)).toBe(row.entry_hash)
        if (row.signature !== null) expect(signer.sign(rowEntryHashBytes(hashInput))).toBe(row.signature)
      }
    }))

  it("each row's payload is the canonical JSON of its event", () => {
    const decodePayload = Schema.decodeUnknownSync(Schema.parseJson(Schema.Struct({
      event_id: Schema.String,
      agent_id: Schema.String,
      action: AgentAction,
      decision: Decision,
      timestamp: Schema.DateTimeUtc
    })))
    for (const { row } of rowVectors) {
      const payload = decodePayload(row.payload)
      const event = new DeferredAuditEvent({
        id: payload.event_id,
        agentId: payload.agent_id,
        action: payload.action,
        decision: payload.decision,
        timestamp: payload.timestamp
      })
      expect(canonicalJson(event)).toBe(row.payload)
    }
  })

  it.effect("the two vector rows form a chain that verifies, one unsigned and one signed", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.fromPrivateKeyPem(vector("row-key-pem"))
      const report = yield* LedgerVerifier.verifyRows(Stream.fromIterable(rowVectors.map((v) => v.row)), {
        keyring: AuditSigner.Keyring.fromSigners([signer]),
        signedFrom: 1
      })
      expect(report).toMatchObject({
        ok: true,
        rowsChecked: 2,
        attestLevels: { unsigned: 1, ed25519: 1 },
        signatures: { valid: 1 }
      })
    }))
})

// ---------------------------------------------------------------------------------------------------------
// The one-buffer row encoder against a reference written from docs/FORMAT.md alone
// ---------------------------------------------------------------------------------------------------------

describe("row format v1: rowEntryHash against a straightforward reference", () => {
  // Built from the spec with nothing the encoder uses (no Buffer writes, no src/internal/encoding.ts).
  const utf8 = new TextEncoder()
  const refLp = (s: string): Uint8Array => {
    const body = utf8.encode(s)
    const out = new Uint8Array(4 + body.length)
    new DataView(out.buffer).setUint32(0, body.length, false)
    out.set(body, 4)
    return out
  }
  const refU64 = (n: number): Uint8Array => {
    const out = new Uint8Array(8)
    new DataView(out.buffer).setBigUint64(0, BigInt(n), false)
    return out
  }
  const refRaw32 = (hex: string): Uint8Array =>
    Uint8Array.from({ length: 32 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16))
  const referenceEntryHash = (row: Parameters<typeof rowEntryHash>[0]): string => {
    const parts = [
      refLp("agent-ledger/signed-event/v1"),
      refU64(row.sequence),
      refRaw32(row.prevHash),
      refLp(row.id),
      refLp(row.agentId),
      refLp(row.eventType),
      refRaw32(row.payloadHash),
      refLp(row.timestamp)
    ]
    const input = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
    let at = 0
    for (const part of parts) {
      input.set(part, at)
      at += part.length
    }
    return createHash("sha256").update(input).digest("hex")
  }

  const hex32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex"))
  // Short and long, ASCII and not (2-, 3- and 4-byte UTF-8, lone surrogates, which UTF-8 writes as U+FFFD),
  // long enough that the reused buffer must grow, in any order within a run.
  const awkward = fc.constantFrom("é", "€", "读", "🚀", "\ud800", "\udfff", "a", "\u0000", "\u007f", "\u0080")
  const text = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "grapheme", maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.string({ unit: awkward, maxLength: 40 }),
    fc.string({ unit: awkward, minLength: 300, maxLength: 5_000 }),
    fc.string({ unit: "grapheme", minLength: 1_000, maxLength: 20_000 })
  )
  const sequence = fc.oneof(
    fc.nat(),
    fc.maxSafeNat(),
    fc.constantFrom(0, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 52, Number.MAX_SAFE_INTEGER)
  )
  const row = fc.record({
    sequence,
    prevHash: hex32,
    id: text,
    agentId: text,
    eventType: text,
    payloadHash: hex32,
    timestamp: text
  })

  it.prop("rowEntryHash and rowEntryHashBytes equal the reference, row after row", [
    fc.array(row, { minLength: 1, maxLength: 6 })
  ], ([rows]) => {
    // All hashes first, compared after: a result that aliased the reused buffer would show here.
    const hexes = rows.map(rowEntryHash)
    const bytes = rows.map(rowEntryHashBytes)
    rows.forEach((r, i) => {
      const expected = referenceEntryHash(r)
      expect(hexes[i]).toBe(expected)
      expect(Buffer.from(bytes[i]!).toString("hex")).toBe(expected)
    })
  }, { fastCheck: { numRuns: 200 } })

  it("short rows after a row that grew the buffer past any earlier size, and the same row again", () => {
    const base = {
      sequence: Number.MAX_SAFE_INTEGER,
      prevHash: ZERO_HASH,
      id: "019ab4f2-5a70-7000-8000-000000000001",
      agentId: "agent-7",
      eventType: GOVERNANCE_REFUSAL_EVENT_TYPE,
      payloadHash: sha256Hex("payload"),
      timestamp: "2026-11-24T06:52:03.120Z"
    }
    const huge = { ...base, agentId: "agent-🚀-读".repeat(100_000), timestamp: "\ud800é".repeat(50_000) }
    const shorter = { ...base, agentId: "ü" }
    for (const r of [base, huge, shorter, base, huge, base]) expect(rowEntryHash(r)).toBe(referenceEntryHash(r))
  })
})

describe("the link check without re-testing the hex of every prev_hash", () => {
  it("a stored entry_hash in uppercase fails its row, and the next row linking to that text fails its link", () => {
    const rows = buildChain(6)
    const upper = rows[2]!.entry_hash.toUpperCase()
    const tampered = rows.map((row) =>
      row.sequence === 2 ? { ...row, entry_hash: upper } : row.sequence === 3 ? { ...row, prev_hash: upper } : row
    )
    const checker = LedgerVerifier.makeChecker()
    tampered.forEach(checker.check)
    const report = checker.report()
    expect(report).toMatchObject({ ok: false, rowsChecked: 6, failureCount: 2 })
    expect(firstFailure(report)).toMatchObject({ sequence: 2, kind: "entryHash", actual: upper })
    // Row 3 links to the stored text exactly, but it is not a hash: a link failure, as docs/FORMAT.md says.
    const linkOnly = LedgerVerifier.makeChecker({
      expectedFirstSequence: 3,
      expectedFirstPrevHash: upper
    })
    tampered.slice(3).forEach(linkOnly.check)
    expect(firstFailure(linkOnly.report())).toMatchObject({ sequence: 3, kind: "link", actual: upper })
  })

  it("after a row that fails a later check (its hashes intact), the next row links as usual", () => {
    const rows = buildChain(4, { signerAt: signedBy(signer) })
    const checker = LedgerVerifier.makeChecker({ keyring })
    rows.forEach((row) =>
      checker.check(row.sequence === 1 ? { ...row, signature: signer.sign(sha256Bytes("x")) } : row)
    )
    const report = checker.report()
    expect(report).toMatchObject({ ok: false, rowsChecked: 4, failureCount: 1, signatures: { valid: 3, invalid: 1 } })
    expect(firstFailure(report)).toMatchObject({ sequence: 1, kind: "signature" })
  })
})
