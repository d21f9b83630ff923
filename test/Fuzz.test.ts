/**
 * Corrupted-input evidence, in process (a process per case would be far too slow): SQLite files with
 * random byte flips and truncations, JSONL ledger exports with random edits and journal exports with random
 * JSON edits, 400 of each by default (`AGENT_LEDGER_FUZZ_CASES=20000 npx vitest run test/Fuzz.test.ts`
 * for more). Every case must end in a report or a typed error (never a defect or a hang), and a
 * verification that says OK must be about rows identical to the ones written, byte for byte as stored.
 * The edits include what issue 20 found: JSON nested thousands of levels deep, and UTF-8 byte
 * substitutions (U+FFFD's bytes replaced by bytes that are not UTF-8 but read back as the same text).
 */
import Database from "better-sqlite3"
import { Cause, Effect, Exit, Layer, Stream } from "effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { openLedger } from "../src/cli/InputFile.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerRow from "../src/ledger/LedgerRow.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { cliWorkspace } from "./fixtures/cliWorkspace.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const CASES = Number(process.env.AGENT_LEDGER_FUZZ_CASES ?? 400)
const dir = fs.mkdtempSync(join(tmpdir(), "agent-ledger-fuzz-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** A seeded generator, so a failing case can be replayed: the seed is in the failure message. */
const prng = (seed: number) => {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number) => Math.floor(next() * n)
  return { next, int, pick: <A>(items: ReadonlyArray<A>): A => items[int(items.length)]! }
}

const SEED = 20261124
let signer: AuditSigner.AuditSigner
let keyring: AuditSigner.Keyring
let ledgerBytes: Buffer
let originalRows: Map<number, Record<string, unknown>>
let exportLines: ReadonlyArray<string>

/** A row without `appended_at`, the one column no hash covers in row format v1. */
const covered = ({ appended_at: _, ...row }: Record<string, unknown>) => row

/** Every column but `sequence` as its stored bytes: text read back as text would hide bytes that are not UTF-8. */
const STORED_BYTES = LedgerRow.COLUMNS.filter((column) => column !== "sequence")
  .map((column) => `CAST(${column} AS BLOB) AS ${column}`).join(", ")

const readRows = (file: string): Map<number, Record<string, unknown>> => {
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    const rows = db.prepare(`SELECT sequence, ${STORED_BYTES} FROM signed_events ORDER BY sequence`).all() as Array<
      Record<string, unknown>
    >
    return new Map(rows.map((row) => [Number(row.sequence), row]))
  } finally {
    db.close()
  }
}

beforeAll(async () => {
  signer = await Effect.runPromise(AuditSigner.generate)
  keyring = AuditSigner.Keyring.fromSigners([signer])
  const file = join(dir, "base.db")
  await Effect.runPromise(
    Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      // U+FFFD in some rows' agent_id and every payload: the text a UTF-8 substitution hides behind.
      for (let n = 0; n < 30; n++) {
        yield* sink.append(refusalEvent(`agent-${n % 4}${n % 3 === 0 ? "\uFFFD" : ""}`, n, "payload ✓ \uFFFD"))
      }
    }).pipe(
      Effect.provide(
        SqlAuditSink.layer({ signer }).pipe(Layer.provideMerge(sqliteWithClient({ filename: file })))
      )
    )
  )
  // One self-contained file: fold the WAL back and leave WAL mode, so a copy is the whole database.
  const db = new Database(file)
  db.pragma("wal_checkpoint(TRUNCATE)")
  db.pragma("journal_mode = DELETE")
  db.close()
  ledgerBytes = fs.readFileSync(file)
  originalRows = readRows(file)
  const lines = await Effect.runPromise(
    Stream.runCollect(LedgerExport.exportLines({})).pipe(Effect.provide(openLedger(file, { readonly: true })))
  )
  exportLines = Array.from(lines)
})

/** Depths past the verifiers' bound (internal/jsonDepth.ts) and well past where recursion overflowed. */
const DEEP = [50, 101, 1_000, 5_000, 50_000]

