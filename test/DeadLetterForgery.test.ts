/**
 * Hostile tests for the dead-letter table (issue 20, findings 6 and 7): a writer that can write the
 * database but holds no key plants or edits dead letters, and the operator's next `dlq replay` with the
 * ledger's key must sign none of them, name each, and still replay the genuine ones. A dead letter that
 * cannot be replayed at all (a lone surrogate) is listed and skipped, never an internal error, and never
 * stops `replayDeadLettersOnStart` from starting the layer. On SQLite (planted with the sqlite3 shell) and
 * on PostgreSQL (planted with psql) when `AGENT_LEDGER_PG_URL` is set.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { canonicalJson } from "../src/audit/AuditEvent.js"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import * as AuditLedger from "../src/AuditLedger.js"
import { deadLetterMessage } from "../src/internal/deadLetterFormat.js"
import * as DeadLetters from "../src/ledger/DeadLetters.js"
import * as LedgerSql from "../src/ledger/LedgerSql.js"
import * as SqlAuditSink from "../src/ledger/SqlAuditSink.js"
import { cliWorkspace } from "./fixtures/cliWorkspace.js"
import { captureLogs, quietly } from "./fixtures/effects.js"
import { refusalEvent } from "./fixtures/events.js"
import { freshDatabase, noPostgres } from "./fixtures/postgres.js"

const { cli, path } = cliWorkspace("agent-ledger-dlq-forgery-")

/** A database target and the raw SQL shell a keyless writer would use on it. */
interface Target {
  readonly db: string
  /** Runs SQL statements outside agent-ledger (no key, no sink): the attacker's writes. */
  readonly rawSql: (statements: string) => string
}

const sqliteTarget = (name: string): Target => {
  const db = path(name)
  return { db, rawSql: (statements) => execFileSync("sqlite3", [db, statements], { encoding: "utf8" }) }
}

const pgTarget = (url: string): Target => ({
  db: url,
  rawSql: (statements) =>
    execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtc", statements], { encoding: "utf8", stdio: "pipe" })
})

const sq = (text: string) => `'${text.replaceAll("'", "''")}'`

/** The signed ledger's key, written for the CLI, and an attacker's own key. */
const keys = Effect.gen(function*() {
  const ledgerKey = yield* AuditSigner.generate
  const attackerKey = yield* AuditSigner.generate
  const keyFile = path(`ledger-${ledgerKey.keyId}.pem`)
  const pubFile = path(`ledger-${ledgerKey.keyId}.pub.pem`)
  fs.writeFileSync(keyFile, AuditSigner.exportPem(ledgerKey).privateKeyPem)
  fs.writeFileSync(pubFile, AuditSigner.exportPem(ledgerKey).publicKeyPem)
  return { ledgerKey, attackerKey, keyFile, pubFile }
})

/** A lone surrogate: the queue dead-letters such an event (RFC 8785 refuses it), and replay cannot rebuild it. */
const loneSurrogateEvent = refusalEvent("agent-\uD800", 900)

/** The genuine dead letters' events (ids are random: made once). */
const dead = {
  101: refusalEvent("agent-dead", 101),
  102: refusalEvent("agent-dead", 102),
  104: refusalEvent("agent-dead", 104)
}
const behindSurrogate = refusalEvent("agent-dead", 2)

/**
 * Through the real signing sink: 2 rows in the chain, then dead letters #1 and #2 (genuine), #3 (the lone
 * surrogate, genuine but not replayable) and #4 (genuine, behind it).
 */
const genuineLedger = (db: string, signer: AuditSigner.AuditSigner) =>
  Effect.gen(function*() {
    const sink = yield* SqlAuditSink.SqlAuditSink
    yield* sink.append(refusalEvent("agent-ok", 1))
    yield* sink.append(refusalEvent("agent-ok", 2))
    yield* sink.deadLetter(dead[101], "disk full")
    yield* sink.deadLetter(dead[102], "disk full")
    expect((yield* sink.append(loneSurrogateEvent))._tag).toBe("DlqLanded")
    yield* sink.deadLetter(dead[104], "disk full")
  }).pipe(
    Effect.provide(SqlAuditSink.layer({ signer }).pipe(Layer.provideMerge(LedgerSql.layerFor(db)))),
    quietly
  )

const DLQ_INSERT =
  "INSERT INTO signed_events_dlq (id, agent_id, event_type, payload, payload_hash, timestamp, failure_reason, failed_at, signature, key_id)"

/** The columns of a dead letter for `event`, as the writer would store them. */
const letterFor = (n: number, failedAt = "2026-11-24T07:00:00.000Z") => {
  const event = refusalEvent("agent-forged", n)
  const payload = canonicalJson(event)
  return {
    event,
    content: {
      id: event.id,
      agentId: event.agentId,
      eventType: "governance.refusal",
      payload,
      payloadHash: "",
      timestamp: "2026-11-24T06:52:03.120Z",
      failureReason: "planted",
      failedAt
    }
  }
}

