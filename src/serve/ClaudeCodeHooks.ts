/**
 * Claude Code's hooks, answered by `McpGuard`: one handler for every event (the body's `hook_event_name`
 * says which), with the agent from the caller's credential. Input and output follow the published hooks
 * reference (https://code.claude.com/docs/en/hooks; test/fixtures/claude-code-hooks has one recorded payload
 * per event).
 *
 * - `PreToolUse`: the guard decides on `{ tool_name, tool_input }` (server id `claude-code`). A refusal is
 *   `permissionDecision: "deny"` with a reason naming the rule, shown to the model; an allowed call leaves the
 *   decision to Claude Code's own permission flow (`allowedDecision: "none"`, the default) or answers
 *   `"allow"`; a call the policy only warns about may be answered `"ask"` (`askOnWarn`).
 * - A call an `"action": "ask"` rule holds is answered `permissionDecision: "ask"` (the reason names the
 *   rule), so Claude Code's own permission prompt asks its user; the guard counts the call in flight while
 *   the user decides (`McpGuard.checkDeferringAsk`). Claude Code does not tell the hook the user's answer,
 *   so it is read from what follows: a `PostToolUse` or `PostToolUseFailure` for the `tool_use_id` means
 *   the user allowed it (a `governance.approval` row, answer `accept`, approver the Claude Code user of the
 *   session, latency from the question to that event, so the tool's run included); none by `SessionEnd`
 *   or `callTimeout` is recorded as answer `unknown`, outcome `not-run` (the user most likely declined, but
 *   the hook cannot tell that from Claude Code ending or the event being lost). The rule's `timeout`,
 *   `onTimeout` and `fallback` do not apply: Claude Code's prompt waits for its user.
 * - `PostToolUse` / `PostToolUseFailure`: complete the allowed call of that `tool_use_id` with the bytes of
 *   `tool_response` (or of the `error` text) and how it ended (`result`, `errorAnswer`, or `interrupted`
 *   for `is_interrupt`).
 * - `SessionStart` / `SessionEnd`: open and seal the session's journal; `session_id` is the session.
 *
 * Trust: a session belongs to the first agent that names it; another agent's events for it are refused
 * (403), so one token cannot seal or steer another agent's session; one agent has at most
 * `maxSessionsPerAgent` sessions open (403 past it). An allowed call that never gets its
 * `PostToolUse` (another hook or the user refused it, the tool was cancelled) is completed as `timedOut`
 * after `callTimeout`, so it cannot hold a read budget open forever. A decision that takes longer than
 * `decisionTimeout` (a budget waiting on calls in flight) is answered `deny` (rule `decision-timeout`): the
 * decision itself still completes and is journaled, and if it allowed the call, the call is completed as
 * `interrupted`, since Claude Code was told no.
 */
import type { Fiber, Scope } from "effect"
import { Context, Duration, Effect, Either, Equal, Layer, Metric, Option, ParseResult, Schema } from "effect"
import * as McpGuard from "../guard/McpGuard.js"

/** The server id Claude Code's own tools are journaled and ledgered under. */
export const SERVER_ID = "claude-code"

/** The rule of a `PreToolUse` answered `deny` because the decision took longer than `decisionTimeout`. */
export const DECISION_TIMEOUT_RULE = "decision-timeout"
/** The rule of a second `PreToolUse` for a `tool_use_id` already decided in the session. */
export const DUPLICATE_TOOL_USE_RULE = "duplicate-tool-use-id"
/** The rule of a `PreToolUse` refused because the session has `maxPendingPerSession` calls awaiting their end. */
export const TOO_MANY_PENDING_RULE = "too-many-pending-calls"

const Id = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256), Schema.pattern(/^[^\u0000-\u001f\u007f]+$/u))

const common = {
  session_id: Id,
  transcript_path: Schema.optional(Schema.String),
  cwd: Schema.optional(Schema.String),
  permission_mode: Schema.optional(Schema.String)
}

const tool = {
  tool_name: Id,
  tool_input: Schema.optional(Schema.Unknown),
  tool_use_id: Id
}

