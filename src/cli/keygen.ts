/** `agent-ledger keygen --out DIR`: a new Ed25519 key pair as PEM files (private key mode 0600). */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as fs from "node:fs"
import * as AuditSigner from "../audit/AuditSigner.js"
import * as SignedNote from "../transparency/SignedNote.js"
import { InputError } from "./CliError.js"
import { commandHelp } from "./Help.js"
import { keyFiles } from "./shared.js"

export const KEY_NAME = "agent-ledger-ed25519"

export const runKeygen = (options: { readonly out: string; readonly origin: Option.Option<string> }) =>
  Effect.gen(function*() {
    const files = keyFiles(options.out, KEY_NAME)
    for (const file of [files.privateKey, files.publicKey]) {
      if (fs.existsSync(file)) {
        return yield* new InputError({ message: `${file}: already exists (refusing to overwrite a key)` })
      }
    }
    const signer = yield* AuditSigner.generate
    const pem = AuditSigner.exportPem(signer)
    yield* Effect.try({
      try: () => {
        fs.mkdirSync(options.out, { recursive: true })
        // "wx": never overwrite, even if a file appeared since the check above.
        fs.writeFileSync(files.privateKey, pem.privateKeyPem, { mode: 0o600, flag: "wx" })
        fs.writeFileSync(files.publicKey, pem.publicKeyPem, { mode: 0o644, flag: "wx" })
      },
      catch: (error) => new InputError({ message: `${options.out}: cannot write the key pair (${String(error)})` })
    })
    yield* Console.log(`key id:      ${signer.keyId}`)
    yield* Console.log(`private key: ${files.privateKey} (mode 0600; keep it secret)`)
    yield* Console.log(`public key:  ${files.publicKey} (give it to verifiers: verify --public-key)`)
    yield* Option.match(options.origin, {
      onNone: () =>
        Console.log(`verifier key: run agent-ledger checkpoint <db> --private-key ${files.privateKey} --key`),
      onSome: (origin) =>
        Console.log(`verifier key: ${SignedNote.verifierKey(origin, signer.publicKey)} (checkpoints of ${origin})`)
    })
  })

export const command = Command.make(
  "keygen",
  {
    out: Options.text("out").pipe(Options.withDescription("directory for the key files")),
    origin: Options.text("origin").pipe(
      Options.optional,
      Options.withDescription("the transparency log's origin: print the verifier key of its checkpoints")
    )
  },
  runKeygen
).pipe(
  Command.withDescription(commandHelp("generate an Ed25519 signing key pair", [
    "agent-ledger keygen --out ./keys",
    "agent-ledger keygen --out ./keys --origin agent-ledger/ledger"
  ]))
)
