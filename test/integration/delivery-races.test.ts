// Interleavings of the delivery protocol found by a review of the core, played
// step by step against real Redis with the protocol's own ops (no runtime runs
// here, so nothing but the test moves an actor or a hint).
import { afterAll, describe, expect, it } from 'vitest'
import { nanoid } from 'nanoid'
import type { Command } from 'ioredis'
import { TroupeClient } from '../../runtime/index.ts'
import {
  activateOp, commit, parseActivation, releaseHintOp, type ActionResult, type CommitArgs, type OutboxEntry, type ProtocolContext,
} from '../../runtime/claims.ts'
import { runScript } from '../../runtime/redis/scripts.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ persistence: false, retentionMs: 60_000 })
const client = TroupeClient.connect(cfg)
const ctx: ProtocolContext = { redis: client.redis, keys: client.keys, cfg }

afterAll(async () => {
  await client.close()
})

async function activate(wf: string, agent: string, lock: string): Promise<ReturnType<typeof parseActivation>> {
  const op = activateOp(ctx, wf, agent, lock, 16)
  return parseActivation(await runScript(ctx.redis, op.script, op.keys, op.args))
}

/** Activates `agent` and acks its one claimed action, with `outbox` as its sends. */
async function runOne(wf: string, agent: string, outbox: OutboxEntry[], eventBase: string): Promise<{ args: CommitArgs; code: string }> {
  const lock = nanoid(32)
  const act = await activate(wf, agent, lock)
  if (act.code !== 'ok' || !act.batch[0]) throw new Error(`activation of ${agent}: ${act.code}`)
  const result: ActionResult = {
    actionId: act.batch[0].actionId, outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: act.batch[0].attempt, events: [], outbox,
  }
  const args: CommitArgs = {
    wf, agent, fence: act.fence, lockValue: lock, snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: false, batch: 1, eventBase, results: [result],
  }
  return { args, code: (await commit(ctx, args)).code }
}

function joinedSend(wf: string, to: string, key: string, of: number, timeoutMs: number): OutboxEntry {
  const actionId = nanoid()
  const record = JSON.stringify({ id: actionId, workflowId: wf, agent: to, type: 'finding', payload: null, eventId: nanoid(), enqueuedAt: Date.now() })
  return { to, actionId, record, delayMs: 0, eventId: nanoid(), join: { key, of, timeoutMs } }
}

