/**
 * The guard's policy: an ordered list of rules read against the session journal, as a Schema-validated
 * JSON document (`load`, `decode`) or a TypeScript value. `engine` turns it into the `McpGuard.PolicyEngine`
 * the guard runs.
 *
 * Evaluation: rules are read in order; the first rule whose action is `refuse` and that matches the call
 * wins; matching `warn` rules are collected and do not block; the first matching `ask` rule's refusal
 * stands unless a person accepts the call (the verdict carries `ask`; a `refuse` rule later in the list
 * still wins without a question). A `toolChanged` rule says whether a call of a tool whose definition changed
 * since it was pinned is refused (the default) or asked about (an accept pins the new definition); it is
 * read by the guard (`PolicyEngine.toolChangedAsk`), never by `evaluate`. `mode: "shadow"` records refusals
 * without enforcing them. With `"defaultAction": "deny"` a call whose
 * tool no `allowTools` rule lists is refused (rule `default-deny`). Budgets, call limits, rate limits and
 * sequence rules count **allowed** calls only (calls still in flight included), so one refused oversized
 * call does not make later calls fail under the wrong rule. Tool and server names are compared as
 * `normalizeName` gives them, so look-alike names are the tools the rules name.
 *
 * **Conditions on arguments.** `blockTools`, `callLimit`, `rateLimit` and `sequence` rules take an optional
 * `when`: a list of `{ path, match }` conditions on the call's arguments, all of which must hold for the
 * rule to apply to the call (a missing value holds for none). So `Read` of `**\/.env` is
 * `{ kind: "blockTools", tools: ["Read"], when: [{ path: "file_path", match: { pathGlob: ["**\/.env"] } }] }`
 * and a `Bash` command matching a regex is `when: [{ path: "command", match: { regex: "curl|wget" } }]`.
 * `when` narrows which calls a rule checks, not what it counts: a `callLimit` or `rateLimit` still counts
 * every earlier allowed call in its tool scope, and a `sequence` rule's `after` is by tool name.
 *
 * **What reaches the ledger.** A refusal's row stores the call's arguments, and a signed, append-only ledger
 * cannot forget them: by default only their salted SHA-256 (salted per ledger, `LedgerSql.argumentSalt`)
 * and their size are stored. `argumentStorage.tools` says per tool which top-level argument fields are
 * stored as given, which as salted hashes and which are dropped.
 */
import { Effect, ParseResult, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as ArgumentStorage from "../audit/ArgumentStorage.js"
import type { JsonValue } from "../audit/AuditEvent.js"
import { Allow, Refuse, Warn } from "../audit/AuditEvent.js"
import { globMatch, normalizeName } from "../internal/toolNames.js"
import type { AskSpec, AwaitInFlight, GuardCall, PolicyEngine, Verdict } from "./McpGuard.js"
import { DEFAULT_MAX_ARGUMENT_BYTES, DEFAULT_MAX_ARGUMENT_DEPTH, jsonBytes } from "./McpGuard.js"

// ---------------------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------------------

const Patterns = Schema.Array(Schema.String.pipe(Schema.minLength(1)))
const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())
const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/** Fields every rule has: its id (the refusal's `rule_id`), an action, and a reason template. */
const common = {
  /** Becomes the refusal's `rule_id`. */
  id: Schema.String.pipe(Schema.minLength(1)),
  /**
   * `refuse` (the default) blocks the call; `warn` logs it and lets it run; `ask` holds it and asks a person
   * (through the guard's approver: MCP elicitation in `mcp-proxy`), forwarding it only if they accept.
   */
  action: Schema.optional(Schema.Literal("refuse", "warn", "ask")),
  /** `ask`: seconds to wait for the answer (default 60). */
  timeout: Schema.optional(Schema.Number.pipe(Schema.positive())),
  /** `ask`: what happens when no answer comes in time (default `refuse`). */
  onTimeout: Schema.optional(Schema.Literal("refuse", "allow")),
  /** `ask`: what happens when no one can be asked (the client cannot elicit; default `refuse`). */
  fallback: Schema.optional(Schema.Literal("refuse", "allow")),
  /** `ask`: top-level argument fields shown in the question as given (others are counted, not shown). */
  showArguments: Schema.optional(Schema.Array(Schema.String)),
  /**
   * What the agent and the ledger are told; `{tool}`, `{server}`, `{agent}`, `{rule}`, `{limit}` and
   * `{actual}` are filled in.
   */
  reason: Schema.optional(Schema.String)
}