type Content = ReturnType<typeof letterFor>["content"]

const insertLetter = (c: Content, signature: string | null, keyId: string | null) =>
  `${DLQ_INSERT} VALUES (${
    [c.id, c.agentId, c.eventType, c.payload, c.payloadHash, c.timestamp, c.failureReason, c.failedAt].map(sq).join(
      ", "
    )
  }, ${signature === null ? "NULL" : sq(signature)}, ${keyId === null ? "NULL" : sq(keyId)});`

/**
 * The keyless writer's plants, #5 to #9: an unsigned dead letter; one carrying genuine #1's signature and
 * key id; one the attacker signed with their own key; one so signed but claiming the ledger's key id; and
 * genuine #2's twin with its payload edited (a copy of a real signature over other content).
 */
const plant = (target: Target, ledgerKey: AuditSigner.AuditSigner, attackerKey: AuditSigner.AuditSigner) => {
  const [first] = target.rawSql("SELECT signature FROM signed_events_dlq WHERE dlq_id = 1;").trim().split("\n")
  const unsigned = letterFor(501)
  const copied = letterFor(502)
  const own = letterFor(503)
  const claimed = letterFor(504)
  const ownSignature = AuditSigner.signDeadLetter(attackerKey, deadLetterMessage(own.content))
  const claimedSignature = AuditSigner.signDeadLetter(attackerKey, deadLetterMessage(claimed.content))
  target.rawSql(
    insertLetter(unsigned.content, null, null) +
      insertLetter(copied.content, first!, ledgerKey.keyId) +
      insertLetter(own.content, ownSignature, attackerKey.keyId) +
      insertLetter(claimed.content, claimedSignature, ledgerKey.keyId) +
      `${DLQ_INSERT} SELECT id, agent_id, event_type, replace(payload, 'refusal 102', 'refusal 666'), payload_hash,
         timestamp, failure_reason, failed_at, signature, key_id FROM signed_events_dlq WHERE dlq_id = 2;` +
      "DELETE FROM signed_events_dlq WHERE dlq_id = 2;" +
      // The edited twin stands in for #2; its genuine original is gone (deleting is within the attacker's reach).
      "SELECT 1;"
  )
  return [unsigned, copied, own, claimed].map((l) => l.event.id)
}

const chainIds = (target: Target) =>
  target.rawSql("SELECT id FROM signed_events ORDER BY sequence;").trim().split("\n").filter((l) => l !== "")

