/**
 * Hostile inputs to the verifiers (issue 20, finding 7): JSON nested thousands of levels deep must give a
 * typed error naming where (exit 2 in the CLI, never 70 "internal error"), in ledger exports, journal
 * exports (`SessionJournal.verifyExport` / `fromExport` too) and evidence bundles.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Stream } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { findTooDeep, MAX_JSON_DEPTH } from "../src/internal/jsonDepth.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as LedgerVerifier from "../src/ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { cliWorkspace, withDb } from "./fixtures/cliWorkspace.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

const { cli, path } = cliWorkspace("agent-ledger-hostile-")

/** JSON text of arrays nested `depth` deep (built as text: building it as a value would need recursion). */
const deepArrays = (depth: number) => "[".repeat(depth) + "]".repeat(depth)
const deepObjects = (depth: number) => "{\"a\":".repeat(depth) + "{}" + "}".repeat(depth)

const DEPTHS = [MAX_JSON_DEPTH + 1, 2_500, 5_000, 200_000]

/** A small ledger with three rows, and its export lines. */
const ledgerExport = (name: string) =>
  Effect.gen(function*() {
    const db = path(`${name}.db`)
    yield* Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      for (let n = 0; n < 3; n++) yield* sink.append(refusalEvent("agent", n))
    }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(LedgerSql.layerFor(db)))), quietly)
    const lines = yield* Stream.runCollect(LedgerExport.exportLines()).pipe(Effect.provide(LedgerSql.layerFor(db)))
    return { db, lines: Array.from(lines) }
  })

/** A journal export with one entry, as JSON text with `field`'s value replaced by `deep`. */
const journalText = (field: string, deep: string) => {
  const entry: Record<string, string> = {
    sequence: "0",
    prevHash: `"${"0".repeat(64)}"`,
    entryHash: `"${"1".repeat(64)}"`,
    timestampMillis: "0",
    toolName: "\"shell.exec\"",
    serverId: "\"local\"",
    agentId: "\"agent\"",
    bytesRead: "0",
    bytesWritten: "0",
    delegationDepth: "0",
    allowed: "true"
  }
  entry[field] = deep
  const entryText = `{${Object.entries(entry).map(([k, v]) => `"${k}":${v}`).join(",")}}`
  return `{"format":"${SessionJournal.EXPORT_FORMAT}","sessionId":"s","headHash":"${
    "1".repeat(64)
  }","entries":[${entryText}]}`
}

describe("findTooDeep", () => {
  it("finds the first container past the bound without recursion, and names its path", () => {
    expect(findTooDeep(JSON.parse(deepArrays(MAX_JSON_DEPTH)))).toBeUndefined()
    expect(findTooDeep(JSON.parse(deepArrays(MAX_JSON_DEPTH + 1)))).toMatchObject({ depth: MAX_JSON_DEPTH + 1 })
    const found = findTooDeep(JSON.parse(`{"x":[1,{"y":${deepObjects(1_000_000)}}]}`))
    expect(found?.depth).toBe(MAX_JSON_DEPTH + 1)
    expect(found?.path).toMatch(/^x\.1\.y\.a\.a\.a\.….a\.a\.a$/)
    expect(findTooDeep({ a: [1, 2, { b: "c" }], d: null })).toBeUndefined()
    expect(findTooDeep("text")).toBeUndefined()
  })
})

