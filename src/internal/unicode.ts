/**
 * Well-formed Unicode for what the ledger stores. A JavaScript string may hold a lone UTF-16 surrogate;
 * RFC 8785 (the payload's canonical form) refuses such a string, and UTF-8 cannot encode one (encoders
 * write U+FFFD in its place). The rule (docs/FORMAT.md, "Refusal payload v1"): each lone surrogate
 * becomes U+FFFD, exactly what `String.prototype.toWellFormed` (ES2024, Node 20) and every UTF-8 encoder
 * produce. The deep variants walk JSON-like values with an explicit stack: a value nested deeper than the
 * call stack allows is still checked and rebuilt, never a stack overflow.
 */

/** True when `text` holds no lone surrogate. */
export const isWellFormed = (text: string): boolean => text.isWellFormed()

/** `text` with each lone surrogate replaced by U+FFFD (the same string when there is none). */
export const toWellFormed = (text: string): string => text.toWellFormed()

/** True when no string in a JSON-like value (keys included) holds a lone surrogate. */
export const isWellFormedDeep = (value: unknown): boolean => {
  const pending: Array<unknown> = [value]
  while (pending.length > 0) {
    const next = pending.pop()
    if (typeof next === "string") {
      if (!next.isWellFormed()) return false
    } else if (Array.isArray(next)) {
      for (const inner of next) pending.push(inner)
    } else if (typeof next === "object" && next !== null) {
      for (const [key, inner] of Object.entries(next)) {
        if (!key.isWellFormed()) return false
        pending.push(inner)
      }
    }
  }
  return true
}

/**
 * A JSON-like value with `toWellFormed` applied to every string, object keys included. Keys that become
 * equal keep the value of the last one in the object's key order. A well-formed value is returned as is.
 */
export const toWellFormedDeep = (value: unknown): unknown => {
  if (isWellFormedDeep(value)) return value
  const copy = (source: unknown): unknown =>
    typeof source === "string"
      ? source.toWellFormed()
      : Array.isArray(source)
      ? new Array<unknown>(source.length)
      : typeof source === "object" && source !== null
      ? {}
      : source
  const root = copy(value)
  // Each entry: a source container and the copy its members are written into.
  const pending: Array<readonly [unknown, Record<string, unknown> | Array<unknown>]> = []
  if (typeof root === "object" && root !== null) pending.push([value, root as Record<string, unknown>])
  while (pending.length > 0) {
    const [source, target] = pending.pop()!
    const entries: Array<readonly [string | number, unknown]> = Array.isArray(source)
      ? source.map((inner, index) => [index, inner] as const)
      : Object.entries(source as Record<string, unknown>).map(([key, inner]) => [key.toWellFormed(), inner] as const)
    for (const [key, inner] of entries) {
      const member = copy(inner)
      if (Array.isArray(target)) target[key as number] = member
      // defineProperty, not assignment: a `__proto__` key stays an own data property.
      else Object.defineProperty(target, key, { value: member, enumerable: true, writable: true, configurable: true })
      if (typeof member === "object" && member !== null) pending.push([inner, member as Record<string, unknown>])
    }
  }
  return root
}
