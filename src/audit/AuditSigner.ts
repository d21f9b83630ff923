/**
 * Ed25519 signing of ledger rows (docs/FORMAT.md, "Ledger row v1"): an `AuditSigner` signs the 32 raw bytes
 * of a row's `entry_hash`; a `Keyring` holds the public keys, by `key_id`, that a verifier accepts, so rows
 * signed by a key that was rotated out still verify while its public key is kept.
 *
 * Keys are node:crypto `KeyObject`s created once, when the signer or keyring is made. Private keys load
 * from PKCS#8 PEM, public keys from SPKI PEM. The private key of a signer is held in a JS private field:
 * printing or logging a signer never shows it, and only `exportPem` reads it (for `keygen`).
 */
import { Effect, Either, Option, Schema } from "effect"
import type { KeyObject } from "node:crypto"
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as ed25519Sign,
  verify as ed25519Verify
} from "node:crypto"
import { readFile } from "node:fs/promises"

/** Signs ledger rows with one Ed25519 private key. */
export interface AuditSigner {
  /** Lowercase hex of the first 8 bytes of SHA-256(raw 32-byte Ed25519 public key): 16 chars. */
  readonly keyId: string
  readonly publicKey: KeyObject
  /** Ed25519 over the 32 raw bytes of `entry_hash`, as 128 lowercase hex chars. */
  readonly sign: (entryHash: Uint8Array) => string
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/**
 * A key could not be loaded. `reason` says which way it went wrong:
 * - `missingFile`: no file at `path`
 * - `unreadable`: the file exists but cannot be read (a directory, no permission, ...)
 * - `notPem`: the text holds no PEM block
 * - `wrongKeyType`: a PEM key, but not the one expected (a public key where a private key is expected or
 *   the reverse, an encrypted or non-PKCS#8 key, an RSA or EC key instead of Ed25519)
 * - `invalidKey`: the PEM block has the expected label but its content is not a valid key
 */
export class KeyLoadError extends Schema.TaggedError<KeyLoadError>()("KeyLoadError", {
  /** The file the key was read from; absent when the PEM text was passed directly. */
  path: Schema.optional(Schema.String),
  reason: Schema.Literal("missingFile", "unreadable", "notPem", "wrongKeyType", "invalidKey"),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.path ?? "<PEM text>"}: ${this.detail}`
  }
}

type KeyLoadReason = KeyLoadError["reason"]

const keyLoadError = (path: string | undefined, reason: KeyLoadReason, detail: string): KeyLoadError =>
  new KeyLoadError(path === undefined ? { reason, detail } : { path, reason, detail })

// ---------------------------------------------------------------------------------------------------------
// Key ids
// ---------------------------------------------------------------------------------------------------------

const isEd25519 = (key: KeyObject): boolean => key.type !== "secret" && key.asymmetricKeyType === "ed25519"

const publicOf = (key: KeyObject): KeyObject => key.type === "private" ? createPublicKey(key) : key

/** The raw 32-byte Ed25519 public key (RFC 8032 encoding). */
const rawPublicKey = (publicKey: KeyObject): Buffer => {
  const jwk = publicOf(publicKey).export({ format: "jwk" })
  if (jwk.x === undefined) throw new TypeError("keyIdOf: not an Ed25519 key")
  return Buffer.from(jwk.x, "base64url")
}

/**
 * `key_id` of an Ed25519 public key: lowercase hex of the first 8 bytes of SHA-256 over the raw 32-byte
 * public key. A private key is accepted and stands for its public key.
 */
export const keyIdOf = (publicKey: KeyObject): string =>
  createHash("sha256").update(rawPublicKey(publicKey)).digest().subarray(0, 8).toString("hex")

// ---------------------------------------------------------------------------------------------------------
// Signers
// ---------------------------------------------------------------------------------------------------------

class Ed25519Signer implements AuditSigner {
  readonly keyId: string
  readonly publicKey: KeyObject
  readonly #privateKey: KeyObject

  constructor(privateKey: KeyObject) {
    this.#privateKey = privateKey
    this.publicKey = createPublicKey(privateKey)
    this.keyId = keyIdOf(this.publicKey)
  }

  readonly sign = (entryHash: Uint8Array): string => {
    // A hex string's bytes (64) or any other length here is a caller bug, not a condition to recover from.
    if (entryHash.length !== 32) {
      throw new RangeError(`AuditSigner.sign: expected the 32 raw bytes of entry_hash, got ${entryHash.length}`)
    }
    return ed25519Sign(null, entryHash, this.#privateKey).toString("hex")
  }

  /**
   * Ed25519 over a signed note's text (C2SP signed-note; `SignedNote`). Never 32 bytes long, so a note
   * signature can never stand for a row's (which signs exactly the 32 bytes of an entry hash).
   */
  static signNote(signer: AuditSigner, text: Uint8Array): Uint8Array {
    if (!(signer instanceof Ed25519Signer)) {
      throw new TypeError("AuditSigner.signNote: the signer was not made by AuditSigner")
    }
    if (text.length === 32) throw new RangeError("AuditSigner.signNote: a note's text is never 32 bytes")
    return ed25519Sign(null, text, signer.#privateKey)
  }

  /**
   * Ed25519 over a dead letter's message (internal/deadLetterFormat.ts): 63 bytes, never the 32 a row
   * signature covers, so a dead-letter signature can never stand for a row's.
   */
  static signDeadLetter(signer: AuditSigner, message: Uint8Array): string {
    if (!(signer instanceof Ed25519Signer)) {
      throw new TypeError("AuditSigner.signDeadLetter: the signer was not made by AuditSigner")
    }
    if (message.length === 32) {
      throw new RangeError("AuditSigner.signDeadLetter: a dead letter's message is never 32 bytes")
    }
    return ed25519Sign(null, message, signer.#privateKey).toString("hex")
  }

  static exportPem(signer: AuditSigner): { readonly privateKeyPem: string; readonly publicKeyPem: string } {
    if (!(signer instanceof Ed25519Signer)) {
      throw new TypeError("AuditSigner.exportPem: the signer was not made by AuditSigner (no exportable key)")
    }
    return {
      privateKeyPem: signer.#privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      publicKeyPem: signer.publicKey.export({ type: "spki", format: "pem" }).toString()
    }
  }
}

/** A signer with a fresh random Ed25519 key pair. */
export const generate: Effect.Effect<AuditSigner> = Effect.sync(() =>
  new Ed25519Signer(generateKeyPairSync("ed25519").privateKey)
)

const PEM_LABEL = /-----BEGIN ([A-Z0-9 ]+)-----/

const pemLabel = (text: string): string | undefined => PEM_LABEL.exec(text)?.[1]

const parsePrivateKey = (pem: string, path: string | undefined): Effect.Effect<KeyObject, KeyLoadError> =>
  Effect.suspend(() => {
    const label = pemLabel(pem)
    if (label === undefined) {
      return Effect.fail(keyLoadError(path, "notPem", "no PEM block (expected -----BEGIN PRIVATE KEY-----)"))
    }
    if (label === "PUBLIC KEY") {
      return Effect.fail(
        keyLoadError(path, "wrongKeyType", "found a public key (SPKI); expected a PKCS#8 Ed25519 private key")
      )
    }
    if (label === "ENCRYPTED PRIVATE KEY") {
      return Effect.fail(keyLoadError(path, "wrongKeyType", "encrypted private keys are not supported"))
    }
    if (label !== "PRIVATE KEY") {
      return Effect.fail(
        keyLoadError(path, "wrongKeyType", `found a "${label}" PEM block; expected a PKCS#8 "PRIVATE KEY"`)
      )
    }
    return Effect.try({
      try: () => createPrivateKey({ key: pem, format: "pem" }),
      catch: (cause) => keyLoadError(path, "invalidKey", `not a valid PKCS#8 private key (${String(cause)})`)
    }).pipe(Effect.filterOrFail(isEd25519, (key) =>
      keyLoadError(
        path,
        "wrongKeyType",
        `found a ${key.asymmetricKeyType ?? "non-asymmetric"} private key; expected Ed25519`
      )))
  })