/** Tools (and optionally servers) a rule applies to: glob patterns, `*` any run of characters, `?` one. */
const scope = {
  tools: Schema.optional(Patterns),
  servers: Schema.optional(Patterns)
}

export const ArgumentMatch = Schema.Union(
  Schema.Struct({ equals: Schema.Unknown }),
  Schema.Struct({ oneOf: Schema.Array(Schema.Unknown) }),
  Schema.Struct({ regex: Schema.String }),
  /**
   * A file path matching any of these globs (`pathGlobMatch`): `**` any run of directories, `*` and `?`
   * within one path segment; compared after the path is normalised, ignoring case.
   */
  Schema.Struct({ pathGlob: Patterns })
)
/** One condition of a rule's `when`: the value at `path` of the arguments satisfies `match`. */
export const ArgumentCondition = Schema.Struct({
  path: Schema.String.pipe(Schema.minLength(1)),
  match: ArgumentMatch
})
/** A rule applies to a call only when every condition holds (see the module comment). */
const when = { when: Schema.optional(Schema.Array(ArgumentCondition)) }

export const BlockTools = Schema.Struct({ kind: Schema.Literal("blockTools"), ...common, ...scope, ...when })
export const BlockServers = Schema.Struct({ kind: Schema.Literal("blockServers"), ...common, servers: Patterns })
export const AllowTools = Schema.Struct({ kind: Schema.Literal("allowTools"), id: common.id, ...scope })

/** The `ask` fields of a rule. */
interface AskFields {
  readonly timeout?: number | undefined
  readonly onTimeout?: "refuse" | "allow" | undefined
  readonly fallback?: "refuse" | "allow" | undefined
  readonly showArguments?: ReadonlyArray<string> | undefined
}

/** An `ask` rule's default `timeout`, in seconds. */
export const DEFAULT_ASK_TIMEOUT_SECONDS = 60
export const Budget = Schema.Struct({
  kind: Schema.Literal("budget"),
  ...common,
  /** Bytes of results read over the session's allowed calls; the next call is refused once reached. */
  read: Schema.optional(NonNegativeInt),
  /** Bytes of arguments written over the session's allowed calls, this call included. */
  written: Schema.optional(NonNegativeInt),
  /** Read plus written. */
  total: Schema.optional(NonNegativeInt),
  /** Warn (rule id `<id>`, action warn) once a budget is this fraction used. */
  warnAt: Schema.optional(Schema.Number.pipe(Schema.between(0, 1)))
})
export const MaxDelegationDepth = Schema.Struct({
  kind: Schema.Literal("maxDelegationDepth"),
  ...common,
  max: NonNegativeInt
})
export const CallLimit = Schema.Struct({
  kind: Schema.Literal("callLimit"),
  ...common,
  ...scope,
  ...when,
  /** Allowed calls at which the next is refused; 0 refuses every call in scope (and hides the tool). */
  max: NonNegativeInt,
  /**
   * `tool` (the default): each tool in scope may be called `max` times per session; `rule`: all the tools
   * in scope together may be called `max` times.
   */
  per: Schema.optional(Schema.Literal("tool", "rule"))
})
export const RateLimit = Schema.Struct({
  kind: Schema.Literal("rateLimit"),
  ...common,
  ...scope,
  ...when,
  /** Allowed calls within the window, this one excluded, at which the next is refused. */
  max: NonNegativeInt,
  windowSeconds: Schema.Number.pipe(Schema.positive())
})
export const Sequence = Schema.Struct({
  kind: Schema.Literal("sequence"),
  ...common,
  ...when,
  /** A call to a tool matching `then`... */
  then: Patterns,
  /** ...after an allowed call to a tool matching `after`... */
  after: Patterns,
  /** ...among the last `within` allowed calls. */
  within: PositiveInt
})
export const Arguments = Schema.Struct({
  kind: Schema.Literal("arguments"),
  ...common,
  ...scope,
  /** A dotted path into the arguments, e.g. `query` or `options.mode` or `paths.0`. */
  path: Schema.String.pipe(Schema.minLength(1)),
  /** What the value must satisfy; the rule fires when it does not (or the value is missing). */
  match: ArgumentMatch
})

