/**
 * A bound on how deeply a decoded JSON value nests, checked without recursion, before anything that
 * recurses over the value (Schema decoding and its error messages, canonicalization) sees it. JSON.parse
 * itself takes any depth; the code after it must not be given one that overflows the stack (STYLE.md,
 * "Untrusted input": bounded depth, no recursion on input depth).
 */

/** The deepest nesting any agent-ledger file format needs is a handful of levels; this leaves ample room. */
export const MAX_JSON_DEPTH = 100

/** Where a value nests too deeply: the path to the first container past the bound (shortened), and its depth. */
export interface TooDeep {
  /** Dotted path (`entries.3.toolName.0.0…`), its middle elided when long. */
  readonly path: string
  readonly depth: number
  readonly maxDepth: number
}

/** The first place `value` nests deeper than `maxDepth` containers, or undefined when it never does. */
export const findTooDeep = (value: unknown, maxDepth: number = MAX_JSON_DEPTH): TooDeep | undefined => {
  if (typeof value !== "object" || value === null) return undefined
  // Each frame: the container, its depth (1 for the root), and the key that led to it from its parent.
  const containers: Array<unknown> = [value]
  const depths: Array<number> = [1]
  const parents: Array<number> = [-1]
  const keys: Array<string> = [""]
  const stack: Array<number> = [0]
  while (stack.length > 0) {
    const at = stack.pop()!
    const depth = depths[at]!
    if (depth > maxDepth) return { path: pathOf(at, parents, keys), depth, maxDepth }
    const container = containers[at] as object
    const entries: Iterable<readonly [string, unknown]> = Array.isArray(container)
      ? container.map((inner, i) => [String(i), inner] as const)
      : Object.entries(container)
    for (const [key, inner] of entries) {
      if (typeof inner !== "object" || inner === null) continue
      containers.push(inner)
      depths.push(depth + 1)
      parents.push(at)
      keys.push(key)
      stack.push(containers.length - 1)
    }
  }
  return undefined
}

/** The dotted path of frame `at`: the first and last few keys when it is long. */
const pathOf = (at: number, parents: ReadonlyArray<number>, keys: ReadonlyArray<string>): string => {
  const parts: Array<string> = []
  for (let i = at; parents[i]! >= 0; i = parents[i]!) parts.push(keys[i]!)
  parts.reverse()
  return parts.length <= 12 ? parts.join(".") : [...parts.slice(0, 6), "…", ...parts.slice(-3)].join(".")
}

/** "nested deeper than 100 levels at entries.0.toolName.0…" */
export const describeTooDeep = (tooDeep: TooDeep): string =>
  `nested deeper than ${tooDeep.maxDepth} levels at ${tooDeep.path === "" ? "(root)" : tooDeep.path}`
