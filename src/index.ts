/**
 * agent-ledger: tamper-evident session journals and a governance audit pipeline for AI-agent guards.
 */
export {}
