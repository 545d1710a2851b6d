// A start's entry in system:deadlines is due on Redis's clock, as the status
// hash's `deadline` is: it was the starting client's clock plus the deadline,
// so a client running an hour ahead had its workflow failed an hour late (the
// supervisor only corrects an entry that comes due early). The client's clock
// is skewed here by replacing Date.now, which is all the client reads it with.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { testConfig } from '../helpers/redis.ts'

const HOUR = 3_600_000

/** Starts a workflow with a deadline from a client whose clock is `skewMs` off, and answers its entry's score and its status's deadline. */
async function startSkewed(c: TroupeClient, skewMs: number): Promise<{ entry: number; deadline: number }> {
  const real = Date.now.bind(Date)
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => real() + skewMs)
  let wf: string
  try {
    // No runtime: the first action stays queued and the workflow running.
    ;({ workflowId: wf } = await c.startWorkflow({ agent: 'counter', type: 'ping', deadlineMs: 60_000, validate: false }))
  } finally {
    spy.mockRestore()
  }
  const entry = Number(await c.redis.zscore(c.keys.deadlines(), wf))
  const deadline = Number(await c.redis.hget(c.keys.status(wf), 'deadline'))
  return { entry, deadline }
}

describe('a start\'s deadline entry on a single Redis', () => {
  let c: TroupeClient
  beforeAll(() => {
    c = TroupeClient.connect(testConfig())
  })
  afterAll(async () => {
    await c.close()
  })

  it.each([['ahead', HOUR], ['behind', -HOUR]])('is due at the status\'s deadline from a client whose clock runs an hour %s', async (_what, skew) => {
    const { entry, deadline } = await startSkewed(c, skew)
    expect(deadline).toBeGreaterThan(0)
    expect(entry).toBe(deadline)
  })
})

describe('a start\'s deadline entry on a Redis Cluster', () => {
  let cluster: RedisCluster
  let c: TroupeClient
  beforeAll(async () => {
    cluster = await startRedisCluster(3)
    c = TroupeClient.connect(testConfig({ redisUrl: cluster.url }))
  }, 60_000)
  afterAll(async () => {
    await c?.close()
    await cluster?.stop()
  })

  it('is due at the status\'s deadline from a client whose clock runs an hour ahead', async () => {
    const { entry, deadline } = await startSkewed(c, HOUR)
    expect(deadline).toBeGreaterThan(0)
    expect(entry).toBe(deadline)
  })
})
