/**
 * RFC 6962 Merkle trees and proofs, against a straightforward reference written from the RFC's recursive
 * definitions and against known answers; property tests over random tree sizes (every inclusion and
 * consistency proof verifies, any flipped byte or wrong size fails). C2SP signed notes against the Go
 * sumdb/note example key and signature, and checkpoints.
 */
import { Either } from "effect"
import fc from "fast-check"
import { createHash, generateKeyPairSync } from "node:crypto"
import { describe, expect, it } from "vitest"
import * as MerkleTree from "../src/MerkleTree.js"
import * as SignedNote from "../src/SignedNote.js"

const sha = (...parts: ReadonlyArray<Uint8Array>) => {
  const h = createHash("sha256")
  for (const p of parts) h.update(p)
  return h.digest()
}

// The RFC 6962 §2.1 definitions, transcribed without any cleverness.
const k = (n: number) => 2 ** Math.ceil(Math.log2(n) - 1)
const mth = (d: ReadonlyArray<Uint8Array>): Buffer =>
  d.length === 0
    ? sha()
    : d.length === 1
    ? sha(Uint8Array.of(0), d[0]!)
    : sha(Uint8Array.of(1), mth(d.slice(0, k(d.length))), mth(d.slice(k(d.length))))
const path = (m: number, d: ReadonlyArray<Uint8Array>): Array<Buffer> =>
  d.length <= 1
    ? []
    : m < k(d.length)
    ? [...path(m, d.slice(0, k(d.length))), mth(d.slice(k(d.length)))]
    : [...path(m - k(d.length), d.slice(k(d.length))), mth(d.slice(0, k(d.length)))]
const subproof = (m: number, d: ReadonlyArray<Uint8Array>, b: boolean): Array<Buffer> => {
  const n = d.length
  if (m === n) return b ? [] : [mth(d)]
  return m <= k(n)
    ? [...subproof(m, d.slice(0, k(n)), b), mth(d.slice(k(n)))]
    : [...subproof(m - k(n), d.slice(k(n)), false), mth(d.slice(0, k(n)))]
}

const leaves = (n: number) => Array.from({ length: n }, (_, i) => Buffer.from(`leaf ${i}`))
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const flip = (bytes: Uint8Array, at: number) => {
  const copy = Buffer.from(bytes)
  copy[at % copy.length]! ^= 1
  return copy
}

describe("RFC 6962 Merkle tree", () => {
  it("known answers: the empty tree, one leaf, and the RFC's recursion for sizes 1..70", () => {
    expect(hex(MerkleTree.EMPTY_ROOT)).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    expect(hex(MerkleTree.MerkleTree.fromLeaves([]).rootHash())).toBe(hex(MerkleTree.EMPTY_ROOT))
    // RFC 6962 leaf hash of the empty string.
    expect(hex(MerkleTree.leafHash(new Uint8Array()))).toBe(
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    for (let n = 1; n <= 70; n++) {
      const d = leaves(n)
      const tree = MerkleTree.MerkleTree.fromLeaves(d)
      expect(hex(tree.rootHash()), `size ${n}`).toBe(hex(mth(d)))
      for (let m = 0; m < n; m++) expect(tree.inclusionProof(m).map(hex), `${m} of ${n}`).toEqual(path(m, d).map(hex))
      for (let m = 1; m <= n; m++) {
        expect(tree.consistencyProof(m).map(hex), `${m} to ${n}`).toEqual(subproof(m, d, true).map(hex))
        expect(hex(tree.rootHash(m))).toBe(hex(mth(d.slice(0, m))))
      }
    }
  })

  it("every inclusion proof verifies; a flipped byte, another index or an index past the size fails", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), (n, i, at) => {
        const index = i % n
        const tree = MerkleTree.MerkleTree.fromLeaves(leaves(n))
        const leaf = MerkleTree.leafHash(Buffer.from(`leaf ${index}`))
        const proof = tree.inclusionProof(index)
        const root = tree.rootHash()
        expect(MerkleTree.verifyInclusion(leaf, index, n, proof, root)).toBe(true)
        expect(MerkleTree.verifyInclusion(flip(leaf, at), index, n, proof, root)).toBe(false)
        expect(MerkleTree.verifyInclusion(leaf, index, n, proof, flip(root, at))).toBe(false)
        if (proof.length > 0) {
          const bad = proof.map((p, j) => j === at % proof.length ? flip(p, at) : p)
          expect(MerkleTree.verifyInclusion(leaf, index, n, bad, root)).toBe(false)
        }
        if (n > 1) expect(MerkleTree.verifyInclusion(leaf, (index + 1) % n, n, proof, root)).toBe(false)
        // (A proof may also fit another tree size with the same root: the signed checkpoint binds the two.)
        expect(MerkleTree.verifyInclusion(leaf, index, index, proof, root)).toBe(false)
      }),
      { numRuns: 300, seed: 6962 }
    )
  })

  it("every consistency proof between sizes m ≤ n verifies; a flipped byte or a wrong size fails", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), (n, mm, at) => {
        const m = 1 + (mm % n)
        const tree = MerkleTree.MerkleTree.fromLeaves(leaves(n))
        const proof = tree.consistencyProof(m)
        const oldRoot = tree.rootHash(m)
        const newRoot = tree.rootHash()
        expect(MerkleTree.verifyConsistency(m, n, proof, oldRoot, newRoot)).toBe(true)
        expect(MerkleTree.verifyConsistency(m, n, proof, flip(oldRoot, at), newRoot)).toBe(false)
        if (m < n) {
          expect(MerkleTree.verifyConsistency(m, n, proof, oldRoot, flip(newRoot, at))).toBe(false)
          const bad = proof.map((p, j) => j === at % proof.length ? flip(p, at) : p)
          expect(MerkleTree.verifyConsistency(m, n, bad, oldRoot, newRoot)).toBe(false)
          expect(MerkleTree.verifyConsistency(m, n, [], oldRoot, newRoot)).toBe(false)
        }
      }),
      { numRuns: 300, seed: 9162 }
    )
  })
})

