/**
 * RFC 6962 §2.1 Merkle trees (Certificate Transparency; RFC 9162 §2.1 is the same hashing): leaf hash =
 * SHA-256(0x00 || data), node hash = SHA-256(0x01 || left || right), a tree of n leaves split at the largest
 * power of two smaller than n. Audit paths (inclusion proofs) and consistency proofs as RFC 6962 §2.1.1 and
 * §2.1.2 define them, and their verification as RFC 9162 §2.1.3.2 and §2.1.4.2 give it, so any RFC 6962
 * implementation checks what this one proves.
 *
 * `MerkleTree.fromLeafHashes` keeps every complete power-of-two subtree's hash (about 2n hashes), so the
 * root, an inclusion proof and a consistency proof each cost O(log n) hash operations once it is built.
 */
import { createHash } from "node:crypto"

export type Hash = Uint8Array

const sha256 = (...parts: ReadonlyArray<Uint8Array>): Hash => {
  const h = createHash("sha256")
  for (const part of parts) h.update(part)
  return h.digest()
}

const LEAF_PREFIX = Uint8Array.of(0x00)
const NODE_PREFIX = Uint8Array.of(0x01)

/** The hash of the empty tree: SHA-256 of no bytes. */
export const EMPTY_ROOT: Hash = sha256()

/** RFC 6962 leaf hash of `data`. */
export const leafHash = (data: Uint8Array): Hash => sha256(LEAF_PREFIX, data)

/** RFC 6962 interior node hash. */
export const nodeHash = (left: Hash, right: Hash): Hash => sha256(NODE_PREFIX, left, right)

/** Whether n (≥ 1) is a power of two; arithmetic rather than bit operations, which stop at 2^32. */
const isPowerOfTwo = (n: number): boolean => {
  if (!(n >= 1)) return false
  while (n % 2 === 0) n /= 2
  return n === 1
}

/** The largest power of two strictly smaller than `n` (n ≥ 2). */
const split = (n: number): number => {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}

/**
 * Where a tree's complete subtrees come from: `node(level, index)` is the hash of the 2^level leaves from
 * leaf index·2^level (level 0: a leaf hash). An in-memory tree holds them all; a stored one (the ledger's
 * `merkle_nodes`) is asked only for the O(log² n) a proof needs.
 */
export interface NodeSource {
  readonly size: number
  readonly node: (level: number, index: number) => Hash
}

export class MerkleTree {
  private constructor(private readonly source: NodeSource) {}

