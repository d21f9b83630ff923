// The README's usage example, compiled and run by test/readme.test.ts so it cannot rot.
import { Effect } from "effect"
import { AuditEvent, AuditLedger, AuditQueue, LedgerVerifier, SessionJournal } from "../src/index.js"

export const program = (filename: string) =>
  Effect.gen(function*() {
    const journal = yield* SessionJournal.make("session-1")
    const queue = yield* AuditQueue.AuditQueue
    yield* journal.record({
      toolName: "upload_blob",
      serverId: "exfil-relay",
      agentId: "agent-7",
      bytesRead: 0,
      bytesWritten: 0,
      delegationDepth: 1,
      allowed: false
    })
    yield* queue.submitRefusal(
      "agent-7",
      new AuditEvent.ToolCall({ toolName: "upload_blob", serverId: "exfil-relay" }),
      new AuditEvent.Refuse({ ruleId: "R-BLOCKED-SERVER", reason: "exfil-relay is blocked" })
    )
    yield* queue.drainPending("5 seconds")
    return { journal: yield* journal.dataFlow, ledger: yield* LedgerVerifier.verifyLedger() }
  }).pipe(Effect.provide(AuditLedger.layerSqlite({ filename })))
