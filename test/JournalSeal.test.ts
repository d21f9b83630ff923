/** Comparing a journal export with the ledger's seals of its session (docs/FORMAT.md, "Session seal"). */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as JournalSeal from "../src/journal/JournalSeal.js"
import * as SessionJournal from "../src/journal/SessionJournal.js"

const exportOf = (calls: number) =>
  Effect.gen(function*() {
    const journal = yield* SessionJournal.make("sess")
    for (let i = 0; i < calls; i++) {
      yield* journal.record({
        toolName: `t${i}`,
        serverId: "s",
        agentId: "a",
        bytesRead: i,
        bytesWritten: 0,
        delegationDepth: 0,
        allowed: true
      })
    }
    return yield* journal.export
  })

const sealOf = (exported: SessionJournal.JournalExport, length: number, sequence = 7): JournalSeal.SealRow => ({
  sequence,
  sessionId: exported.sessionId,
  length,
  headHash: length === 0 ? "0".repeat(64) : exported.entries[length - 1]!.entryHash
})

describe("JournalSeal.check", () => {
  it.effect("sealed, a sealed prefix, a mismatch, unsealed; the last seal counts", () =>
    Effect.gen(function*() {
      const exported = yield* exportOf(4)
      expect(JournalSeal.check(exported, [sealOf(exported, 4)]).status).toBe("sealed")
      expect(JournalSeal.check(exported, [sealOf(exported, 4), sealOf(exported, 2, 9)]).status).toBe("sealedPrefix")
      expect(JournalSeal.check(exported, [sealOf(exported, 0)]).status).toBe("sealedPrefix")
      expect(JournalSeal.check(exported, []).status).toBe("unsealed")
      // A seal longer than the export: entries were cut after the seal.
      expect(JournalSeal.check(exported, [{ ...sealOf(exported, 4), length: 5 }]).status).toBe("mismatch")
      // A seal whose head is not the export's entry: the journal was rewritten.
      const rewritten = { ...sealOf(exported, 3), headHash: "f".repeat(64) }
      const check = JournalSeal.check(exported, [rewritten])
      expect(check.status).toBe("mismatch")
      expect(check.detail).toContain("ledger sequence 7")
    }))
})
