/**
 * C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, and C2SP transparency-log
 * checkpoints (https://c2sp.org/tlog-checkpoint), byte for byte as the specs give them, so tools that
 * speak them (Go's golang.org/x/mod/sumdb/note, transparency-dev, Sigsum) read agent-ledger's checkpoints.
 *
 * A note is UTF-8 text ending in a newline, a blank line, then signature lines `— <key name> <base64>`,
 * where the base64 holds the 4-byte key id then the 64-byte Ed25519 signature of the text. The key id of
 * an Ed25519 key is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key); the verifier key
 * is written `<name>+<8 hex digits of the key id>+<base64(0x01 || public key)>`.
 */
import { Data, Either } from "effect"
import { createHash, createPublicKey, sign, verify } from "node:crypto"
import type { KeyObject } from "node:crypto"

/** Why a note or a verifier key was refused. */
export class NoteError extends Data.TaggedError("NoteError")<{
  readonly reason: "malformed" | "unknownKey" | "badSignature" | "badKey"
  readonly detail: string
}> {
  override get message(): string {
    return `signed note: ${this.detail}`
  }
}

const ED25519 = 0x01
const EM_DASH = "\u2014"
/** The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it. */
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex")

/** The raw 32 bytes of an Ed25519 public key. */
export const rawPublicKey = (key: KeyObject): Buffer => {
  const der = key.export({ format: "der", type: "spki" })
  return der.subarray(der.length - 32)
}

const publicKeyOf = (raw: Uint8Array): KeyObject =>
  createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" })

/** A key name: non-empty, no spaces, no `+`, no newlines (the spec's rule). */
const validName = (name: string): boolean => name.length > 0 && !/[\s+]/u.test(name)

/** The 4-byte key id of an Ed25519 key named `name`. */
export const keyId = (name: string, publicKey: Uint8Array): Buffer =>
  createHash("sha256").update(name, "utf8").update(Uint8Array.of(0x0a, ED25519)).update(publicKey).digest()
    .subarray(0, 4)

/** The verifier key string: `<name>+<hex key id>+<base64(0x01 || public key)>`. */
export const verifierKey = (name: string, publicKey: KeyObject): string => {
  const raw = rawPublicKey(publicKey)
  return `${name}+${keyId(name, raw).toString("hex")}+${
    Buffer.concat([Uint8Array.of(ED25519), raw]).toString("base64")
  }`
}

export interface Verifier {
  readonly name: string
  readonly keyId: Buffer
  readonly publicKey: KeyObject
}

/** Parses a verifier key string (Ed25519 only); its key id must match its name and key. */
export const parseVerifierKey = (text: string): Either.Either<Verifier, NoteError> => {
  const bad = (detail: string) => Either.left(new NoteError({ reason: "badKey", detail }))
  // The name cannot hold a `+`; the base64 key can.
  const match = /^([^+]+)\+([^+]*)\+(.+)$/su.exec(text.trim())
  if (match === null) return bad("a verifier key is <name>+<key id>+<key>")
  const [, name, hex, key] = match as unknown as [string, string, string, string]
  if (!validName(name) || !/^[0-9a-f]{8}$/.test(hex)) return bad("bad name or key id in the verifier key")
  const bytes = Buffer.from(key, "base64")
  if (bytes.toString("base64") !== key) return bad("the key is not canonical base64")
  if (bytes.length !== 33 || bytes[0] !== ED25519) return bad("only Ed25519 verifier keys (type 0x01) are supported")
  const raw = bytes.subarray(1)
  const id = keyId(name, raw)
  if (id.toString("hex") !== hex) return bad("the key id does not match the name and key")
  return Either.right({ name, keyId: id, publicKey: publicKeyOf(raw) })
}

/**
 * Signs `text` (which must end in a newline) as key `name`, with a private key or a signing function
 * (`(bytes) => AuditSigner.signNote(signer, bytes)`): the whole note, text and signature line.
 */