const parsePublicKey = (pem: string, path: string | undefined): Either.Either<KeyObject, KeyLoadError> => {
  const label = pemLabel(pem)
  if (label === undefined) {
    return Either.left(keyLoadError(path, "notPem", "no PEM block (expected -----BEGIN PUBLIC KEY-----)"))
  }
  // node would derive a public key from a private one; a keyring file must never hold a private key.
  if (label.endsWith("PRIVATE KEY")) {
    return Either.left(keyLoadError(path, "wrongKeyType", "found a private key; a keyring takes SPKI public keys only"))
  }
  if (label !== "PUBLIC KEY") {
    return Either.left(
      keyLoadError(path, "wrongKeyType", `found a "${label}" PEM block; expected an SPKI "PUBLIC KEY"`)
    )
  }
  let key: KeyObject
  try {
    key = createPublicKey({ key: pem, format: "pem" })
  } catch (cause) {
    return Either.left(keyLoadError(path, "invalidKey", `not a valid SPKI public key (${String(cause)})`))
  }
  return isEd25519(key) ? Either.right(key) : Either.left(
    keyLoadError(
      path,
      "wrongKeyType",
      `found a ${key.asymmetricKeyType ?? "non-asymmetric"} public key; expected Ed25519`
    )
  )
}

const readKeyFile = (path: string): Effect.Effect<string, KeyLoadError> =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (cause) => {
      const code = (cause as NodeJS.ErrnoException | undefined)?.code
      return code === "ENOENT" || code === "ENOTDIR"
        ? keyLoadError(path, "missingFile", "no such file")
        : keyLoadError(path, "unreadable", `cannot read the file (${code ?? String(cause)})`)
    }
  })

