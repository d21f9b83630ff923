/**
 * The guard in front of an agent's tool calls: given a call (session, agent, server, tool, arguments) it
 * decides with a policy on the session's journal, journals the call (allowed or not, with the bytes of the
 * arguments as written and, once it completes, of the result as read), submits refusals to the
 * `AuditQueue` naming their journal entry (refusal payload v2), and seals the journal into the ledger
 * (`session.sealed` rows) every `sealEvery` entries and when the session ends.
 *
 * The two-step shape (`check`, then `complete` with how the call ended) is what a proxy needs: the journal
 * records the decision at once and the outcome (with the bytes returned) when the call ends (format v2).
 *
 * Concurrency: decisions in one session are made one at a time under a per-session lock, with calls in
 * flight counted, so the calls allowed are those some sequential order would allow (docs/OPERATIONS.md,
 * "Concurrent calls in one session"). Arguments pass an iterative depth and size gate before anything
 * reads them (`measureArguments`). `PromiseGuard` is the same guard for code that is not
 * written with Effect (the MCP SDK's handlers are Promise-based).
 *
 * Fail-closed mode: refusals are submitted with `submitAndWait`, and while the audit queue cannot make
 * events durable (closed, failed, or its database unwritable) every call is refused under the rule
 * `audit-unavailable`, since a refusal that cannot be recorded must not happen unrecorded.
 *
 * Every call on the record: with durable journals (`layer` with the ledger's `JournalStore` in context,
 * as `AuditLedger` provides it) each entry is also a `journal_entries` row, its `intent` the arguments as
 * the policy stores them (`storedArguments`: digest and size unless `argumentStorage` says otherwise). In
 * fail-closed mode an allowed call is answered `Allowed` only once its `call` entry is durable
 * (write-ahead): a call whose entry cannot be stored within `ackTimeout` is ended as `interrupted` and
 * refused under `audit-unavailable`, never forwarded unrecorded.
 */
import { Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer, Option, Runtime } from "effect"
import type { Decision, JsonValue, Warn } from "../audit/AuditEvent.js"
import { APPROVAL_EVENT_TYPE, DeferredAuditEvent, JournalRef, Refuse, ToolCall } from "../audit/AuditEvent.js"
import * as AuditQueue from "../audit/AuditQueue.js"
import type { ArgumentLimits } from "../internal/jsonSize.js"
import { jsonBytes, measureArguments } from "../internal/jsonSize.js"
import { normalizeName } from "../internal/toolNames.js"
import type * as SessionJournal from "../journal/SessionJournal.js"
import * as SessionJournals from "../journal/SessionJournals.js"
import * as JournalStore from "../ledger/JournalStore.js"
import * as Approvals from "./Approvals.js"

/** One tool call, as the guard sees it. */
export interface GuardCall {
  readonly sessionId: string
  readonly agentId: string
  readonly serverId: string
  readonly toolName: string
  /** The call's arguments as the client sent them (any JSON). */
  readonly arguments?: unknown
  /** How deep in a delegation chain the calling agent is; 0 for a top-level agent. */
  readonly delegationDepth?: number
  /**
   * The tool's annotations as its pinned definition declares them (set by the guard from its `tools`
   * gate; absent when the tool has no pinned definition that is also the one last listed).
   */
  readonly annotations?: ToolAnnotations | undefined
  /**
   * The transport's id of the call (Claude Code's `tool_use_id`): kept beside the arguments in a durable
   * journal's `intent` (`{"arguments": …, "requestId": …}`), so another process can find the call it ends.
   */
  readonly requestId?: string | undefined
}

/** The hints MCP lets a server declare about a tool: the server's own claims, verified by no one. */
export interface ToolAnnotations {
  readonly readOnlyHint?: boolean | undefined
  readonly destructiveHint?: boolean | undefined
  readonly idempotentHint?: boolean | undefined
  readonly openWorldHint?: boolean | undefined
}

/**
 * What the guard knows of a server's tool definitions beyond the policy (`ToolPins` is one): whether a
 * call to the tool is refused because its definition changed, and its pinned annotations.
 */
export interface ToolGate {
  /** Why calls to the tool are refused (rule `tool-changed`), or undefined. */
  readonly refusal: (serverId: string, toolName: string) => string | undefined
  /** The annotations of the tool's pinned definition, when it is the one last listed. */
  readonly annotations: (serverId: string, toolName: string) => ToolAnnotations | undefined
  /** How the tool's listed definition differs from its pin, when calls to it are refused for that. */
  readonly change?: ((serverId: string, toolName: string) => ToolChange | undefined) | undefined
  /**
   * Pins the definition of `digest` (a person accepted it): true when it is pinned now, false when the
   * definition listed is no longer that one (it changed again while the question was open).
   */
  readonly approve?:
    | ((serverId: string, toolName: string, digest: string, by: ToolApprover) => Effect.Effect<boolean>)
    | undefined
}

/** A listed definition that is not the pinned one, as a question about it shows it. */
export interface ToolChange {
  readonly pinnedDigest: string
  readonly digest: string
  /** The pinned fields that differ (`description`, `inputSchema`, `outputSchema`, `annotations`); empty when the pinned definition is not known. */
  readonly changed: ReadonlyArray<string>
  /** The new definition's description, as listed. */
  readonly description?: string | undefined
}

/** Who approved a changed definition, as its `tool.pinned` row records it. */
export interface ToolApprover {
  readonly agentId: string
  readonly sessionId: string
  /** Who answered (e.g. `client ide`). */
  readonly approver: string
  /** How they were asked (e.g. `the client, through MCP elicitation`). */
  readonly via: string
}

/** The rule id of calls to a tool whose listed definition is not the one pinned (`ToolGate.refusal`). */
export const TOOL_CHANGED_RULE = "tool-changed"

/** What a policy says about a call, read against the session's journal. */
export interface Verdict {
  readonly decision: Decision
  /** Warnings of rules that did not block: logged and returned, not ledgered. */
  readonly warnings: ReadonlyArray<Warn>
  /**
   * The refusal is an `ask` rule's: it stands unless a person accepts the call (the guard's `approver`);
   * the decision is then made again with the rule approved.
   */
  readonly ask?: AskSpec | undefined
}

/** How an `ask` rule asks: how long to wait, and what happens without an answer or without anyone to ask. */
export interface AskSpec {
  readonly timeoutMillis: number
  readonly onTimeout: "refuse" | "allow"
  readonly fallback: "refuse" | "allow"
  /** Top-level argument fields the question shows as given. */
  readonly showArguments: ReadonlyArray<string>
}

/**
 * The policy cannot decide yet: its verdict depends on the bytes calls now in flight will read (a budget
 * rule, `ruleId`). The guard waits for them to end and asks again.
 */
export interface AwaitInFlight {
  readonly _tag: "AwaitInFlight"
  readonly ruleId: string
}

/**
 * The session as a policy reads it, kept by the guard: the allowed calls in the order the guard allowed
 * them, calls in flight included (each with the time it was allowed), the bytes read by those that have
 * ended, the argument bytes of all of them, and how many are still in flight.
 */
