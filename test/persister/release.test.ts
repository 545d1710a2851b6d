// A persister that stays alive but cannot write hands its batch back instead of
// holding it for good, and an entry handed back in good order is not counted as a
// delivery that failed: the machine with fake ports (pure logic), and the queue's
// release against real Redis. And an entry that keeps killing its persisters is
// taken alone once suspect, so that it alone is parked.
import { afterAll, describe, expect, it } from 'vitest'
import { createActor, waitFor } from 'xstate'
import { createPersisterMachine, RELEASE_AFTER_FAILURES, type HeldBatch, type PersisterPorts } from '../../agents/persister.ts'
import { TroupeClient } from '../../runtime/index.ts'
import { ALONE_ABOVE_DELIVERIES, GROUP, PersistenceQueue } from '../../runtime/persister/queue.ts'
import { testConfig } from '../helpers/redis.ts'

describe('the persister machine', () => {
  it('hands a batch back after failing to write it several times in a row, then connects again', async () => {
    const batch: HeldBatch = { deliveries: [{ id: '1-0', fields: ['wf', 'w', 'from', '1-0', 'to', '1-0'] }], parked: [], asked: 10 }
    const calls: string[] = []
    let reads = 0
    const released: HeldBatch[] = []
    const ports: PersisterPorts = {
      connect: () => {
        calls.push('connect')
        return Promise.resolve()
      },
      prepare: () => {
        calls.push('prepare')
        return Promise.resolve()
      },
      read: async () => {
        calls.push('read')
        reads++
        // The batch once, then nothing (a brief block).
        if (reads === 1) return batch
        await new Promise((r) => setTimeout(r, 5))
        return { deliveries: [], parked: [], asked: 10 }
      },
      write: () => {
        calls.push('write')
        return Promise.reject(new Error('Neo.ClientError.Security.Unauthorized'))
      },
      release: (b) => {
        calls.push('release')
        released.push(b)
        return Promise.resolve()
      },
      reconcile: () => Promise.resolve(),
    }
    const actor = createActor(createPersisterMachine(ports, { backoffMinMs: 1, backoffMaxMs: 2, reconcileMs: 0 })).start()
    try {
      await waitFor(actor, () => released.length === 1 && calls.filter((c) => c === 'connect').length >= 2, { timeout: 10_000 })
      expect(released[0]).toBe(batch)
      const firstRelease = calls.indexOf('release')
      // Exactly RELEASE_AFTER_FAILURES writes of that batch, then the release, then a fresh connect.
      expect(calls.slice(0, firstRelease).filter((c) => c === 'write')).toHaveLength(RELEASE_AFTER_FAILURES)
      expect(calls[firstRelease + 1]).toBe('connect')
      expect(actor.getSnapshot().context.batch).toBeNull()
    } finally {
      actor.stop()
    }
  })
})

describe('the persistence queue', () => {
  const cfg = testConfig()
  const client = TroupeClient.connect(cfg)
  afterAll(async () => {
    await client.close()
  })

  it('hands entries back with their delivery count reset, for the next claim to take at once', async () => {
    const redis = client.redis
    const a = new PersistenceQueue(redis, redis, client.keys, 'consumer-a', 100)
    const b = new PersistenceQueue(redis, redis, client.keys, 'consumer-b', 100)
    await a.ensureGroup()
    const id = await redis.xadd(a.key, '*', 'wf', 'w', 'from', '1-0', 'to', '1-0')
    expect(await a.read(10, 10)).toHaveLength(1)
    // Claimed back and forth (persisters restarting during an outage): each claim counts.
    for (let i = 0; i < 3; i++) {
      await a.release([String(id)], 3_600_000)
      const got = await (i % 2 === 0 ? b : a).claim(1000, 10)
      expect(got.map((c) => [c.entry.id, c.deliveries])).toEqual([[id, 1]])
    }
    const pending = (await redis.xpending(a.key, GROUP, '-', '+', 10)) as [string, string, number, number][]
    expect(pending.map((p) => [p[0], p[3]])).toEqual([[id, 1]])
    // Never parked as "delivered too often" however often it was handed back.
    for (let i = 0; i < 12; i++) {
      await b.release([String(id)], 3_600_000)
      const c = await b.claimBatch(1000, 10, 10)
      expect(c.parked).toEqual([])
      expect(c.deliveries.map((d) => d.id)).toEqual([id])
    }
  })

  it('takes an entry that keeps killing its persisters alone, so that only it is parked', async () => {
    // A namespace of its own: the test above leaves an entry pending.
    const own = TroupeClient.connect(testConfig())
    try {
      const redis = own.redis
      const queue = (name: string): PersistenceQueue => new PersistenceQueue(redis, redis, own.keys, name, 100)
      const first = queue('life-0')
      await first.ensureGroup()
      const ids: string[] = []
      for (let i = 0; i < 20; i++) ids.push(String(await redis.xadd(first.key, '*', 'wf', 'w', 'from', `${i + 1}-0`, 'to', `${i + 1}-0`)))
      const culprit = ids[7] as string
      expect(await first.read(100, 10)).toHaveLength(20)
      // Each life claims what the dead ones left (idle for 0 ms or more: they are
      // all dead), writes and acks its batch, or dies holding it when the culprit is in it.
      const parked: string[] = []
      const written: string[] = []
      let sizes: number[] = []
      for (let life = 1; life < 200 && parked.length + written.length < ids.length; life++) {
        const q = queue(`life-${life}`)
        const batch = await q.claimBatch(0, 100, 10)
        sizes.push(batch.deliveries.length)
        if (batch.deliveries.some((d) => d.id === culprit)) continue
        await q.ack([...batch.deliveries.map((d) => d.id), ...batch.parked.map((p) => p.entryId)], batch.parked, Date.now())
        written.push(...batch.deliveries.map((d) => d.id))
        parked.push(...batch.parked.map((p) => p.entryId))
      }
      expect(parked).toEqual([culprit])
      expect(written.sort()).toEqual(ids.filter((id) => id !== culprit).sort())
      // The whole batch while it had been delivered at most ALONE_ABOVE_DELIVERIES times, then one at a time.
      expect(sizes.slice(0, ALONE_ABOVE_DELIVERIES - 1)).toEqual(Array.from({ length: ALONE_ABOVE_DELIVERIES - 1 }, () => 20))
      expect(Math.max(...sizes.slice(ALONE_ABOVE_DELIVERIES - 1))).toBe(1)
      const record = (await redis.xrange(first.parkedKey, '-', '+')) as [string, string[]][]
      expect(record.map(([, f]) => f[f.indexOf('reason') + 1])).toEqual(['too_many_deliveries'])
      expect(Number(await redis.xlen(first.key))).toBe(0)

      // The same under one name restarted again and again (a fixed serviceId): its own pending entries.
      sizes = []
      const fixed = queue('fixed')
      for (let i = 0; i < 3; i++) await redis.xadd(first.key, '*', 'wf', 'w', 'from', '1-0', 'to', '1-0')
      expect(await fixed.read(100, 10)).toHaveLength(3)
      for (let life = 0; life < 3; life++) sizes.push((await fixed.claimBatch(0, 100, 10, true)).deliveries.length)
      expect(sizes).toEqual([3, 3, 1])
    } finally {
      const keys = await own.redis.keys(`${own.cfg.namespace}*`)
      if (keys.length > 0) await own.redis.del(...keys)
      await own.close()
    }
  })
})
