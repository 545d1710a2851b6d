// A commit whose reply is lost (its outcome unknown to the runtime) is sent
// again with the same event id base, which commit.lua answers as it answered
// the first run. Given up instead, the next batch that commit claimed waited out
// the lock and was delivered again, each action with attempt 2 (and, had the
// commit not run at all, its batch ran twice).
import { describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { defineAgent, sendToAgent, startRuntime, TroupeClient, type ActionEvent } from '../../runtime/index.ts'
import { activateOp, commit, parseActivation, type ProtocolContext } from '../../runtime/claims.ts'
import { runScript, scriptFor } from '../../runtime/redis/scripts.ts'
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

describe('a resent commit refused because another activation took the actor', () => {
  // Sends one joined action to `sink`: a join of one completes as it is sent,
  // so its only hint due now is the one in the commit's reply.
  const sender = defineAgent({
    name: 'sender',
    machine: setup({ types: { events: {} as ActionEvent<'go'> | ActionEvent<'later'> } }).createMachine({
      on: {
        go: { actions: sendToAgent('sink', 'finding', null, { join: { key: 'k', of: 1, timeoutMs: 600_000 } }) },
        later: {},
      },
    }),
  })

  it('makes the join it may have completed due at once (the hint went with the lost reply)', async () => {
    const proxy = await startReplyCutter(testConfig().redisUrl)
    const own = testConfig({ redisUrl: proxy.url })
    const direct = TroupeClient.connect(testConfig({ namespace: own.namespace }))
    const ctx: ProtocolContext = { redis: direct.redis, keys: direct.keys, cfg: direct.cfg }
    const { workflowId: wf } = await direct.startWorkflow({ agent: 'sender', type: 'go', validate: false })
    // Nobody hosts `sink` here (its hint must stay for the test to read); registered, the send is valid.
    const [secs] = await direct.redis.time()
    await direct.redis.hset(direct.keys.agents(), 'sink', JSON.stringify({ version: 1, actionTypes: ['finding'], actionPatterns: [], updatedAt: Number(secs) * 1000 }))
    const commitSha = scriptFor('commit').sha
    // The first run acks `go`, completes the join and lets the actor go; its reply is lost.
    const cut = proxy.cutReplyOf((args) => args[0]?.toLowerCase() === 'evalsha' && args[1] === commitSha && args.includes(wf))
    const rt = await startRuntime({ agents: [sender], config: own, metricsPort: false, heartbeatMs: 60_000 })
    try {
      await cut
      // Before the runtime's resend (100 ms later): another activation takes the
      // actor and commits, so the marker the resend would match is gone.
      await direct.sendAction(wf, 'sender', 'later', null, { validate: false })
      const op = activateOp(ctx, wf, 'sender', 'x'.repeat(32), 1)
      const act = parseActivation(await runScript(ctx.redis, op.script, op.keys, op.args))
      if (act.code !== 'ok') throw new Error(`activation: ${act.code}`)
      await commit(ctx, {
        wf, agent: 'sender', fence: act.fence, lockValue: 'x'.repeat(32), snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: true, batch: 1, eventBase: 'other.0',
        results: act.batch.map((c) => ({ actionId: c.actionId, outcome: 'ok' as const, error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: c.attempt, events: [], outbox: [] })),
      })
      // The resend is refused; the sink's joined action must not wait for the join's ten minutes.
      const score = await eventually(async () => {
        const [s] = await Promise.all([direct.redis.zscore(direct.keys.ready('sink'), wf)])
        return s !== null && Number(s) <= Date.now() + 1000 ? Number(s) : null
      }, 10_000, "the sink's hint due now")
      expect(score).toBeLessThanOrEqual(Date.now() + 1000)
    } finally {
      await rt.stop()
      await direct.close()
      await proxy.close()
    }
  })
})
