/**
 * Session journals: the per-session hash-chained record of an agent's tool calls (`SessionJournal`), a
 * registry of live journals (`SessionJournals`) and the seal rows that commit a journal's length and head to
 * the ledger (`JournalSeal`).
 *
 * May import: `ledger/` (the seal is a ledger row), `audit/`, `internal/`. Never `guard/`, `transparency/`
 * or the `AuditLedger` assembly.
 */
export * as JournalSeal from "./JournalSeal.js"
export * as SessionJournal from "./SessionJournal.js"
export * as SessionJournals from "./SessionJournals.js"