export interface SessionHistory {
  readonly allowed: ReadonlyArray<
    { readonly toolName: string; readonly serverId?: string | undefined; readonly timestampMillis: number }
  >
  readonly allowedRead: number
  readonly allowedWritten: number
  readonly inFlight: number
}

/**
 * The policy side of the guard (`GuardPolicy.engine` builds one from a policy document): the decision on
 * a call given the session's history, the tools a client may see, and what of a call's arguments goes into
 * the signed, append-only ledger.
 */
export interface PolicyEngine {
  /**
   * Pure and synchronous: the guard calls it while it holds the session's decision lock. `approvedRules`:
   * the `ask` rules a person accepted the call under (they do not fire again).
   */
  readonly decide: (
    call: GuardCall,
    session: SessionHistory,
    nowMillis: number,
    approvedRules?: ReadonlyArray<string>
  ) => Verdict | AwaitInFlight
  /** Whether `tools/list` shows the tool (false for tools the policy always refuses, when it hides them). */
  readonly isVisible: (serverId: string, toolName: string) => boolean
  /** The arguments as the ledger stores them (by default only their hash and size). */
  readonly storedArguments: (toolName: string, args: unknown) => JsonValue
  /** Bounds on a call's arguments (default depth 64, 4 MiB), checked before anything else reads them. */
  readonly argumentLimits?: ArgumentLimits | undefined
  /**
   * `shadow`: every decision is made, journaled and ledgered, but a refusal is not enforced (the call runs,
   * its ledger row is a `governance.would-refuse`) and no tool is hidden. Default `enforce`.
   */
  readonly mode?: Mode | undefined
  /** Whether the policy hides the tools it refuses (a changed tool is then hidden too). */
  readonly hidesRefusedTools?: boolean | undefined
  /**
   * The `ask` of the policy's `toolChanged` rule covering the tool, if it asks: a call of the tool while its
   * definition differs from its pin is then put to the approver, and an accept pins the new definition.
   */
  readonly toolChangedAsk?:
    | ((serverId: string, toolName: string) => { readonly ruleId: string; readonly ask: AskSpec } | undefined)
    | undefined
}

export type { ArgumentLimits, ArgumentSize } from "../internal/jsonSize.js"
export { jsonBytes, measureArguments } from "../internal/jsonSize.js"

/** `enforce` refuses; `shadow` decides and records the same but blocks and hides nothing. */
export type Mode = "enforce" | "shadow"

export const DEFAULT_MAX_ARGUMENT_DEPTH = 64
export const DEFAULT_MAX_ARGUMENT_BYTES = 4 * 1024 * 1024

/** The rule ids of calls refused because their arguments are too deep or too large to be read safely. */
export const ARGUMENTS_TOO_DEEP_RULE = "arguments-too-deep"
export const ARGUMENTS_TOO_LARGE_RULE = "arguments-too-large"

export interface Options {
  readonly policy: PolicyEngine
  /** Refusals wait for their durable acknowledgement, and no call is allowed while auditing is down. */
  readonly failClosed?: boolean | undefined
  /** Seal the journal into the ledger every this many entries (0: only at session end). Default 100. */
  readonly sealEvery?: number | undefined
  /**
   * Fail-closed: how long a refusal waits for its durable acknowledgement before the guard answers anyway
   * (the call is refused either way; the event stays queued). Default 5 seconds.
   */
  readonly ackTimeout?: Duration.DurationInput | undefined
  /** Overrides the policy's `mode` (the CLI's `--mode`). */
  readonly mode?: Mode | undefined
  /** Tool pinning (`ToolPins`): a changed tool is refused under `tool-changed` before the policy is asked. */
  readonly tools?: ToolGate | undefined
  /**
   * Who `ask` rules ask (the proxy: the client, through MCP elicitation; a gateway: a chat, a ticket).
   * Without one, every `ask` gets the rule's `fallback`.
   */
  readonly approver?: Approvals.Approver | undefined
  /** Who the approver asks, as approval rows name it (e.g. `client claude-desktop via elicitation`). */
  readonly approverName?: string | undefined
}

/** An allowed call the guard is waiting to see complete. */
export interface Ticket {
  readonly call: GuardCall
  readonly bytesWritten: number
  /** Unique within the guard: `complete` ends the call of this id once; later completions do nothing. */
  readonly id: number
  /** The call's place in the session's order of decisions (0 for the first call decided). */
  readonly decisionIndex: number
  /** The journal entry of the decision (kind `call`, outcome `pending`); its outcome entry names it. */
  readonly sequence: number
  /**
   * Shadow mode: the refusal the policy made and the guard did not enforce. Such a call is not in the
   * policy's history (enforcing, it would not have run), so later decisions are those enforcing would make.
   */
  readonly wouldRefuse?: { readonly ruleId: string; readonly reason: string } | undefined
}

/**
 * How an allowed call ended, as the proxy (or any transport) saw it. Every allowed call is completed with
 * exactly one outcome; `bytesRead` counts what the upstream sent back (a JSON-RPC error's bytes too, so
 * error answers count toward read budgets).
 */
export type CallOutcome =
  /** The upstream answered with a result (an `isError` tool result included). */
  | { readonly _tag: "Result"; readonly bytesRead: number }
  /** The upstream answered with a JSON-RPC error. */
  | { readonly _tag: "ErrorAnswer"; readonly bytesRead: number }
  /** No answer within the call timeout; the client was answered with an error. */
  | { readonly _tag: "TimedOut" }
  /** The upstream exited, or its transport closed, before answering. */
  | { readonly _tag: "UpstreamGone" }
  /** The session ended (a signal, the client closing) before the upstream answered. */
  | { readonly _tag: "Interrupted" }

/** The journal's name for an outcome (format v2, docs/FORMAT.md). */
export const journalOutcome = (outcome: CallOutcome): SessionJournal.Outcome => {
  switch (outcome._tag) {
    case "Result":
      return "result"
    case "ErrorAnswer":
      return "errorAnswer"
    case "TimedOut":
      return "timedOut"
    case "UpstreamGone":
      return "upstreamGone"
    case "Interrupted":
      return "interrupted"
  }
}

/** The bytes an outcome read from the upstream (0 when it never answered). */
export const outcomeBytes = (outcome: CallOutcome): number =>
  outcome._tag === "Result" || outcome._tag === "ErrorAnswer" ? Math.max(0, Math.floor(outcome.bytesRead)) : 0

/** The guard's answer for a call. */
export type Check =
  | {
    readonly _tag: "Allowed"
    readonly ticket: Ticket
    readonly warnings: ReadonlyArray<Warn>
    /**
     * `checkDeferringAsk`: the `ask` rules the call was allowed under pending a person's answer that the
     * caller obtains (Claude Code's permission prompt); the caller records it with `recordApproval`.
     */
    readonly asked?: ReadonlyArray<PendingApproval> | undefined
  }
  | Refused

/** How `check` treats a call. */
export interface CheckOptions {
  /**
   * An `ask` rule's question is asked by the caller after the guard answers, not by the guard's approver:
   * the call is decided again with the rule approved (counted in flight while it waits, like any allowed
   * call) and returned `Allowed` with `asked`. The caller records the answer with `recordApproval`.
   */
  readonly deferAsk?: boolean | undefined
}

