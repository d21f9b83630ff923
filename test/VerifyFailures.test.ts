/**
 * `verify` lists every failing row (issue 20, finding 8), as `git fsck` and `PRAGMA integrity_check` do:
 * in text and in `--json` (`report.failures`, each with its sequence and kind), bounded by
 * `--max-failures N` (default 100), with `firstFailure` kept. For databases, JSONL exports and evidence
 * bundles (whose rows whose inclusion proof fails are listed too, as `unproven`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import * as EvidenceBundle from "../src/transparency/EvidenceBundle.js"
import { cliWorkspace, withDb } from "./fixtures/cliWorkspace.js"
import { quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"

const { cli, path } = cliWorkspace("agent-ledger-verify-failures-")

const TAMPERED = [3, 7, 11]

/** 15 rows through the real sink, then payloads of rows 3, 7 and 11 edited with plain SQL. */
const tamperedLedger = (name: string) =>
  Effect.gen(function*() {
    const db = path(name)
    yield* Effect.gen(function*() {
      const sink = yield* SqlAuditSink.SqlAuditSink
      for (let n = 0; n < 15; n++) yield* sink.append(refusalEvent("agent", n))
    }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(LedgerSql.layerFor(db)))), quietly)
    withDb(db, (d) => {
      for (const sequence of TAMPERED) {
        d.prepare("UPDATE signed_events SET payload = '{}' WHERE sequence = ?").run(sequence)
      }
    })
    return db
  })

