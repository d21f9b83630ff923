import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { createHash, generateKeyPairSync } from "node:crypto"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { inspect } from "node:util"
import * as AuditSigner from "../src/audit/AuditSigner.js"
import { sha256Bytes } from "../src/internal/encoding.js"

/** A temp directory removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "agent-ledger-signer-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const writeFile = (dir: string, name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

/** key_id by the spec formula, independently of the module: the raw key is the tail of the SPKI DER. */
const specKeyId = (signer: AuditSigner.AuditSigner): string => {
  const spki = signer.publicKey.export({ type: "spki", format: "der" })
  const raw = spki.subarray(spki.length - 32)
  return createHash("sha256").update(raw).digest("hex").slice(0, 16)
}

const entryHashOf = (text: string): Buffer => sha256Bytes(text)

describe("AuditSigner", () => {
  it.effect("signs entry hashes with Ed25519 and the signature verifies through a keyring", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const keyring = AuditSigner.Keyring.fromSigners([signer])
      const hash = entryHashOf("row 0")
      const signature = signer.sign(hash)
      expect(signature).toMatch(/^[0-9a-f]{128}$/)
      expect(signer.sign(hash)).toBe(signature) // Ed25519 is deterministic
      expect(AuditSigner.verifySignature(keyring, signer.keyId, hash, signature)).toBe("valid")
    }))

  it.effect("a changed hash or signature is invalid, a key not in the keyring is unknownKey", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const keyring = AuditSigner.Keyring.fromSigners([signer])
      const hash = entryHashOf("row 0")
      const signature = signer.sign(hash)
      const flipped = (signature[0] === "0" ? "1" : "0") + signature.slice(1)
      expect(AuditSigner.verifySignature(keyring, signer.keyId, entryHashOf("row 1"), signature)).toBe("invalid")
      expect(AuditSigner.verifySignature(keyring, signer.keyId, hash, flipped)).toBe("invalid")
      expect(AuditSigner.verifySignature(keyring, signer.keyId, hash, signature.toUpperCase())).toBe("invalid")
      expect(AuditSigner.verifySignature(keyring, signer.keyId, hash, "not hex")).toBe("invalid")
      expect(AuditSigner.verifySignature(AuditSigner.Keyring.empty, signer.keyId, hash, signature)).toBe(
        "unknownKey"
      )
    }))

  it.effect("a signature by another key is invalid under the named key, not unknownKey", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const other = yield* AuditSigner.generate
      const keyring = AuditSigner.Keyring.fromSigners([signer, other])
      const hash = entryHashOf("row 0")
      expect(AuditSigner.verifySignature(keyring, signer.keyId, hash, other.sign(hash))).toBe("invalid")
    }))

  it.effect("sign refuses anything but the 32 raw bytes of entry_hash", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const hex = Buffer.from(entryHashOf("row 0").toString("hex"), "utf8")
      expect(() => signer.sign(hex)).toThrow(RangeError)
    }))

  it.effect("keyId is 16 lowercase hex chars: SHA-256 of the raw public key, first 8 bytes", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      expect(signer.keyId).toMatch(/^[0-9a-f]{16}$/)
      expect(signer.keyId).toBe(specKeyId(signer))
      expect(AuditSigner.keyIdOf(signer.publicKey)).toBe(signer.keyId)
      const other = yield* AuditSigner.generate
      expect(other.keyId).not.toBe(signer.keyId)
    }))

  it.effect("keyId of the RFC 8032 TEST 1 key matches the formula over its published public key", () =>
    Effect.gen(function*() {
      const pem = "-----BEGIN PRIVATE KEY-----\n" +
        "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n" +
        "-----END PRIVATE KEY-----\n"
      const signer = yield* AuditSigner.fromPrivateKeyPem(pem)
      const rawPublicKey = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex")
      expect(signer.keyId).toBe(createHash("sha256").update(rawPublicKey).digest("hex").slice(0, 16))
      expect(signer.publicKey.export({ format: "jwk" }).x).toBe(rawPublicKey.toString("base64url"))
    }))

  it.effect("PEM export and import round-trip with the same keyId and the same signatures", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const { privateKeyPem, publicKeyPem } = AuditSigner.exportPem(signer)
      expect(privateKeyPem).toContain("-----BEGIN PRIVATE KEY-----")
      expect(publicKeyPem).toContain("-----BEGIN PUBLIC KEY-----")
      const reloaded = yield* AuditSigner.fromPrivateKeyPem(privateKeyPem)
      const publicKey = yield* AuditSigner.fromPublicKeyPem(publicKeyPem)
      const hash = entryHashOf("row 7")
      expect(reloaded.keyId).toBe(signer.keyId)
      expect(reloaded.sign(hash)).toBe(signer.sign(hash))
      expect(AuditSigner.keyIdOf(publicKey)).toBe(signer.keyId)
      expect(AuditSigner.verifySignature(AuditSigner.Keyring.make([publicKey]), signer.keyId, hash, signer.sign(hash)))
        .toBe("valid")
    }))

  it.scoped("keys load from PKCS#8 and SPKI PEM files", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const signer = yield* AuditSigner.generate
      const { privateKeyPem, publicKeyPem } = AuditSigner.exportPem(signer)
      const loaded = yield* AuditSigner.loadPrivateKeyFile(writeFile(dir, "signing.pem", privateKeyPem))
      expect(loaded.keyId).toBe(signer.keyId)
      const publicPath = writeFile(dir, "signing.pub.pem", publicKeyPem)
      expect(AuditSigner.keyIdOf(yield* AuditSigner.loadPublicKeyFile(publicPath))).toBe(signer.keyId)
      const keyring = yield* AuditSigner.loadKeyring([publicPath])
      expect(keyring.keyIds).toEqual([signer.keyId])
    }))

  it.effect("the private key does not show when a signer is printed", () =>
    Effect.gen(function*() {
      const signer = yield* AuditSigner.generate
      const body = AuditSigner.exportPem(signer).privateKeyPem.split("\n")[1]!
      const printed = inspect(signer, { depth: 10, showHidden: true }) + JSON.stringify(signer)
      expect(printed).not.toContain(body)
      expect(printed).not.toContain("PrivateKeyObject")
      expect(printed).toContain(signer.keyId)
    }))

  it("exportPem throws for a signer not made by AuditSigner", () => {
    const foreign: AuditSigner.AuditSigner = {
      keyId: "0000000000000000",
      publicKey: generateKeyPairSync("ed25519").publicKey,
      sign: () => ""
    }
    expect(() => AuditSigner.exportPem(foreign)).toThrow(TypeError)
  })
})

