/**
 * The ledger as a transparency log: RFC 6962 Merkle trees and proofs (`MerkleTree`), C2SP signed notes
 * (`SignedNote`), checkpoints, receipts and consistency proofs over the ledger's rows (`LedgerTransparency`),
 * receipts for single tool calls (`CallReceipt`) and offline evidence bundles (`EvidenceBundle`).
 *
 * May import: `ledger/`, `audit/`, `internal/`. Never `guard/`, `journal/` or the `AuditLedger` assembly.
 */
export * as CallReceipt from "./CallReceipt.js"
export * as EvidenceBundle from "./EvidenceBundle.js"
export * as LedgerTransparency from "./LedgerTransparency.js"
export * as MerkleTree from "./MerkleTree.js"
export * as SignedNote from "./SignedNote.js"