describe("C2SP signed note", () => {
  // The example of Go's golang.org/x/mod/sumdb/note (note_test.go, the package documentation).
  const goKey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
  const goText = "If you think cryptography is the answer to your problem,\n" +
    "then you don't know what your problem is.\n"
  const goNote = goText +
    "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

  it("verifies the Go sumdb/note example, and refuses it changed", () => {
    const verifier = Either.getOrThrow(SignedNote.parseVerifierKey(goKey))
    expect(SignedNote.verifyNote(goNote, verifier)).toEqual(Either.right(goText))
    const changed = SignedNote.verifyNote(goNote.replace("cryptography", "Cryptography"), verifier)
    expect(Either.isLeft(changed) && changed.left.reason).toBe("badSignature")
  })

  it("verifier keys whose base64 holds a '+' parse (the name cannot hold one)", () => {
    for (let i = 0; i < 50; i++) {
      const { publicKey } = generateKeyPairSync("ed25519")
      const vkey = SignedNote.verifierKey("log.example/x", publicKey)
      expect(Either.isRight(SignedNote.parseVerifierKey(vkey)), vkey).toBe(true)
    }
  })

  it("signs and verifies with a fresh key; a verifier key round-trips; another key is unknown", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519")
    const name = "example.com/agent-ledger/test"
    const text = SignedNote.formatCheckpoint({ origin: name, treeSize: 3, rootHash: MerkleTree.EMPTY_ROOT })
    const note = SignedNote.signNote(text, name, privateKey, publicKey)
    const vkey = SignedNote.verifierKey(name, publicKey)
    expect(vkey).toMatch(/^example\.com\/agent-ledger\/test\+[0-9a-f]{8}\+[A-Za-z0-9+/]{43}[A-Za-z0-9+/=]$/)
    const verifier = Either.getOrThrow(SignedNote.parseVerifierKey(vkey))
    expect(SignedNote.verifyNote(note, verifier)).toEqual(Either.right(text))
    expect(SignedNote.parseCheckpoint(text)).toEqual(
      Either.right({ origin: name, treeSize: 3, rootHash: Buffer.from(MerkleTree.EMPTY_ROOT) })
    )
    const other = Either.getOrThrow(SignedNote.parseVerifierKey(goKey))
    const unknown = SignedNote.verifyNote(note, other)
    expect(Either.isLeft(unknown) && unknown.left.reason).toBe("unknownKey")
    expect(Either.isLeft(SignedNote.parseVerifierKey(vkey.replace(/\+[0-9a-f]{8}\+/, "+00000000+")))).toBe(true)
    expect(Either.isLeft(SignedNote.parseCheckpoint("origin\n12x\nAAAA\n"))).toBe(true)
  })
})
