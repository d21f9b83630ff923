/**
 * `agent-ledger serve` over HTTPS with mTLS client certificates, on loopback with a throwaway PKI made by
 * `openssl` in a temporary folder at run time (no key is committed): a client certificate pinned to an agent
 * is that agent in the journal and the ledger, whatever the body claims; a certificate from the right CA but
 * pinned to no one is refused (403) and counted; a certificate from another CA, or none, never completes the
 * TLS handshake; bearer tokens keep working over TLS; a token and a certificate naming two agents are refused.
 * Also the pins file's format, and `serve`'s own flags end to end.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Context, Effect, Either, Layer, Option } from "effect"
import { execFile, execFileSync, spawn } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as https from "node:https"
import * as os from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as AuditLedger from "../src/AuditLedger.js"
import { loadCredentials, serverFactory } from "../src/cli/serve.js"
import { runToken } from "../src/cli/token.js"
import * as GuardPolicy from "../src/guard/GuardPolicy.js"
import * as McpGuard from "../src/guard/McpGuard.js"
import * as BearerTokens from "../src/serve/BearerTokens.js"
import * as ClientCertificates from "../src/serve/ClientCertificates.js"
import * as Serve from "../src/serve/Serve.js"
import { cliBundle } from "./fixtures/cliBundle.js"

const fixtures = join(import.meta.dirname, "fixtures", "claude-code-hooks")
const fixture = (name: string): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(join(fixtures, `${name}.json`), "utf8")) as Record<string, unknown>
const SESSION = fixture("SessionStart").session_id as string

/** A throwaway PKI: a CA, a server certificate for 127.0.0.1, client certificates; another CA and its client. */
const pki = (() => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-tls-"))
  const file = (name: string) => join(dir, name)
  /** Runs `openssl` with `command` split on spaces (no argument here has one). */
  const openssl = (command: string) => execFileSync("openssl", command.split(" "), { cwd: dir, stdio: "pipe" })
  const key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  const ca = (name: string) =>
    openssl(`req -x509 ${key} -keyout ${name}.key -out ${name}.crt -days 2 -subj /CN=${name}`)
  let serial = 1
  const issue = (name: string, issuer: string, extensions: string, subject = name) => {
    fs.writeFileSync(file(`${name}.ext`), `${extensions}\n`)
    openssl(`req ${key} -keyout ${name}.key -out ${name}.csr -subj /CN=${subject}`)
    openssl(
      `x509 -req -in ${name}.csr -CA ${issuer}.crt -CAkey ${issuer}.key -set_serial ${serial++} -days 2 ` +
        `-out ${name}.crt -extfile ${name}.ext`
    )
  }
  ca("test-ca")
  ca("other-ca")
  issue("server", "test-ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
  for (const client of ["alice", "carol"]) issue(client, "test-ca", "extendedKeyUsage=clientAuth")
  // Mallory's certificate says she is alice, from a CA the server does not trust.
  issue("alice-forged", "other-ca", "extendedKeyUsage=clientAuth", "alice")
  const read = (name: string) => fs.readFileSync(file(name))
  return { dir, file, read, openssl }
})()
afterAll(() => fs.rmSync(pki.dir, { recursive: true, force: true }))

const policy = Effect.runSync(GuardPolicy.decode({
  version: 1,
  rules: [{
    kind: "blockTools",
    id: "no-env-files",
    tools: ["Read"],
    when: [{ path: "file_path", match: { pathGlob: ["**/.env"] } }]
  }]
}))

const aliceToken = BearerTokens.generate("alice")
const bobToken = BearerTokens.generate("bob")
const tokens = Effect.runSync(BearerTokens.parse(`${aliceToken.line}\n${bobToken.line}\n`, "tokens"))
// Alice's certificate is pinned in the colon form `openssl x509 -fingerprint -sha256` prints.
const opensslFingerprint = pki.openssl("x509 -in alice.crt -noout -fingerprint -sha256").toString().trim()
  .split("=")[1]!
const pinsText = `# client certificates\nalice cert-sha256:${opensslFingerprint}\n`
const pins = Effect.runSync(ClientCertificates.parse(pinsText, "client-certs.txt"))

