import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Schema, TestClock } from "effect"
import { readFileSync } from "node:fs"
import { isHash, sha256Hex, ZERO_HASH } from "../src/internal/encoding.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"

const params = (
  toolName: string,
  overrides: Partial<SessionJournal.RecordParams> = {}
): SessionJournal.RecordParams => ({
  toolName,
  serverId: "srv-1",
  agentId: "agent-1",
  bytesRead: 100,
  bytesWritten: 50,
  delegationDepth: 0,
  allowed: true,
  ...overrides
})

const journalOf = (sessionId: string, tools: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const journal = yield* SessionJournal.make(sessionId)
    for (const tool of tools) yield* journal.record(params(tool))
    return journal
  })

const encodeExport = Schema.encodeSync(SessionJournal.JournalExport)

/** The export as the plain JSON value a file would hold. */
const exportJson = (exported: SessionJournal.JournalExport) => JSON.parse(JSON.stringify(encodeExport(exported)))

const baseEntry: SessionJournal.EntryHashInput = {
  sessionId: "sess-1",
  sequence: 0,
  prevHash: ZERO_HASH,
  timestampMillis: 1_700_000_000_000,
  toolName: "read_file",
  serverId: "srv",
  agentId: "agent",
  bytesRead: 100,
  bytesWritten: 0,
  delegationDepth: 0,
  allowed: true
}

