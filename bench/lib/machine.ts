// The machine a result was measured on. Numbers from a 2-core VM shared with other
// work mean little without the load next to them, so the load is sampled at the
// start and the end of the run and printed with the results.
import { cpus, loadavg, release, totalmem, type } from 'node:os'
import { createRequire } from 'node:module'
import type { Redis } from 'ioredis'

export interface Machine {
  cores: number
  cpuModel: string
  os: string
  memoryGiB: number
  node: string
  redis: string
  redisConfig: Record<string, string>
  versions: Record<string, string>
  loadStart: number[]
  loadEnd: number[]
  note: string
}

function pkgVersion(name: string): string {
  try {
    const req = createRequire(import.meta.url)
    return (req(`${name}/package.json`) as { version?: string }).version ?? '?'
  } catch {
    return '?'
  }
}

/** Everything about the machine except the end load, which {@link finishMachine} adds. */
export async function describeMachine(redis: Redis): Promise<Machine> {
  const info = await redis.info('server')
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? '?'
  const redisConfig: Record<string, string> = {}
  for (const key of ['appendonly', 'appendfsync', 'maxmemory-policy', 'io-threads']) {
    try {
      const r = await redis.config('GET', key)
      if (r[1] !== undefined) redisConfig[key] = r[1]
    } catch {
      // CONFIG may be disabled on a managed server; the rest still describes the run.
    }
  }
  const c = cpus()
  return {
    cores: c.length,
    cpuModel: c[0]?.model.trim() ?? '?',
    os: `${type()} ${release()}`,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    redis: redisVersion,
    redisConfig,
    versions: { bullmq: pkgVersion('bullmq'), ioredis: pkgVersion('ioredis'), xstate: pkgVersion('xstate'), redlock: pkgVersion('@sesamecare-oss/redlock') },
    loadStart: loadavg().map((v) => Math.round(v * 100) / 100),
    loadEnd: [],
    note: `${c.length} cores shared by Redis, the worker processes and the producer (and possibly other work on the machine): compare systems within a run, not across machines.`,
  }
}

export function finishMachine(m: Machine): Machine {
  return { ...m, loadEnd: loadavg().map((v) => Math.round(v * 100) / 100) }
}