const forgeryScenario = (target: Target) =>
  Effect.gen(function*() {
    const { attackerKey, keyFile, ledgerKey, pubFile } = yield* keys
    yield* genuineLedger(target.db, ledgerKey)
    const plantedIds = plant(target, ledgerKey, attackerKey)
    const before = chainIds(target)
    expect(before).toHaveLength(2)

    const dry = yield* Effect.promise(() => cli("dlq", "replay", target.db, "--private-key", keyFile, "--dry-run"))
    expect(dry.code).toBe(0)
    expect(dry.stdout).toContain("2 dead letters would be replayed, 6 refused")
    expect(chainIds(target)).toEqual(before)

    const replay = yield* Effect.promise(() => cli("dlq", "replay", target.db, "--private-key", keyFile))
    expect(replay.stderr).not.toContain("internal error")
    expect(replay.code).toBe(1)
    expect(replay.stdout).toContain("replayed 2 of 8 pending dead letters")
    // Each refused dead letter is named with why.
    expect(replay.stdout).toMatch(/#3 event \S+ still pending: payload cannot be re-encoded/)
    expect(replay.stdout).toMatch(/#5 event \S+ still pending: not authenticated: the dead letter carries no signature/)
    expect(replay.stdout).toMatch(
      /#6 event \S+ still pending: not authenticated: the dead-letter signature does not verify/
    )
    expect(replay.stdout).toMatch(
      new RegExp(`#7 event \\S+ still pending: not authenticated: signed by key ${attackerKey.keyId}`)
    )
    expect(replay.stdout).toMatch(
      /#8 event \S+ still pending: not authenticated: the dead-letter signature does not verify/
    )
    expect(replay.stdout).toMatch(
      /#9 event \S+ still pending: not authenticated: the dead-letter signature does not verify/
    )

    // The genuine #1 and #4 (the one behind the unreplayable #3) are in the chain, signed; nothing planted is.
    const after = chainIds(target)
    expect(after).toEqual([...before, dead[101].id, dead[104].id])
    for (const id of plantedIds) expect(after).not.toContain(id)
    expect(target.rawSql("SELECT count(*) FROM signed_events WHERE payload LIKE '%refusal 666%';").trim()).toBe("0")
    const verified = yield* Effect.promise(() => cli("verify", target.db, "--public-key", pubFile))
    expect(verified.code).toBe(0)

    // Trusting unsigned dead letters lets through only the one that carries no signature at all.
    const trusting = yield* Effect.promise(() =>
      cli("dlq", "replay", target.db, "--private-key", keyFile, "--trust-unsigned-dead-letters")
    )
    expect(trusting.code).toBe(1)
    expect(trusting.stdout).toContain("replayed 1 of 6 pending dead letters")
    expect(chainIds(target)).toContain(plantedIds[0])
    for (const id of plantedIds.slice(1)) expect(chainIds(target)).not.toContain(id)
  })

describe("dead letters planted by a writer without the key (SQLite)", () => {
  it.live(
    "replay with the key refuses each planted or edited dead letter by name and replays the genuine ones",
    () => forgeryScenario(sqliteTarget("forged.db")),
    { timeout: 60_000 }
  )

  it.live(
    "without a key (an unsigned ledger) replay signs nothing, so dead letters are taken as they are",
    () =>
      Effect.gen(function*() {
        const target = sqliteTarget("unsigned.db")
        yield* Effect.gen(function*() {
          const sink = yield* SqlAuditSink.SqlAuditSink
          yield* sink.deadLetter(refusalEvent("agent-dead", 1), "disk full")
        }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(LedgerSql.layerFor(target.db)))), quietly)
        expect(target.rawSql("SELECT signature IS NULL, key_id IS NULL FROM signed_events_dlq;").trim()).toBe("1|1")
        target.rawSql(insertLetter(letterFor(7).content, null, null))
        const replay = yield* Effect.promise(() => cli("dlq", "replay", target.db))
        expect(replay.code).toBe(0)
        expect(replay.stdout).toContain("replayed 2 of 2")
        expect(target.rawSql("SELECT DISTINCT attest_level FROM signed_events;").trim()).toBe("unsigned")
      }),
    { timeout: 60_000 }
  )

  it.live("the writer's dead-letter signature covers the stored columns: every column edited is refused", () =>
    Effect.gen(function*() {
      const { ledgerKey } = yield* keys
      const letter = letterFor(1)
      const signature = AuditSigner.signDeadLetter(ledgerKey, deadLetterMessage(letter.content))
      const stored: DeadLetters.DeadLetter = {
        dlq_id: 1,
        id: letter.content.id,
        agent_id: letter.content.agentId,
        event_type: letter.content.eventType,
        payload: letter.content.payload,
        payload_hash: letter.content.payloadHash,
        timestamp: letter.content.timestamp,
        failure_reason: letter.content.failureReason,
        failed_at: letter.content.failedAt,
        replayed_at: null,
        signature,
        key_id: ledgerKey.keyId
      }
      const key = { keyId: ledgerKey.keyId, publicKey: ledgerKey.publicKey }
      const check = (l: DeadLetters.DeadLetter) => DeadLetters.authenticationFailure(l, Option.some(key))
      expect(check(stored)).toBeUndefined()
      for (
        const column of [
          "id",
          "agent_id",
          "event_type",
          "payload",
          "payload_hash",
          "timestamp",
          "failure_reason",
          "failed_at"
        ] as const
      ) {
        expect(check({ ...stored, [column]: `${stored[column]}x` }), column).toContain("does not verify")
      }
      // replayed_at and dlq_id are bookkeeping, not content: a replayed mark cannot forge anything.
      expect(check({ ...stored, dlq_id: 9 })).toBeUndefined()
      expect(check({ ...stored, signature: signature.toUpperCase() })).toContain("does not verify")
    }))
})

/** The fenced block tagged `test-vector:<name>` in docs/FORMAT.md. */
const formatVector = (name: string): string => {
  const doc = fs.readFileSync(new URL("../docs/FORMAT.md", import.meta.url), "utf8")
  const match = new RegExp("```\\w+ test-vector:" + name + "\\n([\\s\\S]*?)```").exec(doc)
  if (match === null) throw new Error(`docs/FORMAT.md has no test-vector:${name} block`)
  return match[1]!
}