/** A signer from a PKCS#8 PEM Ed25519 private key given as text. */
export const fromPrivateKeyPem = (pem: string): Effect.Effect<AuditSigner, KeyLoadError> =>
  Effect.map(parsePrivateKey(pem, undefined), (key) => new Ed25519Signer(key))

/** A signer from a file holding a PKCS#8 PEM Ed25519 private key. */
export const loadPrivateKeyFile = (path: string): Effect.Effect<AuditSigner, KeyLoadError> =>
  readKeyFile(path).pipe(
    Effect.flatMap((pem) => parsePrivateKey(pem, path)),
    Effect.map((key) => new Ed25519Signer(key))
  )

/** Ed25519 over a signed note's text with the signer's key (see `SignedNote.signNote`). */
export const signNote = (signer: AuditSigner, text: Uint8Array): Uint8Array => Ed25519Signer.signNote(signer, text)

/** Ed25519 over a dead letter's message with the signer's key, as 128 lowercase hex chars (docs/FORMAT.md). */
export const signDeadLetter = (signer: AuditSigner, message: Uint8Array): string =>
  Ed25519Signer.signDeadLetter(signer, message)

/**
 * The signer's key pair as PEM: PKCS#8 private key and SPKI public key (what `keygen` writes).
 * Only for signers made by this module (`generate`, `fromPrivateKeyPem`, `loadPrivateKeyFile`); any other
 * `AuditSigner` implementation has no exportable key and makes this throw.
 */
export const exportPem = (signer: AuditSigner): { readonly privateKeyPem: string; readonly publicKeyPem: string } =>
  Ed25519Signer.exportPem(signer)

// ---------------------------------------------------------------------------------------------------------
// Keyring
// ---------------------------------------------------------------------------------------------------------