export const PreToolUse = Schema.Struct({ hook_event_name: Schema.Literal("PreToolUse"), ...common, ...tool })
export const PostToolUse = Schema.Struct({
  hook_event_name: Schema.Literal("PostToolUse"),
  ...common,
  ...tool,
  tool_response: Schema.optional(Schema.Unknown)
})
export const PostToolUseFailure = Schema.Struct({
  hook_event_name: Schema.Literal("PostToolUseFailure"),
  ...common,
  ...tool,
  error: Schema.optional(Schema.String),
  is_interrupt: Schema.optional(Schema.Boolean)
})
export const SessionStart = Schema.Struct({
  hook_event_name: Schema.Literal("SessionStart"),
  ...common,
  source: Schema.optional(Schema.String)
})
export const SessionEnd = Schema.Struct({
  hook_event_name: Schema.Literal("SessionEnd"),
  ...common,
  reason: Schema.optional(Schema.String)
})
/** Any other event (Stop, Notification, …): accepted and answered with no decision. */
export const OtherEvent = Schema.Struct({ hook_event_name: Schema.String, ...common })

export const HookInput = Schema.Union(PreToolUse, PostToolUse, PostToolUseFailure, SessionStart, SessionEnd)
export type HookInput = typeof HookInput.Type

/** The events `HookInput` decodes; the guard acts on these. */
export const KNOWN_EVENTS: ReadonlySet<string> = new Set(
  HookInput.members.map((m) => m.fields.hook_event_name.literals[0])
)

/** An event the guard does not act on (`Stop`, `Notification`, …): answered with no decision. */
export const UnknownEvent = Schema.Struct({
  ...OtherEvent.fields,
  hook_event_name: Schema.String.pipe(Schema.filter((name) => !KNOWN_EVENTS.has(name), {
    description: "any other hook event, answered with no decision",
    jsonSchema: { not: { enum: [...KNOWN_EVENTS] } }
  }))
})

/** What the hook endpoint accepts: an event the guard acts on, or one it answers with no decision (OpenAPI). */
export const HookPayload = Schema.Union(HookInput, UnknownEvent)

/** What the handler answers: an HTTP status and a JSON body (a hook output object on 200). */
export interface HookAnswer {
  readonly status: 200 | 400 | 403
  readonly body: Record<string, unknown>
}

export interface Options {
  /** What an allowed `PreToolUse` answers: no decision (Claude Code's own permissions apply), or `allow`. */
  readonly allowedDecision?: "none" | "allow" | undefined
  /** Answer `ask` (with the warnings as reason) for calls the policy allows with warnings. Default false. */
  readonly askOnWarn?: boolean | undefined
  /** How long an allowed call may wait for its `PostToolUse`; then it is completed as timed out. Default 10 min. */
  readonly callTimeout?: Duration.DurationInput | undefined
  /** How long a `PreToolUse` decision may take before it is answered `deny`. Default 10 s. */
  readonly decisionTimeout?: Duration.DurationInput | undefined
  /** Allowed calls of one session awaiting their end, past which a `PreToolUse` is refused. Default 256. */
  readonly maxPendingPerSession?: number | undefined
  /**
   * Sessions one agent may have open at once; an event that would open one more is refused (403), so one
   * token cannot grow the guard's memory without bound. Default 64.
   */
  readonly maxSessionsPerAgent?: number | undefined
}

export class ClaudeCodeHooks extends Context.Tag("agent-ledger/ClaudeCodeHooks")<ClaudeCodeHooks, {
  /** Answers one hook event posted by `agentId` (already authenticated). */
  readonly handle: (agentId: string, input: unknown) => Effect.Effect<HookAnswer>
  /** Seals every open session (calls in flight end as interrupted): the shutdown step. */
  readonly endAll: Effect.Effect<number>
  /** Sessions open now. */
  readonly openSessions: Effect.Effect<number>
  /**
   * Takes over a call another process decided in `sessionId` (`agent-ledger hook` without serve), under its
   * `tool_use_id`: with its ticket (`McpGuard.resume`) a later `PostToolUse` ends it; without one (it was
   * refused or has ended) a second `PreToolUse` of that id is refused as a duplicate. False when the
   * session belongs to another agent or cannot be opened.
   */
  readonly adopt: (
    agentId: string,
    sessionId: string,
    toolUseId: string,
    ticket: Option.Option<McpGuard.Ticket>
  ) => Effect.Effect<boolean>
}>() {}