/** An `ask` rule's question that the caller of `check` asks (`CheckOptions.deferAsk`). */
export interface PendingApproval {
  readonly call: GuardCall
  readonly ruleId: string
  readonly reason: string
  readonly argumentSummary: JsonValue
  /** The journal entry of the allowed call (its `pending` entry). */
  readonly sequence: number
  readonly askedAtMillis: number
}

/** A refused call. */
export interface Refused {
  readonly _tag: "Refused"
  readonly ruleId: string
  readonly reason: string
  /** The journal entry of the refused call. */
  readonly sequence: number
  /** The ledger row, when the refusal was acknowledged durable (fail-closed mode). */
  readonly ledgerSequence: number | null
  /** The call's place in the session's order of decisions (see `Ticket.decisionIndex`). */
  readonly decisionIndex: number
}

/** The rule id of refusals made because auditing cannot be made durable (fail-closed mode). */
export const AUDIT_UNAVAILABLE_RULE = "audit-unavailable"

export class McpGuard extends Context.Tag("agent-ledger/McpGuard")<McpGuard, {
  /** Decide on a call: journal and ledger a refusal now; an allowed call is journaled by `complete`. */
  readonly check: (call: GuardCall) => Effect.Effect<Check>
  /**
   * `check`, but an `ask` rule's question is left to the caller (`CheckOptions.deferAsk`): Claude Code's
   * hooks answer `ask` and let Claude Code's permission prompt ask its user.
   */
  readonly checkDeferringAsk: (call: GuardCall) => Effect.Effect<Check>
  /**
   * Records the answer to a question the caller asked (`CheckOptions.deferAsk`): a `governance.approval`
   * row naming the call's journal entry, its latency from the decision to now. `outcome`: what became of
   * the call (`allowed`: it ran; `not-run`: nothing says it ran).
   */
  readonly recordApproval: (
    pending: PendingApproval,
    answer: {
      readonly asked: string
      readonly approver: string | null
      readonly answer: Approvals.Answer
      readonly outcome: Approvals.Outcome
    }
  ) => Effect.Effect<void>
  /**
   * An allowed call has ended, with `outcome`. Idempotent per ticket: a second completion of the same
   * ticket (or of one `endSession`/`seal` already ended as interrupted) does nothing.
   */
  readonly complete: (ticket: Ticket, outcome: CallOutcome) => Effect.Effect<void>
  /**
   * Refuse a call under a rule of the caller's (a transport-level rule such as `arguments-too-deep` or
   * `duplicate-request-id`) without asking the policy: journaled and ledgered like a policy refusal.
   */
  readonly refuse: (call: GuardCall, ruleId: string, reason: string) => Effect.Effect<Refused>
  /**
   * Seal the session's journal into the ledger now; its `length` and head hash, `None` if not open. Calls
   * of the session still in flight are first ended as `Interrupted`, so what is sealed is complete: call it
   * when the session ends (the guard seals on its own every `sealEvery` entries).
   */
  readonly seal: (sessionId: string) => Effect.Effect<Option.Option<SessionJournal.JournalExport>>
  /**
   * End the session's calls in flight as `Interrupted`, seal its journal and close it: its final export,
   * `None` if it was not open.
   */
  readonly endSession: (sessionId: string) => Effect.Effect<Option.Option<SessionJournal.JournalExport>>
  /** The session's journal (created empty on first use). */
  readonly journal: (sessionId: string) => Effect.Effect<SessionJournal.Journal>
  /**
   * A call of a resumed session (its journal restored from the store, decided by another process) that is
   * still pending at journal entry `sequence`: registered in flight so that `complete` ends it. `None` when
   * that entry is not a pending call of the session. Its decision is already in the history (read from the
   * journal's entries).
   */
  readonly resume: (sessionId: string, sequence: number) => Effect.Effect<Option.Option<Ticket>>
  /** See `PolicyEngine.isVisible`. */
  readonly isVisible: (serverId: string, toolName: string) => boolean
}>() {}

/** The `McpGuard` service itself. */
export type Service = Context.Tag.Service<McpGuard>

/** What the guard keeps of one open session: the policy's history and the calls in flight. */
interface SessionState {
  /** Held while a call is decided and registered (or journaled, when refused): one decision at a time. */
  readonly lock: Effect.Semaphore
  readonly allowed: Array<{ readonly toolName: string; readonly serverId: string; readonly timestampMillis: number }>
  allowedRead: number
  allowedWritten: number
  readonly inFlight: Map<number, Ticket>
  /** Shadow mode: calls the policy refused that run anyway; outside the policy's history. */
  readonly shadowInFlight: Map<number, Ticket>
  /** Completed when the last call in flight ends, for a decision waiting on them (`AwaitInFlight`). */
  idle: Deferred.Deferred<void> | undefined
  decisions: number
  /** Whether the history has been read from the journal's entries (a journal restored from an export). */
  seeded: boolean
  /** Set while `seal`/`endSession` ends the calls in flight: a decision then ends them rather than wait. */
  ending: boolean
}

