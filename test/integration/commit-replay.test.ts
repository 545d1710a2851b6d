// A commit sent twice (ioredis resends a command whose reply a dropped connection
// lost) takes effect once and answers the same both times, instead of being
// rejected as stale and stalling the actor for a lock TTL.
import { afterAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { commit, parseActivation, activateOp, type CommitArgs, type ProtocolContext } from '../../runtime/claims.ts'
import { runScript } from '../../runtime/redis/scripts.ts'
import { nanoid } from 'nanoid'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const client = TroupeClient.connect(cfg)
const ctx: ProtocolContext = { redis: client.redis, keys: client.keys, cfg }
const LOCK = 'r'.repeat(32)

afterAll(async () => {
  await client.close()
})

async function activate(wf: string, batch: number): Promise<ReturnType<typeof parseActivation>> {
  const op = activateOp(ctx, wf, 'counter', LOCK, batch)
  return parseActivation(await runScript(ctx.redis, op.script, op.keys, op.args))
}

function okCommit(wf: string, fence: number, actionId: string, eventBase: string): CommitArgs {
  return {
    wf, agent: 'counter', fence, lockValue: LOCK, snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: false, batch: 1, eventBase,
    results: [{ actionId, outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: 1, events: [], outbox: [] }],
  }
}

async function completedCount(wf: string): Promise<number> {
  return (await client.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.completed').length
}

describe('commit replay', () => {
  it('answers a repeated commit like the first one and applies it once', async () => {
    // No runtime runs here: the test plays the activation itself.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const act = await activate(wf, 1)
    if (act.code !== 'ok') throw new Error(`activation: ${act.code}`)
    const [first] = act.batch
    const args = okCommit(wf, act.fence, first?.actionId ?? '', 'replay.0')

    const once = await commit(ctx, args)
    const twice = await commit(ctx, args)
    expect(once.code).toBe('next')
    expect(twice.code).toBe('next')
    expect(twice.next.map((c) => [c.actionId, c.attempt])).toEqual(once.next.map((c) => [c.actionId, c.attempt]))
    expect(twice.appended).toEqual(once.appended)
    expect(await completedCount(wf)).toBe(1)
    expect((await client.getStatus(wf))?.counts).toMatchObject({ done: 1 })

    // The second action's commit goes idle (lock released); its replay says idle too.
    const second = once.next[0]
    const last = okCommit(wf, act.fence, second?.actionId ?? '', 'replay.1')
    expect((await commit(ctx, last)).code).toBe('idle')
    expect((await commit(ctx, last)).code).toBe('idle')
    expect(await completedCount(wf)).toBe(2)
    expect((await client.getStatus(wf))?.counts).toMatchObject({ done: 2, queued: 0 })

    // A different commit naming actions no longer in flight is still stale.
    await expect(commit(ctx, okCommit(wf, act.fence, second?.actionId ?? '', 'other.0'))).rejects.toMatchObject({ code: 'stale_action' })
  })

  it('cancels the batch the first run claimed when the workflow ended before the resend', async () => {
    // The first run acks and claims the next action (its reply lost); a cancel
    // ends the workflow; the resend answers 'ended', and its caller lets the
    // actor go. Nothing would ever deliver or cancel that claimed action: it
    // stayed 'running' and in flight for good, and the lock held until its TTL.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const act = await activate(wf, 1)
    if (act.code !== 'ok') throw new Error(`activation: ${act.code}`)
    const args = okCommit(wf, act.fence, act.batch[0]?.actionId ?? '', 'ended.0')
    const once = await commit(ctx, args)
    expect(once.code).toBe('next')
    const claimed = once.next[0]?.actionId ?? ''
    await client.cancelWorkflow(wf)
    expect((await commit(ctx, args)).code).toBe('ended')
    expect(JSON.parse((await client.redis.hget(client.keys.actions(wf), `${claimed}:st`)) ?? '{}')).toMatchObject({ status: 'cancelled' })
    expect(await client.redis.hexists(client.keys.actor(wf, 'counter'), 'inflight')).toBe(0)
    expect(await client.redis.exists(client.keys.lock(wf, 'counter'))).toBe(0)
  })

  it('gives a replay the due hints of what the first run sent, a join it completed included', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
    const act = await activate(wf, 1)
    if (act.code !== 'ok') throw new Error(`activation: ${act.code}`)
    const args = okCommit(wf, act.fence, act.batch[0]?.actionId ?? '', 'joined.0')
    const sentId = nanoid()
    const record = JSON.stringify({ id: sentId, workflowId: wf, agent: 'echo', type: 'say', payload: { text: 'x' }, from: 'counter', enqueuedAt: Date.now() })
    // A join of one completes as it is sent: its pre-hint waited for the timeout
    // (ten minutes), so the reply's hint is the only one due now.
    const first = args.results[0]
    if (!first) throw new Error('no result')
    const joined: CommitArgs = { ...args, results: [{ ...first, outbox: [{ to: 'echo', actionId: sentId, record, delayMs: 0, eventId: nanoid(), join: { key: 'k', of: 1, timeoutMs: 600_000 } }] }] }
    const once = await commit(ctx, joined)
    const twice = await commit(ctx, joined)
    expect(once.hints.map((h) => h.agent)).toEqual(['echo'])
    // The replay used to answer with no hints at all: the sent action then waited
    // for its pre-hint, ten minutes away.
    expect(twice.hints.map((h) => h.agent)).toEqual(['echo'])
    expect(twice.hints[0]?.score).toBeLessThanOrEqual(Date.now() + 5_000)
    expect(await client.redis.zcard(client.keys.mailbox(wf, 'echo'))).toBe(1)
  })

  it('hands a pre-hint that failed to the follow-ups, since a held join has no other hint', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
    const act = await activate(wf, 1)
    if (act.code !== 'ok') throw new Error(`activation: ${act.code}`)
    const args = okCommit(wf, act.fence, act.batch[0]?.actionId ?? '', 'held.0')
    const first = args.results[0]
    if (!first) throw new Error('no result')
    const sentId = nanoid()
    const record = JSON.stringify({ id: sentId, workflowId: wf, agent: 'mute', type: 'say', payload: null, from: 'counter', enqueuedAt: Date.now() })
    // Junk in the target's ready key: its pre-hint (ZADD) fails, the commit goes through.
    const ready = client.keys.ready('mute')
    await client.redis.set(ready, 'junk')
    try {
      const res = await commit(ctx, { ...args, results: [{ ...first, outbox: [{ to: 'mute', actionId: sentId, record, delayMs: 0, eventId: nanoid(), join: { key: 'k', of: 2, timeoutMs: 600_000 } }] }] })
      const hint = res.hints.find((h) => h.agent === 'mute')
      expect(hint?.score).toBeGreaterThan(Date.now() + 500_000)
      expect(await client.redis.zcard(client.keys.mailbox(wf, 'mute'))).toBe(1)
    } finally {
      await client.redis.del(ready)
    }
  })
})
