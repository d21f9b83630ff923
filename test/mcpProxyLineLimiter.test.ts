/**
 * The mcp-proxy CLI's `LineLimiter` (what keeps a client line over the transport's limit from closing the
 * session): for any split of the input into chunks, lines within the limit pass unchanged, each longer
 * line becomes exactly one replacement line, in order.
 */
import fc from "fast-check"
import { Readable } from "node:stream"
import { describe, expect, it } from "vitest"
import { LineLimiter } from "../src/cli/mcpProxy.js"

const run = async (chunks: ReadonlyArray<Buffer | string>, limit: number): Promise<string> => {
  const out: Array<Buffer> = []
  const limiter = Readable.from(chunks.map((c) => Buffer.from(c))).pipe(new LineLimiter(limit, "SKIPPED"))
  for await (const chunk of limiter) out.push(chunk as Buffer)
  return Buffer.concat(out).toString()
}

describe("LineLimiter", () => {
  it("passes short lines, replaces long ones, whatever the chunking", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: fc.constantFrom("a", "b", "é"), maxLength: 12 }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        async (lines, cuts) => {
          // Cut at byte positions, inside multi-byte characters too.
          const input = Buffer.from(lines.map((line) => line + "\n").join(""))
          const points = [...new Set(cuts.map((cut) => cut % (input.length + 1)))].sort((a, b) => a - b)
          const bounds = [0, ...points, input.length]
          const chunks = bounds.slice(1).map((end, i) => input.subarray(bounds[i], end))
          const expected = lines.map((line) => (Buffer.byteLength(line) > 6 ? "SKIPPED" : line) + "\n").join("")
          expect(await run(chunks, 6)).toBe(expected)
        }
      ),
      { numRuns: 200 }
    )
  })

  it("a last line without a newline is passed on (or replaced) at the end", async () => {
    expect(await run(["ab\ncd"], 6)).toBe("ab\ncd")
    expect(await run(["ab\ncdefghij"], 6)).toBe("ab\nSKIPPED\n")
  })
})