describe("SessionJournal (behaviours of the Rust original)", () => {
  it.effect("an empty journal has length 0 and the zero head hash", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-1")
      expect(yield* journal.length).toBe(0)
      expect(yield* journal.isEmpty).toBe(true)
      expect(yield* journal.headHash).toBe(ZERO_HASH)
      expect(yield* journal.entries).toEqual([])
      yield* journal.verifyIntegrity
    }))

  it.effect("a single record gets sequence 0, the zero prevHash and its v1 hash", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-1")
      expect(yield* journal.record(params("read_file"))).toBe(0)
      expect(yield* journal.length).toBe(1)
      expect(yield* journal.isEmpty).toBe(false)
      const [entry] = yield* journal.entries
      expect(entry!.prevHash).toBe(ZERO_HASH)
      expect(entry!.toolName).toBe("read_file")
      expect(isHash(entry!.entryHash)).toBe(true)
      expect(entry!.entryHash).toBe(SessionJournal.computeEntryHash({ ...entry!, sessionId: "sess-1" }))
    }))

  it.effect("each entry's prevHash is the previous entry's hash", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-chain", ["read_file", "write_file", "bash"])
      const entries = yield* journal.entries
      expect(entries.map((entry) => entry.sequence)).toEqual([0, 1, 2])
      expect(entries[0]!.prevHash).toBe(ZERO_HASH)
      expect(entries[1]!.prevHash).toBe(entries[0]!.entryHash)
      expect(entries[2]!.prevHash).toBe(entries[1]!.entryHash)
    }))

  it.effect("verifyIntegrity passes on an untouched journal", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-integrity", ["read_file", "write_file", "bash", "http_request"])
      expect(yield* Effect.either(journal.verifyIntegrity)).toEqual(Either.right(undefined))
    }))

  it.effect("verification reports the first entry whose fields no longer match its hash", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-integrity", ["read_file", "write_file", "bash", "http_request"])
      // The journal's own memory cannot be reached: what `entries` returns is a copy, so writing to it
      // changes nothing and the live journal still verifies.
      const entries = yield* journal.entries
      ;(entries[2] as { bytesRead: number }).bytesRead = 999
      yield* journal.verifyIntegrity
      expect((yield* journal.entries)[2]!.bytesRead).not.toBe(999)
      // The same edits in an export are found, at the first edited entry.
      const exported = JSON.parse(JSON.stringify(yield* journal.export))
      exported.entries[2].bytesRead = 999
      exported.entries[3].toolName = "rm"
      const violation = yield* Effect.flip(SessionJournal.verifyExport(exported))
      expect(violation).toBeInstanceOf(SessionJournal.IntegrityViolation)
      const integrity = violation as SessionJournal.IntegrityViolation
      expect(integrity.sequence).toBe(2)
      expect(integrity.field).toBe("entryHash")
      expect(integrity.actual).toBe(exported.entries[2].entryHash)
      expect(integrity.expected).toBe(
        SessionJournal.computeEntryHash({ ...exported.entries[2], sessionId: "sess-integrity" })
      )
    }))

  it.effect("data flow sums bytes and invocations and keeps the max delegation depth", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-flow")
      yield* journal.record(params("read_file", { bytesRead: 200, bytesWritten: 0, delegationDepth: 0 }))
      yield* journal.record(params("write_file", { bytesRead: 0, bytesWritten: 300, delegationDepth: 3 }))
      yield* journal.record(params("bash", { bytesRead: 1, bytesWritten: 2, delegationDepth: 1 }))
      expect(yield* journal.dataFlow).toEqual({
        totalBytesRead: 201,
        totalBytesWritten: 302,
        totalInvocations: 3,
        maxDelegationDepth: 3
      })
    }))

  it.effect("data flow totals saturate at Number.MAX_SAFE_INTEGER", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-flow")
      const max = Number.MAX_SAFE_INTEGER
      yield* journal.record(params("read_file", { bytesRead: max, bytesWritten: max - 1 }))
      yield* journal.record(params("read_file", { bytesRead: max, bytesWritten: 1 }))
      yield* journal.record(params("read_file", { bytesRead: 1, bytesWritten: 1 }))
      const flow = yield* journal.dataFlow
      expect(flow.totalBytesRead).toBe(max)
      expect(flow.totalBytesWritten).toBe(max)
      expect(flow.totalInvocations).toBe(3)
    }))

  it.effect("tool sequence keeps order and tool counts count per name, in order of first use", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-seq", ["read_file", "bash", "read_file"])
      expect(yield* journal.toolSequence).toEqual(["read_file", "bash", "read_file"])
      const counts = yield* journal.toolCounts
      expect(counts.get("read_file")).toBe(2)
      expect(counts.get("bash")).toBe(1)
      expect(counts.get("write_file")).toBeUndefined()
      expect([...counts.keys()]).toEqual(["read_file", "bash"])
    }))

  it.effect("recentEntries(n) returns the last n entries, oldest first", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-recent", Array.from({ length: 10 }, (_, i) => `tool_${i}`))
      const recent = yield* journal.recentEntries(3)
      expect(recent.map((entry) => entry.toolName)).toEqual(["tool_7", "tool_8", "tool_9"])
      expect(yield* journal.recentEntries(0)).toEqual([])
    }))

  it.effect("recentEntries(n) returns everything when n exceeds the length", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-few", ["tool_a", "tool_b"])
      const recent = yield* journal.recentEntries(10)
      expect(recent.map((entry) => entry.toolName)).toEqual(["tool_a", "tool_b"])
    }))

  it.effect("the session id is accessible", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("my-session-42")
      expect(yield* journal.sessionId).toBe("my-session-42")
      expect((yield* journal.export).sessionId).toBe("my-session-42")
    }))

  it.effect("denied invocations are journaled and counted", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-denied")
      yield* journal.record(params("bash", { bytesRead: 0, bytesWritten: 0, allowed: false }))
      const [entry] = yield* journal.entries
      expect(entry!.allowed).toBe(false)
      expect((yield* journal.dataFlow).totalInvocations).toBe(1)
      expect((yield* journal.toolCounts).get("bash")).toBe(1)
    }))

  it("the entry hash is deterministic", () => {
    expect(SessionJournal.computeEntryHash(baseEntry)).toBe(SessionJournal.computeEntryHash({ ...baseEntry }))
  })

  it("the entry hash changes when any hashed field changes", () => {
    const base = SessionJournal.computeEntryHash(baseEntry)
    const changes: ReadonlyArray<Partial<SessionJournal.EntryHashInput>> = [
      { sessionId: "sess-2" },
      { sequence: 1 },
      { prevHash: "1".repeat(64) },
      { timestampMillis: 1_700_000_000_001 },
      { toolName: "read_files" },
      { serverId: "srv2" },
      { agentId: "agent2" },
      { bytesRead: 999 },
      { bytesWritten: 1 },
      { delegationDepth: 1 },
      { allowed: false }
    ]
    const hashes = changes.map((change) => SessionJournal.computeEntryHash({ ...baseEntry, ...change }))
    for (const hash of hashes) expect(hash).not.toBe(base)
    expect(new Set(hashes).size).toBe(changes.length)
  })

  it.effect("the head hash tracks the last entry", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-head")
      for (const tool of ["a", "b", "c"]) {
        yield* journal.record(params(tool))
        const [last] = yield* journal.recentEntries(1)
        expect(yield* journal.headHash).toBe(last!.entryHash)
      }
    }))

  it.effect("the export round-trips through JSON and the schema", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-serde", ["read_file", "bash"])
      const exported = yield* journal.export
      expect(exported.format).toBe("agent-ledger/journal/v2")
      expect(exported.headHash).toBe(yield* journal.headHash)
      const json = JSON.stringify(encodeExport(exported))
      const decoded = Schema.decodeUnknownSync(Schema.parseJson(SessionJournal.JournalExport))(json)
      expect(decoded).toEqual(exported)
      expect(yield* SessionJournal.verifyExport(JSON.parse(json))).toEqual(exported)
    }))
})