/** JSON text nested `depth` deep, arrays or objects. */
const deepJsonText = (depth: number, random: ReturnType<typeof prng>): string =>
  random.next() < 0.5 ? "[".repeat(depth) + "]".repeat(depth) : "{\"a\":".repeat(depth) + "0" + "}".repeat(depth)

/** A value nested `depth` deep, built without recursion. */
const deepValue = (depth: number): unknown => {
  let value: unknown = []
  for (let d = 1; d < depth; d++) value = d % 2 === 0 ? [value] : { a: value }
  return value
}

const REPLACEMENT = Buffer.from("\uFFFD")

/**
 * Three bytes that are not UTF-8 in place of U+FFFD's three (the file keeps its length): a 4-byte lead and
 * two continuation bytes with the fourth missing decode to one U+FFFD, the very text that was there; the
 * others decode to three U+FFFD or to U+FFFD and a character.
 */
const badTriples = [
  Buffer.of(0xf0, 0x9f, 0x98),
  Buffer.of(0xf1, 0x80, 0x80),
  Buffer.of(0xf4, 0x8f, 0xbf),
  Buffer.of(0xff, 0xbf, 0xbd),
  Buffer.of(0xc0, 0xbf, 0xbd),
  Buffer.of(0xed, 0xa0, 0x80)
]

/** Replaces one occurrence of U+FFFD's bytes in `bytes` (in place) by a triple that is not UTF-8. */
const substituteReplacementBytes = (bytes: Buffer, random: ReturnType<typeof prng>): boolean => {
  const at: Array<number> = []
  for (let i = bytes.indexOf(REPLACEMENT); i >= 0; i = bytes.indexOf(REPLACEMENT, i + 1)) at.push(i)
  if (at.length === 0) return false
  random.pick(badTriples).copy(bytes, random.pick(at))
  return true
}

/** The exit must be a success or a typed failure: a defect (an uncaught exception) fails the test. */
const expectNoDefect = (exit: Exit.Exit<unknown, unknown>, what: string) => {
  if (Exit.isFailure(exit) && !Cause.isFailType(exit.cause) && Cause.isDie(exit.cause)) {
    throw new Error(`${what}: a defect instead of a typed error: ${Cause.pretty(exit.cause)}`)
  }
}

/** Fails the test when the effect has not ended after `ms` (a hang). */
const bounded = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string) =>
  Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => new Error(`${what}: hung`) })

describe("fuzz: corrupted SQLite files", () => {
  it(
    `${CASES} byte flips, UTF-8 substitutions and truncations: a report or a typed error, OK only for unchanged bytes`,
    async () => {
      const random = prng(SEED)
      let ok = 0
      let failed = 0
      let errors = 0
      for (let c = 0; c < CASES; c++) {
        const bytes = Buffer.from(ledgerBytes)
        const what = `sqlite case ${c} (seed ${SEED})`
        let mutated: Buffer
        const roll = random.next()
        if (roll < 0.15) {
          mutated = bytes.subarray(0, random.int(bytes.length))
        } else if (roll < 0.4) {
          // UTF-8 byte substitutions only: the file stays a valid database whose text reads back the same.
          for (let n = 1 + random.int(3); n > 0; n--) substituteReplacementBytes(bytes, random)
          mutated = bytes
        } else {
          for (let flips = 1 + random.int(8); flips > 0; flips--) {
            // Mostly in the pages that hold rows (past the header page), sometimes anywhere.
            const at = random.next() < 0.8 ? 4096 + random.int(bytes.length - 4096) : random.int(bytes.length)
            bytes[at] = bytes[at]! ^ (1 << random.int(8))
          }
          mutated = bytes
        }
        const file = join(dir, `case-${c % 16}.db`)
        fs.writeFileSync(file, mutated)
        const exit = await Effect.runPromiseExit(
          bounded(
            LedgerVerifier.verifyLedger({ keyring }).pipe(Effect.provide(openLedger(file, { readonly: true }))),
            what
          )
        )
        expectNoDefect(exit, what)
        if (Exit.isSuccess(exit) && exit.value.ok) {
          ok++
          // OK must mean: the rows read back are the rows written, in every column the row hash covers
          // (appended_at is informational in row format v1: docs/FORMAT.md, "Ledger row v1").
          const rows = readRows(file)
          expect(rows.size, what).toBe(originalRows.size)
          for (const [sequence, row] of rows) {
            expect(covered(row), `${what}, sequence ${sequence}`).toEqual(covered(originalRows.get(sequence)!))
          }
        } else if (Exit.isSuccess(exit)) {
          failed++
        } else {
          errors++
        }
      }
      console.log(
        `sqlite fuzz: ${CASES} cases, ${ok} OK (rows unchanged), ${failed} failed verification, ${errors} typed errors`
      )
      expect(failed + errors).toBeGreaterThan(CASES / 2)
    },
    240_000
  )
})

