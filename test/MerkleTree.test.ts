/**
 * RFC 6962 Merkle trees and proofs, against a straightforward reference written from the RFC's recursive
 * definitions and against known answers; property tests over random tree sizes (every inclusion and
 * consistency proof verifies, any flipped byte or wrong size fails); the published vectors of
 * transparency-dev/merkle (the RFC 6962 tree of eight leaves: every root, its audit paths and consistency
 * proofs, and their corruptions). C2SP signed notes against the keys, signatures and malformed notes of
 * Go's golang.org/x/mod/sumdb/note tests, and the C2SP specs' own example notes; checkpoints.
 */
import { Either } from "effect"
import fc from "fast-check"
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto"
import { describe, expect, it } from "vitest"
import * as MerkleTree from "../src/transparency/MerkleTree.js"
import * as SignedNote from "../src/transparency/SignedNote.js"

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

/**
 * The published RFC 6962 vectors of transparency-dev/merkle (testonly/constants.go, proof/verify_test.go):
 * eight leaf inputs, the root of every prefix, and known audit paths and consistency proofs. Their leaf
 * numbers are 1-based; ours are 0-based indexes.
 */
describe("RFC 6962 published vectors (transparency-dev/merkle)", () => {
  const h = (hexText: string) => Buffer.from(hexText, "hex")
  const inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    .map(h)
  const roots = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
  ]
  const leafHashes = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"
  ]
  const inclusion: ReadonlyArray<readonly [number, number, ReadonlyArray<string>]> = [
    [1, 1, []],
    [1, 8, [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
    ]],
    [6, 8, [
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
    ]],
    [3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]],
    [2, 5, [
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
    ]]
  ]
  const consistency: ReadonlyArray<readonly [number, number, ReadonlyArray<string>]> = [
    [1, 1, []],
    [1, 8, [
      "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
    ]],
    [6, 8, [
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
    ]],
    [2, 5, [
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
    ]],
    [6, 7, [
      "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
    ]]
  ]
  const someHash = h("abacaba000000000000000000000000000000000000000000060061e00123456")
  /** The proof with the first byte of its element `i` XORed with `mask` (the published tests flip one bit). */
  const withFirstByteXored = (proof: ReadonlyArray<Uint8Array>, i: number, mask: number) =>
    proof.map((p, j) => j === i ? Buffer.from(p).map((b, k) => k === 0 ? b ^ mask : b) : p)

  it("leaf hashes and the root of every prefix", () => {
    expect(inputs.map((d) => hex(MerkleTree.leafHash(d)))).toEqual(leafHashes)
    const tree = MerkleTree.MerkleTree.fromLeaves(inputs)
    for (let size = 0; size <= 8; size++) expect(hex(tree.rootHash(size)), `size ${size}`).toBe(roots[size])
  })

  it("the published audit paths: produced exactly, verified, and every corruption of them refused", () => {
    for (const [leaf, size, expected] of inclusion) {
      const index = leaf - 1
      const proof = expected.map(h)
      const root = h(roots[size]!)
      const leafHash = h(leafHashes[index]!)
      const tree = MerkleTree.MerkleTree.fromLeaves(inputs.slice(0, size))
      expect(tree.inclusionProof(index).map(hex), `${leaf} of ${size}`).toEqual(expected)
      expect(MerkleTree.verifyInclusion(leafHash, index, size, proof, root)).toBe(true)
      const probes: Array<[string, number, number, ReadonlyArray<Uint8Array>, Uint8Array, Uint8Array]> = [
        ["index - 1", index - 1, size, proof, root, leafHash],
        ["index + 1", index + 1, size, proof, root, leafHash],
        ["index ^ 2", index ^ 2, size, proof, root, leafHash],
        ["size * 2", index, size * 2, proof, root, leafHash],
        ["size / 2", index, Math.floor(size / 2), proof, root, leafHash],
        ["wrong leaf", index, size, proof, root, Buffer.from("WrongLeaf")],
        ["empty root", index, size, proof, MerkleTree.EMPTY_ROOT, leafHash],
        ["random root", index, size, proof, someHash, leafHash],
        ["trailing garbage", index, size, [...proof, new Uint8Array()], root, leafHash],
        ["trailing root", index, size, [...proof, root], root, leafHash],
        ["preceding garbage", index, size, [new Uint8Array(), ...proof], root, leafHash],
        ["preceding root", index, size, [root, ...proof], root, leafHash],
        ...proof.map((_, i): [string, number, number, ReadonlyArray<Uint8Array>, Uint8Array, Uint8Array] => [
          `proof[${i}] bit 3`,
          index,
          size,
          withFirstByteXored(proof, i, 8),
          root,
          leafHash
        ])
      ]
      if (proof.length > 0) probes.push(["removed component", index, size, proof.slice(0, -1), root, leafHash])
      if (proof.length > 1) {
        probes.push(["inserted component", index, size, [proof[0]!, someHash, ...proof.slice(1)], root, leafHash])
      }
      for (const [what, i, n, p, r, l] of probes) {
        expect(MerkleTree.verifyInclusion(l, i, n, p, r), `${leaf} of ${size}: ${what}`).toBe(false)
      }
    }
  })

  it("the published consistency proofs: produced exactly, verified, and every corruption of them refused", () => {
    for (const [size1, size2, expected] of consistency) {
      const proof = expected.map(h)
      const root1 = h(roots[size1]!)
      const root2 = h(roots[size2]!)
      const tree = MerkleTree.MerkleTree.fromLeaves(inputs.slice(0, size2))
      expect(tree.consistencyProof(size1).map(hex), `${size1} to ${size2}`).toEqual(expected)
      expect(MerkleTree.verifyConsistency(size1, size2, proof, root1, root2)).toBe(true)
      if (proof.length === 0) continue
      const probes: Array<[string, number, number, ReadonlyArray<Uint8Array>, Uint8Array, Uint8Array]> = [
        ["size1 - 1", size1 - 1, size2, proof, root1, root2],
        ["size1 + 1", size1 + 1, size2, proof, root1, root2],
        ["size1 ^ 2", size1 ^ 2, size2, proof, root1, root2],
        ["size2 * 2", size1, size2 * 2, proof, root1, root2],
        ["size2 / 2", size1, Math.floor(size2 / 2), proof, root1, root2],
        ["wrong root1", size1, size2, proof, Buffer.from("WrongRoot"), root2],
        ["wrong root2", size1, size2, proof, root1, Buffer.from("WrongRoot")],
        ["swapped roots", size1, size2, proof, root2, root1],
        ["empty proof", size1, size2, [], root1, root2],
        ["trailing garbage", size1, size2, [...proof, new Uint8Array()], root1, root2],
        ["trailing root1", size1, size2, [...proof, root1], root1, root2],
        ["trailing root2", size1, size2, [...proof, root2], root1, root2],
        ["preceding garbage", size1, size2, [new Uint8Array(), ...proof], root1, root2],
        ["preceding root1", size1, size2, [root1, ...proof], root1, root2],
        ["preceding root2", size1, size2, [root2, ...proof], root1, root2],
        ["preceding proof[0]", size1, size2, [proof[0]!, ...proof], root1, root2],
        ["truncated proof", size1, size2, proof.slice(0, -1), root1, root2],
        ...proof.map((_, i): [string, number, number, ReadonlyArray<Uint8Array>, Uint8Array, Uint8Array] => [
          `proof[${i}] bit 4`,
          size1,
          size2,
          withFirstByteXored(proof, i, 16),
          root1,
          root2
        ])
      ]
      for (const [what, m, n, p, r1, r2] of probes) {
        expect(MerkleTree.verifyConsistency(m, n, p, r1, r2), `${size1} to ${size2}: ${what}`).toBe(false)
      }
    }
  })

  it("the edge cases of the published verifier tests", () => {
    const leaf = MerkleTree.leafHash(Buffer.from("data"))
    // A one-leaf tree: the root is the leaf hash and the proof is empty.
    expect(MerkleTree.verifyInclusion(leaf, 0, 1, [], leaf)).toBe(true)
    expect(MerkleTree.verifyInclusion(new Uint8Array(), 0, 1, [], leaf)).toBe(false)
    expect(MerkleTree.verifyInclusion(leaf, 0, 1, [], new Uint8Array())).toBe(false)
    for (const [index, size] of [[0, 0], [0, 1], [1, 0], [2, 1]] as const) {
      expect(MerkleTree.verifyInclusion(someHash, index, size, [], new Uint8Array())).toBe(false)
      expect(MerkleTree.verifyInclusion(new Uint8Array(), index, size, [], MerkleTree.EMPTY_ROOT)).toBe(false)
      expect(MerkleTree.verifyInclusion(someHash, index, size, [], MerkleTree.EMPTY_ROOT)).toBe(false)
    }
    const r1 = Buffer.from("don't care 1")
    const r2 = Buffer.from("don't care 2")
    const empty = MerkleTree.EMPTY_ROOT
    const cases: ReadonlyArray<readonly [number, number, Uint8Array, Uint8Array, ReadonlyArray<Uint8Array>, boolean]> =
      [
        [0, 0, r1, r2, [], false],
        [1, 1, r1, r2, [], false],
        [0, 0, r1, r1, [], true],
        [0, 1, r1, r2, [], true],
        [1, 1, r2, r2, [], true],
        [1, 0, r1, r2, [], false],
        [2, 1, r1, r2, [], false],
        [1, 2, r1, r2, [], false],
        [0, 0, empty, r2, [], false],
        [1, 1, empty, r2, [], false],
        [0, 0, empty, empty, [empty], false],
        [0, 1, empty, empty, [empty], false],
        [1, 1, empty, empty, [empty], false]
      ]
    for (const [m, n, a, b, proof, ok] of cases) {
      expect(MerkleTree.verifyConsistency(m, n, proof, a, b), `${m} to ${n}`).toBe(ok)
    }
  })

  it("proofs in trees past 2^32 leaves (sizes a 32-bit shift would wrap)", () => {
    // A tree of 2^32 + 3 leaves whose complete subtrees all hash alike at each level: enough to check that
    // the proof arithmetic does not wrap at 32 bits, without 4 billion leaves.
    const size = 2 ** 32 + 3
    const levels: Array<Uint8Array> = [MerkleTree.leafHash(Buffer.from("x"))]
    for (let l = 1; l <= 33; l++) levels.push(MerkleTree.nodeHash(levels[l - 1]!, levels[l - 1]!))
    const tree = MerkleTree.MerkleTree.fromSource({ size, node: (level) => levels[level]! })
    for (const index of [0, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 2]) {
      const proof = tree.inclusionProof(index)
      expect(MerkleTree.verifyInclusion(levels[0]!, index, size, proof, tree.rootHash()), `${index}`).toBe(true)
    }
    for (const old of [1, 2 ** 31 + 5, 2 ** 32, 2 ** 32 + 1]) {
      const proof = tree.consistencyProof(old)
      expect(MerkleTree.verifyConsistency(old, size, proof, tree.rootHash(old), tree.rootHash()), `${old}`).toBe(true)
    }
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

  // The signer key of the same tests: "PRIVATE+KEY+PeterNeumann+c74f20a3+" then base64(0x01 || 32-byte seed).
  const goSignerSeed = Buffer.from("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", "base64").subarray(1)
  const enochKey = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
  const peterSig = goNote.slice(goText.length + 1)
  const enochSig =
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

  it("signs the Go example byte for byte with its published signer key (Ed25519 is deterministic)", () => {
    const privateKey = createPrivateKey({
      key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), goSignerSeed]),
      format: "der",
      type: "pkcs8"
    })
    const publicKey = createPublicKey(privateKey)
    expect(SignedNote.verifierKey("PeterNeumann", publicKey)).toBe(goKey)
    expect(SignedNote.signNote(goText, "PeterNeumann", privateKey, publicKey)).toBe(goNote)
  })

  it("Go's multi-signature notes: another key's signature is ignored, a bad one of this key rejects", () => {
    const peter = Either.getOrThrow(SignedNote.parseVerifierKey(goKey))
    const enoch = Either.getOrThrow(SignedNote.parseVerifierKey(enochKey))
    const both = goText + "\n" + peterSig + enochSig
    expect(SignedNote.verifyNote(both, peter)).toEqual(Either.right(goText))
    expect(SignedNote.verifyNote(both, enoch)).toEqual(Either.right(goText))
    // Duplicated signatures of both keys.
    expect(SignedNote.verifyNote(goText + "\n" + peterSig + peterSig + enochSig + enochSig, peter)).toEqual(
      Either.right(goText)
    )
    // A corrupted signature of the verifier's key rejects the note, even next to a good one.
    const corrupted = peterSig.slice(0, 60) + "ABCD" + peterSig.slice(60)
    const bad = SignedNote.verifyNote(goText + "\n" + corrupted, peter)
    expect(Either.isLeft(bad) && bad.left.reason).toBe("badSignature")
    const badNextToGood = SignedNote.verifyNote(goText + "\n" + peterSig + corrupted, peter)
    expect(Either.isLeft(badNextToGood) && badNextToGood.left.reason).toBe("badSignature")
    // Only another key's signature: unknown key, not a verified note.
    const onlyEnoch = SignedNote.verifyNote(goText + "\n" + enochSig, peter)
    expect(Either.isLeft(onlyEnoch) && onlyEnoch.left.reason).toBe("unknownKey")
    // A signature line with Peter's key id under another name is not Peter's.
    const misnamed = SignedNote.verifyNote(goText + "\n" + peterSig.replace("PeterNeumann", "CarmenSandiego"), peter)
    expect(Either.isLeft(misnamed) && misnamed.left.reason).toBe("unknownKey")
  })

  it("Go's malformed notes are refused as malformed; 16 signatures are accepted, 101 are not", () => {
    const peter = Either.getOrThrow(SignedNote.parseVerifierKey(goKey))
    const malformed = [
      goText,
      goText + "\n",
      goText + "\n" + peterSig.slice(0, -1),
      "\u0001" + goText + "\n" + peterSig,
      "\ufffd" + goText + "\n" + peterSig,
      goText + "\n" +
      "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
      goText + "\n" + peterSig + "Unexpected line.\n",
      goText + "\n" + peterSig.repeat(101)
    ]
    for (const note of malformed) {
      const result = SignedNote.verifyNote(note, peter)
      expect(Either.isLeft(result) && result.left.reason, JSON.stringify(note)).toBe("malformed")
    }
    expect(SignedNote.verifyNote(goText + "\n" + enochSig.repeat(15) + peterSig, peter)).toEqual(Either.right(goText))
  })

  it("Go's mangled verifier keys are refused: every proper substring, every byte changed", () => {
    expect(Either.isRight(SignedNote.parseVerifierKey(goKey))).toBe(true)
    const mangled: Array<string> = []
    for (let i = 0; i <= goKey.length; i++) {
      for (let j = i + 1; j <= goKey.length; j++) if (i !== 0 || j !== goKey.length) mangled.push(goKey.slice(i, j))
    }
    for (let i = 0; i < goKey.length; i++) {
      mangled.push(goKey.slice(0, i) + String.fromCharCode(goKey.charCodeAt(i) + 1) + goKey.slice(i + 1))
    }
    mangled.push("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==") // wrong key length
    mangled.push("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW") // unknown algorithm
    for (const key of mangled) expect(Either.isLeft(SignedNote.parseVerifierKey(key)), key).toBe(true)
  })

  it("the C2SP specs' example notes parse; the checkpoint example's text is a checkpoint", () => {
    // c2sp.org/signed-note and c2sp.org/tlog-checkpoint publish these notes without their keys: each must be
    // a well-formed note (unknown key to us, never malformed), and the checkpoint's text must parse.
    const sofa = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    const checkpointNote = sofa +
      "\n\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    const poem = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u00e8 subito sera.\n"
    const poemNote = poem +
      "\n\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
    const peter = Either.getOrThrow(SignedNote.parseVerifierKey(goKey))
    for (const note of [checkpointNote, poemNote]) {
      const result = SignedNote.verifyNote(note, peter)
      expect(Either.isLeft(result) && result.left.reason).toBe("unknownKey")
    }
    const parsed = Either.getOrThrow(SignedNote.parseCheckpoint(sofa))
    expect(parsed.origin).toBe("example.com/behind-the-sofa")
    expect(parsed.treeSize).toBe(20852163)
    expect(Buffer.from(parsed.rootHash).toString("base64")).toBe("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    expect(SignedNote.formatCheckpoint(parsed)).toBe(sofa)
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
