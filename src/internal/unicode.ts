/**
 * Well-formed Unicode for what the ledger stores. A JavaScript string may hold a lone UTF-16 surrogate;
 * RFC 8785 (the payload's canonical form) refuses such a string, and UTF-8 cannot encode one (encoders
 * write U+FFFD in its place). The rule (docs/FORMAT.md, "Refusal payload v1"): each lone surrogate
 * becomes U+FFFD, exactly what `String.prototype.toWellFormed` and every UTF-8 encoder produce.
 */

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, "g")

/** True when `text` holds no lone surrogate. */
export const isWellFormed = (text: string): boolean => !LONE_SURROGATE.test(text)

/** `text` with each lone surrogate replaced by U+FFFD (the same string when there is none). */
export const toWellFormed = (text: string): string =>
  isWellFormed(text) ? text : text.replace(LONE_SURROGATES, "\uFFFD")

/** True when no string in a JSON-like value (keys included) holds a lone surrogate. */
export const isWellFormedDeep = (value: unknown): boolean => {
  if (typeof value === "string") return isWellFormed(value)
  if (Array.isArray(value)) return value.every(isWellFormedDeep)
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).every(([key, inner]) => isWellFormed(key) && isWellFormedDeep(inner))
  }
  return true
}

/**
 * A JSON-like value with `toWellFormed` applied to every string, object keys included. Keys that become
 * equal keep the value of the last one in the object's key order.
 */
export const toWellFormedDeep = (value: unknown): unknown => {
  if (typeof value === "string") return toWellFormed(value)
  if (Array.isArray(value)) return value.map(toWellFormedDeep)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [toWellFormed(key), toWellFormedDeep(inner)]))
  }
  return value
}
