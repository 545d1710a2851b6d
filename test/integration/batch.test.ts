// execOps on a single Redis: a batch of commands and scripts goes out in one
// socket write (what a pipeline does), without ioredis's Pipeline; each op
// answers in order with its own reply or error; a script new to the server is
// loaded in the same write, ahead of its call, and one the server forgot under
// a live connection is sent again; a batch sent before the connection is up
// waits in ioredis's offline queue and completes once it is.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Redis } from 'ioredis'
import { createRedis, closeRedis } from '../../runtime/redis/connection.ts'
import { execOps } from '../../runtime/redis/batch.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { loadScripts } from '../../runtime/redis/scripts.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'
import { startRedis } from '../../scripts/services/redis.ts'

// Its own server: SCRIPT FLUSH on the suite's shared Redis made the batches of
// test files running alongside meet NOSCRIPT, whose fallback runs a script after
// the rest of its batch (an enqueue after its own post-hint), and stranded
// actions in the hint-race test (docs/architecture.md, the batch sender).
const server = await startRedis()
const cfg = testConfig({ redisUrl: server.url })
const keys = new Keys(cfg.namespace)
const redis = createRedis(cfg.redisUrl) as Redis
const admin = rawRedis(server.url)
const k = (name: string): string => `${cfg.namespace}batch:${name}`

beforeAll(async () => {
  await loadScripts(redis)
})
afterAll(async () => {
  await closeRedis(redis)
  admin.disconnect()
  await server.stop()
})