describe("SessionJournal record", () => {
  it.effect("timestamps come from the Clock", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-clock")
      yield* TestClock.setTime(1_700_000_000_000)
      yield* journal.record(params("a"))
      yield* TestClock.adjust("250 millis")
      yield* journal.record(params("b"))
      const entries = yield* journal.entries
      expect(entries.map((entry) => entry.timestampMillis)).toEqual([1_700_000_000_000, 1_700_000_000_250])
    }))

  it.effect("1,000 concurrent records get sequences 0..999 and the chain verifies", () =>
    Effect.gen(function*() {
      // Run with `withMaxOpsBeforeYield(10)` so the recording fibers interleave inside `record`.
      const journal = yield* SessionJournal.make("sess-concurrent")
      const sequences = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => i),
        (i) => journal.record(params(`tool_${i % 7}`, { bytesRead: i })),
        { concurrency: "unbounded" }
      )
      expect([...sequences].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i))
      expect(yield* journal.length).toBe(1000)
      expect((yield* journal.dataFlow).totalBytesRead).toBe((999 * 1000) / 2)
      yield* journal.verifyIntegrity
      yield* SessionJournal.verifyExport(exportJson(yield* journal.export))
    }).pipe(Effect.withMaxOpsBeforeYield(10)))

  it.effect("boundary values are accepted", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-bounds")
      yield* journal.record(params("max", {
        bytesRead: Number.MAX_SAFE_INTEGER,
        bytesWritten: 0,
        delegationDepth: SessionJournal.MAX_DELEGATION_DEPTH
      }))
      yield* journal.verifyIntegrity
      yield* SessionJournal.verifyExport(exportJson(yield* journal.export))
    }))

  const invalid: ReadonlyArray<[SessionJournal.InvalidRecord["field"], number]> = [
    ["bytesRead", -1],
    ["bytesRead", 1.5],
    ["bytesRead", Number.NaN],
    ["bytesRead", Number.POSITIVE_INFINITY],
    ["bytesRead", Number.MAX_SAFE_INTEGER + 1],
    ["bytesWritten", -0.5],
    ["bytesWritten", Number.NEGATIVE_INFINITY],
    ["bytesWritten", 2 ** 64],
    ["delegationDepth", -1],
    ["delegationDepth", 0.5],
    ["delegationDepth", Number.NaN],
    ["delegationDepth", 2 ** 32]
  ]

  it.effect.each(invalid)(
    "%s = %d fails with InvalidRecord and leaves the journal unchanged",
    ([field, value]) =>
      Effect.gen(function*() {
        const journal = yield* journalOf("sess-invalid", ["ok"])
        const before = yield* journal.export
        const error = yield* Effect.flip(journal.record(params("bad", { [field]: value })))
        expect(error).toBeInstanceOf(SessionJournal.InvalidRecord)
        expect(error.field).toBe(field)
        expect(error.message).toContain(field)
        expect(yield* journal.export).toEqual(before)
        expect(yield* journal.dataFlow).toEqual({
          totalBytesRead: 100,
          totalBytesWritten: 50,
          totalInvocations: 1,
          maxDelegationDepth: 0
        })
        expect(yield* journal.record(params("next"))).toBe(1)
      })
  )

  it.effect("length prefixes keep \"ab\"+\"c\" and \"a\"+\"bc\" apart", () =>
    Effect.gen(function*() {
      const first = yield* SessionJournal.make("sess-split")
      const second = yield* SessionJournal.make("sess-split")
      yield* first.record(params("ab", { serverId: "c" }))
      yield* second.record(params("a", { serverId: "bc" }))
      const [a] = yield* first.entries
      const [b] = yield* second.entries
      // The original's plain concatenation saw the same bytes for both records ...
      expect(sha256Hex(a!.toolName, a!.serverId)).toBe(sha256Hex(b!.toolName, b!.serverId))
      expect(a!.timestampMillis).toBe(b!.timestampMillis)
      // ... format v1 does not.
      expect(a!.entryHash).not.toBe(b!.entryHash)
    }))

  it.effect("the session id is hashed in, so a chain cannot move to another session", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-a", ["read_file", "bash"])
      const json = exportJson(yield* journal.export)
      const violation = yield* Effect.flip(SessionJournal.verifyExport({ ...json, sessionId: "sess-b" }))
      expect(violation).toMatchObject({ _tag: "IntegrityViolation", sequence: 0, field: "entryHash" })
    }))
})