/** The text a denied call shows the model: the rule and the reason. */
export const denialText = (ruleId: string, reason: string): string =>
  `agent-ledger refused this call (rule ${ruleId}): ${reason}`

const preToolUseOutput = (decision: "allow" | "deny" | "ask", reason: string) => ({
  hookSpecificOutput: { hookEventName: "PreToolUse", permissionDecision: decision, permissionDecisionReason: reason }
})

const hookEvents = Metric.counter("agent_ledger_serve_hook_events", {
  description: "Claude Code hook events handled, by event",
  incremental: true
})
const hookDecisions = Metric.counter("agent_ledger_serve_hook_decisions", {
  description: "PreToolUse answers, by permission decision",
  incremental: true
})
/** `counter` tagged `key=value`, built once per value (tagging per event built and hashed a new key each time). */
const taggedOnce = (counter: Metric.Metric.Counter<number>, key: string) => {
  const tagged = new Map<string, Metric.Metric.Counter<number>>()
  return (value: string) => {
    let metric = tagged.get(value)
    if (metric === undefined) {
      metric = Metric.tagged(counter, key, value)
      tagged.set(value, metric)
    }
    return metric
  }
}
const eventCounter = taggedOnce(hookEvents, "event")
const decisionCounter = taggedOnce(hookDecisions, "decision")
const unmatchedCompletions = Metric.counter("agent_ledger_serve_unmatched_completions", {
  description: "PostToolUse / PostToolUseFailure events with no allowed call pending under their tool_use_id",
  incremental: true
})

/** A call decided (or being decided) in a session, under its `tool_use_id`. */
type Pending =
  | { readonly _tag: "Deciding"; abandoned: boolean }
  | {
    readonly _tag: "Allowed"
    readonly ticket: McpGuard.Ticket
    timer: Fiber.RuntimeFiber<void> | undefined
    /** The `ask` rules Claude Code's prompt was asked to decide (answered `ask`), awaiting what follows. */
    readonly asked: ReadonlyArray<McpGuard.PendingApproval>
  }
  | { readonly _tag: "Ended" }

/** Who a deferred question asks, as its approval row names it. */
export const ASKED_THROUGH_PROMPT = "the Claude Code user, through its permission prompt (PreToolUse ask)"

/** The approver of a call Claude Code ran after its prompt: the user of that session (and agent). */
export const promptApprover = (sessionId: string, agentId: string): string =>
  `the Claude Code user of session ${sessionId} (agent ${agentId})`

/** The text Claude Code's prompt shows for a call an `ask` rule holds. */
export const askText = (asked: ReadonlyArray<McpGuard.PendingApproval>): string =>
  asked.map((a) => `agent-ledger asks (rule ${a.ruleId}): ${a.reason}`).join("; ")

interface SessionState {
  readonly agentId: string
  readonly pending: Map<string, Pending>
}

const decodeInput = Schema.decodeUnknownEither(HookInput, { errors: "first", onExcessProperty: "ignore" })
const decodeOther = Schema.decodeUnknownEither(UnknownEvent, { onExcessProperty: "ignore" })

const badRequest = (error: ParseResult.ParseError): HookAnswer => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return {
    status: 400,
    body: { error: `bad hook input${issue === undefined ? "" : ` at ${issue.path.join(".")}: ${issue.message}`}` }
  }
}

