// One measured run of one system: prepare its keys under a fresh prefix, start its
// worker processes, drive the load, take the Redis counters around the window, and
// clean up so the next run (of the same or the other system) starts from the same
// server state.
import { join } from 'node:path'
import { nanoid } from 'nanoid'
import type { Redis } from 'ioredis'
import { WorkerPool } from './children.ts'
import { burst, paced } from './pace.ts'
import { percentiles } from './stats.ts'
import type { WorkerReport } from './probe.ts'
import { roundTrips } from './round-trips.ts'
import { delta, dropPrefix, memoryUnder, perUnit, sample, topCommands, type RedisDelta, type UnitCost } from './redis-probe.ts'
import type { System, WorkerSpec, Workload } from './spec.ts'
import { BullProducer } from '../systems/bullmq.ts'
import { NaiveProducer } from '../systems/naive.ts'
import { TroupeProducer } from '../systems/troupe.ts'

export interface BenchContext {
  redisUrl: string
  /** The harness's own connection, used only for INFO, MEMORY USAGE and cleanup. */
  admin: Redis
  profileDir?: string
  /** Troupe feeds `persistence:queue` (its default). */
  persistence: boolean
}

/** Everything measured in one run. */
export interface Measured {
  system: System
  label: string
  unit: 'action' | 'workflow'
  units: number
  /** Throughput window: first start (or first enqueue) to last completion, seconds. */
  seconds: number
  throughput: number
  /** Milliseconds: enqueue-to-start of actions, or start-to-last-step of workflows. */
  latency: { p50: number; p99: number; p999: number; max: number; n: number } | null
  perUnit: UnitCost
  /** Redis cost of putting the backlog in place, per unit of the whole backlog (backlog runs only; outside the window). */
  enqueuePerUnit: UnitCost | null
  /** Share of one core the Redis server used during the window, percent. */
  redisCpuPct: number
  /** CPU of all worker processes per unit, microseconds. */
  nodeCpuUs: number
  workerRssMiB: number[]
  top: ReturnType<typeof topCommands>
  extra: Record<string, number>
  /** Redis bytes and keys left per workflow after the run (flow runs only). */
  memory: { bytesPerWorkflow: number; keysPerWorkflow: number } | null
}

function newPrefix(): string {
  return `bench${nanoid(6).replace(/[^A-Za-z0-9]/g, 'x')}:`
}

let runNo = 0

function specs(ctx: BenchContext, system: System, workload: Workload, prefix: string, procs: number, concurrency: number): WorkerSpec[] {
  // One profile folder per run, numbered in the order of the progress lines.
  runNo++
  const profileDir = ctx.profileDir ? join(ctx.profileDir, `${String(runNo).padStart(3, '0')}-${workload}-${system}-${procs}p`) : undefined
  return Array.from({ length: procs }, () => ({ system, workload, redisUrl: ctx.redisUrl, prefix, concurrency, persistence: ctx.persistence, ...(profileDir ? { profileDir } : {}) }))
}

/**
 * Folds the worker reports and the Redis delta of a window into one result.
 * `producerTrips`: round trips the harness itself made inside the window (enqueues).
 */
function summarizeRun(
  system: System, label: string, unit: Measured['unit'], units: number, windowStart: number, d: RedisDelta, reports: WorkerReport[], producerTrips: number,
): Omit<Measured, 'enqueuePerUnit' | 'memory'> {
  const starts = reports.map((r) => r.firstStart).filter((t) => t > 0)
  const first = windowStart > 0 ? windowStart : Math.min(...starts)
  const last = Math.max(...reports.map((r) => r.lastDone))
  const seconds = (last - first) / 1000
  const lat = reports.flatMap((r) => r.latencies)
  const extra: Record<string, number> = {}
  for (const r of reports) for (const [k, v] of Object.entries(r.extra)) extra[k] = (extra[k] ?? 0) + v
  return {
    system, label, unit, units, seconds, throughput: units / seconds,
    latency: lat.length > 0 ? percentiles(lat) : null,
    perUnit: perUnit(d, units, producerTrips + reports.reduce((s, r) => s + r.roundTrips, 0)),
    redisCpuPct: (d.cpuS / d.seconds) * 100,
    nodeCpuUs: reports.reduce((s, r) => s + r.cpuUs, 0) / units,
    workerRssMiB: reports.map((r) => Math.round((r.rssBytes / 2 ** 20) * 10) / 10),
    top: topCommands(d, units),
    extra,
  }
}

/** Worker reports minus what the workers had done by `before` (a warm-up or preparation phase). */
function since(reports: WorkerReport[], before: WorkerReport[]): WorkerReport[] {
  return reports.map((r, i) => {
    const b = before[i]
    if (!b) return r
    const extra: Record<string, number> = {}
    for (const [k, v] of Object.entries(r.extra)) extra[k] = v - (b.extra[k] ?? 0)
    return {
      ...r, done: r.done - b.done, cpuUs: r.cpuUs - b.cpuUs, roundTrips: r.roundTrips - b.roundTrips,
      latencies: r.latencies.slice(b.latencies.length), extra,
    }
  })
}

