import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Stream } from "effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { ZERO_HASH } from "../src/internal/encoding.js"
import * as LedgerExport from "../src/ledger/LedgerExport.js"
import * as LedgerStats from "../src/ledger/LedgerStats.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { refusalEvent } from "./fixtures/events.js"
import { sqliteWithClient } from "./fixtures/ledgerSql.js"

const tempRoot = fs.mkdtempSync(join(tmpdir(), "agent-ledger-export-"))
afterAll(() => fs.rmSync(tempRoot, { recursive: true, force: true }))
let fileCounter = 0
const freshFile = (ext: string) => join(tempRoot, `f-${++fileCounter}.${ext}`)

const ledger = (rows: number, signer?: AuditSigner.AuditSigner) =>
  Effect.gen(function*() {
    const filename = freshFile("db")
    const layer = SqlAuditSink.layer({ signer }).pipe(Layer.provideMerge(sqliteWithClient({ filename })))
    yield* Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      for (let n = 0; n < rows; n++) yield* sink.append(refusalEvent(`agent-${n % 3}`, n))
    }).pipe(Effect.provide(layer))
    return layer
  })

const exportTo = (layer: Layer.Layer<any, any, never>, range: LedgerExport.ExportRange = {}) =>
  Effect.gen(function*() {
    const lines = yield* Stream.runCollect(LedgerExport.exportLines(range)).pipe(Effect.provide(layer))
    const file = freshFile("jsonl")
    fs.writeFileSync(file, Array.from(lines).join("\n") + "\n")
    return { file, lines: Array.from(lines) }
  })