/**
 * A rule on the hints a tool's pinned definition declares (MCP tool annotations): it fires when every hint
 * it names has the value given. A hint the definition leaves out has MCP's default (`readOnlyHint` false,
 * `destructiveHint` true, `idempotentHint` false, `openWorldHint` true), and so do all hints of a tool
 * with no pinned definition (never listed, or changed since its pin): annotations are the server's own
 * claims, so they are only believed on the definition the ledger pinned.
 */
export const Annotations = Schema.Struct({
  kind: Schema.Literal("annotations"),
  ...common,
  ...scope,
  readOnlyHint: Schema.optional(Schema.Boolean),
  destructiveHint: Schema.optional(Schema.Boolean),
  idempotentHint: Schema.optional(Schema.Boolean),
  openWorldHint: Schema.optional(Schema.Boolean)
})

/** MCP's defaults for hints a tool does not declare. */
export const ANNOTATION_DEFAULTS = {
  readOnlyHint: false,
  destructiveHint: true,
  idempotentHint: false,
  openWorldHint: true
} as const

const HINTS = ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"] as const

/**
 * What happens to a call of a tool whose definition changed since it was pinned (rule `tool-changed`; needs
 * tool pinning): `refuse` (the default, also without any such rule) until an operator runs `agent-ledger
 * tools approve`, or `ask`: the guard's approver is asked (tool, server, pinned and new digest, what
 * changed) and an accept pins the new definition (a `tool.pinned` row naming the approver) and lets the
 * call run. The first rule whose scope covers the tool applies. `onTimeout` and `fallback` can only be
 * `refuse`: a definition is pinned only on a person's accept. It never fires on a tool that did not change.
 */
export const ToolChanged = Schema.Struct({
  kind: Schema.Literal("toolChanged"),
  ...common,
  ...scope
})

export const Rule = Schema.Union(
  BlockTools,
  BlockServers,
  AllowTools,
  Budget,
  MaxDelegationDepth,
  CallLimit,
  RateLimit,
  Sequence,
  Arguments,
  Annotations,
  ToolChanged
)
export type Rule = typeof Rule.Type

/** How argument fields reach the ledger: the vocabulary of `ArgumentStorage`, shared with the library. */
export { FieldStorage, ToolStorage } from "../audit/ArgumentStorage.js"

export const GuardPolicy = Schema.Struct({
  version: Schema.Literal(1),
  /** `deny`: only tools an `allowTools` rule lists may run. Default `allow`. */
  defaultAction: Schema.optional(Schema.Literal("allow", "deny")),
  /** Leave tools the policy always refuses out of `tools/list`, so the agent never sees them. */
  hideRefusedTools: Schema.optional(Schema.Boolean),
  /**
   * `shadow`: decide, journal and ledger every call as `enforce` (the default) would, but block and hide
   * nothing; a refusal's row is a `governance.would-refuse` (`agent-ledger stats` counts them by rule).
   */
  mode: Schema.optional(Schema.Literal("enforce", "shadow")),
  /**
   * Tool pinning (default on): each tool's definition is pinned in the ledger the first time it is seen,
   * and a tool whose definition later differs is refused under `tool-changed` until approved. `false` opts
   * out (and then `annotations` rules cannot be used).
   */
  pinTools: Schema.optional(Schema.Boolean),
  rules: Schema.Array(Rule),
  /** Per tool (glob patterns as keys, first match wins), which argument fields the ledger stores. */
  argumentStorage: Schema.optional(ArgumentStorage.Tools),
  /**
   * Bounds on a call's arguments, checked before anything else reads them: deeper or larger arguments are
   * refused under `arguments-too-deep` / `arguments-too-large`. Defaults: depth 64, 4 MiB.
   */
  limits: Schema.optional(Schema.Struct({
    maxArgumentDepth: Schema.optional(PositiveInt),
    maxArgumentBytes: Schema.optional(PositiveInt)
  }))
}).annotations({ identifier: "GuardPolicy" })
export type GuardPolicy = typeof GuardPolicy.Type

/** The rule id of a call refused because `defaultAction` is `deny` and no `allowTools` rule lists it. */
export const DEFAULT_DENY_RULE = "default-deny"

// ---------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------

/** A policy that cannot be used: `path` names the field (`rules.2.match.regex`), `message` what is wrong. */
export class PolicyError extends Schema.TaggedError<PolicyError>()("PolicyError", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return this.path === "" ? `invalid policy: ${this.detail}` : `invalid policy at ${this.path}: ${this.detail}`
  }
}

