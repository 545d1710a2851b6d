// settle.lua, the single-Redis follow-up that rides in the commit's pipeline: it
// appends the persistence pointer and releases the actor's ready hint only when
// the commit took effect and let the lock go, and it never hides work: a hint
// someone rewrote during the activation is left due, and a commit that did not
// take effect leaves everything to the caller.
import { afterAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { activateOp, commit, parseActivation, releaseHintOp, type CommitArgs, type ProtocolContext } from '../../runtime/claims.ts'
import { runScript } from '../../runtime/redis/scripts.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ persistence: true })
const client = TroupeClient.connect(cfg)
const ctx: ProtocolContext = { redis: client.redis, keys: client.keys, cfg }
const LOCK = 's'.repeat(32)
const k = client.keys

afterAll(async () => {
  await client.close()
})

/** Plays a worker: leases the hint far ahead (as a pick does), then activates. */
async function leaseAndActivate(wf: string, batch: number): Promise<{ lease: number; act: ReturnType<typeof parseActivation> }> {
  const lease = Date.now() + 60_000
  await client.redis.zadd(k.ready('counter'), lease, wf)
  const op = activateOp(ctx, wf, 'counter', LOCK, batch)
  return { lease, act: parseActivation(await runScript(ctx.redis, op.script, op.keys, op.args)) }
}

function ok(wf: string, fence: number, actionId: string, eventBase: string, lease: number): CommitArgs {
  return {
    wf, agent: 'counter', fence, lockValue: LOCK, snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: false, batch: 1, eventBase,
    results: [{ actionId, outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: 1, events: [], outbox: [] }],
    settle: { lease, rerunLease: null },
  }
}

async function pointers(wf: string): Promise<{ from: string; to: string }[]> {
  const entries = await client.redis.xrange(k.persistence(), '-', '+')
  const out: { from: string; to: string }[] = []
  for (const [, f] of entries) {
    const m = new Map<string, string>()
    for (let i = 0; i + 1 < f.length; i += 2) m.set(f[i] as string, f[i + 1] as string)
    if (m.get('wf') === wf) out.push({ from: m.get('from') ?? '', to: m.get('to') ?? '' })
  }
  return out
}

async function start(): Promise<string> {
  const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
  return workflowId
}

describe('settle.lua after a commit (single Redis)', () => {
  it('writes the pointer and keeps the hint while the next batch is held, then releases it', async () => {
    const wf = await start()
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const before = (await pointers(wf)).length
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    const first = await commit(ctx, ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease))
    expect(first.code).toBe('next')
    expect(first.settled).toEqual({ state: 'held' })
    expect(await client.redis.zscore(k.ready('counter'), wf)).toBe(String(lease))
    const second = await commit(ctx, ok(wf, act.fence, first.next[0]?.actionId ?? '', 'st.1', lease))
    expect(second.code).toBe('idle')
    expect(second.settled).toEqual({ state: 'released', released: true })
    expect(await client.redis.zscore(k.ready('counter'), wf)).toBeNull()
    // One pointer per commit, exactly the stream ids each commit appended.
    const mine = (await pointers(wf)).slice(before)
    expect(mine).toEqual([
      { from: first.appended.first, to: first.appended.last },
      { from: second.appended.first, to: second.appended.last },
    ])
  })

  it('leaves a hint rewritten during the activation due for a second look', async () => {
    const wf = await start()
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    // An enqueue (or a process that bounced off the lock) wrote the hint meanwhile.
    await client.redis.zadd(k.ready('counter'), lease + 5_000, wf)
    const res = await commit(ctx, ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease))
    expect(res.settled).toEqual({ state: 'released', released: false })
    expect(Number(await client.redis.zscore(k.ready('counter'), wf))).toBeLessThanOrEqual(Date.now())
  })

  it('does nothing when the commit did not take effect, even after an earlier commit of the actor', async () => {
    const wf = await start()
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    const first = await commit(ctx, ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease))
    expect(first.settled).toEqual({ state: 'held' })
    const before = (await pointers(wf)).length
    // A stale fence: the marker left by the first commit names another commit.
    const second = first.next[0]?.actionId ?? ''
    await expect(commit(ctx, ok(wf, act.fence + 1, second, 'st.1', lease))).rejects.toMatchObject({ code: 'fence_rejected' })
    expect((await pointers(wf)).length).toBe(before)
    expect(await client.redis.zscore(k.ready('counter'), wf)).toBe(String(lease))
    // The real commit afterwards settles as usual.
    const res = await commit(ctx, ok(wf, act.fence, second, 'st.2', lease))
    expect(res.settled).toEqual({ state: 'released', released: true })
    expect((await pointers(wf)).length).toBe(before + 1)
  })

  it('keeps a batch claimed before the lock ran out due when the commit is replayed', async () => {
    // The commit claims a next batch and settle.lua sees it; the replies are lost with
    // the connection, our lock runs out meanwhile, and ioredis resends the pipeline.
    const wf = await start()
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    const args = ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease)
    const first = await commit(ctx, args)
    expect(first.code).toBe('next')
    const claimed = first.next[0]?.actionId
    const before = (await pointers(wf)).length
    await client.redis.del(k.lock(wf, 'counter'))
    const replay = await commit(ctx, args)
    // Nobody holds the actor and the batch is in flight: the caller must not release.
    expect(replay.settled).toEqual({ state: 'held' })
    expect(replay.code).toBe('idle')
    expect(replay.nextDue).not.toBeNull()
    expect(replay.nextDue as number).toBeLessThanOrEqual(Date.now())
    // The replayed settle.lua appends the pointer again (the persister writes
    // idempotently); the activation adds no third one for this commit.
    expect((await pointers(wf)).length).toBe(before + 1)
    // What the activation does with that answer: release_hint moves our lease to "due now".
    const rel = releaseHintOp(ctx, 'counter', wf, lease, replay.nextDue)
    await runScript(ctx.redis, rel.script, rel.keys, rel.args)
    expect(Number(await client.redis.zscore(k.ready('counter'), wf))).toBeLessThanOrEqual(Date.now())
    // ...so the next activation redelivers it.
    const again = await leaseAndActivate(wf, 1)
    expect(again.act.code).toBe('ok')
    if (again.act.code !== 'ok') return
    expect(again.act.redelivered).toBe(true)
    expect(again.act.batch.map((c) => [c.actionId, c.attempt])).toEqual([[claimed, 2]])
  })

  it('moves the hint to the due time of a retry instead of dropping it', async () => {
    const wf = await start()
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    const args = ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease)
    const retry = { ...(args.results[0] as CommitArgs['results'][number]), outcome: 'retry' as const, error: 'try later', retryDelayMs: 30_000 }
    const res = await commit(ctx, { ...args, results: [retry] })
    expect(res.code).toBe('idle')
    expect(res.nextDue).toBeGreaterThan(Date.now() + 20_000)
    expect(res.settled).toEqual({ state: 'released', released: true })
    expect(Number(await client.redis.zscore(k.ready('counter'), wf))).toBe(res.nextDue)
  })

  it('drops the hint when the commit ends the workflow', async () => {
    const wf = await start()
    await client.sendAction(wf, 'counter', 'ping', { i: 2 }, { validate: false })
    const { lease, act } = await leaseAndActivate(wf, 1)
    if (act.code !== 'ok') throw new Error(act.code)
    const res = await commit(ctx, { ...ok(wf, act.fence, act.batch[0]?.actionId ?? '', 'st.0', lease), op: 'complete', opPayload: '{"result":null}' })
    expect(res.code).toBe('ended')
    expect(res.settled).toEqual({ state: 'released', released: true })
    expect(await client.redis.zscore(k.ready('counter'), wf)).toBeNull()
    expect((await client.getStatus(wf))?.status).toBe('completed')
  })
})
