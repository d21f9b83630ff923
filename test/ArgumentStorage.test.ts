/**
 * Privacy by default, on every path a tool call reaches a signed row: what the stored payload holds of the
 * arguments when the library builds the call (`AuditEvent.toolCall` under `AuditLedger.layerSqlite`), when
 * the ledger is told to keep them (`argumentStorage`), when the MCP guard builds it (the policy's
 * `argumentStorage`), and for custom events (kept as given, documented). Each test reads the payload bytes
 * the ledger stored and signed, not the event in memory.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ArgumentStorage from "../src/audit/ArgumentStorage.js"
import * as AuditEvent from "../src/audit/AuditEvent.js"
import * as AuditQueue from "../src/audit/AuditQueue.js"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import { LedgerVerifier } from "../src/ledger/index.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"

const SECRET = "4111-1111-1111-1111"
const ARGS = { path: "/var/big", card: SECRET, note: { who: "alice" } }
const refuse = new AuditEvent.Refuse({ ruleId: "r", reason: "no" })

/** The ledger on the caller's thread (what it keeps of arguments is decided before the writer sees them). */
const ledger = (options: Omit<AuditLedger.SqliteOptions, "filename"> & { readonly filename?: string } = {}) =>
  AuditLedger.layerSqlite({ filename: scratch(), writerThread: false, ...options })

const scratch = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "args-")), "ledger.db")

/** The `payload` column of every row, as stored (and signed), plus the ledger's salt. */
const storedPayloads = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ payload: string }>`SELECT payload FROM signed_events ORDER BY sequence`
  return rows.map((row) => row.payload)
}).pipe((effect) => LedgerSql.use(effect))

/** Submits one library-built refusal of `write_file` with `ARGS` and returns the stored payloads. */
const libraryRefusal = Effect.gen(function*() {
  const action = yield* AuditEvent.toolCall({ toolName: "write_file", serverId: "fs", arguments: ARGS })
  const queue = yield* AuditQueue.AuditQueue
  yield* queue.submitRefusal("agent-1", action, refuse)
  expect(yield* queue.drainPending("5 seconds")).toBe(true)
  expect((yield* LedgerVerifier.verifyLedger()).ok).toBe(true)
  return {
    payloads: yield* storedPayloads,
    salt: yield* LedgerSql.argumentSalt,
    action
  }
})