const decodeDocument = Schema.decodeUnknownEither(GuardPolicy, { errors: "first", onExcessProperty: "error" })

const regexError = (pattern: string): string | undefined => {
  try {
    new RegExp(pattern, "u")
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}

/** Decodes a policy document; the first problem is one `PolicyError` naming its field. */
export const decode = (input: unknown): Effect.Effect<GuardPolicy, PolicyError> => {
  const decoded = decodeDocument(input)
  if (decoded._tag === "Left") {
    const [issue] = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
    return Effect.fail(
      new PolicyError({ path: issue?.path.join(".") ?? "", detail: issue?.message ?? "not a guard policy" })
    )
  }
  const policy = decoded.right
  for (const [i, rule] of policy.rules.entries()) {
    const matches: Array<readonly [string, typeof ArgumentMatch.Type]> = rule.kind === "arguments"
      ? [[`rules.${i}.match`, rule.match]]
      : "when" in rule && rule.when !== undefined
      ? rule.when.map((condition, j) => [`rules.${i}.when.${j}.match`, condition.match] as const)
      : []
    for (const [at, match] of matches) {
      const problem = "regex" in match ? regexError(match.regex) : undefined
      if (problem !== undefined) {
        return Effect.fail(new PolicyError({ path: `${at}.regex`, detail: `not a regular expression: ${problem}` }))
      }
    }
  }
  for (const [i, rule] of policy.rules.entries()) {
    if (rule.kind !== "annotations") continue
    if (policy.pinTools === false) {
      return Effect.fail(
        new PolicyError({
          path: `rules.${i}`,
          detail: "an annotations rule needs pinned tool definitions (pinTools is false)"
        })
      )
    }
    if (HINTS.every((hint) => rule[hint] === undefined)) {
      return Effect.fail(
        new PolicyError({ path: `rules.${i}`, detail: `an annotations rule names one of ${HINTS.join(", ")}` })
      )
    }
  }
  for (const [i, rule] of policy.rules.entries()) {
    if (rule.kind !== "toolChanged") continue
    const problem = policy.pinTools === false
      ? "a toolChanged rule needs pinned tool definitions (pinTools is false)"
      : rule.action === "warn"
      ? "a toolChanged rule's action is ask or refuse (a changed tool is never only warned about)"
      : rule.onTimeout === "allow" || rule.fallback === "allow"
      ? "a toolChanged rule's onTimeout and fallback can only be refuse (a definition is pinned only on a person's accept)"
      : undefined
    if (problem !== undefined) return Effect.fail(new PolicyError({ path: `rules.${i}`, detail: problem }))
  }
  const ids = new Set<string>()
  for (const [i, rule] of policy.rules.entries()) {
    if (ids.has(rule.id)) {
      return Effect.fail(new PolicyError({ path: `rules.${i}.id`, detail: `duplicate id ${rule.id}` }))
    }
    ids.add(rule.id)
  }
  return Effect.succeed(policy)
}

/** Reads and decodes the policy file at `path`. */
export const load = (path: string): Effect.Effect<GuardPolicy, PolicyError> =>
  Effect.try({
    try: () => JSON.parse(fs.readFileSync(path, "utf8")) as unknown,
    catch: (error) => new PolicyError({ path: "", detail: error instanceof Error ? error.message : String(error) })
  }).pipe(Effect.flatMap(decode))

// ---------------------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------------------

export { globMatch, normalizeName } from "../internal/toolNames.js"

const anyMatch = (patterns: ReadonlyArray<string> | undefined, text: string): boolean =>
  patterns === undefined || patterns.some((pattern) => globMatch(pattern, text))

const inScope = (rule: {
  readonly tools?: ReadonlyArray<string> | undefined
  readonly servers?: ReadonlyArray<string> | undefined
}, call: {
  readonly toolName: string
  readonly serverId?: string | undefined
}) => anyMatch(rule.tools, call.toolName) && (call.serverId === undefined || anyMatch(rule.servers, call.serverId))

/** The value at a dotted `path` of `value` (`a.b.0`), or undefined. */
export const valueAt = (value: unknown, path: string): unknown => {
  let current = value
  for (const key of path.split(".")) {
    if (typeof current !== "object" || current === null) return undefined
    current = (current as Record<string, unknown>)[key]
  }
  return current
}

/**
 * Whether two values are the same JSON (object key order ignored, `-0` is `0`), without recursion: the
 * value is the client's, and may be nested arbitrarily deep.
 */
export const sameJson = (a: unknown, b: unknown): boolean => {
  const stack: Array<readonly [unknown, unknown]> = [[a, b]]
  while (stack.length > 0) {
    const [x, y] = stack.pop()!
    if (x === y) continue
    if (typeof x !== "object" || typeof y !== "object" || x === null || y === null) return false
    if (Array.isArray(x) !== Array.isArray(y)) return false
    if (Array.isArray(x)) {
      const ys = y as ReadonlyArray<unknown>
      if (x.length !== ys.length) return false
      for (let i = 0; i < x.length; i++) stack.push([x[i], ys[i]])
      continue
    }
    const xs = Object.keys(x).filter((k) => (x as Record<string, unknown>)[k] !== undefined)
    const yKeys = Object.keys(y).filter((k) => (y as Record<string, unknown>)[k] !== undefined)
    if (xs.length !== yKeys.length) return false
    for (const key of xs) {
      if (!Object.hasOwn(y, key)) return false
      stack.push([(x as Record<string, unknown>)[key], (y as Record<string, unknown>)[key]])
    }
  }
  return true
}

const pathGlobCache = new Map<string, RegExp>()

/**
 * A file path as `pathGlob` compares it: backslashes are separators, `.` and `..` segments and repeated
 * slashes are resolved lexically (`a/../.env` is `.env`), so a spelling of the same path cannot slip past.
 * Symbolic links are not resolved: the guard does not look at the file system.
 */
export const normalizePath = (value: string): string => path.posix.normalize(value.replace(/\\/g, "/"))

/**
 * Whether the file path `value` matches the glob `pattern`: `**\/` is any run of directories (none
 * included), `**` any run of characters, `*` and `?` any run of characters and one character within a
 * segment. Whole path, case ignored (case-insensitive file systems), after `normalizePath`.
 */
export const pathGlobMatch = (pattern: string, value: string): boolean => {
  let re = pathGlobCache.get(pattern)
  if (re === undefined) {
    let source = ""
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i]!
      if (c === "*" && pattern[i + 1] === "*") {
        if (pattern[i + 2] === "/") {
          source += "(?:.*/)?"
          i += 2
        } else {
          source += ".*"
          i += 1
        }
      } else if (c === "*") source += "[^/]*"
      else if (c === "?") source += "[^/]"
      else source += c.replace(/[.+^${}()|[\]\\*?]/g, "\\$&")
    }
    re = new RegExp(`^${source}$`, "isu")
    pathGlobCache.set(pattern, re)
  }
  return re.test(normalizePath(value))
}

