/**
 * The size of a JSON value as UTF-8, measured without recursion: the guard's gate on a client's arguments
 * (`measureArguments`, re-exported by `McpGuard`) and the byte counts of stored argument digests and of
 * read budgets (`jsonBytes`).
 */

/** How deep and how large a call's arguments may be (`measureArguments`). */
export interface ArgumentLimits {
  /** Nesting of objects and arrays; `{"a": 1}` is depth 1, a string alone depth 0. */
  readonly maxDepth: number
  /** Size as JSON in UTF-8, counted without string escapes. */
  readonly maxBytes: number
}

/** What `measureArguments` found: within the limits (with the size), or the first limit crossed. */
export type ArgumentSize =
  | { readonly _tag: "Within"; readonly bytes: number }
  | { readonly _tag: "TooDeep"; readonly depth: number }
  | { readonly _tag: "TooLarge"; readonly bytes: number }

/**
 * Walks a client's arguments without recursion, stopping at the first limit crossed: so no later step
 * (policy matching, canonical JSON, `JSON.stringify`, journaling, the ledger) meets a value deeper or
 * larger than the limits. The size counts strings and keys as UTF-8 with their quotes, numbers as written,
 * and JSON punctuation; escapes are not counted. Each node adds at least one byte, so the walk itself is
 * bounded by `maxBytes` (a value that contains itself is too deep).
 */
export const measureArguments = (value: unknown, limits: ArgumentLimits): ArgumentSize => {
  let bytes = 0
  const stack: Array<unknown> = [value]
  const depths: Array<number> = [0]
  while (stack.length > 0) {
    const v = stack.pop()
    const depth = depths.pop()!
    switch (typeof v) {
      case "string":
        bytes += Buffer.byteLength(v, "utf8") + 2
        break
      case "number":
      case "bigint":
        bytes += String(v).length
        break
      case "boolean":
        bytes += v ? 4 : 5
        break
      case "object": {
        if (v === null) {
          bytes += 4
          break
        }
        if (depth + 1 > limits.maxDepth) return { _tag: "TooDeep", depth: depth + 1 }
        if (Array.isArray(v)) {
          bytes += 2 + Math.max(0, v.length - 1)
          if (bytes > limits.maxBytes) return { _tag: "TooLarge", bytes }
          for (let i = v.length - 1; i >= 0; i--) {
            stack.push(v[i])
            depths.push(depth + 1)
          }
        } else {
          const keys = Object.keys(v)
          bytes += 2 + Math.max(0, keys.length - 1)
          for (const key of keys) {
            bytes += Buffer.byteLength(key, "utf8") + 3
            if (bytes > limits.maxBytes) return { _tag: "TooLarge", bytes }
            stack.push((v as Record<string, unknown>)[key])
            depths.push(depth + 1)
          }
        }
        break
      }
      default:
        bytes += 1
    }
    if (bytes > limits.maxBytes) return { _tag: "TooLarge", bytes }
  }
  return { _tag: "Within", bytes }
}

/**
 * Bytes of `value` as JSON in UTF-8 (0 when absent or not serialisable, e.g. a value that contains itself).
 * A value too deep for `JSON.stringify` (an upstream's 10,000-deep result) is counted by the iterative walk
 * of `measureArguments` (no limits; escapes not counted), never as 0: it counts toward read budgets.
 */
export const jsonBytes = (value: unknown): number => {
  if (value === undefined) return 0
  try {
    const json = JSON.stringify(value)
    return json === undefined ? 0 : Buffer.byteLength(json, "utf8")
  } catch (error) {
    if (!(error instanceof RangeError)) return 0
    const size = measureArguments(value, { maxDepth: Infinity, maxBytes: Number.MAX_SAFE_INTEGER })
    return size._tag === "Within" ? size.bytes : 0
  }
}
