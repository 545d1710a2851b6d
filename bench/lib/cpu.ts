// CPU accounting for the SSE benchmark: where the CPU went between two snapshots,
// per process (gateway, clients, the emitter itself, Redis) and for the machine.
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import type { Redis } from 'ioredis'

/** Two decimals, for reports. */
export const round = (v: number): number => Math.round(v * 100) / 100

/** CPU milliseconds a process has used (all its threads), from /proc; NaN where there is no /proc. */
function procCpuMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th, in 10 ms ticks.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) * 10
  } catch {
    return Number.NaN
  }
}

/** Busy and total CPU milliseconds of the whole machine (all cores), from /proc/stat. */
function machineCpuMs(): { busy: number; total: number } {
  try {
    const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number)
    const total = f.reduce((a, b) => a + b, 0) * 10
    return { busy: total - ((f[3] ?? 0) + (f[4] ?? 0)) * 10, total }
  } catch {
    return { busy: Number.NaN, total: Number.NaN }
  }
}

async function redisCpuMs(redis: Redis): Promise<number> {
  const info = await redis.info('cpu')
  const num = (k: string): number => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN)
  return (num('used_cpu_sys') + num('used_cpu_user')) * 1000
}

/** CPU counters at one moment, in milliseconds. */
export interface CpuSnap {
  at: number
  gateway: number
  clients: number
  emitter: number
  redis: number
  machine: { busy: number; total: number }
}

/** Reads every counter of a {@link CpuSnap}. */
export async function cpuSnap(redis: Redis, gatewayPid: number | undefined, clientPids: (number | undefined)[]): Promise<CpuSnap> {
  const u = process.cpuUsage()
  return {
    at: performance.now(),
    gateway: procCpuMs(gatewayPid),
    clients: clientPids.reduce<number>((a, p) => a + procCpuMs(p), 0),
    emitter: (u.user + u.system) / 1000,
    redis: await redisCpuMs(redis),
    machine: machineCpuMs(),
  }
}

/**
 * Where the CPU went between two snapshots, as % of one core per process (the
 * machine's busy share is % of all cores), plus the gateway's µs per delivered frame.
 */
export function cpuReport(a: CpuSnap, b: CpuSnap, prefix: string, delivered: number, out: Record<string, number | string>, tail: CpuSnap = b): string {
  const wall = b.at - a.at
  const pct = (k: 'gateway' | 'clients' | 'emitter' | 'redis'): number => round((100 * (b[k] - a[k])) / wall)
  const parts: string[] = []
  for (const k of ['gateway', 'clients', 'emitter', 'redis'] as const) {
    const v = pct(k)
    if (!Number.isFinite(v)) continue
    out[`${prefix}Cpu${k[0]?.toUpperCase()}${k.slice(1)}Pct`] = v
    parts.push(`${k} ${v}%`)
  }
  const busy = round((100 * (b.machine.busy - a.machine.busy)) / (b.machine.total - a.machine.total))
  if (Number.isFinite(busy)) {
    out[`${prefix}CpuMachineBusyPct`] = busy
    parts.push(`machine busy ${busy}% of ${cpus().length} cores`)
  }
  // Frames delivered after the window (a backlog draining) were paid for after it too.
  const perFrame = round((1000 * (tail.gateway - a.gateway)) / Math.max(1, delivered))
  if (Number.isFinite(perFrame) && delivered > 0) {
    out[`${prefix}GatewayUsPerFrame`] = perFrame
    parts.push(`gateway ${perFrame} µs per delivered frame`)
  }
  return `CPU (% of one core): ${parts.join(', ')}`
}

