/**
 * The console's "verify now": a fresh verification of the whole chain (`LedgerVerifier.verifyLedger`) and
 * of the ledger against its last stored checkpoint (the root of its first rows recomputed from the rows,
 * `LedgerTransparency.rootOfRows`), reporting progress as it goes. Every run reads the database again:
 * the outcome shown is never an earlier run's, and a ledger changed under the console fails the next run.
 * The last outcome is kept (with when it finished) for the overview page.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, DateTime, Effect, Either, Layer, Option, Ref } from "effect"
import type * as AuditSigner from "../audit/AuditSigner.js"
import * as LedgerSql from "../ledger/LedgerSql.js"
import * as LedgerVerifier from "../ledger/LedgerVerifier.js"
import * as LedgerTransparency from "../transparency/LedgerTransparency.js"
import * as SignedNote from "../transparency/SignedNote.js"

/** The last stored checkpoint, as far as it can be read without trusting the table. */
export interface StoredCheckpointView {
  readonly origin: string
  readonly treeSize: number
  readonly createdAt: string
  /** `checked`: signed by the console's `--key`; `unchecked`: no key given; `bad`: the key rejects it. */
  readonly signature: "checked" | "unchecked" | "bad"
  readonly problem: Option.Option<string>
  readonly rootHash: Option.Option<Uint8Array>
}

/** Whether the ledger's rows still give the checkpoint's root. */
export type CheckpointResult =
  | { readonly status: "none" }
  | { readonly status: "unreadable"; readonly detail: string }
  | { readonly status: "extends"; readonly treeSize: number }
  | { readonly status: "truncated" | "rewritten"; readonly treeSize: number; readonly detail: string }

export interface Outcome {
  readonly ok: boolean
  readonly finishedAt: string
  readonly report: LedgerVerifier.VerifyReport
  readonly checkpoint: CheckpointResult
}

export type Event =
  | { readonly type: "progress"; readonly phase: "chain" | "checkpoint"; readonly done: number; readonly total: number }
  | { readonly type: "done"; readonly outcome: Outcome }

export interface Options {
  readonly keyring: AuditSigner.Keyring
  /** The checkpoints' verifier key (`agent-ledger checkpoint --key`), if the operator gave one. */
  readonly verifier: Option.Option<SignedNote.Verifier>
}

export class ConsoleVerifier extends Context.Tag("agent-ledger/ConsoleVerifier")<ConsoleVerifier, {
  /** The last run's outcome, if a run has finished. */
  readonly latest: Effect.Effect<Option.Option<Outcome>>
  /** A new run; `onEvent` is told the progress and, last, the outcome. */
  readonly run: (onEvent: (event: Event) => Effect.Effect<void>) => Effect.Effect<Outcome, SqlError>
  /** The last stored checkpoint of the ledger's log (none stored: `None`). */
  readonly lastCheckpoint: Effect.Effect<Option.Option<StoredCheckpointView>, SqlError>
}>() {}

const noteBody = (note: string): string => note.slice(0, Math.max(0, note.lastIndexOf("\n\n")) + 1)

/** A stored checkpoint, its signature checked with `verifier` when there is one. */
export const viewOf = (
  stored: LedgerTransparency.StoredCheckpoint,
  verifier: Option.Option<SignedNote.Verifier>
): StoredCheckpointView => {
  const base = { origin: stored.origin, treeSize: stored.treeSize, createdAt: stored.createdAt }
  if (Option.isSome(verifier)) {
    const checked = LedgerTransparency.checkpointOf(stored.note, verifier.value)
    return Either.match(checked, {
      onLeft: (failure) => ({
        ...base,
        signature: "bad",
        problem: Option.some(failure.message),
        rootHash: Option.none()
      }),
      onRight: (checkpoint) => ({
        ...base,
        treeSize: checkpoint.treeSize,
        signature: "checked",
        problem: Option.none(),
        rootHash: Option.some(checkpoint.rootHash)
      })
    })
  }
  return Either.match(SignedNote.parseCheckpoint(noteBody(stored.note)), {
    onLeft: (error) => ({
      ...base,
      signature: "unchecked",
      problem: Option.some(error.message),
      rootHash: Option.none()
    }),
    onRight: (checkpoint) => ({
      ...base,
      treeSize: checkpoint.treeSize,
      signature: "unchecked",
      problem: Option.none(),
      rootHash: Option.some(checkpoint.rootHash)
    })
  })
}