const tlsFiles = (clientCa: boolean) => ({
  cert: pki.read("server.crt"),
  key: pki.read("server.key"),
  clientCa: clientCa ? pki.read("test-ca.crt") : undefined
})

const scratch = () => join(fs.mkdtempSync(join(os.tmpdir(), "serve-tls-db-")), "ledger.db")

const serveTls = (filename: string, clientCa: boolean, extra: Partial<Serve.Options> = {}) =>
  Serve.layer(
    { policy, tokens, clientCertificates: clientCa ? pins : undefined, ...extra },
    NodeHttpServer.layer(serverFactory(tlsFiles(clientCa)), { host: "127.0.0.1", port: 0 })
  ).pipe(Layer.provide(AuditLedger.layerSqlite({ filename, writerThread: false })))

interface Client {
  readonly cert?: string
  readonly token?: string
}

/** One HTTPS request to 127.0.0.1:`port`, trusting the test CA, as `client`; fails when TLS refuses it. */
const request = (port: number, method: string, path: string, client: Client, body?: unknown) =>
  Effect.tryPromise(() =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (client.token !== undefined) headers.authorization = `Bearer ${client.token}`
      const req = https.request({
        host: "127.0.0.1",
        port,
        method,
        path,
        headers,
        agent: false,
        ca: pki.read("test-ca.crt"),
        ...(client.cert === undefined
          ? {}
          : { cert: pki.read(`${client.cert}.crt`), key: pki.read(`${client.cert}.key`) })
      }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString("utf8") }))
        res.on("error", reject)
      })
      req.on("error", reject)
      req.end(body === undefined ? undefined : JSON.stringify(body))
    })
  )

const portOf = (context: Context.Context<HttpServer.HttpServer>) => {
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
  return address.port
}

const rowsOf = (filename: string) => {
  const db = new Database(filename, { readonly: true })
  try {
    return db.prepare("SELECT agent_id, event_type, payload FROM signed_events ORDER BY sequence").all() as Array<
      { agent_id: string; event_type: string; payload: string }
    >
  } finally {
    db.close()
  }
}

describe("ClientCertificates", () => {
  it("pins a certificate by the SHA-256 of its DER encoding, in either hex form", () => {
    const der = new crypto.X509Certificate(pki.read("alice.crt")).raw as Buffer
    const fingerprint = ClientCertificates.fingerprintOf(der)
    expect(opensslFingerprint.replaceAll(":", "").toLowerCase()).toBe(fingerprint)
    expect(ClientCertificates.lineFor("alice", pki.read("alice.crt"))).toBe(`alice cert-sha256:${fingerprint}`)
    expect(ClientCertificates.identify(pins, der)).toEqual({ _tag: "Agent", agentId: "alice" })
    const carol = new crypto.X509Certificate(pki.read("carol.crt")).raw as Buffer
    expect(ClientCertificates.identify(pins, carol)._tag).toBe("Unmapped")
    // The forged certificate names alice in its subject, but it is another certificate.
    const forged = new crypto.X509Certificate(pki.read("alice-forged.crt")).raw as Buffer
    expect(ClientCertificates.identify(pins, forged)._tag).toBe("Unmapped")
  })

  it("refuses a bad pins file, naming the line", () => {
    const parse = (text: string) => Effect.runSync(Effect.either(ClientCertificates.parse(text, "certs.txt")))
    const line = `alice cert-sha256:${"ab".repeat(32)}`
    expect(Either.isRight(parse(`${line}\nbob cert-sha256:${"cd".repeat(32)}\n`))).toBe(true)
    const message = (text: string) => Either.match(parse(text), { onLeft: (e) => e.message, onRight: () => "ok" })
    expect(message(`${line}\n${line.replace("alice", "bob")}\n`)).toBe(
      "certs.txt:2: the same certificate is listed twice"
    )
    expect(message(`alice sha256:${"ab".repeat(32)}`)).toMatch(/^certs\.txt:1: expected AGENT_ID cert-sha256:/)
    expect(message(`alice cert-sha256:${"ab".repeat(31)}`)).toMatch(/^certs\.txt:1: expected/)
    expect(message(`al ice cert-sha256:${"ab".repeat(32)}`)).toMatch(/^certs\.txt:1: expected/)
    expect(message(`a"b cert-sha256:${"ab".repeat(32)}`)).toMatch(/^certs\.txt:1: agent id/)
    expect(message("# nothing\n")).toBe("certs.txt: no certificates")
  })
})

