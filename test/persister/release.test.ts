// A persister that stays alive but cannot write hands its batch back instead of
// holding it for good, and an entry handed back in good order is not counted as a
// delivery that failed: the machine with fake ports (pure logic), and the queue's
// release against real Redis.
import { afterAll, describe, expect, it } from 'vitest'
import { createActor, waitFor } from 'xstate'
import { createPersisterMachine, RELEASE_AFTER_FAILURES, type HeldBatch, type PersisterPorts } from '../../agents/persister.ts'
import { TroupeClient } from '../../runtime/index.ts'
import { GROUP, PersistenceQueue } from '../../runtime/persister/queue.ts'
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
})