describe("SessionJournal.verifyExport", () => {
  it.effect("an empty export verifies with the zero head and fails with any other head", () =>
    Effect.gen(function*() {
      const json = exportJson(yield* (yield* SessionJournal.make("sess-empty")).export)
      expect(json).toEqual({
        format: "agent-ledger/journal/v2",
        sessionId: "sess-empty",
        headHash: ZERO_HASH,
        entries: []
      })
      yield* SessionJournal.verifyExport(json)
      const violation = yield* Effect.flip(SessionJournal.verifyExport({ ...json, headHash: "a".repeat(64) }))
      expect(violation).toMatchObject({
        _tag: "IntegrityViolation",
        sequence: 0,
        field: "headHash",
        expected: ZERO_HASH,
        actual: "a".repeat(64)
      })
    }))

  it.effect("a truncated export is detected when the head is pinned", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-trunc", ["a", "b", "c"])
      const json = exportJson(yield* journal.export)
      const violation = yield* Effect.flip(SessionJournal.verifyExport({ ...json, entries: json.entries.slice(0, 2) }))
      expect(violation).toMatchObject({
        _tag: "IntegrityViolation",
        sequence: 2,
        field: "headHash",
        expected: json.entries[1].entryHash,
        actual: json.headHash
      })
    }))

  it.effect("reports the first broken link: sequence, then prevHash, then entryHash", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-links", ["a", "b", "c", "d"])
      const json = exportJson(yield* journal.export)
      const withEntry = (index: number, change: object) => ({
        ...json,
        entries: json.entries.map((entry: object, i: number) => (i === index ? { ...entry, ...change } : entry))
      })
      expect(yield* Effect.flip(SessionJournal.verifyExport(withEntry(1, { sequence: 7 })))).toMatchObject({
        sequence: 1,
        field: "sequence",
        expected: "1",
        actual: "7"
      })
      expect(yield* Effect.flip(SessionJournal.verifyExport(withEntry(2, { prevHash: ZERO_HASH })))).toMatchObject({
        sequence: 2,
        field: "prevHash",
        expected: json.entries[1].entryHash,
        actual: ZERO_HASH
      })
      expect(yield* Effect.flip(SessionJournal.verifyExport(withEntry(3, { agentId: "mallory" })))).toMatchObject({
        sequence: 3,
        field: "entryHash",
        actual: json.entries[3].entryHash
      })
    }))

  it.effect("a malformed export fails with InvalidExport naming the bad field's path", () =>
    Effect.gen(function*() {
      const journal = yield* journalOf("sess-decode", ["a", "b", "c", "d"])
      const json = exportJson(yield* journal.export)
      json.entries[3].bytesRead = -1
      json.entries[1].prevHash = "NOT-A-HASH"
      const error = yield* Effect.flip(SessionJournal.verifyExport(json))
      expect(error).toBeInstanceOf(SessionJournal.InvalidExport)
      if (error._tag !== "InvalidExport") return
      expect(error.issues.map((issue) => issue.path)).toEqual(["entries.1.prevHash", "entries.3.bytesRead"])
      expect(error.message).toContain("entries.3.bytesRead")
    }))

  it.effect("a wrong format tag or a non-object is InvalidExport, not an integrity violation", () =>
    Effect.gen(function*() {
      const json = exportJson(yield* (yield* journalOf("sess-decode", ["a"])).export)
      const wrongFormat = yield* Effect.flip(
        SessionJournal.verifyExport({ ...json, format: "agent-ledger/journal/v3" })
      )
      expect(wrongFormat._tag).toBe("InvalidExport")
      if (wrongFormat._tag !== "InvalidExport") return
      // One issue per accepted format (v2, v1), each naming the field.
      expect(wrongFormat.issues.map((issue) => issue.path)).toEqual(["format", "format"])
      for (const garbage of [null, 42, "journal", []]) {
        expect(yield* Effect.flip(SessionJournal.verifyExport(garbage))).toMatchObject({ _tag: "InvalidExport" })
      }
    }))
})