describe("dead-letter signature test vector (docs/FORMAT.md)", () => {
  it.effect("the message, the signature under the test key, and replay's check agree with the document", () =>
    Effect.gen(function*() {
      const vector = JSON.parse(formatVector("dead-letter"))
      const pem = formatVector("row-key-pem")
      const signer = yield* AuditSigner.fromPrivateKeyPem(pem)
      const l = vector.dead_letter
      const message = deadLetterMessage({
        id: l.id,
        agentId: l.agent_id,
        eventType: l.event_type,
        payload: l.payload,
        payloadHash: l.payload_hash,
        timestamp: l.timestamp,
        failureReason: l.failure_reason,
        failedAt: l.failed_at
      })
      expect(Buffer.from(message).toString("hex")).toBe(vector.message_hex)
      expect(message.length).toBe(63)
      expect(signer.keyId).toBe(l.key_id)
      expect(AuditSigner.signDeadLetter(signer, message)).toBe(l.signature)
      const key = Option.some({ keyId: signer.keyId, publicKey: signer.publicKey })
      expect(DeadLetters.authenticationFailure({ ...l, dlq_id: 1, replayed_at: null }, key)).toBeUndefined()
      // A dead-letter signature is never a row signature: the signer refuses a 32-byte message.
      expect(() => AuditSigner.signDeadLetter(signer, new Uint8Array(32))).toThrow(RangeError)
    }))
})

describe("replay survives any dead letter", () => {
  it.live(
    "replayDeadLettersOnStart skips an unreplayable or planted dead letter and the layer starts",
    () =>
      Effect.gen(function*() {
        const target = sqliteTarget("on-start.db")
        const { ledgerKey } = yield* keys
        yield* genuineLedger(target.db, ledgerKey)
        target.rawSql(insertLetter(letterFor(9).content, null, null))
        const logs = captureLogs()
        const fresh = refusalEvent("agent-new", 5_000)
        yield* Effect.gen(function*() {
          const sink = yield* SqlAuditSink.SqlAuditSink
          yield* sink.append(fresh)
        }).pipe(
          Effect.provide(
            AuditLedger.layerSqlite({ filename: target.db, signer: ledgerKey, replayDeadLettersOnStart: true })
          ),
          Effect.provide(logs.layer)
        )
        expect(chainIds(target).slice(2)).toEqual([
          dead[101].id,
          dead[102].id,
          dead[104].id,
          fresh.id
        ])
        expect(logs.lines.filter((l) => l.message.includes("still pending after replay"))).toHaveLength(2)
      }),
    { timeout: 60_000 }
  )

  it.live("a replay that fails as a whole is logged and the layer still starts", () =>
    Effect.gen(function*() {
      const target = sqliteTarget("broken-dlq.db")
      const { ledgerKey } = yield* keys
      yield* genuineLedger(target.db, ledgerKey)
      // A dead-letter table whose rows cannot even be selected as written.
      target.rawSql("ALTER TABLE signed_events_dlq RENAME COLUMN replayed_at TO replayed_gone;")
      const logs = captureLogs()
      const fresh = refusalEvent("agent-new", 6_000)
      yield* Effect.gen(function*() {
        const sink = yield* SqlAuditSink.SqlAuditSink
        expect((yield* sink.append(fresh))._tag).toBe("Appended")
      }).pipe(
        Effect.provide(
          AuditLedger.layerSqlite({ filename: target.db, signer: ledgerKey, replayDeadLettersOnStart: true })
        ),
        Effect.provide(logs.layer)
      )
      expect(logs.lines.some((l) => l.message.includes("replaying dead letters on start failed"))).toBe(true)
      expect(chainIds(target)).toContain(fresh.id)
    }), { timeout: 60_000 })

  it.live(
    "dlq replay lists a lone-surrogate dead letter with exit 1 (never 70) and replays the ones behind it",
    () =>
      Effect.gen(function*() {
        const target = sqliteTarget("surrogate.db")
        yield* Effect.gen(function*() {
          const sink = yield* SqlAuditSink.SqlAuditSink
          expect((yield* sink.append(loneSurrogateEvent))._tag).toBe("DlqLanded")
          yield* sink.deadLetter(behindSurrogate, "disk full")
        }).pipe(Effect.provide(SqlAuditSink.layer().pipe(Layer.provideMerge(LedgerSql.layerFor(target.db)))), quietly)
        const replay = yield* Effect.promise(() => cli("dlq", "replay", target.db))
        expect(replay.code).toBe(1)
        expect(replay.stdout).toContain("replayed 1 of 2")
        expect(replay.stdout).toMatch(/#1 event \S+ still pending: payload cannot be re-encoded/)
        expect(chainIds(target)).toEqual([behindSurrogate.id])
      }),
    { timeout: 60_000 }
  )
})

describe.skipIf(noPostgres)("dead letters planted by a writer without the key (PostgreSQL)", () => {
  it.live(
    "replay with the key refuses each planted or edited dead letter by name and replays the genuine ones",
    () =>
      Effect.acquireUseRelease(
        Effect.sync(freshDatabase),
        (database) => forgeryScenario(pgTarget(database.url)),
        (database) => Effect.sync(database.drop)
      ),
    { timeout: 60_000 }
  )
})
