/**
 * `agent-ledger demo`: the main job. A guard sits in front of simulated agents: every tool call is recorded
 * in the session's SessionJournal, a small rule set refuses some calls, and every refusal goes through the
 * AuditQueue into the SQLite ledger. Closing the ledger's scope flushes the queue; the ledger is then
 * reopened read-only and verified. Re-running on the same file extends the same chain.
 */
import { Command, Options } from "@effect/cli"
import { Clock, Console, Effect, Option, Random } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AuditQueue from "../audit/AuditQueue.js"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as AuditLedger from "../AuditLedger.js"
import * as GuardPolicy from "../guard/GuardPolicy.js"
import * as McpGuard from "../guard/McpGuard.js"
import { sha256Hex } from "../internal/encoding.js"
import * as SessionJournals from "../journal/SessionJournals.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerStats from "../ledger/LedgerStats.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import * as SqlAuditSink from "../ledger/SqlAuditSink.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { writeText } from "./AtomicFile.js"
import { InputError, VerificationFailed } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { openLedger } from "./InputFile.js"
import { runMcpDemo } from "./mcpDemo.js"
import * as Progress from "./Progress.js"
import { failureLine, keyFiles, requireWritableFile } from "./shared.js"
import { formatDuration } from "./TerminalText.js"

/**
 * The demo guard's policy (a `GuardPolicy`, as a file would hold it): a blocked relay server, a session
 * byte budget, a delegation-depth limit, and the read-then-send pattern.
 */
export const DEMO_POLICY: GuardPolicy.GuardPolicy = {
  version: 1,
  rules: [
    { kind: "blockServers", id: "R-BLOCKED-SERVER", servers: ["exfil-relay"], reason: "server {server} is blocked" },
    {
      kind: "budget",
      id: "R-BYTE-BUDGET",
      total: 1536 * 1024,
      reason: "session byte budget of {limit} bytes used ({actual})"
    },
    { kind: "maxDelegationDepth", id: "R-DELEGATION-DEPTH", max: 3 },
    { kind: "sequence", id: "R-READ-THEN-SEND", after: ["query"], then: ["fetch_url"], within: 1 }
  ]
}

const SERVERS = ["fs-server", "web-server", "db-server", "exfil-relay"] as const
const TOOLS: Readonly<Record<(typeof SERVERS)[number], ReadonlyArray<string>>> = {
  "fs-server": ["read_file", "write_file", "list_dir"],
  "web-server": ["fetch_url", "search_web"],
  "db-server": ["query", "insert_rows"],
  "exfil-relay": ["upload_blob"]
}

interface SimulatedCall {
  readonly toolName: string
  readonly serverId: string
  readonly arguments: Record<string, unknown>
  /** Bytes the call's result would return. */
  readonly resultBytes: number
  readonly delegationDepth: number
}

const pick = <A>(items: ReadonlyArray<A>) => Effect.map(Random.nextIntBetween(0, items.length), (i) => items[i]!)

/** One simulated call: mostly ordinary servers, a few uploads to the blocked relay, occasional deep delegation. */
const simulateCall = Effect.gen(function*() {
  const roll = yield* Random.nextIntBetween(0, 100)
  const serverId = roll < 4 ? "exfil-relay" : yield* pick(SERVERS.slice(0, 3))
  const toolName = yield* pick(TOOLS[serverId])
  const resultBytes = yield* Random.nextIntBetween(0, 80_000)
  const writes = toolName.startsWith("write") || toolName.startsWith("insert") || toolName === "upload_blob"
  const content = writes ? "x".repeat(yield* Random.nextIntBetween(0, 20_000)) : undefined
  const deep = yield* Random.nextIntBetween(0, 100)
  const delegationDepth = deep < 3 ? 4 : yield* Random.nextIntBetween(0, 3)
  return {
    toolName,
    serverId,
    arguments: { target: `${serverId}/${toolName}/${roll}`, ...(content === undefined ? {} : { content }) },
    resultBytes,
    delegationDepth
  } satisfies SimulatedCall
})