describe("serve over HTTPS with client certificates", () => {
  it.live("takes the agent from a pinned certificate; refuses (and counts) an unmapped one; TLS refuses the rest", () =>
    Effect.gen(function*() {
      const filename = scratch()
      const journal = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveTls(filename, true))
        const port = portOf(context)
        const hook = (client: Client, name: string, extra: Record<string, unknown> = {}) =>
          Effect.map(
            request(port, "POST", "/v1/hooks/claude-code", client, { ...fixture(name), ...extra }),
            (r) => ({ status: r.status, body: JSON.parse(r.body) as Record<string, any> })
          )
        const alice = { cert: "alice" }
        expect(yield* hook(alice, "SessionStart")).toEqual({ status: 200, body: {} })
        // The body's claim of another agent is ignored: the certificate says who this is.
        const env = yield* hook(alice, "PreToolUse-Read-env", { agent_id: "mallory" })
        expect(env.status).toBe(200)
        expect(env.body.hookSpecificOutput.permissionDecision).toBe("deny")

        // A certificate from the trusted CA but pinned to no agent: refused, even beside a valid token.
        const carol = yield* hook({ cert: "carol" }, "PreToolUse-Read-env", { session_id: "carol-session" })
        expect(carol.status).toBe(403)
        expect(carol.body.error).toMatch(/^the client certificate \(cert-sha256:[0-9a-f]{64}\) is pinned to no agent$/)
        expect((yield* hook({ cert: "carol", token: aliceToken.token }, "Stop")).status).toBe(403)

        // No certificate, or one from another CA (even one naming alice): the handshake fails, no HTTP at all.
        for (const client of [{}, { token: aliceToken.token }, { cert: "alice-forged" }]) {
          const failed = yield* Effect.either(hook(client, "Stop"))
          expect(Either.isLeft(failed)).toBe(true)
        }

        // Alice's token beside her certificate agrees: accepted. Bob's token beside it: refused.
        expect((yield* hook({ cert: "alice", token: aliceToken.token }, "Stop")).status).toBe(200)
        const conflict = yield* hook({ cert: "alice", token: bobToken.token }, "Stop")
        expect(conflict.status).toBe(403)
        expect(conflict.body.error).toBe("the bearer token and the client certificate name two agents")
        // A bad token is refused even beside a good certificate.
        expect((yield* hook({ cert: "alice", token: "al_not-a-token" }, "Stop")).status).toBe(401)

        // The MCP endpoints take the same identities: alice passes to the (absent) upstream, carol does not.
        expect((yield* request(port, "POST", "/mcp/files", alice, {})).status).toBe(404)
        expect((yield* request(port, "POST", "/mcp/files", { cert: "carol" }, {})).status).toBe(403)

        const metrics = (yield* request(port, "GET", "/metrics", alice)).body
        expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="unmapped_certificate"\} 3\b/)
        expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="conflicting_credentials"\} 1\b/)
        expect(metrics).toMatch(/agent_ledger_serve_refused_requests\{reason="unauthenticated"\} 1\b/)

        const guard = yield* Effect.provide(McpGuard.McpGuard, context)
        const entries = yield* (yield* guard.journal(SESSION)).entries
        expect((yield* hook(alice, "SessionEnd")).status).toBe(200)
        return entries
      }))
      expect(journal.map((e) => [e.toolName, e.outcome, e.agentId])).toEqual([["Read", "refused", "alice"]])
      const rows = rowsOf(filename)
      expect(rows.map((r) => [r.event_type, r.agent_id])).toEqual([["governance.refusal", "alice"], [
        "session.sealed",
        "alice"
      ]])
      // Nothing of carol's reached the guard.
      expect(rows.some((r) => r.payload.includes("carol-session"))).toBe(false)
    }))

  it.live("rate-limits per agent whichever credential names it", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          serveTls(scratch(), true, { rateLimit: { perSecond: 0.001, burst: 2 } })
        )
        const port = portOf(context)
        const stop = (client: Client) =>
          Effect.map(request(port, "POST", "/v1/hooks/claude-code", client, fixture("Stop")), (r) => r.status)
        expect(yield* stop({ cert: "alice" })).toBe(200)
        expect(yield* stop({ cert: "alice", token: aliceToken.token })).toBe(200)
        expect(yield* stop({ cert: "alice" })).toBe(429)
      }))
    }))

  it.live("without --client-ca, serves bearer tokens over HTTPS and ignores a client certificate", () =>
    Effect.gen(function*() {
      const filename = scratch()
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(serveTls(filename, false))
        const port = portOf(context)
        const hook = (client: Client, name: string) =>
          Effect.map(request(port, "POST", "/v1/hooks/claude-code", client, fixture(name)), (r) => r.status)
        expect(yield* hook({ token: bobToken.token }, "SessionStart")).toBe(200)
        expect(yield* hook({ token: bobToken.token }, "PreToolUse-Read-env")).toBe(200)
        expect(yield* hook({}, "Stop")).toBe(401)
        expect(yield* hook({ cert: "alice" }, "Stop")).toBe(401)
        expect(yield* hook({ token: bobToken.token }, "SessionEnd")).toBe(200)
      }))
      expect(rowsOf(filename).map((r) => r.agent_id)).toEqual(["bob", "bob"])
    }))
})

