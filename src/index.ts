/**
 * agent-ledger: tamper-evident session journals and a governance audit pipeline for AI-agent guards.
 * Each module is one concept; import them as namespaces (`import { AuditQueue } from "agent-ledger"`).
 */
export * as AuditEvent from "./AuditEvent.js"
export * as AuditLedger from "./AuditLedger.js"
export * as AuditMetrics from "./AuditMetrics.js"
export * as AuditQueue from "./AuditQueue.js"
export * as AuditSigner from "./AuditSigner.js"
export * as AuditSink from "./AuditSink.js"
export * as DeadLetters from "./DeadLetters.js"
export * as GuardPolicy from "./GuardPolicy.js"
export * as JournalSeal from "./JournalSeal.js"
export * as LedgerExport from "./LedgerExport.js"
export * as LedgerRow from "./LedgerRow.js"
export * as LedgerSql from "./LedgerSql.js"
export * as LedgerStats from "./LedgerStats.js"
export * as LedgerVerifier from "./LedgerVerifier.js"
export * as McpGuard from "./McpGuard.js"
export * as McpProxy from "./McpProxy.js"
export * as SessionJournal from "./SessionJournal.js"
export * as SessionJournals from "./SessionJournals.js"
export * as SqlAuditSink from "./SqlAuditSink.js"
