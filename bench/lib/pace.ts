// Open-loop load: items are fired on a fixed schedule whether or not earlier ones
// have finished, so a slow system shows up as latency instead of quietly lowering
// the offered rate (the coordinated-omission trap of closed loops).
import { setTimeout as sleep } from 'node:timers/promises'
import { wallMs } from './probe.ts'

/**
 * Fires `fire(i, t)` for i = 0..count-1 at `rate` per second, where `t` is the wall
 * time of the call (the latency origin). Resolves when every call has settled;
 * throws if any failed.
 */
export async function paced(count: number, rate: number, fire: (i: number, t: number) => Promise<void>): Promise<{ seconds: number }> {
  const start = performance.now()
  const pending: Promise<void>[] = []
  const failures = new Failures()
  let sent = 0
  while (sent < count) {
    const due = Math.min(count, Math.floor(((performance.now() - start) * rate) / 1000) + 1)
    while (sent < due) {
      const i = sent++
      pending.push(fire(i, wallMs()).catch(failures.add))
    }
    if (sent < count) await sleep(1)
  }
  await Promise.all(pending)
  failures.check()
  return { seconds: (performance.now() - start) / 1000 }
}

/** Runs `fire(i)` for i = 0..count-1 with at most `inFlight` calls outstanding (a burst). */
export async function burst(count: number, inFlight: number, fire: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const failures = new Failures()
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      await fire(i).catch(failures.add)
    }
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, lane))
  failures.check()
}

/** Collects failed calls without stopping the schedule; throws once at the end if any failed. */
class Failures {
  private n = 0
  private first: unknown = null
  readonly add = (err: unknown): void => {
    if (this.n++ === 0) this.first = err
  }

  check(): void {
    if (this.n === 0) return
    const why = this.first instanceof Error ? this.first.message : String(this.first)
    throw new Error(`${this.n} enqueue calls failed, first: ${why}`)
  }
}