describe("agent-ledger serve --tls-cert --client-ca", () => {
  it("checks the combinations of its credential and TLS flags", async () => {
    const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-tls-flags-"))
    fs.writeFileSync(join(dir, "client-certs.txt"), pinsText)
    const some = (file: string) => Option.some(file)
    const flags = {
      tokens: Option.none<string>(),
      tlsCert: some(pki.file("server.crt")),
      tlsKey: some(pki.file("server.key")),
      clientCa: some(pki.file("test-ca.crt")),
      clientCerts: some(join(dir, "client-certs.txt"))
    }
    const message = (options: Partial<typeof flags>) =>
      Effect.runPromise(
        Effect.match(loadCredentials({ ...flags, ...options }), { onFailure: (e) => e.message, onSuccess: () => "ok" })
      )
    expect(await message({})).toBe("ok")
    expect(await message({ clientCa: Option.none(), clientCerts: Option.none() })).toMatch(
      /give --tokens, or --client-ca with --client-certs/
    )
    expect(await message({ tlsKey: Option.none() })).toMatch(/--tls-cert and --tls-key go together/)
    expect(await message({ clientCerts: Option.none() })).toMatch(/--client-ca and --client-certs go together/)
    expect(await message({ tlsCert: Option.none(), tlsKey: Option.none() })).toMatch(
      /--client-ca needs --tls-cert and --tls-key/
    )
    expect(await message({ clientCerts: some(join(dir, "missing.txt")) })).toMatch(/missing\.txt: ENOENT/)
    const pin = (cert: Option.Option<string>) =>
      Effect.runPromise(
        Effect.match(runToken({ action: "pin", agent: "alice", cert }), {
          onFailure: (e) => e.message,
          onSuccess: () => "ok"
        })
      )
    expect(await pin(Option.none())).toBe("token pin: --cert FILE is required")
    expect(await pin(some(pki.file("alice.key")))).toMatch(/alice\.key: not a PEM or DER X\.509 certificate$/)
    expect(await pin(some(join(dir, "missing.crt")))).toMatch(/missing\.crt: ENOENT$/)

    const loaded = await Effect.runPromise(loadCredentials(flags))
    expect(loaded.tokens.entries).toEqual([])
    expect([...loaded.clientCertificates!.agents.values()]).toEqual(["alice"])
    expect(loaded.tls!.clientCa!.equals(pki.read("test-ca.crt"))).toBe(true)
  })

  const run = (args: ReadonlyArray<string>) =>
    new Promise<{ code: number | null; stderr: string; url?: string; stop: () => Promise<number | null> }>(
      (resolve) => {
        const child = spawn(process.execPath, [cliBundle, "serve", "--listen", "127.0.0.1:0", ...args], {
          stdio: ["ignore", "ignore", "pipe"]
        })
        let stderr = ""
        const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
        const stop = () => {
          child.kill("SIGTERM")
          return exited
        }
        child.stderr!.on("data", (chunk: Buffer) => {
          stderr += chunk.toString("utf8")
          const match = /listening on (https?:\/\/\S+) /.exec(stderr)
          if (match !== null) resolve({ code: null, stderr, url: match[1]!, stop })
        })
        void exited.then((code) => resolve({ code, stderr, stop }))
      }
    )

  it("serves HTTPS with required client certificates from its flags", async () => {
    const dir = fs.mkdtempSync(join(os.tmpdir(), "serve-tls-cli-"))
    const db = join(dir, "ledger.db")
    fs.writeFileSync(join(dir, "policy.json"), JSON.stringify({ version: 1, rules: [] }))
    // `token pin` prints the pin line for alice's certificate; carol's stays unpinned.
    const pin = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [cliBundle, "token", "pin", "--agent", "alice", "--cert", pki.file("alice.crt")],
        (error, stdout) => (error === null ? resolve(stdout) : reject(error))
      )
    )
    expect(pin).toMatch(/^subject: +CN=alice$/m)
    expect(pin).toMatch(/^issuer: +CN=test-ca$/m)
    const line = /^client-certs line: (.+)$/m.exec(pin)![1]!
    expect(line).toBe(ClientCertificates.lineFor("alice", pki.read("alice.crt")))
    fs.writeFileSync(join(dir, "client-certs.txt"), `${line}\n`)
    const common = ["--db", db, "--policy", join(dir, "policy.json")]
    const tlsFlags = ["--tls-cert", pki.file("server.crt"), "--tls-key", pki.file("server.key")]
    const mtls = [...tlsFlags, "--client-ca", pki.file("test-ca.crt"), "--client-certs", join(dir, "client-certs.txt")]

    const serve = await run([...common, ...mtls])
    expect(serve.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(serve.stderr).toMatch(/client certificates required \(1 pinned\)/)
    const port = Number(new URL(serve.url!).port)
    const answer = await Effect.runPromise(
      request(port, "POST", "/v1/hooks/claude-code", { cert: "alice" }, fixture("PreToolUse-Read"))
    )
    expect(answer.status).toBe(200)
    const carol = await Effect.runPromise(
      request(port, "POST", "/v1/hooks/claude-code", { cert: "carol" }, fixture("Stop"))
    )
    expect(carol.status).toBe(403)
    // `agent-ledger hook` as Claude Code's command hook, presenting a client certificate (no token).
    const hook = (cert: string | undefined, token = "") =>
      new Promise<string>((resolve) => {
        const tlsFlags = cert === undefined ? [] : ["--cert", pki.file(`${cert}.crt`), "--key", pki.file(`${cert}.key`)]
        const child = execFile(
          process.execPath,
          [
            cliBundle,
            "hook",
            "--url",
            `${serve.url}/v1/hooks/claude-code`,
            "--ca",
            pki.file("test-ca.crt"),
            ...tlsFlags
          ],
          { env: { ...process.env, AGENT_LEDGER_TOKEN: token } },
          (_error, stdout) => resolve(stdout)
        )
        child.stdin!.end(fs.readFileSync(join(fixtures, "PreToolUse-Bash.json")))
      })
    expect(JSON.parse(await hook("alice"))).toEqual({})
    const unpinned = JSON.parse(await hook("carol")).hookSpecificOutput
    expect(unpinned.permissionDecision).toBe("deny")
    expect(unpinned.permissionDecisionReason).toMatch(
      /serve answered 403: the client certificate .* is pinned to no agent/
    )
    // A token alone does not get past a serve that requires certificates: the handshake fails, and the hook denies.
    const tokenOnly = JSON.parse(await hook(undefined, "al_some-token")).hookSpecificOutput
    expect(tokenOnly.permissionDecision).toBe("deny")
    expect(tokenOnly.permissionDecisionReason).toMatch(/fail-closed/)

    const noCert = await Effect.runPromise(Effect.either(request(port, "GET", "/healthz", {})))
    expect(Either.isLeft(noCert)).toBe(true)
    expect(await serve.stop()).toBe(130)
    const rows = rowsOf(db)
    expect(rows.map((r) => [r.event_type, r.agent_id])).toEqual([["session.sealed", "alice"]])
    // The Read and the hook's Bash, both by alice, both ended by the shutdown.
    expect(rows[0]!.payload).toMatch(/"length":4/)
  })
})
