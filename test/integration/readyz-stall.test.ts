// The runtime's /readyz gives Redis a second to answer a PING. A Redis that
// stops answering while its connection stays up (SIGSTOP, a wedged node) kept
// every PING queued on the connection after its probe gave up: one more per
// probe for as long as the stall lasted. Probes share the PING in flight.
// Runs on a private redis-server that the test stops and continues.
import { rmSync } from 'node:fs'
import type { Command } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, type Runtime } from '../../runtime/index.ts'
import { counter } from '../fixtures/agents.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

let redis: RedisProcess
let rt: Runtime
let readyz: string

beforeAll(async () => {
  redis = await startRedis()
  rt = await startRuntime({ agents: [counter], config: testConfig({ redisUrl: redis.url }), metricsPort: 0, heartbeatMs: 60_000 })
  readyz = rt.metricsUrl.replace(/\/metrics$/, '/readyz')
})
afterAll(async () => {
  // A stopped process would not act on the SIGTERM of stop().
  redis?.resume()
  await rt?.stop()
  await redis?.stop()
  if (redis) rmSync(redis.dir, { recursive: true, force: true })
})

async function probe(): Promise<{ status: number; redis: boolean | undefined }> {
  const res = await fetch(readyz)
  const body = (await res.json()) as { checks: { redis?: boolean } }
  return { status: res.status, redis: body.checks.redis }
}

describe('/readyz with a stalled Redis', () => {
  it('answers not ready and leaves at most one PING queued, however many probes come', async () => {
    expect(await probe()).toEqual({ status: 200, redis: true })
    const conn = rt.redis as unknown as { sendCommand: (cmd: Command) => unknown }
    const send = conn.sendCommand.bind(conn)
    let pings = 0
    conn.sendCommand = (cmd: Command) => {
      if (cmd.name === 'ping') pings++
      return send(cmd)
    }
    redis.pause()
    try {
      // In turn, each after the one before gave up (its second is over), and two at once.
      for (let i = 0; i < 3; i++) expect(await probe(), `probe ${i}`).toEqual({ status: 503, redis: false })
      expect(await Promise.all([probe(), probe()])).toEqual([{ status: 503, redis: false }, { status: 503, redis: false }])
      expect(pings).toBe(1)
    } finally {
      redis.resume()
      conn.sendCommand = send
    }
    await eventually(async () => (await probe()).status === 200, 10_000, 'ready again once Redis answers')
  }, 30_000)
})