export interface DemoOptions {
  readonly db: string
  readonly sessions: number
  readonly calls: number
  readonly sign: boolean
  /**
   * Sign (as `sign`) and store a signed checkpoint in the ledger at the end, so receipts can be made without
   * the private key (`prove --stored-checkpoint latest`, the console's row pages). `npm run demo` sets it.
   */
  readonly checkpoint?: boolean | undefined
  /** Where `--sign` keeps the demo's key pair: never beside the database. */
  readonly keyDir: string
  readonly seed: number
  /** Where to write the first session's journal export; by default beside the database (`sessionOutFor`). */
  readonly sessionOut: Option.Option<string>
  /** Drive the real guard proxy in front of the official filesystem MCP server instead of simulating. */
  readonly mcp?: boolean | undefined
}

/** The default `--key-dir`: in the user's configuration directory, away from any ledger file. */
export const defaultKeyDir = (): string =>
  path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), ".config"), "agent-ledger", "demo-keys")

/**
 * Loads the demo's signing key for `db` from `keyDir`, creating it on first use so re-runs keep one key.
 * The key is named after the database's absolute path and never kept beside it: whoever can rewrite a
 * database can usually read its directory, and could then re-sign a rewritten history.
 */
const demoSigner = (db: string, keyDir: string) =>
  Effect.gen(function*() {
    const absolute = path.resolve(db)
    const name = `${path.basename(absolute)}-${sha256Hex(absolute).slice(0, 12)}.ed25519`
    if (path.resolve(keyDir) === path.dirname(absolute)) {
      return yield* new InputError({
        message: `--key-dir ${keyDir} is the database's own directory; keep signing keys apart from the ledger`
      })
    }
    const files = keyFiles(keyDir, name)
    yield* Effect.try({
      try: () => fs.mkdirSync(keyDir, { recursive: true, mode: 0o700 }),
      catch: (error) => new InputError({ message: `${keyDir}: cannot create the key directory (${String(error)})` })
    })
    if (fs.existsSync(files.privateKey)) {
      return { signer: yield* AuditSigner.loadPrivateKeyFile(files.privateKey), files, created: false }
    }
    const signer = yield* AuditSigner.generate
    const pem = AuditSigner.exportPem(signer)
    yield* Effect.try({
      try: () => {
        fs.writeFileSync(files.privateKey, pem.privateKeyPem, { mode: 0o600, flag: "wx" })
        // A public key left without its private key is stale: replace it with the new pair's.
        fs.writeFileSync(files.publicKey, pem.publicKeyPem)
      },
      catch: (error) => new InputError({ message: `${files.privateKey}: cannot write the demo key (${String(error)})` })
    })
    return { signer, files, created: true }
  })

/**
 * The session export's default place: beside the database, named after it (`./ledgers/a.db` →
 * `./ledgers/a-session.json`); for a PostgreSQL URL, the working directory.
 */
export const sessionOutFor = (db: string): string =>
  LedgerSql.isPostgresUrl(db)
    ? "./agent-ledger-session.json"
    : path.join(path.dirname(db), `${path.basename(db, path.extname(db))}-session.json`)

/** What to try after the demo, with this run's own paths. */
const nextSteps = (
  db: string,
  sessionOut: string,
  publicKey: Option.Option<string>,
  verifierKey: Option.Option<string>
): ReadonlyArray<string> => {
  const key = Option.match(publicKey, { onNone: () => "", onSome: (file) => ` --public-key ${file}` })
  return [
    `agent-ledger console ${db}`,
    ...Option.match(verifierKey, {
      onNone: () => [],
      onSome: (vkey) => [
        `agent-ledger prove ${db} --stored-checkpoint latest --key ${vkey} --sequence 0 --out receipt.json`,
        `agent-ledger verify-receipt receipt.json --key ${vkey}`
      ]
    }),
    `agent-ledger verify ${db}${key}`,
    `agent-ledger stats ${db}`,
    `agent-ledger verify ${sessionOut} --ledger ${db}`,
    `agent-ledger export ${db} --out rows.jsonl`,
    `agent-ledger demo --mcp`
  ]
}