/**
 * Every run warms its worker processes up before the measured window: a fresh
 * process runs its first thousand units or so mostly unoptimised (V8 compiles hot
 * code as it goes), and a runtime, which runs more JavaScript per unit than a
 * BullMQ worker, pays more for that. Backlog runs measure the last four fifths of
 * their backlog; the others process as many units as they measure first.
 */
const BACKLOG_WARMUP = 0.2

function timeoutFor(units: number): number {
  // Generous: a run that needs this long is broken, not slow.
  return 60_000 + units * 5
}

async function withPool<T>(ctx: BenchContext, list: WorkerSpec[], fn: (pool: WorkerPool) => Promise<T>, exposeGc = false): Promise<T> {
  const pool = await WorkerPool.start(list, { exposeGc })
  try {
    return await fn(pool)
  } catch (err) {
    pool.kill()
    throw err
  }
}

export interface BacklogOptions {
  /** Troupe: actions spread over this many workflows (actors); BullMQ: ignored. */
  workflows: number
  perWorkflow: number
  procs: number
  concurrency: number
  label: string
}

/**
 * Throughput on a backlog: everything is enqueued first, then the workers start
 * and drain it. The window runs from the first handler start to the last commit.
 */
export async function backlogRun(ctx: BenchContext, system: 'troupe' | 'bullmq', o: BacklogOptions): Promise<Measured> {
  const prefix = newPrefix()
  const units = o.workflows * o.perWorkflow
  try {
    const e0 = await sample(ctx.admin)
    const t0 = roundTrips()
    if (system === 'troupe') {
      const p = new TroupeProducer(ctx.redisUrl, prefix, ctx.persistence)
      await p.backlog(o.workflows, o.perWorkflow).finally(() => p.close())
    } else {
      const p = new BullProducer(ctx.redisUrl, prefix)
      await p.backlog(units).finally(() => p.close())
    }
    const e1 = await sample(ctx.admin)
    const enqueueTrips = roundTrips() - t0
    return await withPool(ctx, specs(ctx, system, 'noop', prefix, o.procs, o.concurrency), async (pool) => {
      await pool.go()
      await pool.waitFor(Math.floor(units * BACKLOG_WARMUP), timeoutFor(units))
      // The window starts here, with the workers busy: its units are what is left
      // after the counts each worker reports, so the window starts when they were
      // read (each worker stamps its report; with several, their mean: a worker's
      // units between its stamp and another's are counted and timed alike when
      // the workers go at the same pace). The Redis counters are read meanwhile.
      const [s0, before] = await Promise.all([sample(ctx.admin), pool.report()])
      const windowStart = before.reduce((sum, r) => sum + r.at, 0) / before.length
      const measured = units - before.reduce((n, r) => n + r.done, 0)
      if (measured < units / 10) throw new Error(`${o.label}: the workers had done ${units - measured} of ${units} units when the window started; the backlog is too small to measure`)
      await pool.waitFor(units, timeoutFor(units))
      const s1 = await sample(ctx.admin)
      const reports = since(await pool.stop(), before)
      return { ...summarizeRun(system, o.label, 'action', measured, windowStart, delta(s0, s1), reports, 0), enqueuePerUnit: perUnit(delta(e0, e1), units, enqueueTrips), memory: null }
    })
  } finally {
    await dropPrefix(ctx.admin, prefix)
  }
}

export interface PacedOptions {
  /** Troupe: actions go round-robin to this many (pre-created) workflows. */
  workflows: number
  count: number
  rate: number
  procs: number
  concurrency: number
  label: string
}

/**
 * Latency at a fixed offered rate, enqueued one by one through the public API while
 * the workers run. Costs are per action and include the enqueue.
 */
export async function pacedRun(ctx: BenchContext, system: 'troupe' | 'bullmq', o: PacedOptions): Promise<Measured> {
  const prefix = newPrefix()
  try {
    return await withPool(ctx, specs(ctx, system, 'noop', prefix, o.procs, o.concurrency), async (pool) => {
      let prepared = 0
      let before: WorkerReport[] = []
      let send: (i: number, t: number) => Promise<void>
      let close: () => Promise<void>
      if (system === 'troupe') {
        const p = new TroupeProducer(ctx.redisUrl, prefix, ctx.persistence)
        // The workflows exist before the measurement, each with its first action done.
        const wfs = await p.backlog(o.workflows, 1)
        prepared = o.workflows
        await pool.go()
        await pool.waitFor(prepared, timeoutFor(prepared))
        before = await pool.report()
        send = (i, t) => p.send(wfs[i % wfs.length] as string, t)
        close = () => p.close()
      } else {
        const p = new BullProducer(ctx.redisUrl, prefix)
        await pool.go()
        // As many jobs first as Troupe's workflows had first actions (no latency taken).
        prepared = o.workflows
        await burst(prepared, 100, () => p.send(0))
        await pool.waitFor(prepared, timeoutFor(prepared))
        before = await pool.report()
        send = (_i, t) => p.send(t)
        close = () => p.close()
      }
      try {
        const s0 = await sample(ctx.admin)
        const t0 = roundTrips()
        const start = performance.timeOrigin + performance.now()
        await paced(o.count, o.rate, send)
        await pool.waitFor(prepared + o.count, timeoutFor(o.count))
        const s1 = await sample(ctx.admin)
        const trips = roundTrips() - t0
        const reports = since(await pool.stop(), before)
        const m = summarizeRun(system, o.label, 'action', o.count, start, delta(s0, s1), reports, trips)
        return { ...m, enqueuePerUnit: null, memory: null }
      } finally {
        await close()
      }
    })
  } finally {
    await dropPrefix(ctx.admin, prefix)
  }
}