const satisfies = (value: unknown, match: typeof ArgumentMatch.Type): boolean => {
  if (value === undefined) return false
  if ("equals" in match) return sameJson(value, match.equals)
  if ("oneOf" in match) return match.oneOf.some((option) => sameJson(value, option))
  if ("pathGlob" in match) {
    return typeof value === "string" && match.pathGlob.some((pattern) => pathGlobMatch(pattern, value))
  }
  return typeof value === "string" && new RegExp(match.regex, "u").test(value)
}

/** Whether every condition of a rule's `when` holds for `args` (no `when`: it holds). */
const conditionsHold = (conditions: ReadonlyArray<typeof ArgumentCondition.Type> | undefined, args: unknown) =>
  conditions === undefined ||
  conditions.every((condition) => satisfies(valueAt(args, condition.path), condition.match))

// ---------------------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------------------

/** An allowed call, as the rules read it: the tool, and the time the guard allowed it. */
export interface AllowedCall {
  readonly toolName: string
  /** The call's server (absent in histories that do not record it: then any server is in scope). */
  readonly serverId?: string | undefined
  /** `Clock` time of the decision that allowed it (not of its completion). */
  readonly timestampMillis: number
}

/**
 * What `evaluate` reads: the session's allowed calls in the order the guard allowed them (calls still in
 * flight included), its byte totals, and the time.
 */
export interface Snapshot {
  readonly allowed: ReadonlyArray<AllowedCall>
  /** Bytes read by the allowed calls that have ended. */
  readonly allowedRead: number
  /** Bytes of arguments of the allowed calls, those in flight included (known when they are allowed). */
  readonly allowedWritten: number
  /** Allowed calls that have not ended yet: the bytes they will read are not known. Default 0. */
  readonly inFlight?: number | undefined
  readonly nowMillis: number
}

