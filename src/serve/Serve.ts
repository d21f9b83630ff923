/**
 * `agent-ledger serve` in one Layer: the guard (`McpGuard` on the policy, with the ledger's argument salt),
 * the Claude Code hooks on it, the per-agent rate limiter and the HTTP routes on the given HTTP server
 * layer. The ledger (`AuditLedger.layerFor`: `AuditQueue` and `LedgerSql`) comes from the caller.
 *
 * Tool pins (`pinsLayer`, unless the policy says `"pinTools": false`) sit below the guard and the MCP
 * endpoints, which share them.
 *
 * Build order is the shutdown order reversed, which is the contract: the server is built last, so on
 * shutdown it stops taking requests (and finishes those in flight) first; then the hooks and the MCP
 * endpoints seal every open session (calls in flight end as interrupted); then the caller's ledger flushes its queue and closes.
 * With MCP endpoints, the guard's `ask` rules ask the session's MCP client through elicitation
 * (`McpElicitation`); Claude Code hook sessions get the rule's fallback.
 */
import type * as HttpServer from "@effect/platform/HttpServer"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer, Option } from "effect"
import type * as AuditQueue from "../audit/AuditQueue.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as McpGuard from "../guard/McpGuard.js"
import * as ToolPins from "../guard/ToolPins.js"
import * as SessionJournals from "../journal/SessionJournals.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as ClaudeCodeHooks from "./ClaudeCodeHooks.js"
import * as GuardServer from "./GuardServer.js"
import * as McpElicitation from "./McpElicitation.js"
import * as McpEndpoints from "./McpEndpoints.js"
import * as RateLimiter from "./RateLimiter.js"

export interface Options extends GuardServer.Options {
  readonly policy: GuardPolicy.GuardPolicy
  /** See `McpGuard.Options.failClosed`. */
  readonly failClosed?: boolean | undefined
  /** See `McpGuard.Options.sealEvery`. */
  readonly sealEvery?: number | undefined
  readonly hooks?: ClaudeCodeHooks.Options | undefined
  /** Requests per second per agent (whichever credential names it); default 50, burst 100. */
  readonly rateLimit?: RateLimiter.Options | undefined
  /** MCP upstreams served at `/mcp/NAME`, and the SDK to serve them with; none if absent. */
  readonly mcp?: McpEndpoints.Options | undefined
}

/**
 * Tool pins as `mcp-proxy` keeps them, read from the ledger's `tool.pinned`/`tool.changed` rows at start:
 * the MCP endpoints pin every upstream's tools under its name, the guard refuses a changed one.
 */
export const pinsLayer: Layer.Layer<ToolPins.ToolPins, SqlError, AuditQueue.AuditQueue | LedgerSql.LedgerSql> = Layer
  .effect(ToolPins.ToolPins, Effect.flatMap(ToolPins.load, (initial) => ToolPins.make({ initial })))

/**
 * The guard on the policy, with the ledger's argument salt and its journals on the ledger's `JournalStore`
 * when it is in context (as `AuditLedger`'s layers provide it): every entry a `journal_entries` row, so with
 * `failClosed` an allowed `PreToolUse` is answered only once its `call` entry is durable (write-ahead), as
 * `mcp-proxy` does. Without a `JournalStore` the journals are in memory. With the `ToolPins` in context (if
 * any) as its tool gate; with `mcp`, its approver asks the MCP sessions' clients (`McpElicitation`).
 */
export const guardLayer = (
  options: Pick<Options, "policy" | "failClosed" | "sealEvery" | "mcp">
): Layer.Layer<
  McpGuard.McpGuard,
  SqlError,
  AuditQueue.AuditQueue | LedgerSql.LedgerSql | McpElicitation.McpElicitation
> =>
  Layer.effect(
    McpGuard.McpGuard,
    Effect.gen(function*() {
      const salt = yield* LedgerSql.argumentSalt
      const pins = yield* Effect.serviceOption(ToolPins.ToolPins)
      const elicitation = yield* McpElicitation.McpElicitation
      return yield* McpGuard.make({
        ...(options.mcp === undefined
          ? {}
          : { approver: elicitation.approver, approverName: McpElicitation.APPROVER_NAME }),
        policy: GuardPolicy.engine(options.policy, { salt }),
        failClosed: options.failClosed,
        sealEvery: options.sealEvery,
        tools: Option.getOrUndefined(pins)
      }).pipe(Effect.provideServiceEffect(SessionJournals.SessionJournals, McpGuard.journalsInContext))
    })
  )

/** Everything `serve` runs, on `server` (e.g. `NodeHttpServer.layer(...)`); its outputs are kept. */
export const layer = <ROut, E, R>(options: Options, server: Layer.Layer<ROut | HttpServer.HttpServer, E, R>) =>
  GuardServer.layer(options).pipe(
    Layer.provideMerge(server),
    Layer.provide(RateLimiter.layer(options.rateLimit ?? { perSecond: 50, burst: 100 })),
    Layer.provideMerge(ClaudeCodeHooks.layer(options.hooks)),
    Layer.provideMerge(
      options.mcp === undefined
        ? McpEndpoints.none
        : McpEndpoints.layer({ ...options.mcp, shadow: options.policy.mode === "shadow" })
    ),
    Layer.provideMerge(guardLayer(options)),
    Layer.provideMerge(McpElicitation.layer),
    // Pinning is on unless the policy opts out (`"pinTools": false`), as in `mcp-proxy`.
    Layer.provideMerge(options.policy.pinTools === false ? Layer.empty : pinsLayer)
  )
