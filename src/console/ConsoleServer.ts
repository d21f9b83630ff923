/**
 * The console's HTTP app on @effect/platform's server: GET routes only (it never writes the ledger), every
 * page rendered on the server from one round of SQL, the "verify now" progress as server-sent events, the
 * receipt as a download. Who may ask:
 * - on a loopback address, only requests whose `Host` is a loopback name (a web page elsewhere cannot reach
 *   it through DNS rebinding);
 * - with a token (required when listening elsewhere), only requests that carry it: `Authorization: Bearer`,
 *   or the cookie a `?token=` link sets once, so a browser can follow the printed URL.
 */
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Layer, Option, Queue, Stream } from "effect"
import { timingSafeEqual } from "node:crypto"
import * as ToolPins from "../guard/ToolPins.js"
import type * as LedgerSql from "../ledger/LedgerSql.js"
import { LedgerQuery } from "../query/LedgerQuery.js"
import type * as SignedNote from "../transparency/SignedNote.js"
import type * as ConsoleAssets from "./ConsoleAssets.js"
import * as ConsolePages from "./ConsolePages.js"
import * as ConsoleQueries from "./ConsoleQueries.js"
import * as ConsoleReceipts from "./ConsoleReceipts.js"
import { ConsoleVerifier } from "./ConsoleVerifier.js"
import type * as ConsoleVerifierModule from "./ConsoleVerifier.js"

export interface Options {
  /** The ledger's name as pages show it (a file name, or a URL without its password). */
  readonly ledger: string
  /** Required of every request when set. */
  readonly token: Option.Option<string>
  /** Only loopback `Host` names are accepted (the server listens on a loopback address). */
  readonly loopbackOnly: boolean
  readonly verifier: Option.Option<SignedNote.Verifier>
  readonly assets: ReadonlyMap<string, ConsoleAssets.Asset>
}

/** The cookie a `?token=` link sets. */
export const TOKEN_COOKIE = "agent_ledger_console"

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY"
}

const htmlResponse = (body: string, status = 200) =>
  HttpServerResponse.text(body, { status, contentType: "text/html; charset=utf-8" }).pipe(
    HttpServerResponse.setHeader("cache-control", "no-store")
  )

const sameSecret = (given: string, expected: string): boolean => {
  const a = Buffer.from(given, "utf8")
  const b = Buffer.from(expected, "utf8")
  return a.length === b.length && timingSafeEqual(a, b)
}

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"])

/** `host:port` → host (an IPv6 literal keeps its brackets). */
const hostName = (host: string): string =>
  host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0]!

const cookieValue = (header: string | undefined, name: string): string | undefined => {
  for (const part of (header ?? "").split(";")) {
    const [key, ...value] = part.trim().split("=")
    if (key === name) return value.join("=")
  }
  return undefined
}

/** The host and token checks, before any route runs. */
const guard = (options: Options) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (options.loopbackOnly && !LOOPBACK_HOSTS.has(hostName(request.headers.host ?? ""))) {
        return HttpServerResponse.text("this console answers only to localhost\n", { status: 421 })
      }
      if (Option.isNone(options.token)) return yield* app
      const token = options.token.value
      const url = new URL(request.url, "http://console.invalid")
      const offered = url.searchParams.get("token")
      if (offered !== null && sameSecret(offered, token)) {
        url.searchParams.delete("token")
        return HttpServerResponse.redirect(`${url.pathname}${url.search}`, { status: 303 }).pipe(
          HttpServerResponse.setHeader(
            "set-cookie",
            `${TOKEN_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Strict`
          )
        )
      }
      const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? "")?.[1]
      const cookie = cookieValue(request.headers.cookie, TOKEN_COOKIE)
      if ((bearer !== undefined && sameSecret(bearer, token)) || (cookie !== undefined && sameSecret(cookie, token))) {
        return yield* app
      }
      return HttpServerResponse.text("a bearer token is required (the URL the console printed carries it)\n", {
        status: 401,
        headers: { "www-authenticate": "Bearer" }
      })
    })
  )

