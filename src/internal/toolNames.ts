/**
 * Tool and server names as the guard's rules and the ledger's argument storage compare them: normalised
 * against look-alikes (`normalizeName`) and matched against glob patterns (`globMatch`).
 */

const globCache = new Map<string, RegExp>()

const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu

/**
 * A tool or server name as rules compare it: Unicode NFKC (fullwidth `ｗｒｉｔｅ` is `write`), case folded
 * (`WRITE_FILE` is `write_file`), invisible code points (zero-width space, joiners, soft hyphen) removed and
 * surrounding white space trimmed, so a server cannot slip a look-alike name past a rule.
 */
export const normalizeName = (name: string): string =>
  name.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC").replace(IGNORABLE, "").trim()

/**
 * Whether `text` matches the glob `pattern` (`*` any run of characters, `?` one; whole string), both
 * compared as `normalizeName` gives them.
 */
export const globMatch = (pattern: string, text: string): boolean => {
  let re = globCache.get(pattern)
  if (re === undefined) {
    const source = normalizeName(pattern).replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(
      /\?/g,
      "."
    )
    re = new RegExp(`^${source}$`, "su")
    globCache.set(pattern, re)
  }
  return re.test(normalizeName(text))
}