describe("deep nesting in a ledger export", () => {
  it.live(
    "a row line or header nested 101 to 200,000 deep: exit 2 naming the line and path, never 70",
    () =>
      Effect.gen(function*() {
        const { lines } = yield* ledgerExport("deep-export")
        for (const depth of DEPTHS) {
          const cases = [
            ["row field", lines.map((l, i) => i === 2 ? l.replace(/"id":"[^"]*"/, `"id":${deepArrays(depth)}`) : l)],
            ["excess field", lines.map((l, i) => i === 2 ? l.replace(/^\{/, `{"extra":${deepObjects(depth)},`) : l)],
            [
              "header",
              lines.map((l, i) => i === 0 ? l.replace(/"row_count":\d+/, `"row_count":${deepArrays(depth)}`) : l)
            ]
          ] as const
          for (const [what, edited] of cases) {
            const file = path(`deep-${depth}-${what.replace(" ", "-")}.jsonl`)
            fs.writeFileSync(file, edited.join("\n") + "\n")
            const where = `line ${what === "header" ? 1 : 3}: nested deeper than ${MAX_JSON_DEPTH} levels`
            const library = yield* Effect.either(LedgerExport.verifyExportFile(file))
            expect(Either.isLeft(library) && library.left.message).toContain(where)
            // The CLI (a process each, so a few cases): a header past the first 64 KiB is not recognized at all.
            if (depth !== 5_000 && depth !== 200_000) continue
            const run = yield* Effect.promise(() => cli("verify", file))
            expect(run.code, `${what} at depth ${depth}: ${run.stderr}`).toBe(2)
            if (what !== "header" || depth === 5_000) expect(run.stderr).toContain(where)
          }
        }
      }),
    { timeout: 120_000 }
  )
})

describe("deep nesting in a journal export", () => {
  it.effect("verifyExport and fromExport fail with InvalidExport naming the path, at every depth", () =>
    Effect.gen(function*() {
      for (const depth of DEPTHS) {
        for (const field of ["toolName", "bytesRead"]) {
          const input = JSON.parse(journalText(field, deepArrays(depth)))
          const runs: ReadonlyArray<
            (input: unknown) => Effect.Effect<unknown, SessionJournal.InvalidExport | SessionJournal.IntegrityViolation>
          > = [SessionJournal.verifyExport, SessionJournal.fromExport]
          for (const run of runs) {
            const error = yield* Effect.flip(run(input))
            expect(error._tag).toBe("InvalidExport")
            const issue = (error as SessionJournal.InvalidExport).issues[0]
            expect(issue.message).toBe(`nested deeper than ${MAX_JSON_DEPTH} levels at ${issue.path}`)
            expect(issue.path.startsWith(`entries.0.${field}.0.0`)).toBe(true)
          }
        }
        // An excess property at the root, nested deep: the same, not a stack overflow in the error message.
        const excess = JSON.parse(`{"x":${deepObjects(depth)},${journalText("toolName", "\"t\"").slice(1)}`)
        expect((yield* Effect.flip(SessionJournal.verifyExport(excess)))._tag).toBe("InvalidExport")
      }
    }))

  it.live("the CLI exits 2 naming where (journal export and evidence bundle), never 70", () =>
    Effect.gen(function*() {
      for (const depth of [5_000, 200_000]) {
        const journal = path(`deep-journal-${depth}.json`)
        fs.writeFileSync(journal, journalText("toolName", deepArrays(depth)))
        const run = yield* Effect.promise(() => cli("verify", journal))
        expect(run.code, run.stderr).toBe(2)
        expect(run.stderr).toContain(`nested deeper than ${MAX_JSON_DEPTH} levels at entries.0.toolName.0.0`)
        const bundle = path(`deep-bundle-${depth}.json`)
        fs.writeFileSync(bundle, `{"format":"agent-ledger/evidence-bundle/v1","rows":${deepObjects(depth)}}`)
        const bundleRun = yield* Effect.promise(() => cli("verify", bundle, "--trust-embedded-key"))
        expect(bundleRun.code, bundleRun.stderr).toBe(2)
        expect(bundleRun.stderr).toContain(`nested deeper than ${MAX_JSON_DEPTH} levels at rows.a.a`)
      }
    }), { timeout: 120_000 })
})

/** A signed-free ledger whose rows legitimately hold U+FFFD in every hashed free-text column but the id. */
const ledgerWithReplacementCharacters = (db: string) =>
  Effect.gen(function*() {
    const sink = yield* SqlAuditSink.SqlAuditSink
    for (let n = 0; n < 3; n++) yield* sink.append(refusalEvent(`agent-\uFFFD-${n}`, n, `text \uFFFD ${n}`))
  }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(LedgerSql.layerFor(db)))), quietly)

/** Rewrites `column` of the row at `sequence` with its bytes' first U+FFFD (EF BF BD) replaced by `bad`. */
const substituteStoredBytes = (db: string, sequence: number, column: string, bad: Buffer) =>
  withDb(db, (d) => {
    const { bytes } = d.prepare(`SELECT CAST(${column} AS BLOB) AS bytes FROM signed_events WHERE sequence = ?`)
      .get(sequence) as { bytes: Buffer }
    const at = bytes.indexOf(Buffer.from("\uFFFD"))
    expect(at).toBeGreaterThanOrEqual(0)
    const edited = Buffer.concat([bytes.subarray(0, at), bad, bytes.subarray(at + 3)])
    d.prepare(`UPDATE signed_events SET ${column} = CAST(? AS TEXT) WHERE sequence = ?`).run(edited, sequence)
    // The driver reads it back as the very text it was: only the bytes changed.
    const read = d.prepare(`SELECT ${column} AS text FROM signed_events WHERE sequence = ?`).get(sequence) as {
      text: string
    }
    expect(read.text).toBe(bytes.toString("utf8"))
  })

describe("text whose stored bytes are not UTF-8", () => {
  it.live(
    "U+FFFD's bytes replaced by one invalid byte fail verification (kind encoding, naming the column)",
    () =>
      Effect.gen(function*() {
        const db = path("utf8-intact.db")
        yield* ledgerWithReplacementCharacters(db)
        expect((yield* LedgerVerifier.verifyLedger().pipe(Effect.provide(LedgerSql.layerFor(db)))).ok).toBe(true)
        for (const column of ["payload", "agent_id"]) {
          for (const bad of [Buffer.of(0xff), Buffer.of(0xc0), Buffer.of(0xf0, 0x9f, 0x98)]) {
            const copy = path(`utf8-${column}-${bad.toString("hex")}.db`)
            fs.copyFileSync(db, copy)
            substituteStoredBytes(copy, 1, column, bad)
            const report = yield* LedgerVerifier.verifyLedger().pipe(Effect.provide(LedgerSql.layerFor(copy)))
            expect(report.ok, `${column} ${bad.toString("hex")}`).toBe(false)
            expect(Option.getOrThrow(report.firstFailure)).toMatchObject({
              sequence: 1,
              kind: "encoding",
              message: `${column} is not valid UTF-8 as stored: no text hashes to its bytes`
            })
            // One failure: the rows after it still link to its stored entry_hash.
            expect(report.failureCount).toBe(1)
            expect(report.rowsChecked).toBe(3)
          }
        }
        const copy = path("utf8-cli.db")
        fs.copyFileSync(db, copy)
        substituteStoredBytes(copy, 2, "payload", Buffer.of(0xff))
        const run = yield* Effect.promise(() => cli("verify", copy, "--json"))
        expect(run.code).toBe(1)
        expect(JSON.parse(run.stdout).report.firstFailure).toMatchObject({ sequence: 2, kind: "encoding" })
      }),
    { timeout: 120_000 }
  )

  it.live("a SQLite database that stores text as UTF-16 is not verified as if it held UTF-8 bytes", () =>
    Effect.gen(function*() {
      const db = path("utf16.db")
      withDb(db, (d) => {
        d.pragma("encoding = 'UTF-16le'")
        d.exec("CREATE TABLE fixes_the_encoding (x)")
      })
      yield* ledgerWithReplacementCharacters(db)
      const report = yield* LedgerVerifier.verifyLedger().pipe(Effect.provide(LedgerSql.layerFor(db)))
      expect(report.ok).toBe(false)
      expect(Option.getOrThrow(report.firstFailure).kind).toBe("encoding")
    }))
})

describe("export and journal files whose bytes are not UTF-8", () => {
  it.live(
    "an export line is CorruptExportLine and a journal is exit 2, though they read back as the same text",
    () =>
      Effect.gen(function*() {
        const { lines } = yield* ledgerExport("utf8-export")
        const edited = lines.map((l, i) => i === 2 ? l.replace("refusal 1", "refusal \uFFFD") : l)
        const bytes = Buffer.from(edited.join("\n") + "\n")
        const at = bytes.indexOf(Buffer.from("\uFFFD"))
        Buffer.of(0xf0, 0x9f, 0x98).copy(bytes, at)
        // The same text when decoded leniently: only the bytes say it is not what was written.
        expect(bytes.toString("utf8")).toBe(edited.join("\n") + "\n")
        const file = path("not-utf8.jsonl")
        fs.writeFileSync(file, bytes)
        const library = yield* Effect.flip(LedgerExport.verifyExportFile(file))
        expect(library.message).toBe(`${file}: line 3: not valid UTF-8`)
        const run = yield* Effect.promise(() => cli("verify", file))
        expect(run.code).toBe(2)
        expect(run.stderr).toContain("line 3: not valid UTF-8")

        const journal = path("not-utf8.json")
        const text = journalText("toolName", "\"tool \uFFFD\"")
        const journalBytes = Buffer.from(text)
        Buffer.of(0xf0, 0x9f, 0x98).copy(journalBytes, journalBytes.indexOf(Buffer.from("\uFFFD")))
        fs.writeFileSync(journal, journalBytes)
        const journalRun = yield* Effect.promise(() => cli("verify", journal))
        expect(journalRun.code).toBe(2)
        expect(journalRun.stderr).toContain("not valid UTF-8")
      }),
    { timeout: 60_000 }
  )
})

describe.skipIf(noPostgres)("text whose stored bytes are not UTF-8 (PostgreSQL)", () => {
  it.live(
    "a UTF8 database refuses the bytes; a SQL_ASCII one, which would take them, is refused by verify",
    () =>
      Effect.acquireUseRelease(
        Effect.sync(freshDatabase),
        (database) =>
          Effect.gen(function*() {
            yield* ledgerWithReplacementCharacters(database.url)
            const psql = (statement: string) =>
              Either.try(() =>
                execFileSync("psql", [database.url, "-v", "ON_ERROR_STOP=1", "-qAtc", statement], { stdio: "pipe" })
              )
            // invalid byte sequence for encoding "UTF8" (22021): the stored text is always what the driver reads.
            for (const bytes of ["\\xff", "\\xc0", "\\xf09f98"]) {
              const tamper = psql(
                `UPDATE signed_events SET payload = convert_from('${bytes}'::bytea, 'UTF8') WHERE sequence = 1`
              )
              expect(Either.isLeft(tamper) && String(tamper.left)).toContain("invalid byte sequence")
            }
            expect((yield* LedgerVerifier.verifyLedger().pipe(Effect.provide(LedgerSql.layerFor(database.url)))).ok)
              .toBe(true)

            const ascii = freshDatabase({ encoding: "SQL_ASCII" })
            try {
              yield* ledgerWithReplacementCharacters(ascii.url)
              const report = yield* LedgerVerifier.verifyLedger().pipe(Effect.provide(LedgerSql.layerFor(ascii.url)))
              expect(report.ok).toBe(false)
              expect(Option.getOrThrow(report.firstFailure).kind).toBe("encoding")
            } finally {
              ascii.drop()
            }
          }),
        (database) => Effect.sync(database.drop)
      ),
    { timeout: 60_000 }
  )
})
