/**
 * The guard's approver for `serve`: one `McpGuard` decides for every session (Claude Code hooks and MCP
 * endpoints alike), so its `approver` finds the session's MCP client here. An MCP session registers its
 * client (`McpProxy.ClientRequests`) when it opens and says whether the client declared the `elicitation`
 * capability in `initialize`; an `ask` rule's question then goes to that client as `elicitation/create`,
 * with mcp-proxy's semantics (`Approvals.askClient`): accept allows, decline and cancel refuse, no answer in the
 * rule's timeout refuses (the guard's bound), and a client that did not declare the capability, a session
 * that is not an MCP session (a Claude Code hook) or a question withdrawn at shutdown get the rule's
 * fallback. Each question is a `governance.approval` row (the guard's).
 *
 * `stop` (the first step of `serve`'s shutdown) answers every open question `Unavailable` and every later
 * one at once: a question whose answer could only come in a new HTTP request must not hold up the
 * server's graceful close.
 */
import { Context, Deferred, Effect, Layer } from "effect"
import * as Approvals from "../guard/Approvals.js"
import type * as McpProxy from "../guard/McpProxy.js"

/** How approval rows name who `serve` asks. */
export const APPROVER_NAME = "the MCP client, through elicitation"

/** An MCP session's client, as the approver reaches it. */
export interface Client {
  readonly requests: McpProxy.ClientRequests
  /** Whether the client declared `elicitation` in `initialize` (false until it has). */
  readonly canElicit: () => boolean
  /** Who answers, as approval rows name it (the token's agent). */
  readonly name: string
}

export class McpElicitation extends Context.Tag("agent-ledger/McpElicitation")<McpElicitation, {
  /** Makes `client` the one asked about `sessionId`'s calls, until the returned effect unregisters it. */
  readonly register: (sessionId: string, client: Client) => Effect.Effect<Effect.Effect<void>>
  /** The guard's approver. */
  readonly approver: Approvals.Approver
  /** Withdraws every open question (answered `Unavailable`) and answers later ones so at once. */
  readonly stop: Effect.Effect<void>
}>() {}

export const make = Effect.gen(function*() {
  const clients = new Map<string, Client>()
  const stopping = yield* Deferred.make<void>()
  const withdrawn: Approvals.ApprovalAnswer = { _tag: "Unavailable", detail: "serve is shutting down" }

  const register = (sessionId: string, client: Client) =>
    Effect.sync(() => {
      clients.set(sessionId, client)
      return Effect.sync(() => {
        if (clients.get(sessionId) === client) clients.delete(sessionId)
      })
    })

  const approver: Approvals.Approver = (request) =>
    Effect.flatMap(Deferred.isDone(stopping), (stopped) => {
      if (stopped) return Effect.succeed(withdrawn)
      const client = clients.get(request.call.sessionId)
      if (client === undefined) {
        return Effect.succeed<Approvals.ApprovalAnswer>({ _tag: "Unavailable", detail: "not an MCP session" })
      }
      if (!client.canElicit()) {
        return Effect.succeed<Approvals.ApprovalAnswer>({
          _tag: "Unavailable",
          detail: "the client did not declare the elicitation capability"
        })
      }
      const asked = Approvals.askClient(client.requests, true, client.name, request)
      // The race interrupts the question when serve stops (the client is told `notifications/cancelled`).
      return Effect.raceFirst(asked, Effect.as(Deferred.await(stopping), withdrawn))
    })

  return McpElicitation.of({ register, approver, stop: Deferred.succeed(stopping, undefined) })
})

export const layer: Layer.Layer<McpElicitation> = Layer.effect(McpElicitation, make)