  /** The tree over leaves whose leaf hashes (`leafHash(data)`) are given, in order. */
  static fromLeafHashes(leafHashes: ReadonlyArray<Hash>): MerkleTree {
    const levels: Array<Array<Hash>> = [Array.from(leafHashes)]
    for (let level = levels[0]!; level.length >= 2;) {
      const next: Array<Hash> = []
      for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!))
      levels.push(next)
      level = next
    }
    return new MerkleTree({
      size: leafHashes.length,
      node: (level, index) => {
        const hash = levels[level]?.[index]
        if (hash === undefined) throw new RangeError(`no node ${level}/${index}`)
        return hash
      }
    })
  }

  /** The tree over the leaves' data. */
  static fromLeaves(leaves: ReadonlyArray<Uint8Array>): MerkleTree {
    return MerkleTree.fromLeafHashes(leaves.map(leafHash))
  }

  /** A tree whose complete subtrees come from `source`. */
  static fromSource(source: NodeSource): MerkleTree {
    return new MerkleTree(source)
  }

  get size(): number {
    return this.source.size
  }

  /** The hash of leaves [start, start + count), a range the RFC's recursion visits. */
  private range(start: number, count: number): Hash {
    if (count === 0) return EMPTY_ROOT
    // A complete, aligned subtree: one node.
    if (isPowerOfTwo(count) && start % count === 0) return this.source.node(Math.log2(count), start / count)
    const k = split(count)
    return nodeHash(this.range(start, k), this.range(start + k, count - k))
  }

  /** MTH of the first `size` leaves (default: all). */
  rootHash(size: number = this.size): Hash {
    this.checkSize(size)
    return this.range(0, size)
  }

  /** RFC 6962 §2.1.1 PATH(index, D[0:size]): the audit path of leaf `index` in the tree of `size` leaves. */
  inclusionProof(index: number, size: number = this.size): ReadonlyArray<Hash> {
    this.checkSize(size)
    if (!Number.isInteger(index) || index < 0 || index >= size) {
      throw new RangeError(`leaf ${index} is not in a tree of ${size} leaves`)
    }
    const path = (m: number, start: number, n: number): Array<Hash> => {
      if (n <= 1) return []
      const k = split(n)
      return m < k
        ? [...path(m, start, k), this.range(start + k, n - k)]
        : [...path(m - k, start + k, n - k), this.range(start, k)]
    }
    return path(index, 0, size)
  }

  /** RFC 6962 §2.1.2 PROOF(m, D[0:n]): that the tree of `oldSize` leaves is a prefix of the tree of `newSize`. */
  consistencyProof(oldSize: number, newSize: number = this.size): ReadonlyArray<Hash> {
    this.checkSize(newSize)
    if (!Number.isInteger(oldSize) || oldSize < 0 || oldSize > newSize) {
      throw new RangeError(`no consistency proof from ${oldSize} to ${newSize} leaves`)
    }
    if (oldSize === 0 || oldSize === newSize) return []
    const subproof = (m: number, start: number, n: number, complete: boolean): Array<Hash> => {
      if (m === n) return complete ? [] : [this.range(start, n)]
      const k = split(n)
      return m <= k
        ? [...subproof(m, start, k, complete), this.range(start + k, n - k)]
        : [...subproof(m - k, start + k, n - k, false), this.range(start, k)]
    }
    return subproof(oldSize, 0, newSize, true)
  }

  private checkSize(size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > this.size) {
      throw new RangeError(`the tree has ${this.size} leaves, not ${size}`)
    }
  }
}

const equal = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)

/** RFC 9162 §2.1.3.2: whether `proof` shows the leaf `leaf` (its leaf hash) at `index` in a tree of `size` with `root`. */
export const verifyInclusion = (
  leaf: Hash,
  index: number,
  size: number,
  proof: ReadonlyArray<Hash>,
  root: Hash
): boolean => {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return false
  let fn = index
  let sn = size - 1
  let r = leaf
  for (const p of proof) {
    if (sn === 0) return false
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r)
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2)
          sn = Math.floor(sn / 2)
        }
      }
    } else {
      r = nodeHash(r, p)
    }
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  return sn === 0 && equal(r, root)
}

/** RFC 9162 §2.1.4.2: whether `proof` shows the tree (`oldSize`, `oldRoot`) is a prefix of (`newSize`, `newRoot`). */
export const verifyConsistency = (
  oldSize: number,
  newSize: number,
  proof: ReadonlyArray<Hash>,
  oldRoot: Hash,
  newRoot: Hash
): boolean => {
  if (!Number.isSafeInteger(oldSize) || !Number.isSafeInteger(newSize) || oldSize < 0 || oldSize > newSize) return false
  if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot)
  if (oldSize === 0) return proof.length === 0
  if (proof.length === 0) return false
  const path = [...proof]
  // When the old tree is a complete subtree of the new one, its root is the first step of the path.
  if (isPowerOfTwo(oldSize)) path.unshift(oldRoot)
  let fn = oldSize - 1
  let sn = newSize - 1
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  let fr = path[0]!
  let sr = path[0]!
  for (const c of path.slice(1)) {
    if (sn === 0) return false
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr)
      sr = nodeHash(c, sr)
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2)
          sn = Math.floor(sn / 2)
        }
      }
    } else {
      sr = nodeHash(sr, c)
    }
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  return sn === 0 && equal(fr, oldRoot) && equal(sr, newRoot)
}
