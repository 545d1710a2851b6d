// Redis out of memory (maxmemory + noeviction): starting work fails with a clear
// error, nothing is half-written, and work resumes once memory frees.
import { spawnSync } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient } from '../../runtime/index.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

let redis: RedisProcess
afterAll(async () => {
  await redis?.stop()
})

describe('memory exhaustion', () => {
  it('rejects new work with redis_oom, writes nothing, and recovers', async () => {
    redis = await startRedis({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'noeviction'] })
    const cfg = testConfig({ redisUrl: redis.url })
    const rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
    const client = TroupeClient.connect(cfg)
    try {
      const { workflowId: before } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
      await eventually(async () => (await client.getStatus(before))?.counts.done === 1, 10_000, 'a ping before the squeeze')
      // Fill memory with junk until Redis refuses even small writes (a refused big
      // write frees its own query buffer, so step down the size).
      let n = 0
      for (const size of [64 * 1024, 1024, 16]) {
        const junk = 'x'.repeat(size)
        for (;;) {
          try {
            await client.redis.set(`junk:${n++}`, junk)
          } catch (err) {
            expect(String(err)).toMatch(/OOM/)
            break
          }
          if (n > 100_000) throw new Error('never ran out of memory')
        }
      }
      // Pin the squeeze: connections and freed query buffers make the edge wobble.
      const used = Number(/used_memory:(\d+)/.exec(await client.redis.info('memory'))?.[1])
      await client.redis.config('SET', 'maxmemory', String(used - 256 * 1024))
      await expect(client.startWorkflow({ agent: 'counter', type: 'ping', workflowId: 'oom-victim' })).rejects.toMatchObject({ code: 'redis_oom' })
      expect(await client.redis.exists(client.keys.status('oom-victim'), client.keys.events('oom-victim'), client.keys.actions('oom-victim'))).toBe(0)
      await expect(client.sendAction(before, 'counter', 'ping')).rejects.toMatchObject({ code: 'redis_oom' })

      // the CLI says so and exits 4 (killed if it hangs: spawnSync blocks the test's own timeout)
      const cli = spawnSync(process.execPath, ['bin/troupe.mjs', 'run', 'counter', 'ping'], { env: { ...process.env, REDIS_URL: redis.url, TROUPE_NAMESPACE: cfg.namespace }, encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' })
      expect(cli.status, `${cli.error?.message ?? ''}\n${cli.stderr}`).toBe(4)
      expect(cli.stderr).toMatch(/redis_oom.*out of memory/)

      await client.redis.config('SET', 'maxmemory', '64mb')
      for (let i = 0; i < n; i++) await client.redis.del(`junk:${i}`)
      const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', workflowId: 'oom-victim' })
      await client.sendAction(workflowId, 'counter', 'finish')
      await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 10_000, 'work after memory freed')
      expect((await client.getStatus(before))?.counts.dead).toBe(0)
    } finally {
      await rt.stop()
      await client.close()
    }
  })
})