const fill = (template: string | undefined, fallback: string, values: Record<string, string | number>) =>
  (template ?? fallback).replace(/\{(\w+)\}/g, (whole, key: string) => key in values ? String(values[key]) : whole)

/**
 * The verdict of every allowed call: `Allow` has no fields, so one instance serves them all. Decisions here
 * are built from the loaded policy's rule ids and the reasons made from them (strings, checked when the
 * policy was decoded), so they are constructed without the Schema constructor's check: it costs a
 * measurable part of a guard's decision (docs/PERFORMANCE.md, "MCP proxy").
 */
const ALLOW = new Allow({}, true)

/**
 * The policy's verdict on `call`, given the session's allowed calls: pure, so it can be tested and
 * reasoned about without a journal.
 *
 * `AwaitInFlight` when the verdict depends on bytes not known yet: a refusing `budget` rule with a `read`
 * or `total` limit is reached while allowed calls are in flight (`snapshot.inFlight > 0`). The guard then
 * waits for them to end and asks again, so the verdict is the one a sequential order would give.
 */
export const evaluate = (
  policy: GuardPolicy,
  call: GuardCall,
  snapshot: Snapshot,
  approvedRules: ReadonlyArray<string> = []
): Verdict | AwaitInFlight => {
  const warnings: Array<Warn> = []
  /** The first `ask` rule that fired (its refusal stands unless a person accepts), with its spec. */
  let asking: { readonly refusal: Refuse; readonly spec: AskSpec } | undefined
  let firing: Rule | undefined
  const bytesWritten = jsonBytes(call.arguments)
  const fire = (
    rule: {
      readonly id: string
      readonly action?: "refuse" | "warn" | "ask" | undefined
      readonly reason?: string | undefined
    },
    fallback: string,
    values: Record<string, string | number> = {}
  ): Refuse | undefined => {
    const reason = fill(rule.reason, fallback, {
      tool: call.toolName,
      server: call.serverId,
      agent: call.agentId,
      rule: rule.id,
      ...values
    })
    if (rule.action === "warn") {
      warnings.push(new Warn({ ruleId: rule.id, reason }, true))
      return undefined
    }
    if (rule.action === "ask") {
      // Accepted by a person already (the decision made again after their answer), or asked by an earlier rule.
      if (approvedRules.includes(rule.id) || asking !== undefined) return undefined
      const ask = firing as AskFields | undefined
      asking = {
        refusal: new Refuse({ ruleId: rule.id, reason }, true),
        spec: {
          timeoutMillis: (ask?.timeout ?? DEFAULT_ASK_TIMEOUT_SECONDS) * 1000,
          onTimeout: ask?.onTimeout ?? "refuse",
          fallback: ask?.fallback ?? "refuse",
          showArguments: ask?.showArguments ?? []
        }
      }
      return undefined
    }
    return new Refuse({ ruleId: rule.id, reason }, true)
  }
  /** Earlier allowed calls in the rule's scope (of this very tool, with `sameTool`), newer than `since`. */
  const countWhere = (
    rule: { readonly tools?: ReadonlyArray<string> | undefined; readonly servers?: ReadonlyArray<string> | undefined },
    since = Number.NEGATIVE_INFINITY,
    sameTool = false
  ) => {
    const tool = sameTool ? normalizeName(call.toolName) : ""
    let n = 0
    for (let i = snapshot.allowed.length - 1; i >= 0; i--) {
      const entry = snapshot.allowed[i]!
      if (entry.timestampMillis <= since) break
      if (!inScope(rule, entry)) continue
      if (sameTool && normalizeName(entry.toolName) !== tool) continue
      n++
    }
    return n
  }
  const check = (rule: Rule): Refuse | AwaitInFlight | undefined => {
    if ("when" in rule && !conditionsHold(rule.when, call.arguments)) return undefined
    switch (rule.kind) {
      case "allowTools":
      case "toolChanged":
        return undefined
      case "blockTools":
        return inScope(rule, call)
          ? fire(
            rule,
            rule.when === undefined
              ? "tool {tool} is blocked by the policy"
              : "this call of {tool} is blocked by the policy (its arguments match the rule)"
          )
          : undefined
      case "blockServers":
        return anyMatch(rule.servers, call.serverId)
          ? fire(rule, "server {server} is blocked by the policy")
          : undefined
      case "maxDelegationDepth": {
        const depth = call.delegationDepth ?? 0
        return depth > rule.max
          ? fire(rule, "delegation depth {actual} exceeds {limit}", { limit: rule.max, actual: depth })
          : undefined
      }
      case "budget": {
        // Read bytes of calls in flight are known only when they end; a refusal under this rule (and its
        // `{actual}`) depends on them, so the decision waits (a warn-only rule decides on what is known).
        if (
          (snapshot.inFlight ?? 0) > 0 && rule.action !== "warn" &&
          (rule.read !== undefined || rule.total !== undefined)
        ) return { _tag: "AwaitInFlight", ruleId: rule.id }
        const read = snapshot.allowedRead
        const written = snapshot.allowedWritten + bytesWritten
        const total = read + written
        const over: Array<readonly [string, number, number, boolean]> = [
          ["read", read, rule.read ?? Infinity, read >= (rule.read ?? Infinity)],
          ["written", written, rule.written ?? Infinity, written > (rule.written ?? Infinity)],
          ["total", total, rule.total ?? Infinity, total > (rule.total ?? Infinity) || read >= (rule.total ?? Infinity)]
        ]
        for (const [name, actual, limit, exceeded] of over) {
          if (exceeded) {
            return fire(rule, `the session's ${name} budget of {limit} bytes is used ({actual} bytes)`, {
              limit,
              actual
            })
          }
        }
        if (rule.warnAt !== undefined) {
          for (const [name, actual, limit] of over) {
            if (Number.isFinite(limit) && actual >= rule.warnAt * limit) {
              warnings.push(
                new Warn({
                  ruleId: rule.id,
                  reason: `the session has used ${actual} of its ${name} budget of ${limit} bytes`
                }, true)
              )
              break
            }
          }
        }
        return undefined
      }
      case "callLimit": {
        if (!inScope(rule, call)) return undefined
        const perTool = rule.per !== "rule"
        const calls = countWhere(rule, Number.NEGATIVE_INFINITY, perTool)
        return calls >= rule.max
          ? fire(
            rule,
            perTool
              ? "{tool} may be called {limit} times per session"
              : "these tools may be called {limit} times per session",
            { limit: rule.max, actual: calls + 1 }
          )
          : undefined
      }
      case "rateLimit": {
        if (!inScope(rule, call)) return undefined
        const calls = countWhere(rule, snapshot.nowMillis - rule.windowSeconds * 1000)
        return calls >= rule.max
          ? fire(rule, `at most {limit} calls per ${rule.windowSeconds} s`, { limit: rule.max, actual: calls + 1 })
          : undefined
      }
      case "sequence": {
        if (!anyMatch(rule.then, call.toolName)) return undefined
        const recent = snapshot.allowed.slice(Math.max(0, snapshot.allowed.length - rule.within))
        const earlier = recent.find((entry) => anyMatch(rule.after, entry.toolName))
        return earlier !== undefined
          ? fire(rule, `{tool} after ${earlier.toolName} within ${rule.within} calls`, { actual: earlier.toolName })
          : undefined
      }
      case "arguments": {
        if (!inScope(rule, call)) return undefined
        return satisfies(valueAt(call.arguments, rule.path), rule.match)
          ? undefined
          : fire(rule, `argument ${rule.path} of {tool} is not allowed`)
      }
      case "annotations": {
        if (!inScope(rule, call)) return undefined
        const named = HINTS.filter((hint) => rule[hint] !== undefined)
        const declared = (hint: typeof HINTS[number]) =>
          // MCP: destructive and idempotent hints mean something only for a tool that is not read-only.
          (hint === "destructiveHint" || hint === "idempotentHint") && call.annotations?.readOnlyHint === true
            ? hint === "idempotentHint"
            : call.annotations?.[hint] ?? ANNOTATION_DEFAULTS[hint]
        return named.every((hint) => declared(hint) === rule[hint])
          ? fire(
            rule,
            `{tool} is ${named.map((hint) => `${hint} ${declared(hint)}`).join(", ")}${
              call.annotations === undefined ? " (no pinned definition: MCP defaults)" : ""
            }`
          )
          : undefined
      }
    }
  }
  if (policy.defaultAction === "deny" && !isListed(policy, call.serverId, call.toolName)) {
    return {
      decision: new Refuse(
        { ruleId: DEFAULT_DENY_RULE, reason: `tool ${call.toolName} is not allowed by the policy` },
        true
      ),
      warnings
    }
  }
  // A rule that refuses outright wins over an earlier `ask` (a person cannot approve what is refused anyway).
  for (const rule of policy.rules) {
    firing = rule
    const refusal = check(rule)
    if (refusal !== undefined) return refusal._tag === "AwaitInFlight" ? refusal : { decision: refusal, warnings }
  }
  if (asking !== undefined) return { decision: asking.refusal, warnings, ask: asking.spec }
  return { decision: ALLOW, warnings }
}