export const make = (
  options: Options
): Effect.Effect<Service, never, AuditQueue.AuditQueue | SessionJournals.SessionJournals> =>
  Effect.gen(function*() {
    const queue = yield* AuditQueue.AuditQueue
    const journals = yield* SessionJournals.SessionJournals
    const { policy } = options
    const failClosed = options.failClosed === true
    const sealEvery = Math.max(0, Math.floor(options.sealEvery ?? 100))
    const ackTimeout = options.ackTimeout ?? Duration.seconds(5)
    const shadow = (options.mode ?? policy.mode) === "shadow"
    const tools = options.tools
    /** The call with its pinned annotations (none unless the gate vouches for the definition). */
    const withAnnotations = (call: GuardCall): GuardCall => {
      const annotations = tools?.annotations(call.serverId, call.toolName)
      const { annotations: _claimed, ...rest } = call
      return annotations === undefined ? rest : { ...rest, annotations }
    }
    /** The agent of each open session, for its seal rows. */
    const agents = new Map<string, string>()
    const sessions = new Map<string, SessionState>()
    let nextTicketId = 0

    const sessionOf = (sessionId: string): SessionState => {
      let state = sessions.get(sessionId)
      if (state === undefined) {
        state = {
          lock: Effect.unsafeMakeSemaphore(1),
          allowed: [],
          allowedRead: 0,
          allowedWritten: 0,
          inFlight: new Map(),
          shadowInFlight: new Map(),
          idle: undefined,
          decisions: 0,
          seeded: false,
          ending: false
        }
        sessions.set(sessionId, state)
      }
      return state
    }

    /** A journal the guard did not start (restored from an export) brings its allowed calls into the history. */
    const seed = (state: SessionState, journal: SessionJournal.Journal) =>
      Effect.gen(function*() {
        if (state.seeded) return
        state.seeded = true
        for (const entry of yield* journal.entries) {
          if (entry.kind === "outcome") {
            state.allowedRead += entry.bytesRead
          } else if (entry.allowed) {
            state.allowed.push({
              toolName: entry.toolName,
              serverId: entry.serverId,
              timestampMillis: entry.timestampMillis
            })
            state.allowedRead += entry.bytesRead
            state.allowedWritten += entry.bytesWritten
          }
        }
      })

    const journalStore = yield* Effect.serviceOption(JournalStore.JournalStore)
    const auditAvailable = Effect.map(
      Effect.all([
        queue.isOpen,
        queue.status,
        Option.match(journalStore, { onNone: () => Effect.succeed(true), onSome: (store) => store.available })
      ]),
      ([open, status, journalsStored]) => open && status !== "Stalled" && status !== "Failed" && journalsStored
    )

    const sealJournal = (sessionId: string, journal: SessionJournal.Journal) =>
      Effect.gen(function*() {
        const exported = yield* journal.export
        // A durable journal's seal follows the entries it seals into the database (they are stored in
        // order, so the last one stored means all are): a verifier reading the seal finds them. Bounded: an
        // unwritable database must not hold up the session's end (the seal then says more than is stored),
        // nor keep the seal from its own way out (the queue's dead letters, or a LOST line).
        const storeUp = yield* Option.match(journalStore, {
          onNone: () => Effect.succeed(false),
          onSome: (store) => store.available
        })
        if (journal.durable && storeUp && exported.entries.length > 0) {
          yield* journal.awaitDurable(exported.entries.length - 1).pipe(
            Effect.timeout(ackTimeout),
            Effect.catchAll((error) =>
              Effect.logError("agent-ledger: sealing a journal whose entries are not all stored").pipe(
                Effect.annotateLogs({ sessionId, reason: error._tag === "EntryNotDurable" ? error.reason : "timeout" })
              )
            )
          )
        }
        const event = yield* DeferredAuditEvent.sessionSeal(agents.get(sessionId) ?? "", {
          sessionId,
          length: exported.entries.length,
          headHash: exported.headHash,
          journalFormat: exported.format
        })
        if (failClosed) {
          yield* queue.submitAndWait(event).pipe(
            Effect.catchAll((error) =>
              Effect.logError("agent-ledger: the session seal could not be made durable").pipe(
                Effect.annotateLogs({ sessionId, reason: error.reason, detail: error.detail })
              )
            )
          )
        } else {
          yield* queue.submit(event)
        }
        return exported
      })

    /** The arguments as the ledger stores them, computed only where a durable journal keeps them. */
    const storedOf = (call: GuardCall): JsonValue | undefined =>
      Option.isSome(journalStore) ? policy.storedArguments(call.toolName, call.arguments) : undefined

    /**
     * Journals an entry of the call (no seal: see `sealIfDue`, run once the session's lock is released): its
     * decision (`refused`, or `pending` for an allowed call), or the outcome that ends it.
     */
    const journalCall = (
      call: GuardCall,
      entry:
        | {
          readonly kind: "call"
          readonly outcome: "refused" | "pending"
          readonly bytesWritten: number
          /** The call's arguments as stored (see `intentOf`); only a durable journal keeps them. */
          readonly intent?: JsonValue | undefined
        }
        | {
          readonly kind: "outcome"
          readonly outcome: SessionJournal.Outcome
          readonly callSequence: number
          readonly bytesRead: number
        }
    ) =>
      Effect.gen(function*() {
        const journal = yield* journals.get(call.sessionId)
        if (!agents.has(call.sessionId)) agents.set(call.sessionId, call.agentId)
        return yield* journal.record({
          toolName: call.toolName,
          serverId: call.serverId,
          agentId: call.agentId,
          bytesRead: entry.kind === "outcome" ? entry.bytesRead : 0,
          bytesWritten: entry.kind === "call" ? entry.bytesWritten : 0,
          delegationDepth: call.delegationDepth ?? 0,
          allowed: entry.outcome !== "refused",
          kind: entry.kind,
          outcome: entry.outcome,
          ...(entry.kind === "outcome" ? { callSequence: entry.callSequence } : {}),
          ...(entry.kind === "call" && journal.durable && entry.intent !== undefined
            ? {
              intent: call.requestId === undefined
                ? { arguments: entry.intent }
                : { arguments: entry.intent, requestId: call.requestId }
            }
            : {})
        }).pipe(
          // The guard computes every value itself; a rejected one is a bug, not the caller's input.
          Effect.orDie
        )
      })

    /** Seals every `sealEvery` entries (`sequence` the entry just journaled). */
    const sealIfDue = (sessionId: string, sequence: number) =>
      sealEvery > 0 && (sequence + 1) % sealEvery === 0
        ? Effect.flatMap(journals.get(sessionId), (journal) => Effect.asVoid(sealJournal(sessionId, journal)))
        : Effect.void

    /** A refusal decided and journaled under the session's lock, not yet ledgered. */
    interface Journaled {
      readonly call: GuardCall
      readonly ruleId: string
      readonly reason: string
      readonly sequence: number
      readonly decisionIndex: number
      /** What the ledger stores of arguments that were not read (too deep or too large). */
      readonly unread?: JsonValue | undefined
    }

    /** Journals a refusal; runs under the session's lock, so it takes its place in the order of decisions. */
    const journalRefusal = (
      state: SessionState,
      call: GuardCall,
      bytesWritten: number,
      ruleId: string,
      reason: string,
      unread?: JsonValue
    ) =>
      Effect.map(
        journalCall(call, { kind: "call", outcome: "refused", bytesWritten, intent: unread ?? storedOf(call) }),
        (sequence): Journaled => ({
          call,
          ruleId,
          reason,
          sequence,
          decisionIndex: state.decisions++,
          unread
        })
      )

    /**
     * Ledgers a journaled refusal: in fail-closed mode waits (up to `ackTimeout`) for it to be durable,
     * unless the queue is known not to be able to write now (the event is then held in order until it can).
     */
    const ledgerRefusal = (refused: Journaled, wait = failClosed, mode?: "shadow") =>
      Effect.gen(function*() {
        const { call, reason, ruleId, sequence } = refused
        yield* sealIfDue(call.sessionId, sequence)
        // Built unchecked: every field is the guard's own (stored arguments are JSON by construction: a
        // digest, fields round-tripped through JSON, or the `unread` marker), and the Schema constructors'
        // checks cost a measurable part of a refusal (docs/PERFORMANCE.md, "MCP proxy").
        const action = new ToolCall({
          toolName: call.toolName,
          serverId: call.serverId,
          arguments: refused.unread ?? policy.storedArguments(call.toolName, call.arguments)
        }, true)
        const decision = new Refuse({ ruleId, reason }, true)
        const journalRef = new JournalRef({ sessionId: call.sessionId, sequence }, true)
        let ledgerSequence: number | null = null
        if (wait) {
          // Fail-closed: the refusal's journal entry and its ledger row are both durable before the client
          // hears of it. They are waited for together: a refused call is never forwarded, so nothing has to
          // wait for the journal entry first, and the row is submitted at once rather than one acknowledgement
          // later (on SQLite the two commits then queue back to back in the writer thread; on PostgreSQL
          // they can run on two connections at once). docs/PERFORMANCE.md, "MCP proxy".
          const journal = yield* journals.get(call.sessionId)
          // Not while the store is known down: the call is refused either way, and is not held up by it.
          const storeUp = yield* Option.match(journalStore, {
            onNone: () => Effect.succeed(false),
            onSome: (store) => store.available
          })
          const entryDurable = storeUp
            ? journal.awaitDurable(sequence).pipe(
              Effect.timeout(ackTimeout),
              Effect.catchAll(() =>
                Effect.logError("agent-ledger: a refusal's journal entry could not be made durable").pipe(
                  Effect.annotateLogs({ sessionId: call.sessionId, sequence })
                )
              )
            )
            : Effect.void
          const rowDurable = queue.submitRefusalAndWait(call.agentId, action, decision, journalRef, mode).pipe(
            Effect.timeoutFail({
              duration: ackTimeout,
              onTimeout: () => ({
                reason: "timeout",
                detail: `no acknowledgement within ${Duration.format(ackTimeout)}`
              })
            }),
            Effect.either
          )
          const [, receipt] = yield* Effect.all([entryDurable, rowDurable], { concurrency: 2 })
          if (receipt._tag === "Left") {
            yield* Effect.logError("agent-ledger: a refusal could not be made durable").pipe(
              Effect.annotateLogs({ ruleId, reason: receipt.left.reason, detail: receipt.left.detail })
            )
          } else {
            ledgerSequence = Option.match(receipt.right, { onNone: () => null, onSome: (r) => r.sequence })
          }
        } else {
          yield* queue.submitRefusal(call.agentId, action, decision, journalRef, mode)
        }
        return {
          _tag: "Refused",
          ruleId,
          reason,
          sequence,
          ledgerSequence,
          decisionIndex: refused.decisionIndex
        } as Refused
      })

    /**
     * Runs `f` holding the session's decision lock, on the session's current state: a caller that queued on
     * the lock of a session that ended meanwhile starts again on the new session's state.
     */
    const underLock = <A>(sessionId: string, f: (state: SessionState) => Effect.Effect<A>): Effect.Effect<A> =>
      Effect.suspend(() => {
        const state = sessionOf(sessionId)
        return state.lock.withPermits(1)(
          Effect.suspend(() => sessions.get(sessionId) === state ? f(state) : underLock(sessionId, f))
        )
      })

    /** Refuses under a rule of the caller's: journaled in the order of decisions, then ledgered. */
    const refuseWith = (
      call: GuardCall,
      bytesWritten: number,
      ruleId: string,
      reason: string,
      wait = failClosed,
      unread?: JsonValue
    ) => {
      return underLock(call.sessionId, (state) => journalRefusal(state, call, bytesWritten, ruleId, reason, unread))
        .pipe(Effect.flatMap((journaled) => ledgerRefusal(journaled, wait)))
    }

    const limits: ArgumentLimits = policy.argumentLimits ?? {
      maxDepth: DEFAULT_MAX_ARGUMENT_DEPTH,
      maxBytes: DEFAULT_MAX_ARGUMENT_BYTES
    }

    /**
     * The arguments' gate: `Within` with their exact JSON size, or the refusal of arguments too deep or too
     * large to be read (the ledger then stores what was measured, never the value).
     */
    const gate = (call: GuardCall) => {
      const size = measureArguments(call.arguments, limits)
      switch (size._tag) {
        case "Within":
          return { _tag: "Within", bytes: jsonBytes(call.arguments) } as const
        case "TooDeep":
          return {
            _tag: "Refuse",
            ruleId: ARGUMENTS_TOO_DEEP_RULE,
            reason: `the arguments of ${call.toolName} are nested deeper than ${limits.maxDepth} levels`,
            bytes: 0,
            unread: { unread: ARGUMENTS_TOO_DEEP_RULE, depthOver: limits.maxDepth }
          } as const
        case "TooLarge":
          return {
            _tag: "Refuse",
            ruleId: ARGUMENTS_TOO_LARGE_RULE,
            reason: `the arguments of ${call.toolName} are larger than ${limits.maxBytes} bytes`,
            bytes: size.bytes,
            unread: { unread: ARGUMENTS_TOO_LARGE_RULE, bytesOver: limits.maxBytes }
          } as const
      }
    }

    /**
     * The decision on `call`, atomic with respect to the session's other decisions: the policy reads the
     * history (calls in flight included), and the allowed call is registered in flight, or the refused one
     * journaled, before the lock is released. A verdict that waits on calls in flight waits here, holding
     * the lock, until they have all ended (no busy-waiting; interruptible).
     */
    const decide = (
      call: GuardCall,
      bytesWritten: number,
      intent: JsonValue | undefined,
      approved: ReadonlyArray<string> = []
    ) =>
      underLock(call.sessionId, (state) =>
        Effect.gen(function*() {
          yield* seed(state, yield* journals.get(call.sessionId))
          while (true) {
            const nowMillis = yield* Clock.currentTimeMillis
            const changed = tools?.refusal(call.serverId, call.toolName)
            if (changed !== undefined && !shadow && !approved.includes(TOOL_CHANGED_RULE)) {
              // A changed definition a `toolChanged` rule asks about: asked outside the lock, once per definition.
              const change = tools?.change?.(call.serverId, call.toolName)
              const asks = change === undefined || tools?.approve === undefined
                ? undefined
                : policy.toolChangedAsk?.(call.serverId, call.toolName)
              if (change !== undefined && asks !== undefined) {
                const refusal = new Refuse({ ruleId: TOOL_CHANGED_RULE, reason: changed })
                return { verdict: { decision: refusal, warnings: [] }, askingChange: { ...asks, refusal, change } }
              }
            }
            const verdict: Verdict | AwaitInFlight = changed !== undefined
              ? { decision: new Refuse({ ruleId: TOOL_CHANGED_RULE, reason: changed }, true), warnings: [] }
              : policy.decide(
                withAnnotations(call),
                {
                  allowed: state.allowed,
                  allowedRead: state.allowedRead,
                  allowedWritten: state.allowedWritten,
                  inFlight: state.inFlight.size
                },
                nowMillis,
                approved.filter((ruleId) => ruleId !== TOOL_CHANGED_RULE)
              )
            if ("_tag" in verdict) {
              if (state.inFlight.size === 0) {
                return yield* Effect.dieMessage(`policy rule ${verdict.ruleId} waits on calls in flight, but none are`)
              }
              if (state.ending) {
                // The session is being sealed: the calls in flight end as interrupted now, as the seal would
                // end them, instead of this decision waiting on the lock's next holder (the seal) for them.
                yield* interruptInFlight(call.sessionId)
                continue
              }
              const idle = state.idle ?? (state.idle = Deferred.unsafeMake<void>(FiberId.none))
              yield* Deferred.await(idle)
              continue
            }
            if (verdict.decision._tag === "Refuse" && verdict.ask !== undefined && !shadow) {
              // Asked outside the lock; decided again, with the rule approved, once the answer allows it.
              return { verdict, asking: { ask: verdict.ask, refusal: verdict.decision } }
            }
            if (verdict.decision._tag === "Refuse" && !shadow) {
              const { reason, ruleId } = verdict.decision
              return { verdict, refused: yield* journalRefusal(state, call, bytesWritten, ruleId, reason) }
            }
            const sequence = yield* journalCall(call, { kind: "call", outcome: "pending", bytesWritten, intent })
            const ticket: Ticket = {
              call,
              bytesWritten,
              id: nextTicketId++,
              decisionIndex: state.decisions++,
              sequence,
              ...(verdict.decision._tag === "Refuse"
                ? { wouldRefuse: { ruleId: verdict.decision.ruleId, reason: verdict.decision.reason } }
                : {})
            }
            if (!agents.has(call.sessionId)) agents.set(call.sessionId, call.agentId)
            if (ticket.wouldRefuse !== undefined) {
              state.shadowInFlight.set(ticket.id, ticket)
              return { verdict, ticket, sequence }
            }
            state.inFlight.set(ticket.id, ticket)
            state.allowed.push({ toolName: call.toolName, serverId: call.serverId, timestampMillis: nowMillis })
            state.allowedWritten += bytesWritten
            if (!agents.has(call.sessionId)) agents.set(call.sessionId, call.agentId)
            return { verdict, ticket, sequence }
          }
        }))

    /** A `governance.approval` row for `call`'s question, naming the call's journal entry `sequence`. */
    const recordApprovalRow = (
      call: GuardCall,
      sequence: number,
      fields: Omit<Parameters<typeof Approvals.approvalPayload>[0], "call">
    ) =>
      Effect.flatMap(
        DeferredAuditEvent.record(
          call.agentId,
          APPROVAL_EVENT_TYPE,
          Approvals.approvalPayload({ call, ...fields }),
          new JournalRef({ sessionId: call.sessionId, sequence })
        ),
        queue.submit
      )

    /** Asks the approver, bounded by the rule's timeout: the answer (undefined: none in time) and how long it took. */
    const askApprover = (request: Omit<Approvals.ApprovalRequest, "timeoutMillis">, ask: AskSpec) =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        const answer: Approvals.ApprovalAnswer | undefined = options.approver === undefined
          ? { _tag: "Unavailable", detail: "the guard has no approver" }
          : Option.getOrUndefined(
            yield* options.approver({ ...request, timeoutMillis: ask.timeoutMillis }).pipe(
              Effect.timeoutOption(Duration.millis(ask.timeoutMillis))
            )
          )
        const latencyMillis = (yield* Clock.currentTimeMillis) - started
        const outcome: Approvals.Answer = answer === undefined
          ? "timeout"
          : answer._tag === "Accept"
          ? "accept"
          : answer._tag === "Decline"
          ? "decline"
          : answer._tag === "Cancel"
          ? "cancel"
          : "unavailable"
        const approver = answer !== undefined && answer._tag !== "Unavailable" ? answer.approver : null
        const why = outcome === "timeout"
          ? `no answer within ${Math.round(ask.timeoutMillis / 1000)} s`
          : outcome === "unavailable"
          ? `approval was needed and no one could be asked: ${answer?._tag === "Unavailable" ? answer.detail : ""}`
          : `${outcome === "decline" ? "declined" : "cancelled"} by ${approver}`
        return { outcome, approver, latencyMillis, why }
      })

    const askedBy = () => options.approver === undefined ? "nobody" : (options.approverName ?? "approver")

    /**
     * An `ask` rule's question and its answer: the call refused (declined, cancelled, no answer in time, no
     * one to ask), or decided again with the rule approved (so counting rules see the calls allowed while it
     * waited). A `governance.approval` row records the question, the answer and the call's journal entry.
     */
    const askFor = (
      call: GuardCall,
      bytesWritten: number,
      approved: ReadonlyArray<string>,
      asking: { readonly ask: AskSpec; readonly refusal: Refuse },
      checkOptions: CheckOptions
    ): Effect.Effect<Check> =>
      Effect.gen(function*() {
        const { ask, refusal } = asking
        const summary = Approvals.argumentSummary(call.arguments, ask.showArguments)
        if (checkOptions.deferAsk === true) return yield* deferAsk(call, bytesWritten, approved, refusal, summary)
        const { approver, latencyMillis, outcome, why } = yield* askApprover({
          call,
          ruleId: refusal.ruleId,
          reason: refusal.reason,
          argumentSummary: summary,
          question: Approvals.questionText(call, refusal.ruleId, refusal.reason, summary)
        }, ask)
        const allow = outcome === "accept" || (outcome === "timeout" && ask.onTimeout === "allow") ||
          (outcome === "unavailable" && ask.fallback === "allow")
        const record = (sequence: number, allowed: boolean) =>
          recordApprovalRow(call, sequence, {
            ruleId: refusal.ruleId,
            reason: refusal.reason,
            askedBy: askedBy(),
            approver,
            answer: outcome,
            allowed,
            latencyMillis,
            argumentSummary: summary
          })
        if (allow) {
          const next = [...approved, refusal.ruleId]
          const result = yield* decideAndLedger(call, bytesWritten, next, checkOptions)
          yield* record(result._tag === "Allowed" ? result.ticket.sequence : result.sequence, result._tag === "Allowed")
          return result
        }
        const refused = yield* refuseWith(call, bytesWritten, refusal.ruleId, `${refusal.reason} (${why})`)
        yield* record(refused.sequence, false)
        return refused
      })

    /**
     * `deferAsk`: the call decided again with the rule approved and returned with the question for the caller
     * to ask (and record with `recordApproval`); a refusal by another rule stands, with no question.
     */
    const deferAsk = (
      call: GuardCall,
      bytesWritten: number,
      approved: ReadonlyArray<string>,
      refusal: Refuse,
      summary: JsonValue
    ): Effect.Effect<Check> =>
      Effect.gen(function*() {
        const askedAtMillis = yield* Clock.currentTimeMillis
        const result = yield* decideAndLedger(call, bytesWritten, [...approved, refusal.ruleId], { deferAsk: true })
        if (result._tag !== "Allowed") return result
        const pending: PendingApproval = {
          call,
          ruleId: refusal.ruleId,
          reason: refusal.reason,
          argumentSummary: summary,
          sequence: result.ticket.sequence,
          askedAtMillis
        }
        return { ...result, asked: [pending, ...(result.asked ?? [])] }
      })

    const recordApproval: Service["recordApproval"] = (pending, answer) =>
      Effect.gen(function*() {
        const latencyMillis = (yield* Clock.currentTimeMillis) - pending.askedAtMillis
        yield* recordApprovalRow(pending.call, pending.sequence, {
          ruleId: pending.ruleId,
          reason: pending.reason,
          askedBy: answer.asked,
          approver: answer.approver,
          answer: answer.answer,
          allowed: answer.outcome === "allowed",
          outcome: answer.outcome,
          latencyMillis,
          argumentSummary: pending.argumentSummary
        })
      })

    /** What a question about a changed definition ended with, shared by every call that waited on it. */
    interface ChangeAnswer {
      readonly outcome: Approvals.Answer
      readonly approver: string | null
      readonly latencyMillis: number
      readonly why: string
    }
    /** Open questions about changed definitions, by server, tool and new digest: one question per definition. */
    const changeQuestions = new Map<string, Deferred.Deferred<ChangeAnswer>>()

    /**
     * A call of a tool whose definition changed, under a `toolChanged` rule that asks: the approver is asked
     * once per new definition (calls arriving while the question is open wait for its answer); an accept
     * pins the definition (`ToolGate.approve`, a `tool.pinned` row naming the approver) and the call is
     * decided again (a definition changed once more meanwhile is refused, not asked about again). The call
     * that asked gets the `governance.approval` row; every other waiting call is decided by the same answer.
     */
    const askChange = (
      call: GuardCall,
      bytesWritten: number,
      approved: ReadonlyArray<string>,
      asking: { readonly ruleId: string; readonly ask: AskSpec; readonly refusal: Refuse; readonly change: ToolChange },
      checkOptions: CheckOptions
    ): Effect.Effect<Check> =>
      Effect.gen(function*() {
        const { ask, change, refusal, ruleId } = asking
        const key = `${call.serverId}\u0000${normalizeName(call.toolName)}\u0000${change.digest}`
        const open = changeQuestions.get(key)
        const next = [...approved, TOOL_CHANGED_RULE]
        const decideWith = (answer: ChangeAnswer) =>
          answer.outcome === "accept"
            ? decideAndLedger(call, bytesWritten, next, checkOptions)
            : refuseWith(call, bytesWritten, TOOL_CHANGED_RULE, `${refusal.reason} (${answer.why})`)
        if (open !== undefined) return yield* decideWith(yield* Deferred.await(open))
        const question = Deferred.unsafeMake<ChangeAnswer>(FiberId.none)
        changeQuestions.set(key, question)
        const summary = Approvals.argumentSummary(call.arguments, ask.showArguments)
        const answer = yield* Effect.gen(function*() {
          const answered = yield* askApprover({
            call,
            ruleId: TOOL_CHANGED_RULE,
            reason: refusal.reason,
            argumentSummary: summary,
            question: Approvals.toolChangeQuestion(call, ruleId, change),
            toolChange: change
          }, ask)
          if (answered.outcome !== "accept" || answered.approver === null) return answered
          const pinned = yield* tools!.approve!(call.serverId, call.toolName, change.digest, {
            agentId: call.agentId,
            sessionId: call.sessionId,
            approver: answered.approver,
            via: askedBy()
          })
          return pinned ? answered : { ...answered, why: "the definition changed again while the question was open" }
        }).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              changeQuestions.delete(key)
              Deferred.unsafeDone(
                question,
                Exit.succeed(
                  exit._tag === "Success"
                    ? exit.value
                    : { outcome: "cancel", approver: null, latencyMillis: 0, why: "the question was withdrawn" }
                )
              )
            })
          )
        )
        const result = yield* decideWith(answer)
        yield* recordApprovalRow(call, result._tag === "Allowed" ? result.ticket.sequence : result.sequence, {
          ruleId: TOOL_CHANGED_RULE,
          reason: refusal.reason,
          askedBy: askedBy(),
          approver: answer.approver,
          answer: answer.outcome,
          allowed: result._tag === "Allowed",
          latencyMillis: answer.latencyMillis,
          argumentSummary: summary,
          toolChange: { askRule: ruleId, change }
        })
        return result
      })

    /** The decision (after the gates), ledgered; an `ask` verdict goes to `askFor` (or `askChange`). */
    const decideAndLedger = (
      call: GuardCall,
      bytesWritten: number,
      approved: ReadonlyArray<string>,
      checkOptions: CheckOptions
    ): Effect.Effect<Check> =>
      Effect.gen(function*() {
        // Outside the session's lock: hashing the arguments does not hold up the session's other decisions.
        const decided = yield* decide(call, bytesWritten, storedOf(call), approved)
        for (const warning of decided.verdict.warnings) {
          yield* Effect.logWarning(`agent-ledger guard: ${warning.reason}`).pipe(
            Effect.annotateLogs({ ruleId: warning.ruleId, sessionId: call.sessionId, toolName: call.toolName })
          )
        }
        if (decided.askingChange !== undefined) {
          return yield* askChange(call, bytesWritten, approved, decided.askingChange, checkOptions)
        }
        if (decided.asking !== undefined) {
          return yield* askFor(call, bytesWritten, approved, decided.asking, checkOptions)
        }
        if (decided.refused !== undefined) return yield* ledgerRefusal(decided.refused)
        const { ticket } = decided
        if (failClosed) {
          // Write-ahead: the call runs (enforced or shadowed) only once its `call` entry is durable.
          const refused = yield* writeAhead(ticket)
          if (refused !== undefined) return refused
        }
        if (ticket.wouldRefuse !== undefined) {
          yield* ledgerRefusal(
            {
              call,
              ruleId: ticket.wouldRefuse.ruleId,
              reason: ticket.wouldRefuse.reason,
              sequence: ticket.sequence,
              decisionIndex: ticket.decisionIndex
            },
            failClosed,
            "shadow"
          )
          return { _tag: "Allowed", ticket, warnings: decided.verdict.warnings } as const
        }
        yield* sealIfDue(call.sessionId, decided.sequence)
        return { _tag: "Allowed", ticket, warnings: decided.verdict.warnings } as const
      })

    const check = (call: GuardCall, checkOptions: CheckOptions = {}): Effect.Effect<Check> =>
      Effect.gen(function*() {
        const gated = gate(call)
        if (gated._tag === "Refuse") {
          return yield* refuseWith(call, gated.bytes, gated.ruleId, gated.reason, failClosed, gated.unread)
        }
        const bytesWritten = gated.bytes
        if (failClosed && !(yield* auditAvailable)) {
          return yield* refuseWith(
            call,
            bytesWritten,
            AUDIT_UNAVAILABLE_RULE,
            "the audit ledger cannot record decisions right now (fail-closed guard)",
            false
          )
        }
        return yield* decideAndLedger(call, bytesWritten, [], checkOptions)
      })

    /**
     * Write-ahead (fail-closed): waits until the allowed call's `call` entry is durable. When it cannot be
     * made durable within `ackTimeout`, the call is ended as interrupted (never forwarded) and refused.
     */
    const writeAhead = (ticket: Ticket): Effect.Effect<Refused | undefined> =>
      Effect.gen(function*() {
        const journal = yield* journals.get(ticket.call.sessionId)
        if (!journal.durable) return undefined
        const durable = yield* journal.awaitDurable(ticket.sequence).pipe(
          Effect.timeoutFail({
            duration: ackTimeout,
            onTimeout: () => `not durable within ${Duration.format(ackTimeout)}`
          }),
          Effect.mapError((error) => typeof error === "string" ? error : error.reason),
          Effect.either
        )
        if (durable._tag === "Right") return undefined
        yield* Effect.logError("agent-ledger: a call's journal entry could not be made durable; refused").pipe(
          Effect.annotateLogs({ sessionId: ticket.call.sessionId, sequence: ticket.sequence, reason: durable.left })
        )
        yield* complete(ticket, { _tag: "Interrupted" })
        return {
          _tag: "Refused",
          ruleId: AUDIT_UNAVAILABLE_RULE,
          reason: "the call could not be recorded durably before it ran (fail-closed guard)",
          sequence: ticket.sequence,
          ledgerSequence: null,
          decisionIndex: ticket.decisionIndex
        }
      })

    /**
     * Ends a call in flight: its bytes join the history and its outcome entry is journaled; a no-op if it
     * already ended.
     */
    const complete = (ticket: Ticket, outcome: CallOutcome): Effect.Effect<void> =>
      Effect.suspend(() => {
        const state = sessions.get(ticket.call.sessionId)
        if (state === undefined) return Effect.void
        if (state.shadowInFlight.delete(ticket.id)) {
          return journalCall(ticket.call, {
            kind: "outcome",
            outcome: journalOutcome(outcome),
            callSequence: ticket.sequence,
            bytesRead: outcomeBytes(outcome)
          }).pipe(Effect.flatMap((sequence) => sealIfDue(ticket.call.sessionId, sequence)))
        }
        if (!state.inFlight.delete(ticket.id)) return Effect.void
        state.allowedRead = Math.min(Number.MAX_SAFE_INTEGER, state.allowedRead + outcomeBytes(outcome))
        if (state.inFlight.size === 0 && state.idle !== undefined) {
          Deferred.unsafeDone(state.idle, Exit.void)
          state.idle = undefined
        }
        return journalCall(ticket.call, {
          kind: "outcome",
          outcome: journalOutcome(outcome),
          callSequence: ticket.sequence,
          bytesRead: outcomeBytes(outcome)
        }).pipe(
          Effect.flatMap((sequence) => sealIfDue(ticket.call.sessionId, sequence))
        )
      })

    /** Ends every call of the session still in flight as `Interrupted`. */
    const interruptInFlight = (sessionId: string) =>
      Effect.suspend(() => {
        const state = sessions.get(sessionId)
        if (state === undefined) return Effect.void
        return Effect.forEach(
          [...state.inFlight.values(), ...state.shadowInFlight.values()],
          (ticket) => complete(ticket, { _tag: "Interrupted" }),
          { discard: true }
        )
      })

    /**
     * Seals after ending the calls in flight; under the session's lock, so no decision is half made (a
     * decision waiting on calls in flight is released by their ending, and finishes first).
     */
    const sealEnding = (sessionId: string, andThen: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const ending = sessions.get(sessionId)
        if (ending !== undefined) ending.ending = true
        yield* interruptInFlight(sessionId)
        const state = sessions.get(sessionId)
        const sealNow = Effect.gen(function*() {
          yield* interruptInFlight(sessionId)
          const open = yield* journals.list
          if (!open.includes(sessionId)) {
            yield* andThen
            return Option.none()
          }
          const sealed = yield* sealJournal(sessionId, yield* journals.get(sessionId))
          yield* andThen
          return Option.some(sealed)
        })
        return yield* (state === undefined ? sealNow : state.lock.withPermits(1)(sealNow)).pipe(
          Effect.ensuring(Effect.sync(() => {
            if (ending !== undefined) ending.ending = false
          }))
        )
      })

    const seal = (sessionId: string) => sealEnding(sessionId, Effect.void)

    const resume = (sessionId: string, sequence: number) =>
      underLock(sessionId, (state) =>
        Effect.gen(function*() {
          const journal = yield* journals.get(sessionId)
          yield* seed(state, journal)
          if (!(yield* journal.pendingCalls).includes(sequence)) return Option.none<Ticket>()
          for (const ticket of state.inFlight.values()) {
            if (ticket.sequence === sequence) return Option.some(ticket)
          }
          const entries = yield* journal.entries
          const entry = entries[sequence]!
          const ticket: Ticket = {
            call: {
              sessionId,
              agentId: entry.agentId,
              serverId: entry.serverId,
              toolName: entry.toolName,
              delegationDepth: entry.delegationDepth
            },
            bytesWritten: entry.bytesWritten,
            id: nextTicketId++,
            decisionIndex: state.decisions++,
            sequence
          }
          if (!agents.has(sessionId)) agents.set(sessionId, entry.agentId)
          state.inFlight.set(ticket.id, ticket)
          return Option.some(ticket)
        }))

    const endSession = (sessionId: string) =>
      sealEnding(
        sessionId,
        Effect.gen(function*() {
          yield* journals.end(sessionId)
          agents.delete(sessionId)
          sessions.delete(sessionId)
        })
      )

    return McpGuard.of({
      check: (call) => check(call),
      checkDeferringAsk: (call) => check(call, { deferAsk: true }),
      recordApproval,
      complete,
      refuse: (call, ruleId, reason) => {
        const gated = gate(call)
        return gated._tag === "Within"
          ? refuseWith(call, gated.bytes, ruleId, reason)
          : refuseWith(call, gated.bytes, ruleId, reason, failClosed, gated.unread)
      },
      seal,
      endSession,
      journal: journals.get,
      resume,
      isVisible: (serverId, toolName) =>
        shadow ||
        (policy.isVisible(serverId, toolName) &&
          // A changed tool a `toolChanged` rule asks about stays visible: calling it is how it gets approved.
          !(policy.hidesRefusedTools === true && tools?.refusal(serverId, toolName) !== undefined &&
            !(options.approver !== undefined && tools.change?.(serverId, toolName) !== undefined &&
              tools.approve !== undefined && policy.toolChangedAsk?.(serverId, toolName) !== undefined)))
    })
  })

