/**
 * What the CLI prints is read in an operator's terminal, and much of it (agent ids, rule ids, reasons,
 * key ids) comes from rows anyone who could submit a refusal controlled. Every line goes out through
 * `printLine` / `printJson`, which escape what a terminal would act on, so a row cannot forge lines,
 * clear the screen or reorder text: C0 and C1 control characters (newlines included), DEL, the Unicode
 * line separators and the bidirectional overrides become visible `\u{…}` escapes in text and `\uXXXX`
 * escapes in JSON (the same value for a JSON reader).
 */
import { Console, type Effect } from "effect"

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

const hex4 = (c: string) => c.charCodeAt(0).toString(16).padStart(4, "0")

/** `text` with every character a terminal would act on written as a visible escape. */
export const terminalSafe = (text: string): string => text.replace(UNSAFE, (c) => `\\u{${hex4(c)}}`)

/** Prints one line of text, escaped. */
export const printLine = (line: string): Effect.Effect<void> => Console.log(terminalSafe(line))

/** `JSON.stringify(value)` with the characters JSON leaves raw (C1, separators, bidi) escaped too. */
export const jsonText = (value: unknown): string => JSON.stringify(value).replace(UNSAFE, (c) => `\\u${hex4(c)}`)

/** Prints `value` as one line of JSON, escaped. */
export const printJson = (value: unknown): Effect.Effect<void> => Console.log(jsonText(value))

/** A duration as operators read it: `850ms`, `7.3s`, `7m12s`, `1h02m`. */
export const formatDuration = (millis: number): string => {
  const ms = Math.max(0, Math.round(millis))
  if (ms < 1000) return `${ms}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  const totalSeconds = Math.floor(ms / 1000)
  if (totalSeconds < 3600) return `${Math.floor(totalSeconds / 60)}m${String(totalSeconds % 60).padStart(2, "0")}s`
  const totalMinutes = Math.floor(totalSeconds / 60)
  return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, "0")}m`
}