export interface FlowOptions {
  workflows: number
  procs: number
  concurrency: number
  /** Workflows started per second; 0 starts them all at once (100 calls in flight). */
  rate: number
  label: string
}

/** The multi-agent workflow: started through each system's public API while its workers run. */
export async function flowRun(ctx: BenchContext, system: System, o: FlowOptions): Promise<Measured> {
  const prefix = newPrefix()
  try {
    return await withPool(ctx, specs(ctx, system, 'flow', prefix, o.procs, o.concurrency), async (pool) => {
      const p = system === 'troupe' ? new TroupeProducer(ctx.redisUrl, prefix, ctx.persistence) : system === 'bullmq' ? new BullProducer(ctx.redisUrl, prefix) : new NaiveProducer(ctx.redisUrl, prefix)
      try {
        await pool.go()
        // Warm-up: as many workflows as the window has, started at once (t0 0: no latency taken).
        await burst(o.workflows, 100, () => p.startFlow(0))
        await pool.waitFor(o.workflows, timeoutFor(o.workflows * 8))
        const before = await pool.report()
        const s0 = await sample(ctx.admin)
        const t0 = roundTrips()
        const start = performance.timeOrigin + performance.now()
        if (o.rate > 0) await paced(o.workflows, o.rate, (_i, t) => p.startFlow(t))
        else await burst(o.workflows, 100, () => p.startFlow(performance.timeOrigin + performance.now()))
        await pool.waitFor(2 * o.workflows, timeoutFor(o.workflows * 8))
        const s1 = await sample(ctx.admin)
        const trips = roundTrips() - t0
        const reports = since(await pool.stop(), before)
        const m = summarizeRun(system, o.label, 'workflow', o.workflows, start, delta(s0, s1), reports, trips)
        const mem = await memoryUnder(ctx.admin, prefix)
        return { ...m, enqueuePerUnit: null, memory: { bytesPerWorkflow: mem.bytes / (2 * o.workflows), keysPerWorkflow: mem.keys / (2 * o.workflows) } }
      } finally {
        await p.close()
      }
    })
  } finally {
    await dropPrefix(ctx.admin, prefix)
  }
}

/** Memory of waiting workflows: Redis bytes and runtime heap/RSS per workflow. */
export interface IdleMeasured {
  workflows: number
  rssBaseMiB: number
  rssAfterMiB: number
  /** Growth of the runtime's heap per waiting workflow between half and all of them (fixed warm-up costs cancel out). */
  heapBytesPerWorkflow: number
  rssBytesPerWorkflow: number
  activeActors: number
  redisBytesPerWorkflow: number
  redisKeysPerWorkflow: number
}

/**
 * `workflows` workflows each parked in a waiting state by one action, hosted by one
 * runtime process: what they cost in Redis, and in the process once deactivated.
 */
export async function idleRun(ctx: BenchContext, workflows: number, concurrency: number): Promise<IdleMeasured> {
  const prefix = newPrefix()
  const half = Math.floor(workflows / 2)
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 500))
  try {
    return await withPool(ctx, specs(ctx, 'troupe', 'idle', prefix, 1, concurrency), async (pool) => {
      const p = new TroupeProducer(ctx.redisUrl, prefix, ctx.persistence)
      try {
        await pool.go()
        await settle()
        const [base] = await pool.report()
        await p.backlog(half, 1, 'waiter', 'park')
        await pool.waitFor(half, timeoutFor(half))
        await settle()
        const [mid] = await pool.report()
        await p.backlog(workflows - half, 1, 'waiter', 'park')
        await pool.waitFor(workflows, timeoutFor(workflows))
        await settle()
        const [after] = await pool.report()
        if (!base || !mid || !after) throw new Error('idle worker sent no report')
        const mem = await memoryUnder(ctx.admin, prefix)
        await pool.stop()
        const n = workflows - half
        return {
          workflows,
          rssBaseMiB: base.rssBytes / 2 ** 20,
          rssAfterMiB: after.rssBytes / 2 ** 20,
          heapBytesPerWorkflow: (after.heapUsedBytes - mid.heapUsedBytes) / n,
          rssBytesPerWorkflow: (after.rssBytes - mid.rssBytes) / n,
          activeActors: after.extra.activeActors ?? -1,
          redisBytesPerWorkflow: mem.bytes / workflows,
          redisKeysPerWorkflow: mem.keys / workflows,
        }
      } finally {
        await p.close()
      }
    }, true)
  } finally {
    await dropPrefix(ctx.admin, prefix)
  }
}
