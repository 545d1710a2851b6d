// A running action keeps its actor's lock for as long as it runs: each worker
// extends the locks (and hint leases) of its running activations every third of
// the TTL. Without that, a second process would take the actor over once the
// lock ran out, redeliver the action as attempt 2 and fence out the first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, slow } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 1000 })
const client = TroupeClient.connect(cfg)
const redis = rawRedis()
let runtimes: Runtime[] = []

beforeAll(async () => {
  runtimes = await Promise.all([1, 2].map(() => startRuntime({ agents: [slow, counter], config: cfg, metricsPort: false })))
})
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stop()))
  await client.close()
  redis.disconnect()
})

async function sum(metric: string): Promise<number> {
  let total = 0
  for (const rt of runtimes) total += (await rt.metrics.registry.getSingleMetric(metric)?.get())?.values.reduce((s, v) => s + v.value, 0) ?? 0
  return total
}

describe('the lock keeper', () => {
  it('holds the lock of an action running four lock TTLs, with another process waiting', async () => {
    const { workflowId, actionId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 4000, i: 1 } })
    const lockKey = client.ctx.keys.lock(workflowId, 'slow')
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'the action running')
    const holder = await redis.get(lockKey)
    expect(holder).toBeTruthy()
    // Sampled all through the action: the same holder, never expired. The status is
    // read after each sample; it moves on when the action's last transition is
    // streamed, just before the commit that releases the lock: a sample followed
    // by 'working' was taken while the action ran, so a null there is a lapse.
    const seen = new Set<string | null>()
    let last: string | null
    for (;;) {
      last = await redis.get(lockKey)
      if ((await client.getStatus(workflowId))?.agents.slow !== 'working') break
      seen.add(last)
      await new Promise((r) => setTimeout(r, 100))
    }
    expect([...seen]).toEqual([holder])
    // The sample that raced the end: still held, or the release.
    expect([holder, null]).toContain(last)
    // The commit follows the streamed transition by a round trip or so.
    const events = await eventually(async () => {
      const all = await client.readEvents(workflowId, '0', 1000)
      return all.some((e) => e.event.type === 'action.completed') ? all : null
    }, 10_000, 'the action\'s commit')
    const completed = events.filter((e) => e.event.type === 'action.completed' && e.event.metadata?.actionId === actionId)
    expect(completed).toHaveLength(1)
    expect(completed[0]?.event.metadata?.attempt).toBe(1)
    expect(events.some((e) => e.event.type === 'action.redelivered')).toBe(false)
    expect(await sum('troupe_fence_rejections_total')).toBe(0)
  })
})