export const runDemo = (demoOptions: DemoOptions) =>
  Effect.gen(function*() {
    const options = {
      ...demoOptions,
      sessionOut: Option.getOrElse(demoOptions.sessionOut, () => sessionOutFor(demoOptions.db))
    }
    if (options.mcp === true) return yield* runMcpDemo(options)
    if (!Number.isSafeInteger(options.sessions) || options.sessions < 1) {
      return yield* new InputError({ message: `--sessions must be a positive integer, got ${options.sessions}` })
    }
    if (!Number.isSafeInteger(options.calls) || options.calls < 1) {
      return yield* new InputError({ message: `--calls must be a positive integer, got ${options.calls}` })
    }
    const started = yield* Clock.currentTimeMillis
    // Check every path before simulating, so a bad one costs nothing and leaves nothing behind.
    if (!LedgerSql.isPostgresUrl(options.db)) {
      yield* AuditLedger.checkDatabasePath(options.db).pipe(
        Effect.mapError((e) => new InputError({ message: e.message }))
      )
    }
    yield* requireWritableFile(options.sessionOut)
    const signing = options.sign || options.checkpoint === true
      ? Option.some(
        yield* demoSigner(options.db, options.keyDir).pipe(
          Effect.mapError((e) => e._tag === "InputError" ? e : new InputError({ message: e.message }))
        )
      )
      : Option.none()
    const totalCalls = options.sessions * options.calls
    const progress = Progress.make("demo calls", process.stderr)
    const refusalsByRule: Record<string, number> = {}
    const totals = { bytesRead: 0, bytesWritten: 0, invocations: 0, maxDelegationDepth: 0 }
    const toolCounts = new Map<string, number>()
    let callsDone = 0
    let firstExport: Option.Option<unknown> = Option.none()

    // Everything that writes runs inside the ledger layer's scope; leaving it flushes the queue.
    const { dlqSize, metrics } = yield* Effect.gen(function*() {
      const queue = yield* AuditQueue.AuditQueue
      const guard = yield* McpGuard.make({
        policy: GuardPolicy.engine(DEMO_POLICY, { salt: yield* LedgerSql.argumentSalt }),
        sealEvery: 0
      }).pipe(Effect.provideServiceEffect(SessionJournals.SessionJournals, McpGuard.journalsInContext))
      yield* Effect.forEach(
        Array.from({ length: options.sessions }, (_, i) => i),
        (i) =>
          Effect.gen(function*() {
            const sessionId = `demo-session-${started}-${i}`
            const agentId = `agent-${i % 5}`
            const journal = yield* guard.journal(sessionId)
            for (let c = 0; c < options.calls; c++) {
              const call = yield* simulateCall
              const checked = yield* guard.check({ sessionId, agentId, ...call })
              if (checked._tag === "Allowed") {
                yield* guard.complete(checked.ticket, { _tag: "Result", bytesRead: call.resultBytes })
              } else {
                refusalsByRule[checked.ruleId] = (refusalsByRule[checked.ruleId] ?? 0) + 1
              }
              callsDone++
              yield* progress.update(callsDone, totalCalls)
            }
            yield* journal.verifyIntegrity
            const flow = yield* journal.dataFlow
            totals.bytesRead += flow.totalBytesRead
            totals.bytesWritten += flow.totalBytesWritten
            totals.invocations += flow.totalInvocations
            totals.maxDelegationDepth = Math.max(totals.maxDelegationDepth, flow.maxDelegationDepth)
            for (const [tool, count] of yield* journal.toolCounts) {
              toolCounts.set(tool, (toolCounts.get(tool) ?? 0) + count)
            }
            // Ending the session seals its journal into the ledger (a session.sealed row).
            const exported = yield* guard.endSession(sessionId)
            if (i === 0) firstExport = exported
          }),
        { concurrency: 4, discard: true }
      )
      yield* progress.finish
      yield* queue.closeAndFlush
      const sink = yield* SqlAuditSink.SqlAuditSink
      return { metrics: yield* queue.metrics, dlqSize: yield* sink.dlqSize }
    }).pipe(
      // Ctrl-C: say what is being flushed (closing the layer's scope next appends it), and then where the
      // ledger ended.
      Effect.onInterrupt(() =>
        Effect.flatMap(AuditQueue.AuditQueue, (queue) =>
          Effect.flatMap(queue.metrics, (m) =>
            Console.error(
              `agent-ledger: interrupted; flushing ${
                m.submitted - m.appended - m.appendFailures - m.sendFailures
              } queued events into the ledger…`
            )))
      ),
      Effect.provide(AuditLedger.layerFor(options.db, {
        signer: Option.getOrUndefined(Option.map(signing, (s) => s.signer)),
        // On Ctrl-C the scope still closes: give the backlog of refusals time to reach the ledger.
        shutdownDrainTimeout: "1 minute"
      })),
      Effect.withRandom(Random.make(options.seed)),
      Effect.onInterrupt(() =>
        LedgerStats.stats().pipe(
          Effect.flatMap((stats) =>
            Console.error(`agent-ledger: flushed; the ledger's head is ${
              Option.match(stats.head, {
                onNone: () => "(empty)",
                onSome: (head) => `sequence ${head.sequence} ${head.entryHash}`
              })
            }`)
          ),
          Effect.provide(openLedger(options.db, { readonly: true })),
          Effect.ignore
        )
      )
    )

    if (Option.isSome(firstExport)) {
      const exported = firstExport.value
      yield* writeText(options.sessionOut, JSON.stringify(exported, null, 2) + "\n")
    }

    const keyring = Option.match(signing, {
      onNone: () => AuditSigner.Keyring.empty,
      onSome: (s) => AuditSigner.Keyring.fromSigners([s.signer])
    })
    const report = yield* Effect.gen(function*() {
      // A ledger that earlier demo runs wrote unsigned declares where its signing began: its first signed row.
      const sql = (yield* LedgerSql.LedgerSql).client
      const [first] = yield* sql<{ first: number | null }>`
        SELECT MIN(sequence) AS first FROM signed_events WHERE attest_level = 'ed25519'`
      return yield* LedgerVerifier.verifyLedger({ keyring, signedFrom: first?.first ?? 0 })
    }).pipe(Effect.provide(openLedger(options.db, { readonly: true })))
    // The demo's own checkpoint, signed with its key: rows from earlier unsigned runs are not adopted (the
    // line below says how an operator would vouch for them).
    const checkpoint = report.ok && options.checkpoint === true && Option.isSome(signing)
      ? Option.some(
        yield* Effect.gen(function*() {
          const origin = yield* LedgerTransparency.originOf(options.db)
          const signer = signing.value.signer
          const made = yield* LedgerTransparency.checkpointNow(origin, signer)
          return {
            stored: true,
            detail: `${made.size} rows, origin ${origin}`,
            verifierKey: Option.some(SignedNote.verifierKey(origin, signer.publicKey))
          } as const
        }).pipe(
          Effect.catchTag("TransparencyRefusal", (refusal) =>
            Effect.succeed(
              {
                stored: false,
                detail:
                  `not stored: ${refusal.detail} (agent-ledger checkpoint ${options.db} --private-key ${signing.value.files.privateKey} --adopt-unsigned-rows vouches for them)`,
                verifierKey: Option.none<string>()
              } as const
            )),
          Effect.provide(openLedger(options.db, { readonly: false }))
        )
      )
      : Option.none()
    const elapsed = (yield* Clock.currentTimeMillis) - started
    const refusals = Object.values(refusalsByRule).reduce((a, b) => a + b, 0)

    yield* Console.log(`agent-ledger demo: ${options.db}`)
    yield* Console.log(`  sessions:        ${options.sessions}`)
    yield* Console.log(`  calls:           ${totalCalls}`)
    yield* Console.log(`  refusals:        ${refusals}`)
    for (const [rule, count] of Object.entries(refusalsByRule).sort()) {
      yield* Console.log(`    ${rule.padEnd(20)} ${count}`)
    }
    yield* Console.log(
      `  journals:        ${totals.invocations} calls journaled and verified, ${totals.bytesRead} bytes read, ${totals.bytesWritten} bytes written, max delegation depth ${totals.maxDelegationDepth}`
    )
    yield* Console.log(
      `  tool counts:     ${
        Array.from(toolCounts).sort(([, a], [, b]) => b - a).map(([tool, n]) => `${tool} ${n}`).join(", ")
      }`
    )
    yield* Console.log(
      `  rows appended:   ${metrics.appended} (${refusals} refusals, ${options.sessions} session seals)`
    )
    yield* Console.log(`  dead-letter:     ${dlqSize} pending`)
    yield* Console.log(`  append failures: ${metrics.appendFailures}`)
    yield* Option.match(report.head, {
      onNone: () => Console.log(`  head:            (empty ledger)`),
      onSome: (head) => Console.log(`  head:            sequence ${head.sequence} ${head.entryHash}`)
    })
    yield* Option.match(signing, {
      onNone: () => Console.log(`  signing:         unsigned (pass --sign to sign rows with Ed25519)`),
      onSome: (s) =>
        Console.log(
          `  signing:         ed25519 key ${s.signer.keyId}${
            s.created ? " (new)" : ""
          }, private key ${s.files.privateKey} (kept apart from the database; in production keep it in a ` +
            `secret store the ledger's writers cannot read back), public key ${s.files.publicKey}`
        )
    })
    yield* Console.log(
      `  verify:          ${report.ok ? "OK" : "FAILED"} (${report.rowsChecked} rows checked${
        Option.match(report.firstFailure, { onNone: () => "", onSome: (f) => `; ${failureLine(f)}` })
      })`
    )
    yield* Option.match(checkpoint, {
      onNone: () => Effect.void,
      onSome: (c) =>
        Console.log(
          `  checkpoint:      ${c.stored ? "stored, " : ""}${c.detail}${
            Option.match(c.verifierKey, {
              onNone: () => "",
              onSome: (vkey) => `; verifier key ${vkey}`
            })
          }`
        )
    })
    yield* Console.log(`  session journal: ${options.sessionOut} (first session's export)`)
    yield* Console.log(`  elapsed:         ${formatDuration(elapsed)}`)
    if (!report.ok) return yield* new VerificationFailed({ message: "the ledger did not verify" })
    yield* Console.log("")
    yield* Console.log("next:")
    for (
      const step of nextSteps(
        options.db,
        options.sessionOut,
        Option.map(signing, (s) => s.files.publicKey),
        Option.flatMap(checkpoint, (c) => c.verifierKey)
      )
    ) yield* Console.log(`  ${step}`)
  })