export const signNote = (
  text: string,
  name: string,
  signer: KeyObject | ((message: Uint8Array) => Uint8Array),
  publicKey: KeyObject
): string => {
  if (!text.endsWith("\n")) throw new Error("a note's text ends with a newline")
  const bytes = Buffer.from(text, "utf8")
  const signature = typeof signer === "function" ? signer(bytes) : sign(null, bytes, signer)
  const id = keyId(name, rawPublicKey(publicKey))
  return `${text}\n${EM_DASH} ${name} ${Buffer.concat([id, signature]).toString("base64")}\n`
}

/** The most signature lines a note may carry (the spec asks verifiers for a limit of at least 16). */
const MAX_SIGNATURES = 100

/**
 * Verifies a signed note with `verifier`: returns its text when a signature line of that key verifies.
 * Signatures of other keys are ignored (a note may carry several, e.g. witnesses'); a signature of this
 * key that does not verify rejects the whole note, as the spec recommends.
 */
export const verifyNote = (note: string, verifier: Verifier): Either.Either<string, NoteError> => {
  const malformed = (detail: string) => Either.left(new NoteError({ reason: "malformed", detail }))
  if (/[\u0000-\u0009\u000b-\u001f\ufffd]/u.test(note)) {
    return malformed("a signed note holds no control characters other than newline, and is valid UTF-8")
  }
  const split = note.lastIndexOf("\n\n")
  if (split < 0 || !note.endsWith("\n")) return malformed("a signed note is text, a blank line, signature lines")
  const text = note.slice(0, split + 1)
  const lines = note.slice(split + 2, -1).split("\n")
  if (lines.length > MAX_SIGNATURES) return malformed(`more than ${MAX_SIGNATURES} signature lines`)
  let verified = false
  for (const line of lines) {
    const match = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/u.exec(line)
    if (match === null) return malformed(`not a signature line: ${JSON.stringify(line)}`)
    const bytes = Buffer.from(match[2]!, "base64")
    // Standard, padded base64 only (as Go's sumdb/note reads it): re-encoding gives the text back.
    if (bytes.toString("base64") !== match[2]) {
      return malformed(`a signature is not standard base64: ${JSON.stringify(line)}`)
    }
    if (match[1] !== verifier.name || bytes.length < 4 || !bytes.subarray(0, 4).equals(verifier.keyId)) continue
    if (bytes.length !== 68 || !verify(null, Buffer.from(text, "utf8"), verifier.publicKey, bytes.subarray(4))) {
      return Either.left(
        new NoteError({ reason: "badSignature", detail: `the signature of ${verifier.name} does not verify` })
      )
    }
    verified = true
  }
  return verified ? Either.right(text) : Either.left(
    new NoteError({
      reason: "unknownKey",
      detail: `no signature by ${verifier.name}+${verifier.keyId.toString("hex")}`
    })
  )
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints (C2SP tlog-checkpoint)
// ---------------------------------------------------------------------------------------------------------

export interface Checkpoint {
  /** The log's origin: a unique name, e.g. `example.com/agent-ledger/prod`. */
  readonly origin: string
  readonly treeSize: number
  readonly rootHash: Uint8Array
}

/** The checkpoint's note text: origin, decimal tree size, base64 root hash, each on its line. */
export const formatCheckpoint = (checkpoint: Checkpoint): string =>
  `${checkpoint.origin}\n${checkpoint.treeSize}\n${Buffer.from(checkpoint.rootHash).toString("base64")}\n`

/** Parses a checkpoint's text (extension lines after the third are allowed and ignored). */
export const parseCheckpoint = (text: string): Either.Either<Checkpoint, NoteError> => {
  const malformed = (detail: string) => Either.left(new NoteError({ reason: "malformed", detail }))
  const lines = text.split("\n")
  if (lines.length < 4 || lines[lines.length - 1] !== "") return malformed("a checkpoint has three lines")
  const [origin, size, root] = lines as [string, string, string]
  if (origin.length === 0) return malformed("the checkpoint has no origin")
  if (!/^(0|[1-9][0-9]*)$/.test(size) || !Number.isSafeInteger(Number(size))) {
    return malformed("the tree size is not a decimal number")
  }
  const rootHash = Buffer.from(root, "base64")
  if (rootHash.length !== 32 || rootHash.toString("base64") !== root) {
    return malformed("the root hash is not 32 bytes of base64")
  }
  return Either.right({ origin, treeSize: Number(size), rootHash })
}
