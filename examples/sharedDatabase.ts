// The ledger's tables in the application's own database (README, "Beside the application's own database").
import { Layer } from "effect"
import { LedgerSql, SqlAuditSink } from "../src/index.js"

// Needs the application's SqlClient; migrates the ledger's tables into that database once.
export const SinkOnAppDatabase = SqlAuditSink.layer().pipe(
  Layer.provide(LedgerSql.migrate.pipe(Layer.provideMerge(LedgerSql.fromSqlClient)))
)
