// The owner index (what GET /v1/workflows and the web UI list from) keeps a
// workflow while it lives, however old: it dropped every entry created more than
// the retention ago, so a workflow waiting eight days for a human vanished from
// its owner's list. Entries whose workflow expired still go.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

// Persistence off: a cancel puts the (short) retention TTL on the workflow's keys.
const cfg = testConfig({ persistence: false, retentionMs: 1000 })
let c: TroupeClient
beforeAll(() => {
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
})

describe('owner index', () => {
  it('keeps a running workflow past the retention and drops an expired one', async () => {
    const index = c.keys.byOwner('alice')
    // No runtime: the first action stays queued and the workflow running.
    const running = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'alice', validate: false })
    const ended = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'alice', validate: false })
    await c.cancelWorkflow(ended.workflowId)
    await eventually(async () => (await c.redis.exists(c.keys.status(ended.workflowId))) === 0, 10_000, 'the cancelled workflow to expire')
    // Both were created more than the retention ago by the next start's clock.
    await eventually(async () => Date.now() - Number(await c.redis.zscore(index, running.workflowId)) > cfg.retentionMs + 50, 5000, 'the retention to pass')
    const next = await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'alice', validate: false })
    expect(await c.redis.pttl(c.keys.status(running.workflowId))).toBe(-1)
    expect((await c.redis.zrange(index, '0', '-1')).sort()).toEqual([running.workflowId, next.workflowId].sort())
    // The index itself never gets a TTL.
    expect(await c.redis.pttl(index)).toBe(-1)
  })
})
