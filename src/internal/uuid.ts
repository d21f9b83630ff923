/**
 * UUID v7 (RFC 9562) from the `uuid` package, with the RFC's monotonic counter (section 6.2, method 1): ids
 * made in this process sort in the order they were made, within one millisecond too (the counter is
 * seeded at random each new millisecond and incremented within it; a clock that steps back keeps the last
 * millisecond). The timestamp comes from the caller (who reads `Clock`), so tests under TestClock get
 * predictable prefixes as long as their clock does not step back.
 */
import { v7 } from "uuid"

/** The process's generator state, as `uuid` keeps its own: the last millisecond used and its counter. */
const state = { msecs: -Infinity, seq: 0 }

export const uuidV7 = (unixMillis: number): string => {
  const now = Math.max(0, Math.floor(unixMillis))
  if (now > state.msecs) {
    state.msecs = now
    // 31 random bits, top bit clear so a millisecond has room for 2^31 increments before rolling over.
    state.seq = Math.floor(Math.random() * 0x80000000)
  } else {
    state.seq = (state.seq + 1) | 0
    if (state.seq === 0 || state.seq < 0) {
      // The counter ran out within one millisecond: borrow the next one (RFC 9562 6.2, "counter rollover").
      state.msecs += 1
      state.seq = 0
    }
  }
  return v7({ msecs: state.msecs, seq: state.seq })
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