describe('delivery races', () => {
  it('answers a resent commit as a replay even after another activation moved the fence, so a join it completed goes at once', async () => {
    // r1 and r2 each send one of a join of two to sink; r2's commit completes it.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'r1', type: 'research', validate: false })
    await client.sendAction(wf, 'r2', 'research', null, { validate: false })
    expect((await runOne(wf, 'r1', [joinedSend(wf, 'sink', 'k', 2, 600_000)], 'r1.0')).code).toBe('idle')
    const r2 = await runOne(wf, 'r2', [joinedSend(wf, 'sink', 'k', 2, 600_000)], 'r2.0')
    expect(r2.code).toBe('idle')
    // Its reply is lost; before ioredis resends it, another process activates r2
    // (a due hint, nothing to do), which moves the fence on.
    expect((await activate(wf, 'r2', nanoid(32))).code).toBe('idle')
    // The resend: it took effect once, so it answers as the first run did, with a
    // hint for sink (the join's members are due now and nobody holds sink). It was
    // refused as stale, and nothing made sink due before the join's deadline.
    const replay = await commit(ctx, r2.args)
    expect(replay.code).toBe('idle')
    expect(replay.hints.map((h) => h.agent)).toEqual(['sink'])
    expect(replay.hints[0]?.score).toBeLessThanOrEqual(Date.now() + 1000)
    expect((await client.getStatus(wf))?.counts).toMatchObject({ done: 2 })
    await client.cancelWorkflow(wf)
  })

  it('keeps the hint of an action held by a join that landed after an idle activation looked at the mailbox', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'src', type: 'go', validate: false })
    await client.sendAction(wf, 'w', 'poke', null, { validate: false })
    const pokeLock = nanoid(32)
    const poke = await activate(wf, 'w', pokeLock)
    if (poke.code !== 'ok') throw new Error(`w: ${poke.code}`)
    // w's poke is done; a later pick of w (say, a second look) leases its hint and finds nothing due.
    await commit(ctx, { wf, agent: 'w', fence: poke.fence, lockValue: pokeLock, snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: true, batch: 1, eventBase: 'w.0',
      results: [{ actionId: poke.batch[0]?.actionId ?? '', outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: 1, events: [], outbox: [] }] })
    const lease = Date.now() + 30_000.25
    await client.redis.zadd(client.keys.ready('w'), lease, wf)
    const idle = await activate(wf, 'w', nanoid(32))
    expect(idle).toMatchObject({ code: 'idle', nextDue: null })
    // Now src sends w one of a join of two: held in w's mailbox until its deadline
    // (ten minutes). Its hint writes (ZADD LT at the deadline) leave the lease, below it, as it is.
    expect((await runOne(wf, 'src', [joinedSend(wf, 'w', 'k', 2, 600_000)], 'src.0')).code).toBe('idle')
    const held = await client.redis.zrange(client.keys.mailbox(wf, 'w'), '0', '-1', 'WITHSCORES')
    expect(held).toHaveLength(2)
    expect(Number(await client.redis.zscore(client.keys.ready('w'), wf))).toBe(lease)
    // w's release, with what its activation saw (nothing due), must not drop the
    // only hint of that held action: it goes to the join's deadline instead.
    const rel = releaseHintOp(ctx, 'w', wf, lease, idle.code === 'idle' ? idle.nextDue : null)
    await runScript(ctx.redis, rel.script, rel.keys, rel.args)
    expect(await client.redis.zscore(client.keys.ready('w'), wf)).toBe(held[1])
    await client.cancelWorkflow(wf)
  })

  it('leaves no deadline entry for a workflow that ended before its start wrote the entry', async () => {
    // The start's deadline entry goes in one round trip after the start script.
    // Hold that write back while the workflow runs to its end, as a busy starter's
    // event loop would: the ending commit's ZREM then comes before the entry.
    const redis = client.redis as unknown as { sendCommand: (c: Command) => unknown }
    const send = redis.sendCommand.bind(redis)
    let held = false
    redis.sendCommand = (c: Command) => {
      if (held || c.name !== 'zadd' || c.args[0] !== client.keys.deadlines()) return send(c)
      held = true
      return (async () => {
        const wf = String(c.args[2])
        const lock = nanoid(32)
        const act = await activate(wf, 'quick', lock)
        if (act.code !== 'ok' || !act.batch[0]) throw new Error(`quick: ${act.code}`)
        const ended = await commit(ctx, {
          wf, agent: 'quick', fence: act.fence, lockValue: lock, snapshot: '', stateValue: '', version: 1, op: 'complete', opPayload: '{}', release: false, batch: 1, eventBase: 'q.0',
          results: [{ actionId: act.batch[0].actionId, outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: 1, events: [], outbox: [] }],
        })
        expect(ended.code).toBe('ended')
        await client.redis.zrem(client.keys.deadlines(), wf)
        return await send(c)
      })()
    }
    try {
      const { workflowId: wf } = await client.startWorkflow({ agent: 'quick', type: 'go', validate: false, deadlineMs: 7 * 24 * 3600_000 })
      expect(held).toBe(true)
      expect((await client.getStatus(wf))?.status).toBe('completed')
      expect(await client.redis.zscore(client.keys.deadlines(), wf)).toBeNull()
    } finally {
      redis.sendCommand = send
    }
  })

  it('makes no actor for a hint left by a start that was refused, so every key of the workflow still expires', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'a', type: 'hello', validate: false })
    // A second start under the same id, for another agent: refused, after its pre-hint for b was written.
    await expect(client.startWorkflow({ workflowId: wf, agent: 'b', type: 'hello', validate: false })).rejects.toMatchObject({ code: 'workflow_exists' })
    expect(await client.redis.zscore(client.keys.ready('b'), wf)).not.toBeNull()
    // b's worker picks that hint: nothing is b's here, and nothing of b is made.
    expect(await activate(wf, 'b', nanoid(32))).toMatchObject({ code: 'idle' })
    expect(await client.redis.exists(client.keys.actor(wf, 'b'))).toBe(0)
    expect(await client.redis.exists(client.keys.lock(wf, 'b'))).toBe(0)
    await client.cancelWorkflow(wf)
    const keys = await client.redis.keys(`${cfg.namespace}*{${wf}}*`)
    expect(keys.length).toBeGreaterThan(0)
    for (const k of keys) expect(await client.redis.pttl(k), k).toBeGreaterThan(0)
    await client.redis.zrem(client.keys.ready('b'), wf)
  })
})
