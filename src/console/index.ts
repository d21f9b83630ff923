/**
 * The auditor's console: a read-only web view of a ledger database, served on @effect/platform's HTTP
 * server. What it reads (`ConsoleQueries`), its "verify now" runs (`ConsoleVerifier`), receipts for download
 * (`ConsoleReceipts`), the pages (`ConsolePages`, `Html`), the files the pages load (`ConsoleAssets`) and
 * the routes with their host and token checks (`ConsoleServer`). The CLI's `console` command assembles them.
 *
 * May import: `query/`, `guard/`, `transparency/`, `journal/`, `ledger/`, `audit/`, `internal/`. Never `cli/`.
 */
export * as ConsoleAssets from "./ConsoleAssets.js"
export * as ConsolePages from "./ConsolePages.js"
export * as ConsoleQueries from "./ConsoleQueries.js"
export * as ConsoleReceipts from "./ConsoleReceipts.js"
export * as ConsoleServer from "./ConsoleServer.js"
export * as ConsoleVerifier from "./ConsoleVerifier.js"
export * as Html from "./Html.js"
