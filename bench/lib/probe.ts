// Measurements taken inside a worker process. Times are wall-clock milliseconds with
// sub-millisecond precision (timeOrigin + performance.now()), so a timestamp taken
// by the producer process and one taken here can be subtracted.
import { roundTrips } from './round-trips.ts'

/** High-resolution wall-clock time in ms, comparable across processes of one machine. */
export function wallMs(): number {
  return performance.timeOrigin + performance.now()
}

/** What a worker process reports when it stops. */
export interface WorkerReport {
  /** When this report was taken (wall ms): a window can start at the moment its counts were read. */
  at: number
  /** Units finished here: actions committed, or workflows completed. */
  done: number
  /** When the first unit started here (wall ms), or 0. */
  firstStart: number
  /** When the last unit finished here (wall ms), or 0. */
  lastDone: number
  /** CPU this process used between `go` and `stop`, microseconds. */
  cpuUs: number
  /** Client round trips this process made between `go` and `stop` (see round-trips.ts). */
  roundTrips: number
  rssBytes: number
  heapUsedBytes: number
  /** Latency samples (ms): enqueue-to-start for actions, start-to-finish for workflows. */
  latencies: number[]
  /** Free-form counters a system wants to report (e.g. lock retries). */
  extra: Record<string, number>
}

/** The process-wide probe: worker code calls `started` and `finished`. */
export class Probe {
  done = 0
  firstStart = 0
  lastDone = 0
  readonly latencies: number[] = []
  readonly extra: Record<string, number> = {}
  private cpuAtGo: NodeJS.CpuUsage | null = null
  private tripsAtGo = 0

  go(): void {
    this.cpuAtGo = process.cpuUsage()
    this.tripsAtGo = roundTrips()
  }

  /** A unit started; `since` is the wall time its latency is measured from (0: none). */
  started(since: number): void {
    const now = wallMs()
    if (this.firstStart === 0) this.firstStart = now
    if (since > 0) this.latencies.push(now - since)
  }

  /** A latency sample ending now, without marking a start (e.g. a workflow's last step). */
  latencySince(since: number): void {
    if (since > 0) this.latencies.push(wallMs() - since)
  }

  finished(n = 1): void {
    this.done += n
    this.lastDone = wallMs()
  }

  count(name: string, n = 1): void {
    this.extra[name] = (this.extra[name] ?? 0) + n
  }

  report(): WorkerReport {
    const cpu = process.cpuUsage(this.cpuAtGo ?? undefined)
    const mem = process.memoryUsage()
    return {
      at: wallMs(), done: this.done, firstStart: this.firstStart, lastDone: this.lastDone, cpuUs: cpu.user + cpu.system, roundTrips: roundTrips() - this.tripsAtGo,
      rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, latencies: this.latencies, extra: this.extra,
    }
  }
}

export const probe = new Probe()