/** An Ed25519 public key from SPKI PEM text. */
export const fromPublicKeyPem = (pem: string): Effect.Effect<KeyObject, KeyLoadError> =>
  Effect.suspend(() => publicKeyFromPem(pem))

/** `fromPublicKeyPem`, synchronously (for pure checks such as `EvidenceBundle.verify`). */
export const publicKeyFromPem = (pem: string): Either.Either<KeyObject, KeyLoadError> => parsePublicKey(pem, undefined)

/** An Ed25519 public key from a file holding SPKI PEM. */
export const loadPublicKeyFile = (path: string): Effect.Effect<KeyObject, KeyLoadError> =>
  Effect.flatMap(readKeyFile(path), (pem) => parsePublicKey(pem, path))

/**
 * The Ed25519 public keys a verifier accepts, by `key_id`. Immutable: `add` returns a new keyring.
 * Keep the public keys of rotated-out signers here so the rows they signed still verify.
 */
export class Keyring {
  private constructor(private readonly keys: ReadonlyMap<string, KeyObject>) {}

  static readonly empty: Keyring = new Keyring(new Map())

  /** A keyring of `keys`. Private keys stand for their public keys; a non-Ed25519 key is a bug and throws. */
  static make(keys: Iterable<KeyObject>): Keyring {
    let keyring = Keyring.empty
    for (const key of keys) keyring = keyring.add(key)
    return keyring
  }

  /** The public keys of `signers`. */
  static fromSigners(signers: Iterable<AuditSigner>): Keyring {
    return Keyring.make(Array.from(signers, (signer) => signer.publicKey))
  }

  add(key: KeyObject): Keyring {
    if (!isEd25519(key)) throw new TypeError("Keyring.add: not an Ed25519 key")
    const publicKey = publicOf(key)
    const keys = new Map(this.keys)
    keys.set(keyIdOf(publicKey), publicKey)
    return new Keyring(keys)
  }

  get(keyId: string): Option.Option<KeyObject> {
    return Option.fromNullable(this.keys.get(keyId))
  }

  has(keyId: string): boolean {
    return this.keys.has(keyId)
  }

  get keyIds(): ReadonlyArray<string> {
    return Array.from(this.keys.keys())
  }

  get size(): number {
    return this.keys.size
  }
}

/** A keyring of the SPKI PEM public key files at `paths`. */
export const loadKeyring = (paths: Iterable<string>): Effect.Effect<Keyring, KeyLoadError> =>
  Effect.map(Effect.forEach(paths, loadPublicKeyFile), Keyring.make)

const SIGNATURE_HEX = /^[0-9a-f]{128}$/

/**
 * Checks a row's signature: `"unknownKey"` when `keyId` is not in the keyring (unverifiable), `"invalid"`
 * when the key is known but the signature is not its signature over `entryHashBytes` (tampered; a
 * signature that is not 128 lowercase hex chars is invalid), else `"valid"`.
 */
export const verifySignature = (
  keyring: Keyring,
  keyId: string,
  entryHashBytes: Uint8Array,
  signatureHex: string
): "valid" | "invalid" | "unknownKey" => {
  const key = keyring.get(keyId)
  if (Option.isNone(key)) return "unknownKey"
  if (!SIGNATURE_HEX.test(signatureHex)) return "invalid"
  return ed25519Verify(null, entryHashBytes, key.value, Buffer.from(signatureHex, "hex")) ? "valid" : "invalid"
}

/** True when `signatureHex` (128 lowercase hex chars) is `publicKey`'s Ed25519 signature over `message`. */
export const verifyMessageSignature = (publicKey: KeyObject, message: Uint8Array, signatureHex: string): boolean =>
  SIGNATURE_HEX.test(signatureHex) &&
  ed25519Verify(null, message, publicOf(publicKey), Buffer.from(signatureHex, "hex"))