const isListed = (policy: GuardPolicy, serverId: string, toolName: string): boolean =>
  policy.rules.some((rule) => rule.kind === "allowTools" && inScope(rule, { toolName, serverId }))

/** Whether a rule refuses outright when it fires (not `warn`, not `ask`). */
const refuses = (rule: { readonly action?: "refuse" | "warn" | "ask" | undefined }) =>
  rule.action === undefined || rule.action === "refuse"

/**
 * Whether `tools/list` shows the tool: false when `hideRefusedTools` is set and the policy refuses the tool
 * whatever the session (a `blockTools`/`blockServers` refusal, a `callLimit` of 0, or not listed under
 * `defaultAction: deny`).
 */
export const isVisible = (policy: GuardPolicy, serverId: string, toolName: string): boolean => {
  if (policy.hideRefusedTools !== true) return true
  if (policy.defaultAction === "deny" && !isListed(policy, serverId, toolName)) return false
  // A rule with `when` refuses some calls of the tool, not the tool: it stays visible.
  return !policy.rules.some((rule) =>
    (rule.kind === "blockTools" && refuses(rule) && rule.when === undefined &&
      inScope(rule, { toolName, serverId })) ||
    (rule.kind === "blockServers" && refuses(rule) && anyMatch(rule.servers, serverId)) ||
    (rule.kind === "callLimit" && rule.max === 0 && refuses(rule) && rule.when === undefined &&
      inScope(rule, { toolName, serverId }))
  )
}