describe("AuditSigner key loading errors", () => {
  const ecKeys = generateKeyPairSync("ec", { namedCurve: "P-256" })
  const edKeys = generateKeyPairSync("ed25519")

  const privateCases: ReadonlyArray<{
    readonly name: string
    readonly text: string
    readonly reason: AuditSigner.KeyLoadError["reason"]
  }> = [
    { name: "garbage", text: "this is not a key\n", reason: "notPem" },
    { name: "an empty file", text: "", reason: "notPem" },
    {
      name: "an SPKI public key",
      text: edKeys.publicKey.export({ type: "spki", format: "pem" }).toString(),
      reason: "wrongKeyType"
    },
    {
      name: "an EC P-256 PKCS#8 private key",
      text: ecKeys.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      reason: "wrongKeyType"
    },
    {
      name: "a SEC1 EC private key",
      text: ecKeys.privateKey.export({ type: "sec1", format: "pem" }).toString(),
      reason: "wrongKeyType"
    },
    {
      name: "an encrypted PKCS#8 key",
      text: edKeys.privateKey.export({
        type: "pkcs8",
        format: "pem",
        cipher: "aes-256-cbc",
        passphrase: "secret"
      }).toString(),
      reason: "wrongKeyType"
    },
    {
      name: "a PKCS#8 block with a corrupted body",
      text: "-----BEGIN PRIVATE KEY-----\nAAAAbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n",
      reason: "invalidKey"
    }
  ]

  for (const { name, reason, text } of privateCases) {
    it.scoped(`loadPrivateKeyFile on ${name} fails with KeyLoadError ${reason} naming the path`, () =>
      Effect.gen(function*() {
        const path = writeFile(yield* tempDir, "key.pem", text)
        const error = yield* Effect.flip(AuditSigner.loadPrivateKeyFile(path))
        expect(error).toBeInstanceOf(AuditSigner.KeyLoadError)
        expect(error.path).toBe(path)
        expect(error.reason).toBe(reason)
        expect(error.message).toContain(path)
      }))
  }

  it.scoped("a missing file is missingFile, a directory is unreadable", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = join(dir, "nope", "signing.pem")
      const missingError = yield* Effect.flip(AuditSigner.loadPrivateKeyFile(missing))
      expect(missingError).toMatchObject({ _tag: "KeyLoadError", path: missing, reason: "missingFile" })
      const directory = join(dir, "a-directory")
      mkdirSync(directory)
      const directoryError = yield* Effect.flip(AuditSigner.loadPublicKeyFile(directory))
      expect(directoryError).toMatchObject({ _tag: "KeyLoadError", path: directory, reason: "unreadable" })
    }))

  it.scoped("loadPublicKeyFile refuses private keys and non-Ed25519 public keys", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const privatePath = writeFile(
        dir,
        "private.pem",
        edKeys.privateKey.export({ type: "pkcs8", format: "pem" }).toString()
      )
      expect(yield* Effect.flip(AuditSigner.loadPublicKeyFile(privatePath))).toMatchObject({
        path: privatePath,
        reason: "wrongKeyType"
      })
      const ecPath = writeFile(dir, "ec.pub.pem", ecKeys.publicKey.export({ type: "spki", format: "pem" }).toString())
      expect(yield* Effect.flip(AuditSigner.loadPublicKeyFile(ecPath))).toMatchObject({
        path: ecPath,
        reason: "wrongKeyType"
      })
      const garbagePath = writeFile(dir, "garbage.pem", "hello")
      expect(yield* Effect.flip(AuditSigner.loadKeyring([garbagePath]))).toMatchObject({
        path: garbagePath,
        reason: "notPem"
      })
    }))

  it.effect("PEM text without a file fails without a path", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(AuditSigner.fromPrivateKeyPem("garbage"))
      expect(error.reason).toBe("notPem")
      expect(error.path).toBeUndefined()
      expect(error.message).toContain("<PEM text>")
    }))
})

describe("Keyring", () => {
  it.effect("holds public keys by key_id; add returns a new keyring", () =>
    Effect.gen(function*() {
      const a = yield* AuditSigner.generate
      const b = yield* AuditSigner.generate
      const one = AuditSigner.Keyring.make([a.publicKey, a.publicKey])
      const two = one.add(b.publicKey)
      expect(one.size).toBe(1)
      expect(two.size).toBe(2)
      expect(two.has(a.keyId) && two.has(b.keyId)).toBe(true)
      expect(one.has(b.keyId)).toBe(false)
      expect(Option.isSome(two.get(b.keyId))).toBe(true)
      expect(AuditSigner.Keyring.empty.size).toBe(0)
    }))

  it("a private key stands for its public key; a non-Ed25519 key is refused", () => {
    const keys = generateKeyPairSync("ed25519")
    const keyring = AuditSigner.Keyring.make([keys.privateKey])
    const stored = Option.getOrThrow(keyring.get(AuditSigner.keyIdOf(keys.publicKey)))
    expect(stored.type).toBe("public")
    expect(() => AuditSigner.Keyring.make([generateKeyPairSync("x25519").publicKey])).toThrow(TypeError)
  })
})
