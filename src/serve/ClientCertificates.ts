/**
 * mTLS client certificates as identities for `agent-ledger serve`: the TLS layer (`--client-ca`) verifies a
 * client's certificate chain, and the operator's `--client-certs` file says which agent each certificate
 * is, by a pin on the certificate itself: one `AGENT_ID cert-sha256:<fingerprint>` line per certificate,
 * the SHA-256 of its DER encoding (64 hex characters, or the colon-separated form `openssl x509
 * -fingerprint -sha256` prints; `#` starts a comment line). An agent may have several lines (a certificate
 * and its successor during a rotation); one certificate names one agent.
 *
 * Why a pin and not the subject: a CA can issue any number of certificates with one subject name, so a
 * subject mapping lets whoever gets a second certificate from that CA become the agent. A pin names one
 * certificate; the CA check still runs (a pinned certificate from another CA never completes the handshake),
 * and removing a line revokes it at the next start. A fingerprint is no secret (a certificate is public), so
 * pins are looked up in a map, not compared in constant time.
 */
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { Data, Effect, Option } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as tls from "node:tls"
import { AGENT_ID } from "./BearerTokens.js"

/** The certificates `serve` maps to agents: lowercase hex SHA-256 of the DER certificate → agent id. */
export interface Pins {
  readonly agents: ReadonlyMap<string, string>
}

/** A client certificates file that cannot be used: `line` (1-based; 0 for the whole file) says where. */
export class ClientCertificatesError extends Data.TaggedError("ClientCertificatesError")<{
  readonly file: string
  readonly line: number
  readonly detail: string
}> {
  override get message(): string {
    return this.line === 0 ? `${this.file}: ${this.detail}` : `${this.file}:${this.line}: ${this.detail}`
  }
}

const LINE = /^(\S+)\s+cert-sha256:((?:[0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}|[0-9a-fA-F]{64})$/

/** Parses the text of a client certificates file (`file` names it in errors). */
export const parse = (text: string, file: string): Effect.Effect<Pins, ClientCertificatesError> =>
  Effect.suspend(() => {
    const agents = new Map<string, string>()
    for (const [i, raw] of text.split(/\r?\n/).entries()) {
      const line = raw.trim()
      if (line === "" || line.startsWith("#")) continue
      const fail = (detail: string) => Effect.fail(new ClientCertificatesError({ file, line: i + 1, detail }))
      const match = LINE.exec(line)
      if (match === null) return fail("expected AGENT_ID cert-sha256:<SHA-256 of the DER certificate, 64 hex chars>")
      const [, agentId, fingerprint] = match
      if (!AGENT_ID.test(agentId!)) return fail(`agent id ${JSON.stringify(agentId)} is not allowed`)
      const hex = fingerprint!.replaceAll(":", "").toLowerCase()
      if (agents.has(hex)) return fail("the same certificate is listed twice")
      agents.set(hex, agentId!)
    }
    if (agents.size === 0) {
      return Effect.fail(new ClientCertificatesError({ file, line: 0, detail: "no certificates" }))
    }
    return Effect.succeed({ agents })
  })

/** Reads and parses the client certificates file at `file`. */
export const load = (file: string): Effect.Effect<Pins, ClientCertificatesError> =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (error) =>
      new ClientCertificatesError({ file, line: 0, detail: (error as NodeJS.ErrnoException).code ?? String(error) })
  }).pipe(Effect.flatMap((text) => parse(text, file)))

/** The fingerprint a pin names: the SHA-256 of the DER certificate, lowercase hex. */
export const fingerprintOf = (der: Uint8Array): string => crypto.createHash("sha256").update(der).digest("hex")

/** The pin line for a certificate (PEM or DER), as the client certificates file lists it. */
export const lineFor = (agentId: string, certificate: string | Uint8Array): string =>
  `${agentId} cert-sha256:${fingerprintOf(new crypto.X509Certificate(certificate).raw)}`

/**
 * The DER client certificate the TLS layer verified for `request`'s connection, or `None`: plain HTTP, no
 * certificate asked for or sent, or a chain the server did not accept (`authorized` false; with
 * `rejectUnauthorized` such a connection never gets this far, and an unverified certificate is no identity).
 */
export const verifiedPeerCertificate = (request: HttpServerRequest.HttpServerRequest): Option.Option<Buffer> => {
  let socket: unknown
  try {
    socket = NodeHttpServerRequest.toIncomingMessage(request).socket
  } catch {
    return Option.none()
  }
  if (!(socket instanceof tls.TLSSocket) || socket.authorized !== true) return Option.none()
  const raw = socket.getPeerCertificate().raw as Buffer | undefined
  return raw === undefined || raw.length === 0 ? Option.none() : Option.some(raw)
}

/** What a verified certificate stands for: the pinned agent, or `Unmapped` with its fingerprint. */
export type Identity =
  | { readonly _tag: "Agent"; readonly agentId: string }
  | { readonly _tag: "Unmapped"; readonly fingerprint: string }

/** The agent pinned to `certificate` (DER), or `Unmapped`. */
export const identify = (pins: Pins, certificate: Uint8Array): Identity => {
  const fingerprint = fingerprintOf(certificate)
  const agentId = pins.agents.get(fingerprint)
  return agentId === undefined ? { _tag: "Unmapped", fingerprint } : { _tag: "Agent", agentId }
}
