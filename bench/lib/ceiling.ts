// What the Redis server on this machine can do at all, to put each system's cost
// next to a limit: redis-benchmark (Debian's redis-tools) for requests one at a time,
// pipelined, and as no-op scripts; without it, a raw ioredis loop (which then also
// measures the Node client, and says so).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { excludeFromRoundTrips } from './round-trips.ts'

const run = promisify(execFile)

export interface RedisCeiling {
  tool: string
  /** Requests per second, 50 clients, one request per round trip. */
  pingRps: number
  /** Requests per second, 50 clients, 16 requests per round trip. */
  pipelinedRps: number
  /** Script calls per second (`EVAL "return 1" 0`), 50 clients. */
  evalRps: number
}

function benchArgs(url: string): string[] {
  const u = new URL(url)
  const args = ['-h', u.hostname || '127.0.0.1', '-p', u.port || '6379']
  if (u.password) args.push('-a', decodeURIComponent(u.password), '--no-auth-warning')
  if (u.protocol === 'rediss:') args.push('--tls')
  return args
}

async function redisBenchmark(url: string, n: number, extra: string[]): Promise<number> {
  const { stdout } = await run('redis-benchmark', [...benchArgs(url), '-c', '50', '-n', String(n), '--csv', ...extra], { timeout: 120_000 })
  const line = stdout.trim().split('\n').pop() ?? ''
  const rps = Number(/^"[^"]*","([\d.]+)"/.exec(line)?.[1])
  if (!Number.isFinite(rps)) throw new Error(`unexpected redis-benchmark output: ${line}`)
  return rps
}

/** Requests per second from `clients` ioredis connections sending `perTrip` commands per round trip for `ms`. */
async function rawLoop(url: string, ms: number, perTrip: number, cmd: (r: Redis) => Promise<unknown>): Promise<number> {
  const clients = Array.from({ length: 50 }, () => new Redis(url, { maxRetriesPerRequest: null }))
  for (const c of clients) excludeFromRoundTrips(c)
  let n = 0
  const end = performance.now() + ms
  const start = performance.now()
  await Promise.all(clients.map(async (c) => {
    while (performance.now() < end) {
      if (perTrip === 1) await cmd(c)
      else {
        const p = c.pipeline()
        for (let i = 0; i < perTrip; i++) p.ping()
        await p.exec()
      }
      n += perTrip
    }
  }))
  const rps = n / ((performance.now() - start) / 1000)
  for (const c of clients) c.disconnect()
  return rps
}

/** Measures the server's raw capacity; `quick` uses fewer requests. */
export async function measureCeiling(url: string, quick: boolean): Promise<RedisCeiling> {
  const n = quick ? 20_000 : 200_000
  try {
    return {
      tool: 'redis-benchmark -c 50',
      pingRps: await redisBenchmark(url, n, ['-t', 'ping_mbulk']),
      pipelinedRps: await redisBenchmark(url, n * 4, ['-P', '16', '-t', 'ping_mbulk']),
      evalRps: await redisBenchmark(url, n, ['eval', 'return 1', '0']),
    }
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)
    const ms = quick ? 1000 : 3000
    return {
      tool: `ioredis loop, 50 connections (redis-benchmark unavailable: ${why}; includes Node client cost)`,
      pingRps: await rawLoop(url, ms, 1, (r) => r.ping()),
      pipelinedRps: await rawLoop(url, ms, 16, (r) => r.ping()),
      evalRps: await rawLoop(url, ms, 1, (r) => r.eval('return 1', 0)),
    }
  }
}