describe("SessionJournal.fromExport", () => {
  it.effect("restores a journal that continues the chain with rebuilt totals", () =>
    Effect.gen(function*() {
      const original = yield* SessionJournal.make("sess-restore")
      yield* original.record(params("read_file", { bytesRead: 10, delegationDepth: 2 }))
      yield* original.record(params("bash", { allowed: false }))
      yield* original.record(params("read_file", { bytesWritten: 7 }))
      const restored = yield* SessionJournal.fromExport(exportJson(yield* original.export))

      expect(yield* restored.sessionId).toBe("sess-restore")
      expect(yield* restored.entries).toEqual(yield* original.entries)
      expect(yield* restored.dataFlow).toEqual(yield* original.dataFlow)
      expect(yield* restored.toolCounts).toEqual(yield* original.toolCounts)
      expect(yield* restored.toolSequence).toEqual(["read_file", "bash", "read_file"])

      const head = yield* restored.headHash
      expect(yield* restored.record(params("write_file"))).toBe(3)
      const [last] = yield* restored.recentEntries(1)
      expect(last!.prevHash).toBe(head)
      yield* restored.verifyIntegrity
      yield* SessionJournal.verifyExport(exportJson(yield* restored.export))
      // The original is a separate journal and did not move.
      expect(yield* original.length).toBe(3)
    }))

  it.effect("refuses a tampered or malformed export", () =>
    Effect.gen(function*() {
      const json = exportJson(yield* (yield* journalOf("sess-restore", ["a", "b"])).export)
      json.entries[0].bytesWritten = 0
      expect(yield* Effect.flip(SessionJournal.fromExport(json))).toMatchObject({
        _tag: "IntegrityViolation",
        sequence: 0,
        field: "entryHash"
      })
      expect(yield* Effect.flip(SessionJournal.fromExport({ format: "nope" }))).toMatchObject({ _tag: "InvalidExport" })
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Property: every single tampering of an export is detected
// ---------------------------------------------------------------------------------------------------------

interface JsonEntry {
  sequence: number
  prevHash: string
  entryHash: string
  timestampMillis: number
  toolName: string
  serverId: string
  agentId: string
  bytesRead: number
  bytesWritten: number
  delegationDepth: number
  allowed: boolean
}

interface JsonExport {
  format: string
  sessionId: string
  headHash: string
  entries: Array<JsonEntry>
}

const safeNat = fc.oneof(fc.nat(1_000_000), fc.maxSafeNat())
const text = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("读取文件", "é", "🚀", ""))

const recordArb = fc.record({
  timestampMillis: safeNat,
  toolName: text,
  serverId: text,
  agentId: text,
  bytesRead: safeNat,
  bytesWritten: safeNat,
  delegationDepth: fc.maxSafeNat().map((n) => n % 2 ** 32),
  allowed: fc.boolean()
})

type RecordInput = typeof recordArb extends fc.Arbitrary<infer A> ? A : never

/** A different value that still decodes, so only the chain checks can catch it. */
const flipNumber = (n: number): number => (n % 2 === 0 ? n + 1 : n - 1)
const flipHash = (hash: string): string => (hash[0] === "0" ? "1" : "0") + hash.slice(1)

const entryFields = [
  "sequence",
  "prevHash",
  "entryHash",
  "timestampMillis",
  "toolName",
  "serverId",
  "agentId",
  "bytesRead",
  "bytesWritten",
  "delegationDepth",
  "allowed"
] as const

type Tamper =
  | {
    readonly kind: "field"
    readonly index: number
    readonly field: typeof entryFields[number]
    readonly suffix: string
  }
  | { readonly kind: "sessionId" | "headHash" }
  | { readonly kind: "delete"; readonly index: number }
  | { readonly kind: "swap"; readonly i: number; readonly j: number }
  | { readonly kind: "insert"; readonly index: number; readonly forged: RecordInput }
  | { readonly kind: "truncate"; readonly keep: number }

const tamperArb = (length: number): fc.Arbitrary<Tamper> => {
  const index = fc.nat(length - 1)
  const kinds: Array<fc.Arbitrary<Tamper>> = [
    fc.record({
      kind: fc.constant("field" as const),
      index,
      field: fc.constantFrom(...entryFields),
      suffix: fc.string({ minLength: 1, maxLength: 3 })
    }),
    fc.constantFrom({ kind: "sessionId" as const }, { kind: "headHash" as const }),
    fc.record({ kind: fc.constant("delete" as const), index }),
    fc.record({ kind: fc.constant("insert" as const), index: fc.nat(length), forged: recordArb }),
    fc.record({ kind: fc.constant("truncate" as const), keep: fc.nat(length - 1) })
  ]
  if (length >= 2) {
    kinds.push(
      fc.tuple(index, fc.nat(length - 2)).map(([i, k]) => ({ kind: "swap" as const, i, j: k >= i ? k + 1 : k }))
    )
  }
  return fc.oneof(...kinds)
}

const tamper = (json: JsonExport, change: Tamper): JsonExport => {
  const entries = json.entries.map((entry) => ({ ...entry }))
  switch (change.kind) {
    case "field": {
      const entry = entries[change.index]!
      const field = change.field
      if (field === "prevHash" || field === "entryHash") entry[field] = flipHash(entry[field])
      else if (field === "toolName" || field === "serverId" || field === "agentId") entry[field] += change.suffix
      else if (field === "allowed") entry.allowed = !entry.allowed
      else entry[field] = flipNumber(entry[field])
      return { ...json, entries }
    }
    case "sessionId":
      return { ...json, sessionId: json.sessionId + "'" }
    case "headHash":
      return { ...json, headHash: flipHash(json.headHash) }
    case "delete":
      entries.splice(change.index, 1)
      return { ...json, entries }
    case "swap": {
      const a = entries[change.i]!
      entries[change.i] = entries[change.j]!
      entries[change.j] = a
      return { ...json, entries }
    }
    case "insert": {
      // The strongest forgery: well-formed and correctly hashed for the position it takes.
      const prevHash = change.index === 0 ? ZERO_HASH : entries[change.index - 1]!.entryHash
      const fields = { ...change.forged, sequence: change.index, prevHash }
      const entryHash = SessionJournal.computeEntryHash({ ...fields, sessionId: json.sessionId })
      entries.splice(change.index, 0, { ...fields, entryHash })
      return { ...json, entries }
    }
    case "truncate":
      return { ...json, entries: entries.slice(0, change.keep) }
  }
}

const journalWithTamper = fc
  .array(recordArb, { minLength: 1, maxLength: 200 })
  .chain((records) => fc.tuple(fc.constant(records), tamperArb(records.length)))

describe("SessionJournal tamper evidence (property)", () => {
  it.effect.prop(
    "an untouched export verifies and every single tampering is an IntegrityViolation",
    [fc.string({ maxLength: 12 }), journalWithTamper],
    ([sessionId, [records, change]]) =>
      Effect.gen(function*() {
        const journal = yield* SessionJournal.make(sessionId)
        for (const { timestampMillis, ...record } of records) {
          yield* TestClock.setTime(timestampMillis)
          yield* journal.record(record)
        }
        const json: JsonExport = exportJson(yield* journal.export)
        expect(json.entries.map((entry) => entry.timestampMillis)).toEqual(records.map((r) => r.timestampMillis))
        yield* SessionJournal.verifyExport(json)

        const error = yield* Effect.flip(SessionJournal.verifyExport(tamper(json, change)))
        expect(error._tag).toBe("IntegrityViolation")
      }),
    { fastCheck: { numRuns: 80 } }
  )
})

// ---------------------------------------------------------------------------------------------------------
// docs/FORMAT.md
// ---------------------------------------------------------------------------------------------------------

const journalSection = (): string => {
  const doc = readFileSync(new URL("../docs/FORMAT.md", import.meta.url), "utf8")
  const start = doc.indexOf("\n## Session journal")
  expect(start).toBeGreaterThanOrEqual(0)
  const next = doc.indexOf("\n## ", start + 1)
  return next === -1 ? doc.slice(start) : doc.slice(start, next)
}

const jsonBlocks = (markdown: string): Array<any> =>
  Array.from(markdown.matchAll(/^```json\n([\s\S]*?)^```$/gm), (match) => JSON.parse(match[1]!))

describe("docs/FORMAT.md session journal section", () => {
  const blocks = jsonBlocks(journalSection())
  const vectors = blocks.filter((block) => "expectedEntryHash" in block)

  it("has at least 3 vectors, one of them non-ASCII and two of them chained", () => {
    expect(vectors.length).toBeGreaterThanOrEqual(3)
    expect(vectors.some((v) => /[^\x00-\x7f]/.test(v.sessionId + v.toolName + v.serverId + v.agentId))).toBe(true)
    expect(vectors.some((v) => vectors.some((w) => w !== v && w.prevHash === v.expectedEntryHash))).toBe(true)
  })

  it.each(vectors.map((vector) => [vector.vector, vector]))("vector %s hashes as documented", (_, vector) => {
    const { expectedEntryHash, expectedHashInputHex, vector: _n, ...input } = vector
    expect(SessionJournal.computeEntryHash(input)).toBe(expectedEntryHash)
    if (expectedHashInputHex !== undefined) {
      expect(Buffer.concat(SessionJournal.entryHashInput(input)).toString("hex")).toBe(expectedHashInputHex)
    }
  })

  it.effect("the example export verifies", () =>
    Effect.gen(function*() {
      // One example per format: v1 (as written before v2) and v2; both verify.
      for (const format of [SessionJournal.EXPORT_FORMAT_V1, SessionJournal.EXPORT_FORMAT]) {
        const examples = blocks.filter((block) => block.format === format)
        expect(examples.length).toBe(1)
        const exported = yield* SessionJournal.verifyExport(examples[0])
        expect(exported.entries.length).toBeGreaterThanOrEqual(2)
      }
    }))
})

describe("the fast encoder against the reference encoding", () => {
  // The reference: the v1 parts of docs/FORMAT.md, concatenated and hashed; the journal writes them into
  // one reused buffer instead, which must give the same bytes whatever the string lengths (long strings
  // grow the buffer, short ones after them must not see stale bytes) and however large the numbers.
  const text = fc.oneof(fc.string({ unit: "grapheme", maxLength: 40 }), fc.string({ minLength: 300, maxLength: 3000 }))
  const call = fc.record({
    toolName: text,
    serverId: text,
    agentId: text,
    bytesRead: fc.oneof(fc.nat(), fc.constantFrom(2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER)),
    bytesWritten: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)),
    delegationDepth: fc.oneof(fc.nat(), fc.constant(SessionJournal.MAX_DELEGATION_DEPTH)),
    allowed: fc.boolean()
  })

  it.effect.prop(
    "every recorded entry hashes to the reference encoding of its fields",
    [fc.array(call, { maxLength: 12 })],
    ([calls]) =>
      Effect.gen(function*() {
        const journal = yield* SessionJournal.make("sess-ref \u00e9")
        for (const c of calls) yield* journal.record(c)
        let prev = ZERO_HASH
        for (const entry of yield* journal.entries) {
          const reference = sha256Hex(...SessionJournal.entryHashInput({ ...entry, sessionId: "sess-ref \u00e9" }))
          expect(entry.prevHash).toBe(prev)
          expect(entry.entryHash).toBe(reference)
          prev = entry.entryHash
        }
        expect(yield* journal.headHash).toBe(prev)
        yield* journal.verifyIntegrity
        yield* SessionJournal.verifyExport(yield* journal.export)
      })
  )
})

describe("journal exports carry nothing the hashes do not cover", () => {
  it.effect("a field the format does not have, in an entry or at the top, is an InvalidExport naming it", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-extra")
      yield* journal.record({
        toolName: "t",
        serverId: "s",
        agentId: "a",
        bytesRead: 1,
        bytesWritten: 2,
        delegationDepth: 0,
        allowed: true
      })
      const exported = JSON.parse(JSON.stringify(yield* journal.export))
      const inEntry = { ...exported, entries: [{ ...exported.entries[0], note: "unhashed" }] }
      const error = yield* Effect.flip(SessionJournal.verifyExport(inEntry))
      expect(error._tag).toBe("InvalidExport")
      expect(error.message).toContain("entries.0.note")
      const atTop = yield* Effect.flip(SessionJournal.verifyExport({ ...exported, comment: "x" }))
      expect(atTop.message).toContain("comment")
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Format v2: how every call ended
// ---------------------------------------------------------------------------------------------------------

/**
 * A second v2 encoder, written from the text of docs/FORMAT.md ("v2 entry hash") and nothing else of the
 * library: plain Buffers and BigInt.
 */
const referenceV2Input = (v: Record<string, any>): Buffer => {
  const lpRef = (s: string) => {
    const bytes = Buffer.from(s, "utf8")
    const length = Buffer.alloc(4)
    length.writeUInt32BE(bytes.length)
    return Buffer.concat([length, bytes])
  }
  const u64Ref = (n: number) => {
    const b = Buffer.alloc(8)
    b.writeBigUInt64BE(BigInt(n))
    return b
  }
  const kinds: Record<string, number> = { call: 1, outcome: 2 }
  const outcomes: Record<string, number> = {
    pending: 0,
    refused: 1,
    result: 2,
    errorAnswer: 3,
    timedOut: 4,
    upstreamGone: 5,
    interrupted: 6
  }
  const depth = Buffer.alloc(4)
  depth.writeUInt32BE(v.delegationDepth)
  return Buffer.concat([
    lpRef("agent-ledger/journal-entry/v2"),
    lpRef(v.sessionId),
    u64Ref(v.sequence),
    Buffer.from(v.prevHash, "hex"),
    u64Ref(v.timestampMillis),
    lpRef(v.toolName),
    lpRef(v.serverId),
    lpRef(v.agentId),
    u64Ref(v.bytesRead),
    u64Ref(v.bytesWritten),
    depth,
    Buffer.from([v.allowed ? 1 : 0, kinds[v.kind]!, outcomes[v.outcome]!]),
    u64Ref(v.callSequence)
  ])
}

describe("docs/FORMAT.md session journal v2 vectors", () => {
  const v2Vectors = jsonBlocks(journalSection()).filter((block) => "expectedEntryHash" in block && "kind" in block)

  it("has 3 chained v2 vectors, one with the full hash input", () => {
    expect(v2Vectors.map((v) => v.vector)).toEqual([4, 5, 6])
    expect(v2Vectors[1].prevHash).toBe(v2Vectors[0].expectedEntryHash)
    expect(v2Vectors[2].prevHash).toBe(v2Vectors[1].expectedEntryHash)
    expect(v2Vectors[0].expectedHashInputHex).toBeDefined()
  })

  it.each(v2Vectors.map((vector) => [vector.vector, vector]))(
    "vector %s: the reference encoder and the library give the documented hash",
    (_, vector) => {
      const { expectedEntryHash, expectedHashInputHex, vector: _n, ...input } = vector
      expect(sha256Hex(referenceV2Input(input))).toBe(expectedEntryHash)
      expect(SessionJournal.computeEntryHash(input)).toBe(expectedEntryHash)
      if (expectedHashInputHex !== undefined) {
        expect(referenceV2Input(input).toString("hex")).toBe(expectedHashInputHex)
        expect(Buffer.concat(SessionJournal.entryHashInput(input)).toString("hex")).toBe(expectedHashInputHex)
      }
    }
  )

  it.effect.prop(
    "every entry the journal writes hashes as the reference v2 encoder says",
    [fc.array(fc.record({ tool: fc.string({ maxLength: 20 }), read: fc.nat(), end: fc.boolean() }), { maxLength: 10 })],
    ([calls]) =>
      Effect.gen(function*() {
        const journal = yield* SessionJournal.make("sess-v2 ü")
        for (const c of calls) {
          const sequence = yield* journal.record(params(c.tool, { bytesRead: 0, outcome: "pending" }))
          if (c.end) {
            yield* journal.record(
              params(c.tool, { kind: "outcome", outcome: "timedOut", callSequence: sequence, bytesRead: c.read })
            )
          }
        }
        for (const entry of yield* journal.entries) {
          expect(entry.entryHash).toBe(sha256Hex(referenceV2Input({ ...entry, sessionId: "sess-v2 ü" })))
        }
        yield* SessionJournal.verifyExport(exportJson(yield* journal.export))
      })
  )
})

describe("SessionJournal format v2 rules", () => {
  it.effect("record refuses an entry that breaks them, leaving the journal unchanged", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-rules")
      const pending = yield* journal.record(params("read", { outcome: "pending", bytesRead: 0 }))
      const bad: ReadonlyArray<[Partial<SessionJournal.RecordParams>, "outcome" | "callSequence"]> = [
        [{ allowed: false, outcome: "result" }, "outcome"],
        [{ allowed: true, outcome: "refused" }, "outcome"],
        [{ callSequence: 7 }, "callSequence"],
        [{ kind: "outcome", outcome: "pending", callSequence: pending }, "outcome"],
        [{ kind: "outcome", outcome: "result", callSequence: 99 }, "callSequence"],
        [{ kind: "outcome", outcome: "result", callSequence: pending, allowed: false }, "outcome"]
      ]
      for (const [overrides, field] of bad) {
        const error = yield* Effect.flip(journal.record(params("read", overrides)))
        expect(error).toMatchObject({ _tag: "InvalidRecord", field })
      }
      // Another tool cannot end the read.
      expect(
        yield* Effect.flip(journal.record(params("write", { kind: "outcome", outcome: "result", callSequence: 0 })))
      ).toMatchObject({ _tag: "InvalidRecord", field: "callSequence" })
      expect(yield* journal.length).toBe(1)
      yield* journal.record(params("read", { kind: "outcome", outcome: "interrupted", callSequence: pending }))
      // Ended once only.
      expect(
        yield* Effect.flip(journal.record(params("read", { kind: "outcome", outcome: "result", callSequence: 0 })))
      ).toMatchObject({ _tag: "InvalidRecord", field: "callSequence" })
      expect(yield* journal.pendingCalls).toEqual([])
      expect((yield* journal.dataFlow).totalInvocations).toBe(1)
      expect(yield* journal.toolSequence).toEqual(["read"])
    }))

  it.effect("verifyExport names an entry whose outcome or callSequence was rewritten (with its hash)", () =>
    Effect.gen(function*() {
      const journal = yield* SessionJournal.make("sess-rewrite")
      yield* journal.record(params("read", { outcome: "pending", bytesRead: 0 }))
      yield* journal.record(params("read", { kind: "outcome", outcome: "result", callSequence: 0 }))
      const json = exportJson(yield* journal.export)
      // Rewriting a field without rehashing breaks the hash.
      const edited = structuredClone(json)
      edited.entries[1].outcome = "timedOut"
      expect(yield* Effect.flip(SessionJournal.verifyExport(edited))).toMatchObject({ sequence: 1, field: "entryHash" })
      // Rewriting and rehashing a whole chain still breaks the rules: a second ending of the same call.
      const forged = structuredClone(json)
      const extra = { ...forged.entries[1], sequence: 2, prevHash: forged.entries[1].entryHash }
      extra.entryHash = SessionJournal.computeEntryHash({ ...extra, sessionId: "sess-rewrite" })
      forged.entries.push(extra)
      forged.headHash = extra.entryHash
      expect(yield* Effect.flip(SessionJournal.verifyExport(forged))).toMatchObject({
        _tag: "IntegrityViolation",
        sequence: 2,
        field: "callSequence"
      })
    }))

  it.effect("a v1 export still verifies and restores; the journal continues in v2; v2 fields in a v1 export are refused", () =>
    Effect.gen(function*() {
      const v1 = jsonBlocks(journalSection()).find((block) => block.format === SessionJournal.EXPORT_FORMAT_V1)
      yield* SessionJournal.verifyExport(v1)
      const restored = yield* SessionJournal.fromExport(v1)
      yield* restored.record(params("read_file", { outcome: "pending", bytesRead: 0 }))
      const continued = exportJson(yield* restored.export)
      expect(continued.format).toBe(SessionJournal.EXPORT_FORMAT)
      expect(continued.entries[1].kind).toBeUndefined()
      expect(continued.entries[2].kind).toBe("call")
      yield* SessionJournal.verifyExport(continued)
      const mixed = { ...continued, format: SessionJournal.EXPORT_FORMAT_V1 }
      expect(yield* Effect.flip(SessionJournal.verifyExport(mixed))).toMatchObject({
        _tag: "InvalidExport",
        issues: [{ path: "entries.2.kind" }]
      })
    }))
})