// ---------------------------------------------------------------------------------------------------------
// What the ledger stores of a call's arguments
// ---------------------------------------------------------------------------------------------------------

/**
 * The arguments as the ledger stores them under the policy's `argumentStorage`
 * (`ArgumentStorage.storedArguments`, the same rules as for tool calls the library builds).
 */
export const storedArguments = (policy: GuardPolicy, toolName: string, args: unknown, salt: string): JsonValue =>
  ArgumentStorage.storedArguments(policy.argumentStorage, toolName, args, salt)

// ---------------------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------------------

/**
 * The `ask` of the first `toolChanged` rule covering the tool, when that rule asks (see `ToolChanged`);
 * undefined when a changed definition is refused outright.
 */
export const toolChangedAsk = (
  policy: GuardPolicy,
  serverId: string,
  toolName: string
): { readonly ruleId: string; readonly ask: AskSpec } | undefined => {
  const rule = policy.rules.find((r): r is typeof ToolChanged.Type =>
    r.kind === "toolChanged" && inScope(r, { toolName, serverId })
  )
  if (rule === undefined || rule.action !== "ask") return undefined
  return {
    ruleId: rule.id,
    ask: {
      timeoutMillis: (rule.timeout ?? DEFAULT_ASK_TIMEOUT_SECONDS) * 1000,
      onTimeout: "refuse",
      fallback: "refuse",
      showArguments: rule.showArguments ?? []
    }
  }
}

/** The policy as the guard runs it, with `salt` for argument hashes (`LedgerSql.argumentSalt`). */
export const engine = (policy: GuardPolicy, options: { readonly salt: string }): PolicyEngine => ({
  decide: (call, session, nowMillis, approvedRules) => evaluate(policy, call, { ...session, nowMillis }, approvedRules),
  argumentLimits: {
    maxDepth: policy.limits?.maxArgumentDepth ?? DEFAULT_MAX_ARGUMENT_DEPTH,
    maxBytes: policy.limits?.maxArgumentBytes ?? DEFAULT_MAX_ARGUMENT_BYTES
  },
  isVisible: (serverId, toolName) => isVisible(policy, serverId, toolName),
  mode: policy.mode ?? "enforce",
  hidesRefusedTools: policy.hideRefusedTools === true,
  toolChangedAsk: (serverId, toolName) => toolChangedAsk(policy, serverId, toolName),
  storedArguments: (toolName, args) => storedArguments(policy, toolName, args, options.salt)
})