/** `?from=` / `?to=`: RFC 3339, or a `datetime-local` value read as UTC; normalized as the ledger stores time. */
const timeParam = (value: string | null): Option.Option<string> | "invalid" => {
  if (value === null || value.trim() === "") return Option.none()
  const text = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value) ? `${value}Z` : value
  const date = new Date(text)
  return Number.isNaN(date.getTime()) ? "invalid" : Option.some(date.toISOString())
}

const textParam = (value: string | null): string | undefined =>
  value === null || value.length === 0 ? undefined : value.slice(0, 512)

const sequenceParam = (value: string | undefined): number | undefined =>
  value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : undefined

const searchOf = Effect.map(
  HttpServerRequest.HttpServerRequest,
  (request) => new URL(request.url, "http://console.invalid").searchParams
)

/** A server-sent event. */
const sse = (event: string, data: unknown): Uint8Array =>
  Buffer.from(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`, "utf8")

const routes = (options: Options) => {
  const badRequest = (text: string) => htmlResponse(ConsolePages.message(options.ledger, "Bad request", text), 400)
  const notFound = (text: string) => htmlResponse(ConsolePages.message(options.ledger, "Not found", text), 404)

  const overview = Effect.gen(function*() {
    const verifier = yield* ConsoleVerifier
    const data = yield* ConsoleQueries.overview
    const latest = yield* ConsoleQueries.refusals({}, ConsolePages.LATEST_REFUSALS)
    const checkpoint = yield* verifier.lastCheckpoint
    const outcome = yield* verifier.latest
    return htmlResponse(
      ConsolePages.overview({ ledger: options.ledger, data, latest: latest.items, checkpoint, outcome })
    )
  })

  const refusals = Effect.gen(function*() {
    const search = yield* searchOf
    const from = timeParam(search.get("from"))
    const to = timeParam(search.get("to"))
    if (from === "invalid" || to === "invalid") return badRequest("from and to are RFC 3339 times")
    const split = search.get("split") ?? "rule"
    if (split !== "rule" && split !== "agent") return badRequest("split is rule or agent")
    const filter: ConsoleQueries.RefusalFilter = {
      from: Option.getOrUndefined(from),
      to: Option.getOrUndefined(to),
      rule: textParam(search.get("rule")),
      agent: textParam(search.get("agent")),
      before: sequenceParam(search.get("before") ?? undefined)
    }
    const series = yield* ConsoleQueries.refusalSeries(split, filter)
    const list = yield* ConsoleQueries.refusals(filter)
    return htmlResponse(ConsolePages.refusals({ ledger: options.ledger, splitBy: split, filter, series, list }))
  })

  const rowPage = Effect.gen(function*() {
    const sequence = sequenceParam((yield* HttpRouter.params).sequence)
    if (sequence === undefined) return badRequest("a row is named by its sequence number")
    const stored = yield* ConsoleQueries.row(sequence)
    if (Option.isNone(stored)) return notFound(`no row ${sequence} in the ledger`)
    const receipt = yield* ConsoleReceipts.receipt(sequence, options.verifier).pipe(
      Effect.as({ available: true } as const),
      Effect.catchTag(
        "ReceiptUnavailable",
        (error) => Effect.succeed({ available: false, detail: error.detail } as const)
      )
    )
    return htmlResponse(ConsolePages.row({ ledger: options.ledger, stored: stored.value, receipt }))
  })

  const receipt = Effect.gen(function*() {
    const sequence = sequenceParam((yield* HttpRouter.params).sequence)
    if (sequence === undefined) return badRequest("a row is named by its sequence number")
    return yield* ConsoleReceipts.receipt(sequence, options.verifier).pipe(
      Effect.map((made) =>
        HttpServerResponse.text(`${JSON.stringify(made, null, 2)}\n`, {
          contentType: "application/json",
          headers: {
            "content-disposition": `attachment; filename="receipt-${sequence}.json"`,
            "cache-control": "no-store"
          }
        })
      ),
      Effect.catchTag("ReceiptUnavailable", (error) =>
        Effect.succeed(
          error.reason === "noRow" ? notFound(error.detail) : htmlResponse(
            ConsolePages.message(options.ledger, "No receipt", error.detail),
            409
          )
        ))
    )
  })

  /** "Verify now": a fresh run, its progress and outcome as server-sent events; the client hanging up stops it. */
  const verify = Effect.gen(function*() {
    const verifier = yield* ConsoleVerifier
    const events = Stream.unwrapScoped(Effect.gen(function*() {
      const queue = yield* Queue.unbounded<{ readonly bytes: Uint8Array; readonly last: boolean }>()
      const offer = (event: ConsoleVerifierModule.Event) =>
        event.type === "progress"
          ? Queue.offer(queue, { bytes: sse("progress", event), last: false })
          : Effect.flatMap(verifier.lastCheckpoint, (checkpoint) =>
            Queue.offer(queue, {
              bytes: sse("done", {
                ok: event.outcome.ok,
                status: ConsolePages.verifyStatus(Option.some(event.outcome)),
                checkpoint: ConsolePages.checkpointBlock(checkpoint, Option.some(event.outcome))
              }),
              last: true
            })).pipe(Effect.catchAll((error) =>
              Queue.offer(queue, { bytes: sse("failed", { message: error.message }), last: true })
            ))
      yield* Effect.forkScoped(
        verifier.run(offer).pipe(
          Effect.catchAll((error) =>
            Queue.offer(queue, { bytes: sse("failed", { message: error.message }), last: true })
          )
        )
      )
      return Stream.fromQueue(queue).pipe(Stream.takeUntil((item) => item.last), Stream.map((item) => item.bytes))
    }))
    return HttpServerResponse.stream(events, {
      contentType: "text/event-stream",
      headers: { "cache-control": "no-store" }
    })
  })

  const sessionList = Effect.gen(function*() {
    const query = yield* LedgerQuery
    return htmlResponse(ConsolePages.sessions({ ledger: options.ledger, sessions: yield* query.sessions() }))
  })

  const sessionPage = Effect.gen(function*() {
    const id = (yield* HttpRouter.params).id ?? ""
    const query = yield* LedgerQuery
    return yield* query.session(id).pipe(
      Effect.map((detail) => htmlResponse(ConsolePages.session({ ledger: options.ledger, detail }))),
      Effect.catchTag("NotFound", (error) => Effect.succeed(notFound(error.message)))
    )
  })

  const toolPins = Effect.map(
    ToolPins.ledgerTools,
    (tools) => htmlResponse(ConsolePages.tools({ ledger: options.ledger, tools }))
  )

  const asset = Effect.gen(function*() {
    const name = (yield* HttpRouter.params).name ?? ""
    const found = options.assets.get(name)
    if (found === undefined) return notFound(`no asset ${name}`)
    return HttpServerResponse.uint8Array(found.body, { contentType: found.contentType }).pipe(
      HttpServerResponse.setHeader("cache-control", "public, max-age=3600")
    )
  })

  return HttpRouter.empty.pipe(
    HttpRouter.get("/", overview),
    HttpRouter.get("/refusals", refusals),
    HttpRouter.get("/rows/:sequence", rowPage),
    HttpRouter.get("/rows/:sequence/receipt.json", receipt),
    HttpRouter.get("/verify", verify),
    HttpRouter.get("/sessions", sessionList),
    HttpRouter.get("/sessions/:id", sessionPage),
    HttpRouter.get("/tools", toolPins),
    HttpRouter.get("/assets/:name", asset)
  )
}

/** The console as an HTTP app: its routes behind the host and token checks, with the security headers. */
export const app = (options: Options) =>
  routes(options).pipe(
    HttpRouter.catchAll((error) =>
      Effect.succeed(htmlResponse(ConsolePages.message(options.ledger, "Cannot read the ledger", error.message), 500))
    ),
    HttpRouter.toHttpApp,
    Effect.map((app) =>
      guard(options)(
        app.pipe(
          Effect.catchTag(
            "RouteNotFound",
            () => Effect.succeed(htmlResponse(ConsolePages.message(options.ledger, "Not found", "no such page"), 404))
          )
        )
      ).pipe(Effect.map(HttpServerResponse.setHeaders(SECURITY_HEADERS)))
    )
  )

/** Serves the console on the `HttpServer` in context (e.g. `NodeHttpServer.layer`). */
export const layer = (
  options: Options
): Layer.Layer<never, never, HttpServer.HttpServer | ConsoleVerifier | LedgerQuery | LedgerSql.LedgerSql> =>
  Layer.unwrapEffect(Effect.map(app(options), (httpApp) => HttpServer.serve(httpApp)))
