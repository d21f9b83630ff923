/**
 * The ledger store: its own SQL connection and migrations (`LedgerSql`), the SQL sink that appends the
 * signed hash chain (`SqlAuditSink`) and the thread it writes in (`LedgerWriter`), the row schema (`LedgerRow`),
 * session journal entries made durable (`JournalStore`, rows `JournalRow`), the verifier (`LedgerVerifier`), exports
 * (`LedgerExport`), statistics (`LedgerStats`) and the dead-letter table (`DeadLetters`).
 *
 * May import: `audit/`, `internal/`. Never `journal/`, `transparency/`, `guard/` or the `AuditLedger`
 * assembly.
 */
export * as DeadLetters from "./DeadLetters.js"
export * as JournalRow from "./JournalRow.js"
export * as JournalStore from "./JournalStore.js"
export * as JournalVerifier from "./JournalVerifier.js"
export * as LedgerExport from "./LedgerExport.js"
export * as LedgerRow from "./LedgerRow.js"
export * as LedgerSql from "./LedgerSql.js"
export * as LedgerStats from "./LedgerStats.js"
export * as LedgerVerifier from "./LedgerVerifier.js"
export * as LedgerWriter from "./LedgerWriter.js"
export * as SqlAuditSink from "./SqlAuditSink.js"
