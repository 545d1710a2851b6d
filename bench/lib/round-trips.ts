// Counts client round trips in this process: every command sent on its own, plus one
// per pipeline (or MULTI) written as a whole. The server's `total_reads_processed`
// cannot tell this: concurrent requests from one connection arrive coalesced into
// one read, so it undercounts exactly when a system is busy. Troupe, BullMQ and the
// naive pattern all talk to Redis through ioredis, so one hook sees all three.
import { Redis } from 'ioredis'

let count = 0
let installed = false
const excluded = new WeakSet<object>()
const seenPipelines = new WeakSet<object>()

type SendCommand = (this: Redis, command: unknown, stream?: unknown) => unknown

/** Starts counting (idempotent). */
export function installRoundTripCounter(): void {
  if (installed) return
  installed = true
  const proto = Redis.prototype as unknown as { sendCommand: SendCommand }
  const original = proto.sendCommand
  proto.sendCommand = function (this: Redis, command: unknown, stream?: unknown): unknown {
    if (!excluded.has(this)) {
      // A pipeline hands every queued command to sendCommand with the same stream
      // object, which writes them to the socket together: count it once.
      const s = stream as { isPipeline?: boolean } | undefined
      if (!s?.isPipeline) count++
      else if (!seenPipelines.has(s)) {
        seenPipelines.add(s)
        count++
      }
    }
    return original.call(this, command, stream)
  }
}

/** Round trips counted so far in this process. */
export function roundTrips(): number {
  return count
}

/** Leaves a connection out of the count (the harness's own INFO and cleanup calls). */
export function excludeFromRoundTrips(client: Redis): void {
  excluded.add(client)
}
