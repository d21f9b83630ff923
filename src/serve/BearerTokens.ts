/**
 * Bearer tokens for `agent-ledger serve`: the agent's identity comes from the token it presents, never from
 * what the client says it is. The tokens file holds one `AGENT_ID sha256:<hex>` line per token (the SHA-256
 * of the token, so the file holds no secret; `#` starts a comment line); `generate` makes a fresh token and
 * its line.
 *
 * `authenticate` hashes the presented token and compares that digest with every entry's digest in constant
 * time (`crypto.timingSafeEqual` on equal-length digests, no early exit), so neither the token's bytes nor
 * which entry matched leak through timing.
 */
import { Data, Effect, Option } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"

/** One line of the tokens file: the agent a token stands for, and the token's SHA-256. */
export interface TokenEntry {
  readonly agentId: string
  readonly digest: Buffer
}

/** The tokens `serve` accepts. */
export interface Tokens {
  readonly entries: ReadonlyArray<TokenEntry>
}

/** A tokens file that cannot be used: `line` (1-based; 0 for the whole file) says where. */
export class TokensError extends Data.TaggedError("TokensError")<{
  readonly file: string
  readonly line: number
  readonly detail: string
}> {
  override get message(): string {
    return this.line === 0 ? `${this.file}: ${this.detail}` : `${this.file}:${this.line}: ${this.detail}`
  }
}

/** An agent id as tokens name it: printable, no white space, at most 128 characters. */
export const AGENT_ID = /^[A-Za-z0-9._:@/+-]{1,128}$/

const LINE = /^(\S+)\s+sha256:([0-9a-f]{64})$/

/** Parses the text of a tokens file (`file` names it in errors). Two lines with one digest are an error. */
export const parse = (text: string, file: string): Effect.Effect<Tokens, TokensError> =>
  Effect.suspend(() => {
    const entries: Array<TokenEntry> = []
    const seen = new Set<string>()
    for (const [i, raw] of text.split(/\r?\n/).entries()) {
      const line = raw.trim()
      if (line === "" || line.startsWith("#")) continue
      const match = LINE.exec(line)
      if (match === null) {
        return Effect.fail(
          new TokensError({ file, line: i + 1, detail: "expected AGENT_ID sha256:<64 lowercase hex chars>" })
        )
      }
      const [, agentId, hex] = match
      if (!AGENT_ID.test(agentId!)) {
        return Effect.fail(
          new TokensError({ file, line: i + 1, detail: `agent id ${JSON.stringify(agentId)} is not allowed` })
        )
      }
      if (seen.has(hex!)) {
        return Effect.fail(new TokensError({ file, line: i + 1, detail: "the same token digest is listed twice" }))
      }
      seen.add(hex!)
      entries.push({ agentId: agentId!, digest: Buffer.from(hex!, "hex") })
    }
    if (entries.length === 0) return Effect.fail(new TokensError({ file, line: 0, detail: "no tokens" }))
    return Effect.succeed({ entries })
  })

/** Reads and parses the tokens file at `file`. */
export const load = (file: string): Effect.Effect<Tokens, TokensError> =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (error) => new TokensError({ file, line: 0, detail: (error as NodeJS.ErrnoException).code ?? String(error) })
  }).pipe(Effect.flatMap((text) => parse(text, file)))

/** The SHA-256 of a token, as the tokens file lists it. */
export const digestOf = (token: string): Buffer => crypto.createHash("sha256").update(token, "utf8").digest()

/** The tokens file line for `token`. */
export const lineFor = (agentId: string, token: string): string =>
  `${agentId} sha256:${digestOf(token).toString("hex")}`

/** A fresh token (32 random bytes, base64url, prefixed `al_`) and its tokens file line. */
export const generate = (agentId: string): { readonly token: string; readonly line: string } => {
  const token = `al_${crypto.randomBytes(32).toString("base64url")}`
  return { token, line: lineFor(agentId, token) }
}

/** The longest `Authorization` header value read; a longer one is refused without hashing it. */
export const MAX_AUTHORIZATION_BYTES = 1024

/**
 * The agent of the token in an `Authorization: Bearer <token>` header, or `None` (no header, another
 * scheme, an unknown token). Every entry is compared, in constant time, whatever matches.
 */
export const authenticate = (tokens: Tokens, authorization: string | undefined): Option.Option<string> => {
  if (authorization === undefined || authorization.length > MAX_AUTHORIZATION_BYTES) return Option.none()
  const match = /^Bearer[ ]+(\S+)[ ]*$/i.exec(authorization)
  if (match === null) return Option.none()
  const presented = digestOf(match[1]!)
  let agentId: string | undefined
  for (const entry of tokens.entries) {
    if (crypto.timingSafeEqual(presented, entry.digest) && agentId === undefined) agentId = entry.agentId
  }
  return Option.fromNullable(agentId)
}