/**
 * The guard on the `AuditQueue` in context, with its own journals: durable (every entry a `journal_entries`
 * row) when the ledger's `JournalStore` is in context, as `AuditLedger`'s layers provide it; in memory
 * otherwise.
 */
export const layer = (options: Options): Layer.Layer<McpGuard, never, AuditQueue.AuditQueue> =>
  Layer.effect(McpGuard, make(options)).pipe(
    Layer.provide(Layer.effect(SessionJournals.SessionJournals, journalsInContext))
  )

/** `SessionJournals` on the ledger's `JournalStore` when there is one in context, else in memory. */
export const journalsInContext: Effect.Effect<SessionJournals.Service> = Effect.flatMap(
  Effect.serviceOption(JournalStore.JournalStore),
  (store) => SessionJournals.makeWith(Option.isSome(store) ? { store: store.value } : {})
)

/** The guard for Promise-based code (the MCP SDK's handlers): each method runs on the runtime given. */
export interface PromiseGuard {
  readonly check: (call: GuardCall) => Promise<Check>
  readonly complete: (ticket: Ticket, outcome: CallOutcome) => Promise<void>
  readonly endSession: (sessionId: string) => Promise<Option.Option<SessionJournal.JournalExport>>
  readonly isVisible: (serverId: string, toolName: string) => boolean
}

/** `guard` as Promises, run on `runtime` (e.g. from `ManagedRuntime.make(layer).runtime()`). */
export const toPromise = <R>(guard: Service, runtime: Runtime.Runtime<R>): PromiseGuard => {
  const run = Runtime.runPromise(runtime)
  return {
    check: (call) => run(guard.check(call)),
    complete: (ticket, outcome) => run(guard.complete(ticket, outcome)),
    endSession: (sessionId) => run(guard.endSession(sessionId)),
    isVisible: guard.isVisible
  }
}
