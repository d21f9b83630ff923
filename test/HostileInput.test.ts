/**
 * Hostile inputs to the verifiers (issue 20, finding 7): JSON nested thousands of levels deep must give a
 * typed error naming where (exit 2 in the CLI, never 70 "internal error"), in ledger exports, journal
 * exports (`SessionJournal.verifyExport` / `fromExport` too) and evidence bundles.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Stream } from "effect"
import * as fs from "node:fs"
import { findTooDeep, MAX_JSON_DEPTH } from "../src/internal/jsonDepth.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { cliWorkspace } from "./fixtures/cliWorkspace.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"

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
        const bundleRun = yield* Effect.promise(() => cli("verify", bundle))
        expect(bundleRun.code, bundleRun.stderr).toBe(2)
        expect(bundleRun.stderr).toContain(`nested deeper than ${MAX_JSON_DEPTH} levels at rows.a.a`)
      }
    }), { timeout: 120_000 })
})