export const make = (
  options: Options = {}
): Effect.Effect<Context.Tag.Service<ClaudeCodeHooks>, never, McpGuard.McpGuard | Scope.Scope> =>
  Effect.gen(function*() {
    const guard = yield* McpGuard.McpGuard
    const scope = yield* Effect.scope
    const callTimeout = options.callTimeout ?? Duration.minutes(10)
    const decisionTimeout = options.decisionTimeout ?? Duration.seconds(10)
    const maxPending = options.maxPendingPerSession ?? 256
    /** Open sessions, and the agent each belongs to. */
    const sessions = new Map<string, SessionState>()
    /** Agents of sessions that ended: a session id stays with its agent for the life of the process. */
    const owners = new Map<string, string>()

    const maxSessions = options.maxSessionsPerAgent ?? 64
    /** Open sessions per agent. */
    const openPerAgent = new Map<string, number>()

    /**
     * The session for `agentId`, opened if needed; a refusal when another agent owns it, or when opening
     * it would pass the agent's bound on open sessions.
     */
    const sessionFor = (sessionId: string, agentId: string, opens: boolean): SessionState | string | undefined => {
      const owner = owners.get(sessionId)
      if (owner !== undefined && owner !== agentId) return `session ${sessionId} belongs to another agent`
      let state = sessions.get(sessionId)
      if (state === undefined) {
        if (!opens) return undefined
        const open = openPerAgent.get(agentId) ?? 0
        if (open >= maxSessions) return `agent ${agentId} has ${open} sessions open (at most ${maxSessions})`
        openPerAgent.set(agentId, open + 1)
        owners.set(sessionId, agentId)
        state = { agentId, pending: new Map() }
        sessions.set(sessionId, state)
      }
      return state
    }

    const callOf = (
      agentId: string,
      input: { session_id: string; tool_name: string; tool_input?: unknown; tool_use_id: string }
    ): McpGuard.GuardCall => ({
      sessionId: input.session_id,
      agentId,
      serverId: SERVER_ID,
      toolName: input.tool_name,
      arguments: input.tool_input,
      requestId: input.tool_use_id
    })

    /**
     * Records what became of the questions Claude Code's prompt was asked about a call: `ran` (a
     * `PostToolUse`/`PostToolUseFailure` came: the user allowed it) or not (answer `unknown`).
     */
    const recordAsked = (state: SessionState, asked: ReadonlyArray<McpGuard.PendingApproval>, ran: boolean) =>
      Effect.forEach(asked, (pending) =>
        guard.recordApproval(
          pending,
          ran
            ? {
              asked: ASKED_THROUGH_PROMPT,
              approver: promptApprover(pending.call.sessionId, state.agentId),
              answer: "accept",
              outcome: "allowed"
            }
            : { asked: ASKED_THROUGH_PROMPT, approver: null, answer: "unknown", outcome: "not-run" }
        ), { discard: true })

    /**
     * Ends the allowed call under `key` with `outcome` (once; later ends do nothing). `prompted`: what Claude
     * Code's prompt, if it was asked, is known to have answered (`ran`: the call ran; `unknown`: no sign it
     * did; `none`: Claude Code was told no, so there was no prompt).
     */
    const endCall = (
      state: SessionState,
      key: string,
      outcome: McpGuard.CallOutcome,
      prompted: "ran" | "unknown" | "none"
    ) =>
      Effect.suspend(() => {
        const pending = state.pending.get(key)
        if (pending === undefined || pending._tag !== "Allowed") return Effect.succeed(false)
        state.pending.set(key, { _tag: "Ended" })
        const timer = pending.timer
        return guard.complete(pending.ticket, outcome).pipe(
          Effect.zipRight(
            prompted === "none" || pending.asked.length === 0
              ? Effect.void
              : recordAsked(state, pending.asked, prompted === "ran")
          ),
          Effect.zipRight(timer === undefined ? Effect.void : interruptTimer(timer)),
          Effect.as(true)
        )
      })

    /** Stops a call's timer without waiting for it (a no-op from the timer itself). */
    const interruptTimer = (timer: Fiber.RuntimeFiber<void>) =>
      Effect.fiberIdWith((self) => Equal.equals(self, timer.id()) ? Effect.void : timer.interruptAsFork(self))

    /** Registers an allowed call; one whose answer was abandoned (timed out) ends at once as interrupted. */
    const register = (
      state: SessionState,
      key: string,
      ticket: McpGuard.Ticket,
      asked: ReadonlyArray<McpGuard.PendingApproval>
    ) =>
      Effect.gen(function*() {
        const pending = state.pending.get(key)
        const abandoned = pending?._tag !== "Deciding" || pending.abandoned ||
          sessions.get(ticket.call.sessionId) !== state
        const entry: Pending = { _tag: "Allowed", ticket, timer: undefined, asked }
        state.pending.set(key, entry)
        if (abandoned) return yield* endCall(state, key, { _tag: "Interrupted" }, "none")
        entry.timer = yield* Effect.forkIn(
          Effect.sleep(callTimeout).pipe(
            Effect.zipRight(endCall(state, key, { _tag: "TimedOut" }, "unknown")),
            Effect.asVoid
          ),
          scope
        )
        return true
      })

    const preToolUse = (agentId: string, state: SessionState, input: typeof PreToolUse.Type) =>
      Effect.gen(function*() {
        const call = callOf(agentId, input)
        const key = input.tool_use_id
        const refuseWith = (ruleId: string, reason: string) =>
          Effect.as(guard.refuse(call, ruleId, reason), preToolUseOutput("deny", denialText(ruleId, reason)))
        if (state.pending.has(key)) {
          yield* Metric.increment(decisionCounter("deny"))
          return yield* refuseWith(DUPLICATE_TOOL_USE_RULE, `tool_use_id ${key} was already decided in this session`)
        }
        let waiting = 0
        for (const p of state.pending.values()) if (p._tag !== "Ended") waiting++
        if (waiting >= maxPending) {
          yield* Metric.increment(decisionCounter("deny"))
          return yield* refuseWith(
            TOO_MANY_PENDING_RULE,
            `the session has ${waiting} calls awaiting their PostToolUse (at most ${maxPending})`
          )
        }
        const deciding: Pending = { _tag: "Deciding", abandoned: false }
        state.pending.set(key, deciding)
        // The decision runs in the service's scope: a client that gives up (or the timeout below) does not
        // interrupt it halfway between journal and ledger.
        const decision = yield* Effect.forkIn(
          Effect.tap(guard.checkDeferringAsk(call), (check) =>
            check._tag === "Allowed" ? register(state, key, check.ticket, check.asked ?? []) : Effect.void),
          scope
        )
        const check = yield* decision.await.pipe(
          Effect.timeout(decisionTimeout),
          Effect.option
        )
        const answer = Option.match(check, {
          onNone: () => {
            deciding.abandoned = true
            return preToolUseOutput(
              "deny",
              denialText(DECISION_TIMEOUT_RULE, `the guard did not decide within ${Duration.format(decisionTimeout)}`)
            )
          },
          onSome: (exit) => {
            if (exit._tag === "Failure") {
              return preToolUseOutput("deny", denialText("guard-error", "the guard failed to decide"))
            }
            const result = exit.value
            if (result._tag === "Refused") {
              return preToolUseOutput("deny", denialText(result.ruleId, result.reason))
            }
            if (result.asked !== undefined && result.asked.length > 0) {
              // An `ask` rule holds the call: Claude Code's own prompt asks its user.
              const warned = options.askOnWarn === true
                ? result.warnings.map((w) =>
                  `; agent-ledger warns (rule ${w.ruleId}): ${w.reason}`
                ).join("")
                : ""
              return preToolUseOutput("ask", askText(result.asked) + warned)
            }
            if (options.askOnWarn === true && result.warnings.length > 0) {
              return preToolUseOutput(
                "ask",
                result.warnings.map((w) => `agent-ledger warns (rule ${w.ruleId}): ${w.reason}`).join("; ")
              )
            }
            return options.allowedDecision === "allow"
              ? preToolUseOutput("allow", "allowed by the agent-ledger policy")
              : {}
          }
        })
        const decided = "hookSpecificOutput" in answer ? answer.hookSpecificOutput.permissionDecision : "none"
        yield* Metric.increment(decisionCounter(decided))
        if (Option.isNone(check)) {
          yield* Effect.logWarning("agent-ledger serve: a PreToolUse decision timed out and was answered deny").pipe(
            Effect.annotateLogs({ sessionId: input.session_id, toolName: input.tool_name })
          )
        }
        return answer
      })

    const postToolUse = (
      state: SessionState,
      input: typeof PostToolUse.Type | typeof PostToolUseFailure.Type
    ) => {
      const outcome: McpGuard.CallOutcome = input.hook_event_name === "PostToolUse"
        ? { _tag: "Result", bytesRead: McpGuard.jsonBytes(input.tool_response) }
        : input.is_interrupt === true
        ? { _tag: "Interrupted" }
        : { _tag: "ErrorAnswer", bytesRead: Buffer.byteLength(input.error ?? "", "utf8") }
      return Effect.flatMap(
        endCall(state, input.tool_use_id, outcome, "ran"),
        (ended) => ended ? Effect.succeed({}) : Effect.as(Metric.increment(unmatchedCompletions), {})
      )
    }

    /**
     * Seals the session: its timers stop, its calls in flight end as interrupted (a call Claude Code's prompt
     * was asked about and that never ran is recorded as answer `unknown`).
     */
    const endSession = (sessionId: string) =>
      Effect.suspend(() => {
        const state = sessions.get(sessionId)
        if (state === undefined) return Effect.void
        sessions.delete(sessionId)
        openPerAgent.set(state.agentId, Math.max(0, (openPerAgent.get(state.agentId) ?? 1) - 1))
        const timers: Array<Fiber.RuntimeFiber<void>> = []
        const unanswered: Array<string> = []
        for (const [key, p] of state.pending.entries()) {
          if (p._tag !== "Allowed") continue
          if (p.timer !== undefined) timers.push(p.timer)
          if (p.asked.length > 0) unanswered.push(key)
        }
        return Effect.forEach(unanswered, (key) => endCall(state, key, { _tag: "Interrupted" }, "unknown"), {
          discard: true
        }).pipe(
          Effect.zipRight(Effect.forEach(timers, (timer) => interruptTimer(timer), { discard: true })),
          Effect.zipRight(guard.endSession(sessionId)),
          Effect.asVoid
        )
      })

    const handle = (agentId: string, raw: unknown): Effect.Effect<HookAnswer> =>
      Effect.gen(function*() {
        const decoded = decodeInput(raw)
        if (Either.isLeft(decoded)) {
          // An event this guard does not act on (Stop, Notification, …) is answered with no decision.
          const other = decodeOther(raw)
          if (Either.isRight(other)) {
            yield* Metric.increment(eventCounter("other"))
            return { status: 200, body: {} } as const
          }
          return badRequest(decoded.left)
        }
        const input = decoded.right
        yield* Metric.increment(eventCounter(input.hook_event_name))
        // Only SessionStart and PreToolUse open a session: a late PostToolUse or a second SessionEnd of a
        // session that ended finds nothing to do.
        const opens = input.hook_event_name === "SessionStart" || input.hook_event_name === "PreToolUse"
        const state = sessionFor(input.session_id, agentId, opens)
        if (typeof state === "string") return { status: 403, body: { error: state } } as const
        if (state === undefined) {
          if (input.hook_event_name !== "SessionEnd") yield* Metric.increment(unmatchedCompletions)
          return { status: 200, body: {} } as const
        }
        switch (input.hook_event_name) {
          case "SessionStart":
            yield* guard.journal(input.session_id)
            return { status: 200, body: {} } as const
          case "SessionEnd":
            yield* endSession(input.session_id)
            return { status: 200, body: {} } as const
          case "PreToolUse":
            return { status: 200, body: yield* preToolUse(agentId, state, input) } as const
          case "PostToolUse":
          case "PostToolUseFailure":
            return { status: 200, body: yield* postToolUse(state, input) } as const
        }
      })

    const endAll = Effect.suspend(() => {
      const open = Array.from(sessions.keys())
      return Effect.as(Effect.forEach(open, endSession, { discard: true }), open.length)
    })

    const adopt = (agentId: string, sessionId: string, toolUseId: string, ticket: Option.Option<McpGuard.Ticket>) =>
      Effect.sync(() => {
        const state = sessionFor(sessionId, agentId, true)
        if (state === undefined || typeof state === "string") return false
        state.pending.set(
          toolUseId,
          Option.isSome(ticket)
            ? { _tag: "Allowed", ticket: ticket.value, timer: undefined, asked: [] }
            : { _tag: "Ended" }
        )
        return true
      })

    return ClaudeCodeHooks.of({ handle, endAll, openSessions: Effect.sync(() => sessions.size), adopt })
  })

/** The hooks on the `McpGuard` in context; closing the layer seals every open session. */
export const layer = (options: Options = {}): Layer.Layer<ClaudeCodeHooks, never, McpGuard.McpGuard> =>
  Layer.scoped(
    ClaudeCodeHooks,
    Effect.tap(make(options), (hooks) => Effect.addFinalizer(() => Effect.asVoid(hooks.endAll)))
  )
