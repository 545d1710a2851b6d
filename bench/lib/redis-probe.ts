// What Redis itself spent: INFO deltas taken around a measured window. Deltas
// (rather than CONFIG RESETSTAT) leave the counters alone for anyone else sharing
// the server, e.g. the test suite running the quick harness next to other tests.
import type { Redis } from 'ioredis'

/** Per-command counters from `INFO commandstats`. */
export type CommandStats = Record<string, { calls: number; usec: number }>

/** The counters we diff. */
export interface RedisSample {
  at: number
  /** Seconds of CPU the server process used (user + sys, all its threads). */
  cpuS: number
  /** Socket read events the server processed: each is one request batch from a client. */
  reads: number
  /** Commands executed, including those called from scripts. */
  commands: number
  cmd: CommandStats
  usedMemory: number
}

/** Redis cost of a window. */
export interface RedisDelta {
  seconds: number
  cpuS: number
  reads: number
  commands: number
  /** EVAL/EVALSHA/FCALL calls: the scripts that did the work. */
  scripts: number
  /** Calls and time per command, including commands run from scripts. */
  cmd: CommandStats
}

function infoFields(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':')
    if (i > 0 && !line.startsWith('#')) out.set(line.slice(0, i), line.slice(i + 1))
  }
  return out
}

/** Reads the counters in one round trip. */
export async function sample(redis: Redis): Promise<RedisSample> {
  const text = await redis.info('all')
  const f = infoFields(text)
  const num = (k: string): number => Number(f.get(k) ?? '0')
  const cmd: CommandStats = {}
  for (const [k, v] of f) {
    if (!k.startsWith('cmdstat_')) continue
    const calls = /calls=(\d+)/.exec(v)
    const usec = /usec=(\d+)/.exec(v)
    cmd[k.slice(8)] = { calls: Number(calls?.[1] ?? 0), usec: Number(usec?.[1] ?? 0) }
  }
  return {
    at: performance.now(),
    cpuS: num('used_cpu_user') + num('used_cpu_sys'),
    reads: num('total_reads_processed'),
    commands: num('total_commands_processed'),
    cmd,
    usedMemory: num('used_memory'),
  }
}

const SCRIPT_CMDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'])

/** b - a. The two INFO calls themselves are subtracted from the reads. */
export function delta(a: RedisSample, b: RedisSample): RedisDelta {
  const cmd: CommandStats = {}
  let scripts = 0
  for (const [name, v] of Object.entries(b.cmd)) {
    const before = a.cmd[name] ?? { calls: 0, usec: 0 }
    const calls = v.calls - before.calls
    if (calls <= 0) continue
    cmd[name] = { calls, usec: v.usec - before.usec }
    if (SCRIPT_CMDS.has(name)) scripts += calls
  }
  return { seconds: (b.at - a.at) / 1000, cpuS: b.cpuS - a.cpuS, reads: Math.max(0, b.reads - a.reads - 1), commands: b.commands - a.commands - 1, scripts, cmd }
}

/** Per-unit costs of a window (unit: an action, a workflow). */
export interface UnitCost {
  /** Redis CPU per unit, microseconds. */
  redisCpuUs: number
  /** Redis commands per unit, including those run inside scripts. */
  commands: number
  /** Script calls per unit. */
  scripts: number
  /** Client round trips per unit: commands sent alone plus pipelines (counted in the clients, see round-trips.ts). */
  roundTrips: number
  /**
   * Socket reads the server processed per unit. Concurrent requests arrive coalesced,
   * so this is below the round trips when a client is busy: it is what the server paid for.
   */
  reads: number
}

export function perUnit(d: RedisDelta, units: number, roundTrips: number): UnitCost {
  return { redisCpuUs: (d.cpuS * 1e6) / units, commands: d.commands / units, scripts: d.scripts / units, roundTrips: roundTrips / units, reads: d.reads / units }
}

/** The few commands that cost the most Redis time in a window, per unit. */
export function topCommands(d: RedisDelta, units: number, n = 8): { cmd: string; callsPerUnit: number; usecPerUnit: number }[] {
  return Object.entries(d.cmd)
    .map(([cmd, v]) => ({ cmd, callsPerUnit: v.calls / units, usecPerUnit: v.usec / units }))
    .sort((x, y) => y.usecPerUnit - x.usecPerUnit)
    .slice(0, n)
}

/** Every key under `prefix` (SCAN, so a big keyspace does not block the server). */
export async function keysUnder(redis: Redis, prefix: string): Promise<string[]> {
  const out: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    out.push(...keys)
  } while (cursor !== '0')
  return out
}

/** Bytes Redis holds for the keys under `prefix` (MEMORY USAGE of each, exact). */
export async function memoryUnder(redis: Redis, prefix: string): Promise<{ bytes: number; keys: number }> {
  const keys = await keysUnder(redis, prefix)
  let bytes = 0
  for (let i = 0; i < keys.length; i += 500) {
    const pipe = redis.pipeline()
    for (const k of keys.slice(i, i + 500)) pipe.memory('USAGE', k, 'SAMPLES', '0')
    for (const [err, v] of (await pipe.exec()) ?? []) if (!err) bytes += Number(v ?? 0)
  }
  return { bytes, keys: keys.length }
}

/** Removes everything a run left under `prefix`, so later runs start from the same memory. */
export async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  const keys = await keysUnder(redis, prefix)
  for (let i = 0; i < keys.length; i += 1000) await redis.unlink(...keys.slice(i, i + 1000))
}
