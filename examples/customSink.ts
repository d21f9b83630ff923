// The README's custom-sink example, compiled with the project and checked by test/readme.test.ts.
import { Effect, Layer } from "effect"
import { AuditQueue, AuditSink } from "../src/index.js"

const MySink = Layer.succeed(
  AuditSink.AuditSink,
  AuditSink.AuditSink.of({
    append: (event) => Effect.as(Effect.log(`audit ${event.id}`), new AuditSink.Appended({ uniqueRaceRetries: 0 })),
    deadLetter: (event, reason) => Effect.log(`dead letter ${event.id}: ${reason}`)
  })
)

export const Audit = AuditQueue.layer({ sink: MySink, maxRestarts: 10, shutdownDrainTimeout: "5 seconds" })
