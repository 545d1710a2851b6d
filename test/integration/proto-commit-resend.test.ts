// A commit whose reply is lost (its outcome unknown to the runtime) is sent
// again with the same event id base, which commit.lua answers as it answered
// the first run. Given up instead, the next batch that commit claimed waited out
// the lock and was delivered again, each action with attempt 2 (and, had the
// commit not run at all, its batch ran twice).
import { describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient } from '../../runtime/index.ts'
import { scriptFor } from '../../runtime/redis/scripts.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { startReplyCutter } from '../helpers/reply-cutter.ts'

describe('a commit whose reply is lost', () => {
  it('is sent again and answered as it ran, so the batch it claimed is not redelivered', async () => {
    const proxy = await startReplyCutter(testConfig().redisUrl)
    const own = testConfig({ redisUrl: proxy.url })
    const direct = TroupeClient.connect(testConfig({ namespace: own.namespace }))
    // Twenty pings queued before any runtime: the first claim takes 16, and their
    // commit claims the other 4 as the next batch.
    const { workflowId: wf } = await direct.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 0 }, validate: false })
    for (let i = 1; i < 20; i++) await direct.sendAction(wf, 'counter', 'ping', { i }, { validate: false })
    const commitSha = scriptFor('commit').sha
    // The first commit runs (acks 16, claims 4), then the connection drops before its reply.
    const cut = proxy.cutReplyOf((args) => args[0]?.toLowerCase() === 'evalsha' && args[1] === commitSha && args.includes(wf))
    const rt = await startRuntime({ agents: [counter], config: own, metricsPort: false, heartbeatMs: 60_000 })
    try {
      await cut
      await eventually(async () => (await direct.getStatus(wf))?.counts.done === 20, 15_000, 'all twenty pings done')
      const events = await direct.readEvents(wf, '0', 1000)
      expect(events.filter((e) => e.event.type === 'action.redelivered')).toEqual([])
      const attempts = events.filter((e) => e.event.type === 'action.completed').map((e) => e.event.metadata?.attempt)
      expect(attempts).toEqual(Array.from({ length: 20 }, () => 1))
    } finally {
      await rt.stop()
      await direct.close()
      await proxy.close()
    }
  })
})