describe("ArgumentStorage: what a signed row keeps of tool arguments", () => {
  it.effect("library toolCall, default: the salted digest and size only; an auditor checks it with digest", () =>
    Effect.gen(function*() {
      const { action, payloads, salt } = yield* libraryRefusal
      expect(payloads).toHaveLength(1)
      const payload = payloads[0]!
      for (const value of [SECRET, "/var/big", "alice", "card", "path"]) expect(payload).not.toContain(value)
      const stored = JSON.parse(payload).action.arguments
      expect(Object.keys(stored).sort()).toEqual(["bytes", "sha256"])
      // Checkable by whoever is handed the value and the salt; not by a guess without the salt.
      expect(stored).toEqual(ArgumentStorage.digest(ARGS, salt))
      expect(stored.bytes).toBe(Buffer.byteLength(JSON.stringify(ARGS)))
      expect(stored.sha256).not.toBe(ArgumentStorage.digest(ARGS, "").sha256)
      expect(salt).toMatch(/^[0-9a-f]{64}$/)
      expect(action.arguments).toEqual(stored)
    }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename: scratch() }))))

  it.effect("library toolCall, storage asked for: storeAll keeps every field; per tool keeps, hashes, drops", () =>
    Effect.gen(function*() {
      const filename = scratch()
      const all = yield* libraryRefusal.pipe(
        Effect.provide(ledger({ filename, argumentStorage: ArgumentStorage.storeAll }))
      )
      expect(JSON.parse(all.payloads[0]!).action.arguments.fields).toEqual(ARGS)

      const some = yield* libraryRefusal.pipe(
        Effect.provide(ledger({
          filename,
          argumentStorage: { "write_*": { store: ["path"], hash: ["card"] }, "*": { otherFields: "store" } }
        }))
      )
      // The same ledger, so the same salt: both rows' whole-argument digests agree.
      expect(some.salt).toBe(all.salt)
      const second = JSON.parse(some.payloads[1]!).action.arguments
      expect(second.fields).toEqual({ path: "/var/big", card: ArgumentStorage.digest(SECRET, some.salt) })
      expect(some.payloads[1]).not.toContain(SECRET)
      expect(some.payloads[1]).not.toContain("alice")
      expect(second.sha256).toBe(JSON.parse(all.payloads[0]!).action.arguments.sha256)
    }))

  it.effect("two ledgers, two salts: one value's digests differ (no cross-ledger correlation)", () =>
    Effect.gen(function*() {
      const a = yield* libraryRefusal.pipe(Effect.provide(ledger()))
      const b = yield* libraryRefusal.pipe(Effect.provide(ledger()))
      expect(a.salt).not.toBe(b.salt)
      expect(JSON.parse(a.payloads[0]!).action.arguments.sha256).not.toBe(
        JSON.parse(b.payloads[0]!).action.arguments.sha256
      )
    }))

  it.scoped("guard path: the policy's argumentStorage, the same digest as the library's for the same salt", () =>
    Effect.gen(function*() {
      const policy = yield* GuardPolicy.decode({
        version: 1,
        rules: [{ id: "no-write", kind: "blockTools", tools: ["write_file", "upload"] }],
        argumentStorage: { "upload": { store: ["path"] } }
      })
      const salt = yield* LedgerSql.argumentSalt
      const guard = yield* McpGuard.McpGuard.pipe(
        Effect.provide(McpGuard.layer({ policy: GuardPolicy.engine(policy, { salt }), sealEvery: 0 }))
      )
      const at = { sessionId: "s", agentId: "a", serverId: "fs" }
      expect((yield* guard.check({ ...at, toolName: "write_file", arguments: ARGS }))._tag).toBe("Refused")
      expect((yield* guard.check({ ...at, toolName: "upload", arguments: ARGS }))._tag).toBe("Refused")
      expect(yield* (yield* AuditQueue.AuditQueue).drainPending("5 seconds")).toBe(true)
      const payloads = (yield* storedPayloads).filter((p) => p.includes("governance") || p.includes("Refuse"))
      expect(payloads).toHaveLength(2)
      for (const payload of payloads) expect(payload).not.toContain(SECRET)
      const [whole, some] = payloads.map((p) => JSON.parse(p).action.arguments)
      expect(whole).toEqual(ArgumentStorage.digest(ARGS, salt))
      expect(some).toEqual({ ...ArgumentStorage.digest(ARGS, salt), fields: { path: "/var/big" } })
      // One implementation: the library, given the policy's vocabulary, stores the same thing.
      expect(ArgumentStorage.storedArguments(policy.argumentStorage, "upload", ARGS, salt)).toEqual(some)
    }).pipe(Effect.provide(Layer.fresh(ledger()))))

  it.effect("custom events are stored as given (the application's own record; documented)", () =>
    Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      yield* queue.submitRefusal("agent-1", yield* AuditEvent.custom("memory_write", { card: SECRET }), refuse)
      expect(yield* queue.drainPending("5 seconds")).toBe(true)
      expect((yield* storedPayloads)[0]).toContain(SECRET)
    }).pipe(Effect.provide(ledger())))

  it("toolCall cannot run without ArgumentStorage: no silent verbatim default", () => {
    const built = AuditEvent.toolCall({ toolName: "t", serverId: "s", arguments: ARGS })
    // @ts-expect-error: ArgumentStorage is required, so the compiler refuses a program that forgot it.
    const unprovided: Effect.Effect<AuditEvent.ToolCall, AuditEvent.InvalidJson, never> = built
    expect(Effect.runSyncExit(unprovided)._tag).toBe("Failure")
  })

  it("non-object arguments and unmatched tools keep only the digest, whatever the storage", () => {
    const tools: ArgumentStorage.Tools = { "write_*": { otherFields: "store" } }
    expect(ArgumentStorage.storedArguments(tools, "write_file", ["a", SECRET], "s")).toEqual(
      ArgumentStorage.digest(["a", SECRET], "s")
    )
    expect(ArgumentStorage.storedArguments(tools, "read_file", { card: SECRET }, "s")).toEqual(
      ArgumentStorage.digest({ card: SECRET }, "s")
    )
    // Look-alike tool names match as the guard's rules do.
    expect(ArgumentStorage.storedArguments(tools, "ＷＲＩＴＥ_file", { card: SECRET }, "s")).toMatchObject({
      fields: { card: SECRET }
    })
  })

  it("matches the test vector of docs/FORMAT.md, \"Argument digests\"", () => {
    const salt = "00".repeat(32)
    expect(ArgumentStorage.digest({ path: "/var/big", mode: 420 }, salt)).toEqual({
      bytes: 30,
      sha256: "135908ef1b4461ac5cd45352767e259c9432e12e763560317606b087f1725ce2"
    })
    expect(ArgumentStorage.storedArguments(
      { "write_*": { store: ["path"], hash: ["content"] } },
      "write_file",
      { path: "/tmp/out.txt", content: "secret", mode: 420 },
      salt
    )).toEqual({
      bytes: 53,
      fields: {
        content: { bytes: 8, sha256: "7133f0f7db01b646c08de2385e09b291e4eeab9042855d03a658c08e2fe667ae" },
        path: "/tmp/out.txt"
      },
      sha256: "ada28fd22dfab120e971742df2c5ee53ab67f5f56cf9ccc0bf1d59ae7c8eb6c6"
    })
  })
})