export const command = Command.make(
  "demo",
  {
    db: Options.file("db").pipe(Options.withDefault("./agent-ledger.db"), Options.withDescription("ledger database")),
    sessions: Options.integer("sessions").pipe(Options.withDefault(20), Options.withDescription("agent sessions")),
    calls: Options.integer("calls").pipe(Options.withDefault(50), Options.withDescription("tool calls per session")),
    sign: Options.boolean("sign").pipe(
      Options.withDescription("sign rows with an Ed25519 key kept in --key-dir (never beside the database)")
    ),
    checkpoint: Options.boolean("checkpoint").pipe(
      Options.withDescription(
        "sign (as --sign) and store a signed checkpoint at the end, so the console and prove --stored-checkpoint give receipts"
      )
    ),
    keyDir: Options.directory("key-dir").pipe(
      Options.withDefault(defaultKeyDir()),
      Options.withDescription("where --sign keeps the demo key pair (default: ~/.config/agent-ledger/demo-keys)")
    ),
    seed: Options.integer("seed").pipe(Options.withDefault(42), Options.withDescription("simulation seed")),
    sessionOut: Options.file("session-out").pipe(
      Options.optional,
      Options.withDescription("where to write the first session's journal export (default: beside --db)")
    ),
    mcp: Options.boolean("mcp").pipe(
      Options.withDescription(
        "a real interception: a scripted MCP client through mcp-proxy in front of the official filesystem server"
      )
    )
  },
  runDemo
).pipe(Command.withDescription(commandHelp(
  "simulate a guard in front of agents, audit its refusals into a ledger (a SQLite file or a postgres:// URL); --mcp drives the real proxy in front of the official filesystem MCP server",
  [
    "agent-ledger demo",
    "agent-ledger demo --sign --key-dir ./demo-keys --sessions 50",
    "agent-ledger demo --checkpoint",
    "agent-ledger demo --mcp",
    "agent-ledger demo --db postgres://postgres@127.0.0.1:5432/ledger"
  ],
  [0, 1, 2, 70, 130]
)))
