/**
 * `GET /openapi.json` of `agent-ledger serve`: an OpenAPI 3.1 document (made by @effect/platform's
 * `OpenApi.fromApi`) with a path for every route the server has, bearer security on the authenticated
 * ones, and the hook endpoint's payload schema being the handler's: every recorded Claude Code payload is
 * valid under the document's schema (checked by an independent JSON Schema validator) and accepted by the
 * endpoint, and every payload the document's schema rejects, the endpoint rejects too (400).
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import Ajv from "ajv"
import { Chunk, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import * as AuditLedger from "../src/AuditLedger.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as GuardServer from "../src/serve/GuardServer.js"
import * as Serve from "../src/serve/Serve.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const recorded = fs.readdirSync(fixtures).filter((f) => f.endsWith(".json")).map((f) => ({
  name: f,
  body: JSON.parse(fs.readFileSync(join(fixtures, f), "utf8")) as Record<string, unknown>
}))

const policy = Effect.runSync(GuardPolicy.decode({ version: 1, rules: [] }))
const alice = BearerTokens.generate("alice")
const tokens = Effect.runSync(BearerTokens.parse(`${alice.line}\n`, "tokens"))

const serveOn = (filename: string) =>
  Serve.layer({ policy, tokens }, NodeHttpServer.layerTest).pipe(
    Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false }))
  )

const without = (body: Record<string, unknown>, key: string) => {
  const copy = { ...body }
  delete copy[key]
  return copy
}

describe("serve: the OpenAPI document", () => {
  it.live(
    "describes every route, and its hook payload schema accepts and rejects what the endpoint does",
    () =>
      Effect.gen(function*() {
        const filename = join(fs.mkdtempSync(join(os.tmpdir(), "serve-openapi-")), "ledger.db")
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(serveOn(filename))
          yield* Effect.gen(function*() {
            const client = yield* HttpClient.HttpClient
            const response = yield* client.get("/openapi.json")
            expect(response.status).toBe(200)
            expect(response.headers["content-type"]).toContain("application/json")
            const doc = JSON.parse(yield* response.text) as {
              openapi: string
              paths: Record<string, Record<string, { security?: Array<unknown>; requestBody?: unknown }>>
              components: { securitySchemes?: Record<string, unknown> }
            }
            expect(doc.openapi).toBe("3.1.0")
            expect(doc.components.securitySchemes).toEqual({ bearer: { type: "http", scheme: "bearer" } })

            // Every route the server has is in the document (so a route cannot be added without it).
            const routes = Chunk.toReadonlyArray(GuardServer.router({ tokens }).routes)
            expect(routes.length).toBeGreaterThan(5)
            for (const route of routes) {
              const path = route.path.replace(/:(\w+)/g, "{$1}")
              expect(Object.keys(doc.paths)).toContain(path)
              const methods = route.method === "*" ? ["post", "get", "delete"] : [route.method.toLowerCase()]
              for (const method of methods) expect(doc.paths[path]).toHaveProperty(method)
            }
            expect(doc.paths["/v1/hooks/claude-code"]!.post!.security).toEqual([{ bearer: [] }])
            expect(doc.paths["/mcp/{name}"]!.get!.security).toEqual([{ bearer: [] }])
            expect(doc.paths["/healthz"]!.get!.security).toEqual([])

            // The hook payload's schema, checked by a JSON Schema validator that is not Effect's.
            const ajv = new Ajv({ unknownFormats: "ignore", schemaId: "auto" })
            ajv.addSchema({ ...doc, $id: "serve" } as object, "serve")
            const validate = ajv.compile({
              $ref: "serve#/paths/~1v1~1hooks~1claude-code/post/requestBody/content/application~1json/schema"
            })
            const postHook = (body: unknown) =>
              Effect.flatMap(
                client.execute(
                  HttpClientRequest.post("/v1/hooks/claude-code").pipe(
                    HttpClientRequest.bodyUnsafeJson(body),
                    HttpClientRequest.bearerToken(alice.token)
                  )
                ),
                (answer) => Effect.as(answer.text, answer.status)
              )
            expect(recorded.length).toBeGreaterThan(5)
            for (const { body, name } of recorded) {
              expect({ name, valid: validate(body), errors: validate.errors ?? null }).toMatchObject({ valid: true })
              expect({ name, status: yield* postHook(body) }).toEqual({ name, status: 200 })
            }
            const pre = recorded.find((r) => r.name === "PreToolUse-Read.json")!.body
            const start = recorded.find((r) => r.name === "SessionStart.json")!.body
            const rejected = [
              without(pre, "tool_use_id"),
              without(pre, "session_id"),
              { ...pre, tool_name: 7 },
              { ...pre, tool_use_id: "" },
              { ...pre, session_id: "a\nb" },
              { ...start, source: 1 },
              without(start, "hook_event_name"),
              { ...start, hook_event_name: 3 }
            ]
            for (const body of rejected) {
              expect({ body, valid: validate(body) }).toEqual({ body, valid: false })
              expect({ body, status: yield* postHook(body) }).toEqual({ body, status: 400 })
            }
          }).pipe(Effect.provide(context))
        }))
      }),
    30_000
  )
})