describe("LedgerExport", () => {
  it.live("a full export verifies offline, signed, with the header anchoring it at the zero hash", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const { file, lines } = yield* exportTo(yield* ledger(25, signer), { pageSize: 7 })
      expect(lines).toHaveLength(26)
      expect(JSON.parse(lines[0]!)).toMatchObject({
        format: LedgerExport.LEDGER_EXPORT_FORMAT,
        from_sequence: 0,
        to_sequence: 24,
        row_count: 25,
        prev_hash: ZERO_HASH,
        head_hash: JSON.parse(lines[25]!).entry_hash
      })
      const result = yield* LedgerExport.verifyExportFile(file, { keyring: AuditSigner.Keyring.fromSigners([signer]) })
      expect(result.ok).toBe(true)
      expect(result.complete).toBe(true)
      expect(result.report.signatures.valid).toBe(25)
      // Without the key: unverifiable, not ok.
      const noKey = yield* LedgerExport.verifyExportFile(file)
      expect(noKey.ok).toBe(false)
      expect(Option.getOrThrow(noKey.report.firstFailure).kind).toBe("unknownKey")
    }))

  it.live("a mid-chain range verifies from its anchor; a wrong anchor fails the link", () =>
    Effect.gen(function*() {
      const layer = yield* ledger(12)
      const all = yield* exportTo(layer)
      const { file, lines } = yield* exportTo(layer, { from: 4, to: 9 })
      const header = JSON.parse(lines[0]!)
      expect(header).toMatchObject({ from_sequence: 4, to_sequence: 9, row_count: 6 })
      expect(header.prev_hash).toBe(JSON.parse(all.lines[4]!).entry_hash)
      expect((yield* LedgerExport.verifyExportFile(file)).ok).toBe(true)

      const forged = freshFile("jsonl")
      fs.writeFileSync(forged, [JSON.stringify({ ...header, prev_hash: ZERO_HASH }), ...lines.slice(1)].join("\n"))
      const result = yield* LedgerExport.verifyExportFile(forged)
      expect(result.ok).toBe(false)
      expect(Option.getOrThrow(result.report.firstFailure)).toMatchObject({ sequence: 4, kind: "link" })
    }))

  it.live("a range whose preceding row is missing is refused; a full export ignores a forged anchor", () =>
    Effect.gen(function*() {
      const layer = yield* ledger(6)
      const { lines } = yield* exportTo(layer)
      const forged = freshFile("jsonl")
      fs.writeFileSync(
        forged,
        [JSON.stringify({ ...JSON.parse(lines[0]!), prev_hash: "ab".repeat(32) }), ...lines.slice(1)].join("\n")
      )
      const result = yield* LedgerExport.verifyExportFile(forged)
      expect(result.ok).toBe(true)

      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DELETE FROM signed_events WHERE sequence = 2`).pipe(
        Effect.provide(layer)
      )
      const error = yield* Effect.flip(exportTo(layer, { from: 3 }))
      expect(error).toMatchObject({ _tag: "ExportAnchorMissing", sequence: 2 })
    }))

  it.live("an empty range exports only a header and verifies", () =>
    Effect.gen(function*() {
      const { file, lines } = yield* exportTo(yield* ledger(3), { from: 10 })
      expect(lines).toHaveLength(1)
      expect(JSON.parse(lines[0]!)).toMatchObject({ row_count: 0, to_sequence: null, head_hash: null, prev_hash: null })
      expect((yield* LedgerExport.verifyExportFile(file)).ok).toBe(true)
    }))

  it.live("rows cut off the end are detected as incomplete; rows removed from the middle as a gap", () =>
    Effect.gen(function*() {
      const { lines } = yield* exportTo(yield* ledger(6))
      const cut = freshFile("jsonl")
      fs.writeFileSync(cut, lines.slice(0, -2).join("\n"))
      const cutResult = yield* LedgerExport.verifyExportFile(cut)
      expect(cutResult).toMatchObject({ ok: false, complete: false })
      expect(cutResult.report.ok).toBe(true)

      const holed = freshFile("jsonl")
      fs.writeFileSync(holed, [...lines.slice(0, 3), ...lines.slice(4)].join("\n"))
      const holedResult = yield* LedgerExport.verifyExportFile(holed)
      expect(Option.getOrThrow(holedResult.report.firstFailure)).toMatchObject({ sequence: 3, kind: "gap" })
    }))

  it.live("a corrupted line fails with its line number and the bad field", () =>
    Effect.gen(function*() {
      const { lines } = yield* exportTo(yield* ledger(4))
      const bad = freshFile("jsonl")
      const row = JSON.parse(lines[2]!)
      fs.writeFileSync(bad, [...lines.slice(0, 2), JSON.stringify({ ...row, sequence: "two" }), lines[3]].join("\n"))
      const error = yield* Effect.flip(LedgerExport.verifyExportFile(bad))
      expect(error).toMatchObject({ _tag: "CorruptExportLine", line: 3 })
      expect(error.message).toContain("sequence")

      const noHeader = freshFile("jsonl")
      fs.writeFileSync(noHeader, lines.slice(1).join("\n"))
      expect(yield* Effect.flip(LedgerExport.verifyExportFile(noHeader))).toMatchObject({ line: 1 })
      const missing = yield* Effect.flip(LedgerExport.verifyExportFile(join(tempRoot, "nope.jsonl")))
      expect(missing._tag).toBe("ExportReadError")
    }))
})

describe("LedgerExport: what an export may not carry", () => {
  it.live("a row with a field the format does not have is refused, naming the line and the field", () =>
    Effect.gen(function*() {
      const { lines } = yield* exportTo(yield* ledger(4))
      const smuggled = freshFile("jsonl")
      const row = JSON.parse(lines[2]!)
      fs.writeFileSync(
        smuggled,
        [...lines.slice(0, 2), JSON.stringify({ ...row, note: "data no hash covers" }), lines[3], lines[4]].join("\n")
      )
      const error = yield* Effect.flip(LedgerExport.verifyExportFile(smuggled))
      expect(error).toMatchObject({ _tag: "CorruptExportLine", line: 3 })
      expect(error.message).toContain("note")
    }))
})

describe("LedgerStats", () => {
  it.live("counts rows, refusals by agent and rule, attest levels and the time span", () =>
    Effect.gen(function*() {
      const layer = yield* ledger(10)
      const stats = yield* LedgerStats.stats({ pageSize: 3 }).pipe(Effect.provide(layer))
      expect(stats.rows).toBe(10)
      expect(Option.getOrThrow(stats.head).sequence).toBe(9)
      expect(stats.refusalsByAgent).toEqual({ "agent-0": 4, "agent-1": 3, "agent-2": 3 })
      expect(stats.refusalsByRule).toEqual({ "no-shell": 10 })
      expect(stats.attestLevels).toEqual({ unsigned: 10 })
      expect(stats.deadLetters).toEqual({ pending: 0, replayed: 0 })
      expect(Option.getOrThrow(stats.firstTimestamp) < Option.getOrThrow(stats.lastTimestamp)).toBe(true)
    }))
})