describe('execOps on a single Redis', () => {
  it('answers every op in order, an error in place of its reply, in one socket write', async () => {
    await admin.set(k('str'), 'x')
    const writes: unknown[] = []
    const socket = redis.stream
    const write = socket.write.bind(socket) as (...a: unknown[]) => boolean
    socket.write = ((...a: unknown[]) => {
      writes.push(a[0])
      return write(...a)
    })
    let res
    try {
      res = await execOps(redis, [
        { cmd: 'set', args: [k('a'), 'v'] },
        { cmd: 'hget', args: [k('str'), 'f'] },
        { script: 'extend_hint', keys: [keys.ready('nobody')], args: ['wf1', 123, 456] },
        { cmd: 'get', args: [k('a')] },
      ])
    } finally {
      socket.write = write
    }
    expect(writes).toHaveLength(1)
    expect(res.map(([err]) => err?.message.slice(0, 9) ?? null)).toEqual([null, 'WRONGTYPE', null, null])
    expect(res.map(([, v]) => v)).toEqual(['OK', null, '', 'v'])
  })

  it('sends a script again when the server has forgotten it (NOSCRIPT)', async () => {
    await admin.script('FLUSH')
    await admin.zadd(keys.ready('solo'), 100, 'wf2')
    const [[err, lease] = [null, null], [err2, other] = [null, null]] = await execOps(redis, [
      { script: 'extend_hint', keys: [keys.ready('solo')], args: ['wf2', 100, 5000.5] },
      { cmd: 'set', args: [k('b'), 'w'] },
    ])
    expect(err).toBeNull()
    expect(Number(lease)).toBeGreaterThan(Date.now())
    expect(Number(await admin.zscore(keys.ready('solo'), 'wf2'))).toBe(Number(lease))
    expect([err2, other]).toEqual([null, 'OK'])
  })

  it('keeps a batch in order when the server forgot its scripts under a live connection', async () => {
    // In order: the script moves the lease forward, then the plain ZADD sets the
    // score back. Running the script after the rest of the batch (the old NOSCRIPT
    // fallback) would leave the lease instead.
    const ready = keys.ready('flushed')
    await execOps(redis, [{ script: 'extend_hint', keys: [ready], args: ['none', 1, 1] }])
    await admin.zadd(ready, 100, 'wf3')
    await admin.script('FLUSH')
    const res = await execOps(redis, [
      { script: 'extend_hint', keys: [ready], args: ['wf3', 100, 5000.5] },
      { cmd: 'zadd', args: [ready, 100, 'wf3'] },
    ])
    expect(res.map(([err]) => err)).toEqual([null, null])
    expect(Number(res[0]?.[1])).toBeGreaterThan(Date.now())
    expect(await admin.zscore(ready, 'wf3')).toBe('100')
  })

  it('keeps a batch in order when its script is new to the server, also after a reconnect', async () => {
    // Two picks of one actor with an enqueue between them: in order, both take it.
    const ready = keys.ready('ordered')
    const pickOp = { script: 'pick' as const, keys: [ready], args: [1, 5000.5] }
    const due = { cmd: 'zadd', args: [ready, 0, 'wf-o'] }
    const picks = async (conn: Redis): Promise<unknown[]> => {
      const res = await execOps(conn, [due, pickOp, due, pickOp])
      return [res[1]?.[1], res[3]?.[1]].map((r) => (r as unknown[])[0])
    }
    const conn = createRedis(cfg.redisUrl) as Redis
    try {
      await admin.script('FLUSH')
      expect(await picks(conn)).toEqual(['wf-o', 'wf-o'])
      // A restarted server has forgotten every script; its clients reconnect.
      await admin.script('FLUSH')
      const id = String(await conn.client('ID'))
      const closed = new Promise((r) => conn.once('close', r))
      await admin.client('KILL', 'ID', id)
      // (A batch sent before the client sees the close is resent as it was, and meets NOSCRIPT.)
      await closed
      await eventually(() => Promise.resolve(conn.status === 'ready'), 5000, 'reconnected')
      expect(await picks(conn)).toEqual(['wf-o', 'wf-o'])
    } finally {
      await closeRedis(conn)
      await admin.del(ready)
    }
  })

  it('sends a batch with binary arguments as corked writes, in order', async () => {
    const bin = Buffer.from([0x78, 0x79, 0x7a]) as unknown as string // execOps' type says strings; ioredis takes Buffers too
    const res = await execOps(redis, [{ cmd: 'set', args: [k('bin'), bin] }, { cmd: 'get', args: [k('bin')] }, { cmd: 'strlen', args: [k('bin')] }])
    expect(res).toEqual([[null, 'OK'], [null, 'xyz'], [null, 3]])
  })

  it('fails the unanswered rest of a batch cut off by a dropped connection instead of resending it', async () => {
    const conn = createRedis(cfg.redisUrl) as Redis
    try {
      const id = Number(await conn.client('ID'))
      const pending = execOps(conn, [
        { cmd: 'incr', args: [k('first')] },
        { cmd: 'blpop', args: [k('never'), 10] },
        { cmd: 'incr', args: [k('after')] },
      ])
      // Kill the connection while BLPOP holds it: INCR first has answered, the rest has not.
      await new Promise((r) => setTimeout(r, 200))
      await admin.client('KILL', 'ID', String(id))
      const res = await pending
      expect(res[0]).toEqual([null, 1])
      expect(res[1]?.[0]?.name).toBe('AbortError')
      expect(res[2]?.[0]?.name).toBe('AbortError')
      await admin.rpush(k('never'), 'x')
      await new Promise((r) => setTimeout(r, 200))
      expect(await admin.get(k('after'))).toBeNull()
      expect(await admin.lrange(k('never'), 0, -1)).toEqual(['x'])
    } finally {
      await closeRedis(conn)
    }
  })

  it('holds a batch sent before the connection is up and completes it, in order, once it is', async () => {
    const fresh = createRedis(cfg.redisUrl) as Redis
    try {
      expect(fresh.status).not.toBe('ready')
      const res = await execOps(fresh, [
        { cmd: 'rpush', args: [k('list'), 'one'] },
        { cmd: 'rpush', args: [k('list'), 'two'] },
        { cmd: 'lrange', args: [k('list'), 0, -1] },
      ])
      expect(res).toEqual([[null, 1], [null, 2], [null, ['one', 'two']]])
      // Replies stay in step with their commands afterwards.
      expect(await fresh.get(k('a'))).toBe('v')
      expect(await execOps(fresh, [{ cmd: 'llen', args: [k('list')] }, { cmd: 'get', args: [k('b')] }])).toEqual([[null, 2], [null, 'w']])
    } finally {
      await closeRedis(fresh)
    }
  })
})
