// pick_activate.lua, the single-Redis pick that also activates what it picks: each
// picked actor is leased and activated exactly as pick.lua + activate.lua would,
// actors active in the caller are only leased, and junk members touch no keys.
import { afterAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { leaseMs, pickActivate, releaseHintOp, type ProtocolContext } from '../../runtime/claims.ts'
import { execOps, type ScriptOp } from '../../runtime/redis/batch.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 5000 })
const client = TroupeClient.connect(cfg)
const ctx: ProtocolContext = { redis: client.redis, keys: client.keys, cfg }
const k = client.keys
const PREFIX = 'p'.repeat(28)

afterAll(async () => {
  await client.close()
})

async function start(): Promise<string> {
  const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
  return workflowId
}

describe('pick_activate.lua (single Redis)', () => {
  it('leases and activates each due actor in one call, with its own lock value', async () => {
    const a = await start()
    const b = await start()
    await client.sendAction(b, 'counter', 'ping', { i: 2 }, { validate: false })
    const before = Date.now()
    const res = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [])
    const mine = res.picked.filter((p) => p.wf === a || p.wf === b)
    expect(mine.map((p) => p.wf).sort()).toEqual([a, b].sort())
    for (const p of mine) {
      expect(p.lease).toBeGreaterThanOrEqual(before + cfg.lockTtlMs - 1000)
      expect(Number(await client.redis.zscore(k.ready('counter'), p.wf))).toBe(p.lease)
      expect(await client.redis.get(k.lock(p.wf, 'counter'))).toBe(p.lockValue)
      expect(p.lockValue).toMatch(/^p{28}[0-9a-f]{4}$/)
      const act = p.activation
      if (typeof act === 'string' || act instanceof Error || act.code !== 'ok') throw new Error(`not activated: ${JSON.stringify(act)}`)
      expect(act.fence).toBe(1)
      expect(act.batch.length).toBe(p.wf === b ? 2 : 1)
      expect(act.batch.every((c) => c.attempt === 1)).toBe(true)
    }
    expect(new Set(mine.map((p) => p.lockValue)).size).toBe(2)
    // Nothing is due any more: the next call takes nothing and says when to look.
    const again = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [])
    expect(again.picked.filter((p) => p.wf === a || p.wf === b)).toEqual([])
    expect(again.nextDue).not.toBeNull()
  })

  it('only leases an actor active in the caller, and answers busy for one held elsewhere', async () => {
    const here = await start()
    const held = await start()
    await client.redis.set(k.lock(held, 'counter'), 'x'.repeat(32), 'PX', 3000)
    const res = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [here])
    const byWf = new Map(res.picked.map((p) => [p.wf, p]))
    expect(byWf.get(here)?.activation).toBe('local')
    expect(await client.redis.hget(k.actor(here, 'counter'), 'fence')).toBeNull()
    expect(await client.redis.get(k.lock(here, 'counter'))).toBeNull()
    expect(Number(await client.redis.zscore(k.ready('counter'), here))).toBe(byWf.get(here)?.lease)
    const busy = byWf.get(held)?.activation
    if (typeof busy === 'string' || busy instanceof Error || busy?.code !== 'busy') throw new Error(`expected busy, got ${JSON.stringify(busy)}`)
    expect(busy.lockMs).toBeGreaterThan(0)
    expect(await client.redis.get(k.lock(held, 'counter'))).toBe('x'.repeat(32))
    expect(await client.redis.zcard(k.mailbox(held, 'counter'))).toBe(1)
  })

  it('fails only the activation whose actor holds junk, not the others of the pick', async () => {
    const bad = await start()
    const good = await start()
    // Written by hand: HINCRBY on the fence fails inside the activate step.
    await client.redis.hset(k.actor(bad, 'counter'), 'fence', 'not a number')
    const res = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [])
    const byWf = new Map(res.picked.map((p) => [p.wf, p.activation]))
    expect(byWf.get(bad)).toBeInstanceOf(Error)
    const ok = byWf.get(good)
    if (typeof ok === 'string' || ok instanceof Error || ok?.code !== 'ok') throw new Error(`not activated: ${JSON.stringify(ok)}`)
    expect(ok.batch).toHaveLength(1)
  })

  it('reports a junk member without making keys out of it', async () => {
    const junk = 'no}such{id:*'
    await client.redis.zadd(k.ready('counter'), 0, junk)
    const res = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [])
    expect(res.picked.find((p) => p.wf === junk)?.activation).toBe('invalid')
    expect(await client.redis.keys(`${cfg.namespace}*${junk}*`)).toEqual([])
    await client.redis.zrem(k.ready('counter'), junk)
  })

  it('gives every lease a fraction of a millisecond, so a busy push to the end of the lock is never taken for it', async () => {
    const wf = await start()
    const res = await pickActivate(ctx, 'counter', 10, PREFIX, 16, [])
    const p = res.picked.find((x) => x.wf === wf)
    if (!p) throw new Error('not picked')
    // The lock was set in the same millisecond as the lease: its end is the
    // lease's whole millisecond, which is where a process that found it busy
    // pushes the hint (activation.ts, BUSY_RETRY_MS).
    expect(Number.isInteger(p.lease)).toBe(false)
    const lockEnd = Math.trunc(p.lease)
    expect(Math.abs(lockEnd - (Date.now() + Number(await client.redis.pttl(k.lock(wf, 'counter')))))).toBeLessThan(1000)
    await client.redis.zadd(k.ready('counter'), 'XX', lockEnd, wf)
    // The holder goes idle and releases: the hint is not its lease any more, so it
    // is left due for a second look (work may have come in with the push) instead
    // of being deleted. With whole-millisecond leases it was deleted here.
    const [[err, changed] = [null, null]] = await execOps(client.redis, [releaseHintOp(ctx, 'counter', wf, p.lease, null)])
    expect(err).toBeNull()
    expect(Number(changed)).toBe(0)
    const score = await client.redis.zscore(k.ready('counter'), wf)
    expect(score).not.toBeNull()
    expect(Number(score)).toBeLessThanOrEqual(Date.now())
  })

  it('gives two leases of one actor taken in the same millisecond different scores', async () => {
    // Two picks of one actor, with an enqueue making it due again between them,
    // back to back in one pipeline: Redis runs them within microseconds.
    const ready = k.ready('leasing')
    // Each call chooses its lease's fraction, as the worker's pick does.
    const pickOp = (): ScriptOp => ({ script: 'pick', keys: [ready], args: [1, leaseMs(cfg.lockTtlMs)] })
    const due = { cmd: 'zadd', args: [ready, 0, 'wf-leased'] }
    let equal = 0
    for (let i = 0; i < 10; i++) {
      const [, [e1, p1] = [null, null], , [e2, p2] = [null, null]] = await execOps(client.redis, [due, pickOp(), due, pickOp()])
      expect(e1 ?? e2).toBeNull()
      const [w1, l1] = p1 as string[]
      const [w2, l2] = p2 as string[]
      expect([w1, w2]).toEqual(['wf-leased', 'wf-leased'])
      if (Number(l1) === Number(l2)) equal++
    }
    await client.redis.del(ready)
    // Random fractions: two of ten pairs alike is a 1-in-20,000 event; whole
    // milliseconds made nearly every pair alike.
    expect(equal).toBeLessThanOrEqual(1)
  })
})
