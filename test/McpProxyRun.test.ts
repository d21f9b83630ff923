/**
 * `McpProxy.run` in one process, between raw JSON-RPC messages on the client side and the official SDK's
 * `McpServer` upstream (in-memory transports): a message whose handling fails (a defect in a hook) gets one
 * JSON-RPC error answer, one log line with its id, and the session goes on; a call that is never answered
 * is completed `TimedOut` at the call timeout (on the TestClock) and the client gets an error; a call in
 * flight when the proxy is interrupted is completed `Interrupted` before `run` returns.
 */
import { it } from "@effect/vitest"
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js"
import { Effect, Fiber, Logger, TestClock } from "effect"
import { describe, expect } from "vitest"
import { z } from "zod"
import * as McpProxy from "../src/guard/McpProxy.js"

type Message = Record<string, any>

const setup = Effect.gen(function*() {
  const server = new McpServer({ name: "upstream", version: "1.0.0" })
  server.tool("echo", { text: z.string() }, async ({ text }) => ({ content: [{ type: "text", text }] }))
  server.tool("hang", {}, () => new Promise(() => {}))
  const [upstream, serverSide] = InMemoryTransport.createLinkedPair()
  yield* Effect.promise(() => server.connect(serverSide))
  const [client, clientSide] = InMemoryTransport.createLinkedPair()
  const received: Array<Message> = []
  clientSide.onmessage = (message) => void received.push(message as Message)
  yield* Effect.promise(() => clientSide.start())
  const completed: Array<[string, McpProxy.ToolAnswer]> = []
  const hooks: McpProxy.Hooks<string> = {
    onInitialize: () => Effect.void,
    onToolCall: (params) =>
      params.name === "boom"
        ? Effect.die(new Error("a bug in the guard"))
        : params.name === "undecided"
        ? Effect.never // a guard decision that waits (e.g. a read budget waiting on calls in flight)
        : Effect.succeed({ _tag: "Forward", ticket: String(params.name) }),
    onToolResult: (ticket, answer) => Effect.sync(() => void completed.push([ticket, answer])),
    onRefusal: (_params, ruleId) => Effect.succeed({ content: [{ type: "text", text: ruleId }], isError: true }),
    onToolsList: Effect.succeed
  }
  const send = (message: Message) => Effect.promise(() => clientSide.send({ jsonrpc: "2.0", ...message } as never))
  const answerTo = (id: unknown) =>
    Effect.gen(function*() {
      while (!received.some((m) => m.id === id)) yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
      return received.filter((m) => m.id === id)
    })
  return { client, upstream, hooks, send, answerTo, completed, received, clientSide }
})

const initialize = (t: Effect.Effect.Success<typeof setup>) =>
  Effect.gen(function*() {
    yield* t.send({
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "c", version: "1" } }
    })
    yield* t.answerTo(0)
    yield* t.send({ method: "notifications/initialized" })
  })

