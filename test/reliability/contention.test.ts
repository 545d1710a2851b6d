// A long activation that receives work must not be hammered by the other
// processes. The send makes the hint due while the lock is held: a process that
// bounces off the lock pushes the hint to the lock's end (it used to push it
// 250 ms on, and the extender's compare-and-set no longer re-leases a hint
// someone else wrote), and the holder's release brings it forward again. The
// work itself runs in the same activation: its commit claims it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, slow } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 30_000 })
const client = TroupeClient.connect(cfg)
let runtimes: Runtime[] = []

beforeAll(async () => {
  runtimes = await Promise.all([1, 2, 3].map(() => startRuntime({ agents: [slow, counter], config: cfg, metricsPort: false })))
})
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stop()))
  await client.close()
})

async function total(name: string): Promise<number> {
  let sum = 0
  for (const rt of runtimes) sum += (await rt.metrics.registry.getSingleMetric(name)?.get())?.values.find((v) => v.labels.agent === 'slow')?.value ?? 0
  return sum
}

describe('work sent to an actor in a long activation', () => {
  it('costs at most one bounce per process and runs right after the activation ends', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 6000, i: 1 } })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'the first action running')
    await client.sendAction(workflowId, 'slow', 'work', { ms: 10, i: 2 })
    // Well before the 30 s lock TTL.
    const slowDone = async (): Promise<number> =>
      (await client.readEvents(workflowId, '0', 1000)).filter((e) => e.event.type === 'action.completed' && e.event.metadata?.agent === 'slow').length
    await eventually(async () => (await slowDone()) === 2, 10_000, 'the second action, right after the first')
    expect(await total('troupe_lock_contention_total')).toBeLessThanOrEqual(runtimes.length)
  })
})
