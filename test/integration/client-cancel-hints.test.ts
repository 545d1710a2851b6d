// A cancel drops every agent's mailbox, and now the ready hints that only
// waited for those actions too: a delayed action's hint stayed in its agent's
// run queue until its due time, up to ten years, after the workflow ended.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let c: TroupeClient
beforeAll(() => {
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
})

const YEAR_MS = 365 * 24 * 3600_000

describe('cancel and ready hints', () => {
  it('removes the hints of actors nobody holds, far-delayed ones included, and leaves a held actor\'s', async () => {
    // No runtime: every hint stays as the enqueues wrote it.
    const { workflowId: wf } = await c.startWorkflow({ agent: 'first', type: 'go', validate: false })
    await c.sendAction(wf, 'later', 'go', null, { delayMs: YEAR_MS, validate: false })
    await c.sendAction(wf, 'held', 'go', null, { delayMs: YEAR_MS, validate: false })
    // An activation holds 'held': its hint is its holder's to release.
    await c.redis.set(c.keys.lock(wf, 'held'), 'someone', 'PX', 60_000)
    for (const agent of ['first', 'later', 'held']) expect(await c.redis.zscore(c.keys.ready(agent), wf)).not.toBeNull()

    expect((await c.cancelWorkflow(wf)).dropped).toBe(3)
    expect(await c.redis.zscore(c.keys.ready('later'), wf)).toBeNull()
    expect(await c.redis.zscore(c.keys.ready('first'), wf)).toBeNull()
    expect(await c.redis.zscore(c.keys.ready('held'), wf)).not.toBeNull()
  })

  it('leaves the hint of an actor with a batch recorded in flight, for the activation that marks it cancelled', async () => {
    const { workflowId: wf } = await c.startWorkflow({ agent: 'first', type: 'go', validate: false })
    // A dead holder's batch: no lock any more, the ids still in flight.
    await c.redis.hset(c.keys.actor(wf, 'first'), 'inflight', '["x"]')
    await c.cancelWorkflow(wf)
    expect(await c.redis.zscore(c.keys.ready('first'), wf)).not.toBeNull()
  })
})