const lastStored = (verifier: Option.Option<SignedNote.Verifier>) =>
  Effect.gen(function*() {
    const origin = yield* LedgerTransparency.storedOrigin
    const [stored] = yield* LedgerTransparency.storedCheckpoints({ origin: Option.getOrUndefined(origin), limit: 1 })
    return stored === undefined ? Option.none<StoredCheckpointView>() : Option.some(viewOf(stored, verifier))
  })

const checkCheckpoint = (
  view: Option.Option<StoredCheckpointView>,
  onEvent: (event: Event) => Effect.Effect<void>
): Effect.Effect<CheckpointResult, SqlError, LedgerSql.LedgerSql> => {
  if (Option.isNone(view)) return Effect.succeed({ status: "none" })
  const { problem, rootHash, treeSize } = view.value
  if (Option.isNone(rootHash)) {
    return Effect.succeed({ status: "unreadable", detail: Option.getOrElse(problem, () => "unreadable checkpoint") })
  }
  return Effect.map(
    LedgerTransparency.rootOfRows(
      treeSize,
      (done) => onEvent({ type: "progress", phase: "checkpoint", done, total: treeSize })
    ),
    Option.match({
      onNone: (): CheckpointResult => ({
        status: "truncated",
        treeSize,
        detail: `the checkpoint has ${treeSize} leaves, the ledger fewer: truncated`
      }),
      onSome: (root): CheckpointResult =>
        Buffer.from(root).equals(rootHash.value)
          ? { status: "extends", treeSize }
          : {
            status: "rewritten",
            treeSize,
            detail: `the ledger's first ${treeSize} rows are not the checkpoint's: rewritten`
          }
    })
  )
}

export const make = (options: Options) =>
  Effect.gen(function*() {
    const ledger = yield* LedgerSql.LedgerSql
    const latest = yield* Ref.make(Option.none<Outcome>())
    // One run at a time: a page reloaded or opened many times queues its runs instead of multiplying them.
    const oneAtATime = yield* Effect.makeSemaphore(1)
    const onLedger = <A, E>(effect: Effect.Effect<A, E, LedgerSql.LedgerSql>) =>
      Effect.provideService(effect, LedgerSql.LedgerSql, ledger)
    const run = (onEvent: (event: Event) => Effect.Effect<void>) =>
      oneAtATime.withPermits(1)(onLedger(Effect.gen(function*() {
        const [counted] = yield* LedgerSql.use(Effect.flatMap(
          LedgerSql.LedgerSql,
          ({ client }) => client.withoutTransforms()<{ n: number | string }>`SELECT COUNT(*) AS n FROM signed_events`
        ))
        const total = Number(counted?.n ?? 0)
        const report = yield* LedgerVerifier.verifyLedger({
          keyring: options.keyring,
          onProgress: (done) => onEvent({ type: "progress", phase: "chain", done, total })
        })
        const checkpoint = yield* checkCheckpoint(yield* lastStored(options.verifier), onEvent)
        const now = yield* DateTime.now
        const outcome: Outcome = {
          ok: report.ok && (checkpoint.status === "none" || checkpoint.status === "extends"),
          finishedAt: DateTime.formatIso(now),
          report,
          checkpoint
        }
        yield* Ref.set(latest, Option.some(outcome))
        yield* onEvent({ type: "done", outcome })
        return outcome
      })))
    return ConsoleVerifier.of({ latest: Ref.get(latest), run, lastCheckpoint: onLedger(lastStored(options.verifier)) })
  })

export const layer = (options: Options): Layer.Layer<ConsoleVerifier, never, LedgerSql.LedgerSql> =>
  Layer.effect(ConsoleVerifier, make(options))
