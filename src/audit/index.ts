/**
 * The governance audit pipeline's core: the events a guard submits (`AuditEvent`), what a row keeps of
 * a tool call's arguments (`ArgumentStorage`), the queue and its
 * supervised drainer (`AuditQueue`), the sink interface it drains into (`AuditSink`), the Ed25519 signer
 * (`AuditSigner`), the pipeline's metrics (`AuditMetrics`) and an in-memory sink for tests (`MemorySink`).
 * Nothing here knows about SQL.
 *
 * May import: `internal/` only.
 */
export * as ArgumentStorage from "./ArgumentStorage.js"
export * as AuditEvent from "./AuditEvent.js"
export * as AuditMetrics from "./AuditMetrics.js"
export * as AuditQueue from "./AuditQueue.js"
export * as AuditSigner from "./AuditSigner.js"
export * as AuditSink from "./AuditSink.js"
export * as MemorySink from "./MemorySink.js"
