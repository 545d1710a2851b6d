// The client's fixes on a local 3-primary Redis Cluster, where the global keys
// (ready hints, persistence pointers, owner index, registry) live on other
// nodes than a workflow's: no follow-up failure fails a call that took, a lost
// post-hint is written again (no sweep repairs it here), a cancel removes its
// workflow's ready hints from the Node side, and the owner index is pruned by
// the status keys' existence on their own nodes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

let cluster: RedisCluster
let c: TroupeClient
let cfg: ReturnType<typeof testConfig>

beforeAll(async () => {
  cluster = await startRedisCluster(3)
  cfg = testConfig({ redisUrl: cluster.url, persistence: false, retentionMs: 1000 })
  c = TroupeClient.connect(cfg)
}, 60_000)
afterAll(async () => {
  await c?.close()
  await cluster?.stop()
})

describe('client on a Redis Cluster', () => {
  it('answers a start and a send whose follow-up writes fail, and writes a lost post-hint again', async () => {
    const own = TroupeClient.connect({ ...cfg, persistence: true })
    const pointers = own.keys.persistence()
    try {
      await own.redis.set(pointers, 'not a stream')
      const { workflowId } = await own.startWorkflow({ agent: 'counter', type: 'ping', validate: false })
      await own.sendAction(workflowId, 'counter', 'ping', null, { validate: false })
      expect((await own.getStatus(workflowId))?.counts.actions).toBe(2)
      await own.redis.del(pointers)

      const ready = own.keys.ready('counter')
      await own.redis.del(ready)
      await own.redis.set(ready, 'not a zset')
      const sending = own.sendAction(workflowId, 'counter', 'ping', null, { validate: false, actionId: 'hinted' })
      try {
        await eventually(async () => (await own.redis.hexists(own.keys.actions(workflowId), 'hinted')) === 1, 5000, 'the action queued')
      } finally {
        await own.redis.del(ready)
      }
      expect(await sending).toEqual({ actionId: 'hinted' })
      expect(await own.redis.zscore(ready, workflowId)).not.toBeNull()
    } finally {
      await own.redis.del(pointers)
      await own.close()
    }
  })

  it('removes a cancelled workflow\'s far-delayed ready hints', async () => {
    const { workflowId: wf } = await c.startWorkflow({ agent: 'first', type: 'go', validate: false })
    await c.sendAction(wf, 'later', 'go', null, { delayMs: 365 * 24 * 3600_000, validate: false })
    expect(await c.redis.zscore(c.keys.ready('later'), wf)).not.toBeNull()
    await c.cancelWorkflow(wf)
    expect(await c.redis.zscore(c.keys.ready('later'), wf)).toBeNull()
    expect(await c.redis.zscore(c.keys.ready('first'), wf)).toBeNull()
  })

  it('keeps a running workflow in its owner\'s index past the retention and drops an expired one', async () => {
    const index = c.keys.byOwner('bob')
    const running = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'bob', validate: false })
    const ended = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'bob', validate: false })
    await c.cancelWorkflow(ended.workflowId)
    await eventually(async () => (await c.redis.exists(c.keys.status(ended.workflowId))) === 0, 10_000, 'the cancelled workflow to expire')
    await eventually(async () => Date.now() - Number(await c.redis.zscore(index, running.workflowId)) > cfg.retentionMs + 50, 5000, 'the retention to pass')
    const next = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'bob', validate: false })
    expect((await c.redis.zrange(index, '0', '-1')).sort()).toEqual([running.workflowId, next.workflowId].sort())
  })
})