describe("McpProxy.run", () => {
  it.live("a defect while handling one message: one JSON-RPC error with its id, one log line, the session goes on", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const logs: Array<string> = []
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ annotations, message }) => {
          logs.push(`${String(message)} ${JSON.stringify(Object.fromEntries(annotations))}`)
        })
      )
      const proxy = yield* Effect.fork(
        McpProxy.run({ client: t.client, upstream: t.upstream, hooks: t.hooks }).pipe(Effect.provide(logger))
      )
      yield* initialize(t)
      yield* t.send({ id: 7, method: "tools/call", params: { name: "boom", arguments: {} } })
      const [boom, ...more] = yield* t.answerTo(7)
      expect(more).toEqual([])
      expect(boom).toMatchObject({ id: 7, error: { code: McpProxy.ErrorCode.InternalError } })
      const logged = logs.filter((line) => line.includes("could not be handled"))
      expect(logged).toHaveLength(1)
      expect(logged[0]).toContain("\"requestId\":7")
      // The session goes on.
      yield* t.send({ id: 8, method: "tools/call", params: { name: "echo", arguments: { text: "still here" } } })
      const [echo] = yield* t.answerTo(8)
      expect(echo?.result?.content).toEqual([{ type: "text", text: "still here" }])
      expect(t.completed.map(([ticket, answer]) => [ticket, answer._tag])).toEqual([["echo", "Result"]])
      yield* Effect.promise(() => t.clientSide.close())
      const ending = yield* Fiber.join(proxy)
      expect(ending).toMatchObject({ side: "client", inFlight: 0 })
    }))

  it.live("arguments nested 10,000 deep: refused before the guard, one answer, later calls work", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const proxy = yield* Effect.fork(McpProxy.run({ client: t.client, upstream: t.upstream, hooks: t.hooks }))
      yield* initialize(t)
      let deep: unknown = "x"
      for (let i = 0; i < 10_000; i++) deep = { a: deep }
      yield* t.send({ id: 1, method: "tools/call", params: { name: "echo", arguments: { text: deep } } })
      const answers = yield* t.answerTo(1)
      expect(answers).toHaveLength(1)
      expect(answers[0]?.result).toEqual({ content: [{ type: "text", text: "arguments-too-deep" }], isError: true })
      yield* t.send({ id: 2, method: "tools/call", params: { name: "echo", arguments: { text: "ok" } } })
      expect((yield* t.answerTo(2))[0]?.result?.content).toEqual([{ type: "text", text: "ok" }])
      yield* Effect.promise(() => t.clientSide.close())
      yield* Fiber.join(proxy)
    }))

  it.effect("a call with no answer: TimedOut at the call timeout and the client gets one error", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const proxy = yield* Effect.fork(
        McpProxy.run({ client: t.client, upstream: t.upstream, hooks: t.hooks, callTimeout: "30 seconds" })
      )
      yield* initialize(t)
      yield* t.send({ id: 3, method: "tools/call", params: { name: "hang", arguments: {} } })
      // The upstream got the call; nothing is answered before the timeout.
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 50)))
      yield* TestClock.adjust("29 seconds")
      expect(t.received.filter((m) => m.id === 3)).toEqual([])
      yield* TestClock.adjust("1 second")
      const answers = yield* t.answerTo(3)
      expect(answers).toHaveLength(1)
      expect(answers[0]).toMatchObject({ error: { code: McpProxy.ErrorCode.Timeout } })
      expect(t.completed).toEqual([["hang", { _tag: "TimedOut" }]])
      yield* Effect.promise(() => t.clientSide.close())
      expect(yield* Fiber.join(proxy)).toMatchObject({ side: "client", inFlight: 0 })
      expect(t.completed).toHaveLength(1)
    }))

  it.live("interrupted with a call in flight: completed Interrupted before run returns", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const proxy = yield* Effect.fork(McpProxy.run({ client: t.client, upstream: t.upstream, hooks: t.hooks }))
      yield* initialize(t)
      yield* t.send({ id: 4, method: "tools/call", params: { name: "hang", arguments: {} } })
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 100)))
      expect(t.completed).toEqual([])
      yield* Fiber.interrupt(proxy)
      expect(t.completed).toEqual([["hang", { _tag: "Interrupted" }]])
    }))

  it.live("interrupted while a call waits for its decision: the client gets one error for it, nothing is completed", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const proxy = yield* Effect.fork(McpProxy.run({ client: t.client, upstream: t.upstream, hooks: t.hooks }))
      yield* initialize(t)
      yield* t.send({ id: 9, method: "tools/call", params: { name: "undecided", arguments: {} } })
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 100)))
      expect(t.received.filter((m) => m.id === 9)).toEqual([])
      yield* Fiber.interrupt(proxy)
      const answers = yield* t.answerTo(9)
      expect(answers).toEqual([expect.objectContaining({ error: expect.objectContaining({ code: -32002 }) })])
      // Never decided, so never forwarded nor completed.
      expect(t.completed).toEqual([])
    }))
})