describe("verify lists every failure", () => {
  it.live(
    "text and --json list each failing row with its kind; --max-failures bounds the list",
    () =>
      Effect.gen(function*() {
        const db = yield* tamperedLedger("three.db")
        const text = yield* Effect.promise(() => cli("verify", db))
        expect(text.code).toBe(1)
        expect(text.stdout).toContain("first failure: sequence 3: payloadHash")
        expect(text.stdout).toContain("failing rows:  3")
        expect(text.stdout).toContain("failures:      3")
        for (const sequence of TAMPERED) {
          expect(text.stdout).toMatch(new RegExp(`\\n    sequence ${sequence}: payloadHash — `))
        }

        const json = yield* Effect.promise(() => cli("verify", db, "--json"))
        expect(json.code).toBe(1)
        const { report } = JSON.parse(json.stdout)
        expect(report.firstFailure).toMatchObject({ sequence: 3, kind: "payloadHash" })
        expect(report.failures.map((f: { sequence: number; kind: string }) => [f.sequence, f.kind])).toEqual(
          TAMPERED.map((s) => [s, "payloadHash"])
        )

        const bounded = yield* Effect.promise(() => cli("verify", db, "--max-failures", "1"))
        expect(bounded.code).toBe(1)
        expect(bounded.stdout).toContain("failing rows:  3")
        expect(bounded.stdout).toContain("failures:      the first 1 (--max-failures N lists more)")
        expect(bounded.stdout).toMatch(/\n {4}sequence 3: payloadHash/)
        expect(bounded.stdout).not.toMatch(/\n {4}sequence 7: /)

        const boundedJson = JSON.parse(
          (yield* Effect.promise(() => cli("verify", db, "--json", "--max-failures", "2"))).stdout
        )
        expect(boundedJson.report.failureCount).toBe(3)
        expect(boundedJson.report.failures.map((f: { sequence: number }) => f.sequence)).toEqual([3, 7])

        const negative = yield* Effect.promise(() => cli("verify", db, "--max-failures", "-1"))
        expect(negative.code).toBe(2)
        expect(negative.stderr).toContain("--max-failures must be a non-negative integer")
      }),
    { timeout: 120_000 }
  )

  it.live("a JSONL export lists its failing rows the same way", () =>
    Effect.gen(function*() {
      const db = yield* tamperedLedger("export-source.db")
      const file = path("tampered.jsonl")
      const exported = yield* Effect.promise(() => cli("export", db, "--out", file))
      expect(exported.code).toBe(0)
      const json = JSON.parse(
        (yield* Effect.promise(() => cli("verify", file, "--json", "--max-failures", "2"))).stdout
      )
      expect(json.report.failureCount).toBe(3)
      expect(json.report.failures.map((f: { sequence: number; kind: string }) => [f.sequence, f.kind])).toEqual([
        [3, "payloadHash"],
        [7, "payloadHash"]
      ])
      expect(fs.existsSync(file)).toBe(true)
    }), { timeout: 120_000 })

  it.live(
    "an evidence bundle lists its failing rows and its unproven rows, text and --json, bounded",
    () =>
      Effect.gen(function*() {
        const db = path("bundled.db")
        const signer = yield* AuditSigner.generate
        const origin = "agent-ledger/bundled"
        const bundle = yield* Effect.gen(function*() {
          const sink = yield* SqlAuditSink.SqlAuditSink
          for (let n = 0; n < 15; n++) yield* sink.append(refusalEvent("agent", n))
          return yield* EvidenceBundle.make({ origin, signer })
        }).pipe(
          Effect.provide(SqlAuditSink.layer({ signer }).pipe(Layer.provideMerge(LedgerSql.layerFor(db)))),
          quietly
        )
        // Rows 3, 7 and 11 edited (their hashes no longer hold); rows 2, 5 and 9 with a proof that leads elsewhere.
        const edited = structuredClone(bundle) as unknown as {
          rows: Array<{ row: { payload: string }; inclusion_proof: Array<string> }>
        }
        for (const sequence of TAMPERED) edited.rows[sequence]!.row.payload = "{}"
        const UNPROVEN = [2, 5, 9]
        for (const sequence of UNPROVEN) {
          edited.rows[sequence]!.inclusion_proof[0] = Buffer.alloc(32, 7).toString("base64")
        }
        const file = path("edited-bundle.json")
        fs.writeFileSync(file, JSON.stringify(edited))
        const vkey = bundle.verifier_key
        const [text, bounded, json, boundedJson] = yield* Effect.promise(() =>
          Promise.all([
            cli("verify", file, "--checkpoint-key", vkey),
            cli("verify", file, "--checkpoint-key", vkey, "--max-failures", "1"),
            cli("verify", file, "--checkpoint-key", vkey, "--json"),
            cli("verify", file, "--checkpoint-key", vkey, "--json", "--max-failures", "2")
          ])
        )
        expect(text.code).toBe(1)
        expect(text.stdout).toContain("failing rows:  3")
        expect(text.stdout).toContain("unproven:      3")
        for (const sequence of TAMPERED) {
          expect(text.stdout).toMatch(new RegExp(`\\n    sequence ${sequence}: payloadHash`))
        }
        for (const sequence of UNPROVEN) {
          expect(text.stdout).toMatch(new RegExp(`\\n    sequence ${sequence}: notIncluded`))
        }
        expect(bounded.code).toBe(1)
        expect(bounded.stdout).toContain("failures:      the first 1 (--max-failures N lists more)")
        expect(bounded.stdout).toContain("unproven:      the first 1 of 3 (--max-failures N lists more)")
        expect(bounded.stdout).not.toMatch(/\n {4}sequence 7: /)
        expect(bounded.stdout).not.toMatch(/\n {4}sequence 5: /)
        const all = JSON.parse(json.stdout)
        expect(json.code).toBe(1)
        expect(all.report.failures.map((f: { sequence: number; kind: string }) => [f.sequence, f.kind])).toEqual(
          TAMPERED.map((s) => [s, "payloadHash"])
        )
        expect(all).toMatchObject({ unprovenCount: 3, unproven: UNPROVEN, firstUnproven: 2 })
        const two = JSON.parse(boundedJson.stdout)
        expect(two.report.failureCount).toBe(3)
        expect(two.report.failures.map((f: { sequence: number }) => f.sequence)).toEqual([3, 7])
        expect(two).toMatchObject({ unprovenCount: 3, unproven: [2, 5] })
      }),
    { timeout: 120_000 }
  )
})