/** One random edit of an export's lines (text edits, line edits, field edits). */
const editLines = (lines: ReadonlyArray<string>, random: ReturnType<typeof prng>): Array<string> => {
  const out = [...lines]
  const i = random.int(out.length)
  const line = out[i]!
  switch (random.int(11)) {
    case 9: // a field's value nested deep
      out[i] = line.replace(/:("[^"]*"|\d+|null)/, `:${deepJsonText(random.pick(DEEP), random)}`)
      break
    case 10: // a field no format has, nested deep
      out[i] = line.replace(/^\{/, `{"deep":${deepJsonText(random.pick(DEEP), random)},`)
      break
    case 0: { // flip one character
      const at = random.int(line.length)
      out[i] = line.slice(0, at) + String.fromCharCode(32 + random.int(95)) + line.slice(at + 1)
      break
    }
    case 1: { // delete one character
      const at = random.int(line.length)
      out[i] = line.slice(0, at) + line.slice(at + 1)
      break
    }
    case 2: // delete a line
      out.splice(i, 1)
      break
    case 3: // duplicate a line
      out.splice(i, 0, line)
      break
    case 4: { // swap two lines
      const j = random.int(out.length)
      ;[out[i], out[j]] = [out[j]!, line]
      break
    }
    case 5: { // change a digit
      const digits = [...line.matchAll(/\d/g)]
      if (digits.length > 0) {
        const at = random.pick(digits).index!
        out[i] = line.slice(0, at) + String((Number(line[at]) + 1 + random.int(9)) % 10) + line.slice(at + 1)
      }
      break
    }
    case 6: // add a field no format has
      out[i] = line.replace(/^\{/, `{"extra${random.int(3)}":${random.int(100)},`)
      break
    case 7: { // change one field of a row or of the header to another row's value
      try {
        const value = JSON.parse(line) as Record<string, unknown>
        const other = JSON.parse(random.pick(lines)) as Record<string, unknown>
        const key = random.pick(Object.keys(value))
        if (key in other) value[key] = other[key]
        out[i] = JSON.stringify(value)
      } catch {
        // not JSON: leave it
      }
      break
    }
    case 8: // cut the file short
      out.length = 1 + random.int(out.length)
      break
  }
  return out
}

describe("fuzz: edited JSONL ledger exports", () => {
  it(
    `${CASES} random edits, deep nesting, UTF-8 substitutions: a report or a typed error, OK only for rows as written`,
    async () => {
      const random = prng(SEED + 1)
      const original = new Map(
        exportLines.slice(1).map((line) => {
          const row = JSON.parse(line) as Record<string, unknown>
          return [Number(row.sequence), row] as const
        })
      )
      let ok = 0
      let failed = 0
      let errors = 0
      for (let c = 0; c < CASES; c++) {
        const what = `export case ${c} (seed ${SEED + 1})`
        const file = join(dir, `case-${c % 16}.jsonl`)
        const lines = editLines(exportLines, random)
        const bytes = Buffer.from(lines.join("\n") + "\n")
        // Some cases also get UTF-8 byte substitutions: the lines then read back as the same text.
        const substituted = random.next() < 0.25 && substituteReplacementBytes(bytes, random)
        fs.writeFileSync(file, bytes)
        const exit = await Effect.runPromiseExit(bounded(LedgerExport.verifyExportFile(file, { keyring }), what))
        expectNoDefect(exit, what)
        if (Exit.isSuccess(exit) && exit.value.ok) {
          ok++
          expect(substituted, `${what}: OK for a file whose bytes are not UTF-8`).toBe(false)
          // Rows may be missing at the ends (an unpinned header is not authenticated; the report says so),
          // but no row that verifies may differ from the row written, in any column the hash covers.
          for (const line of lines.slice(1).filter((l) => l.trim().length > 0)) {
            const row = JSON.parse(line) as Record<string, unknown>
            expect(covered(row), what).toEqual(covered(original.get(Number(row.sequence))!))
          }
        } else if (Exit.isSuccess(exit)) {
          failed++
        } else {
          errors++
        }
      }
      console.log(
        `export fuzz: ${CASES} cases, ${ok} OK (rows unchanged), ${failed} failed verification, ${errors} typed errors`
      )
      expect(failed + errors).toBeGreaterThan(CASES / 2)
    },
    240_000
  )
})

/** One random edit of a parsed JSON value, at a random path. */
const editJson = (value: unknown, random: ReturnType<typeof prng>): unknown => {
  const replacement = () =>
    random.next() < 0.1
      ? deepValue(random.pick(DEEP))
      : random.pick<unknown>([null, true, 0, -1, 1.5, 2 ** 53, "", "x", "0".repeat(64), [], {}, { a: 1 }])
  if (Array.isArray(value)) {
    if (value.length === 0 || random.next() < 0.15) {
      const copy = [...value]
      switch (random.int(3)) {
        case 0:
          copy.splice(random.int(copy.length + 1), 0, replacement())
          break
        case 1:
          copy.splice(random.int(copy.length), 1)
          break
        default: {
          const i = random.int(copy.length)
          const j = random.int(copy.length)
          ;[copy[i], copy[j]] = [copy[j], copy[i]]
        }
      }
      return copy
    }
    const copy = [...value]
    const i = random.int(copy.length)
    copy[i] = editJson(copy[i], random)
    return copy
  }
  if (typeof value === "object" && value !== null) {
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) }
    const keys = Object.keys(copy)
    const roll = random.next()
    if (keys.length === 0 || roll < 0.1) copy[`extra${random.int(3)}`] = replacement()
    else if (roll < 0.2) delete copy[random.pick(keys)]
    else {
      const key = random.pick(keys)
      copy[key] = editJson(copy[key], random)
    }
    return copy
  }
  return random.next() < 0.5 ? replacement() : typeof value === "number" ? value + 1 : `${String(value)}!`
}

describe("fuzz: edited journal exports", () => {
  it(`${CASES} random JSON edits (deep nesting too): a typed error, or OK only for the export as written`, async () => {
    const journal = await Effect.runPromise(Effect.gen(function*() {
      const journal = yield* SessionJournal.make("fuzz-session")
      for (let n = 0; n < 20; n++) {
        yield* journal.record({
          toolName: `tool-${n % 3} ✓`,
          serverId: "server",
          agentId: "agent",
          bytesRead: n * 1000,
          bytesWritten: n,
          delegationDepth: n % 4,
          allowed: n % 5 !== 0
        })
      }
      return yield* journal.export
    }))
    const original = JSON.parse(JSON.stringify(journal)) as unknown
    const random = prng(SEED + 2)
    let ok = 0
    let errors = 0
    for (let c = 0; c < CASES; c++) {
      const what = `journal case ${c} (seed ${SEED + 2})`
      const edited = editJson(original, random)
      const exit = await Effect.runPromiseExit(
        bounded(Effect.zipRight(SessionJournal.verifyExport(edited), SessionJournal.fromExport(edited)), what)
      )
      expectNoDefect(exit, what)
      if (Exit.isSuccess(exit)) {
        ok++
        // OK: what verified is the journal as written, field for field, nothing added (an edit that
        // changes nothing is possible).
        expect(edited, what).toEqual(original)
      } else {
        errors++
      }
    }
    console.log(`journal fuzz: ${CASES} cases, ${ok} OK (export unchanged), ${errors} typed errors`)
    expect(errors).toBeGreaterThan(CASES / 2)
  }, 240_000)
})

describe("fuzz: the CLI on the same kinds of input", () => {
  const { cli } = cliWorkspace("agent-ledger-fuzz-cli-")
  const CLI_CASES = 4

  it(
    `${CLI_CASES} seeded cases each of databases, exports and journals through verify: exit 0, 1 or 2, never 70`,
    async () => {
      const random = prng(SEED + 3)
      const journal = JSON.parse(
        JSON.stringify(
          await Effect.runPromise(Effect.gen(function*() {
            const journal = yield* SessionJournal.make("fuzz-cli")
            yield* journal.record({
              toolName: "tool \uFFFD",
              serverId: "s",
              agentId: "a",
              bytesRead: 1,
              bytesWritten: 2,
              delegationDepth: 0,
              allowed: true
            })
            return yield* journal.export
          }))
        )
      ) as Record<string, unknown>
      for (let c = 0; c < CLI_CASES; c++) {
        const what = `cli case ${c} (seed ${SEED + 3})`
        const db = Buffer.from(ledgerBytes)
        substituteReplacementBytes(db, random)
        const dbFile = join(dir, `cli-${c}.db`)
        fs.writeFileSync(dbFile, db)
        const exportBytes = Buffer.from(editLines(exportLines, random).join("\n") + "\n")
        if (c % 2 === 0) substituteReplacementBytes(exportBytes, random)
        const exportFile = join(dir, `cli-${c}.jsonl`)
        fs.writeFileSync(exportFile, exportBytes)
        const journalFile = join(dir, `cli-${c}.json`)
        const journalText = JSON.stringify({ ...journal, sessionId: "fuzz-cli" })
        fs.writeFileSync(
          journalFile,
          c % 2 === 0
            ? journalText.replace("\"fuzz-cli\"", deepJsonText(random.pick(DEEP), random))
            : substituteInto(journalText, random)
        )
        for (const file of [dbFile, exportFile, journalFile]) {
          const run = await cli("verify", file, "--public-key", publicKeyFile())
          expect([0, 1, 2], `${what} ${file}: ${run.stderr}`).toContain(run.code)
          expect(run.stderr, what).not.toContain("internal error")
          if (run.code !== 0) continue
          // OK only for what is as written: a journal always changed; a database's substitution may have hit
          // bytes no row holds (a free page), so its rows are compared byte for byte.
          expect(file, `${what}: OK for a changed journal`).not.toBe(journalFile)
          if (file === dbFile) {
            for (const [sequence, row] of readRows(dbFile)) {
              expect(covered(row), `${what}, sequence ${sequence}`).toEqual(covered(originalRows.get(sequence)!))
            }
          }
        }
      }
    },
    240_000
  )
})

/** `text` as UTF-8 with one U+FFFD's bytes replaced by bytes that are not UTF-8. */
const substituteInto = (text: string, random: ReturnType<typeof prng>): Buffer => {
  const bytes = Buffer.from(text)
  substituteReplacementBytes(bytes, random)
  return bytes
}

let publicKeyPath: string | undefined
const publicKeyFile = (): string => {
  publicKeyPath ??= join(dir, "fuzz.pub.pem")
  if (!fs.existsSync(publicKeyPath)) fs.writeFileSync(publicKeyPath, AuditSigner.exportPem(signer).publicKeyPem)
  return publicKeyPath
}
