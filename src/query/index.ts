/**
 * Operator queries over a ledger store: one row with its session entry and seal, a filtered log that can be
 * followed, sessions and one session's journal (`LedgerQuery`), as Schema-typed values and streams for the
 * CLI and the web console.
 *
 * May import: `journal/`, `transparency/`, `ledger/`, `audit/`, `internal/`. Never `guard/`, the
 * `AuditLedger` assembly or `cli/`.
 */
export * as LedgerQuery from "./LedgerQuery.js"
