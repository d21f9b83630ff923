/**
 * Dead-letter authentication format v1 (docs/FORMAT.md, "Dead-letter signature (format v1)"): what the
 * writer signs for each `signed_events_dlq` row when the ledger has a signing key, and what `dlq replay`
 * checks before it signs anything. The writer and the replayer both call `deadLetterMessage`, so the two
 * can never drift apart.
 *
 * The message is `lp(domain) || SHA-256(the stored columns, each lp-encoded)`: 63 bytes, so it is never
 * the 32 bytes a row signature covers, and its first bytes (a NUL-led length prefix) can never open a
 * signed note's text.
 */
import { digestBytes, lp } from "./encoding.js"

export const DEAD_LETTER_DOMAIN = "agent-ledger/dead-letter/v1"

/** The stored columns of a dead letter that its signature covers, as stored (text). */
export interface DeadLetterContent {
  readonly id: string
  readonly agentId: string
  readonly eventType: string
  readonly payload: string
  readonly payloadHash: string
  readonly timestamp: string
  readonly failureReason: string
  readonly failedAt: string
}

/** The columns in signing order, lp-encoded: the reference the message's digest is taken over. */
export const deadLetterContentParts = (letter: DeadLetterContent): ReadonlyArray<Uint8Array> => [
  lp(letter.id),
  lp(letter.agentId),
  lp(letter.eventType),
  lp(letter.payload),
  lp(letter.payloadHash),
  lp(letter.timestamp),
  lp(letter.failureReason),
  lp(letter.failedAt)
]

const DOMAIN = lp(DEAD_LETTER_DOMAIN)

/** The 63 bytes an Ed25519 dead-letter signature covers. */
export const deadLetterMessage = (letter: DeadLetterContent): Uint8Array =>
  Buffer.concat([DOMAIN, digestBytes(Buffer.concat(deadLetterContentParts(letter)))])
