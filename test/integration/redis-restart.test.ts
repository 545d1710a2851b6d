// Runtimes ride out a Redis restart by themselves, and refuse an evicting Redis.
import { afterAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient } from '../../runtime/index.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { spawnRuntime } from '../helpers/processes.ts'

const servers: RedisProcess[] = []
afterAll(async () => {
  for (const s of servers) await s.stop()
})

describe('redis restart', () => {
  it('a runtime process reconnects after Redis restarts and nothing acknowledged is lost', async () => {
    const redis = await startRedis({ args: ['--appendfsync', 'always'], keepData: true })
    servers.push(redis)
    const cfg = testConfig({ redisUrl: redis.url, lockTtlMs: 2000 })
    const rt = await spawnRuntime(cfg)
    const client = TroupeClient.connect(cfg)
    try {
      const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 0 } })
      await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'first ping')
      redis.kill()
      await new Promise((r) => setTimeout(r, 300))
      const again = await startRedis({ port: redis.port, dir: redis.dir, args: ['--appendfsync', 'always'] })
      servers.push(again)
      for (let i = 1; i <= 5; i++) await client.sendAction(workflowId, 'counter', 'ping', { i })
      await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 6, 20_000, 'pings after restart')
      const snap = JSON.parse((await client.redis.hget(client.keys.actor(workflowId, 'counter'), 'snapshot')) ?? '{}') as { context: { n: number } }
      expect(snap.context.n).toBe(6)
      expect(rt.child.exitCode).toBeNull()
    } finally {
      await rt.stop(5000)
      await client.close()
    }
  })

  it('stops within its drain bounds while Redis is unreachable', async () => {
    const redis = await startRedis()
    servers.push(redis)
    const cfg = testConfig({ redisUrl: redis.url, idlePollMs: 200 })
    const rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false, drainTimeoutMs: 500 })
    redis.kill()
    // Long enough for the worker's idle poll to send a pick, which then waits in
    // ioredis's offline queue for a Redis that does not come back.
    await new Promise((r) => setTimeout(r, 1000))
    let timer: NodeJS.Timeout | undefined
    const outcome = await Promise.race([
      rt.stop().then(() => 'stopped'),
      new Promise((r) => (timer = setTimeout(() => r('still draining after 30 s'), 30_000))),
    ])
    clearTimeout(timer)
    expect(outcome).toBe('stopped')
  })

  it('refuses a Redis that may evict keys unless allowed', async () => {
    const redis = await startRedis({ args: ['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'] })
    servers.push(redis)
    const cfg = testConfig({ redisUrl: redis.url })
    await expect(startRuntime({ agents: [counter], config: cfg, metricsPort: false })).rejects.toMatchObject({ code: 'eviction_policy' })
    const rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false, allowEviction: true })
    await rt.stop()
  })
})
