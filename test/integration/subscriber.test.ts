// The shared pub/sub connection: a subscribe resolves only once Redis confirmed
// the channel, also for a second caller while the first SUBSCRIBE is on its way
// (SSE streams and followers replay right after it, and a message published
// before the channel is live would be lost to them); a failed SUBSCRIBE does
// not leave the channel looking subscribed.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { Subscriber } from '../../runtime/subscriber.ts'
import type { RedisClient } from '../../runtime/redis/connection.ts'
import { eventually, rawRedis } from '../helpers/redis.ts'

const redis = rawRedis()
let sub: Subscriber

beforeAll(() => {
  sub = new Subscriber(redis)
})
afterAll(() => {
  sub.close()
  redis.disconnect()
})

const channel = (): string => `subtest:${Math.random().toString(36).slice(2)}`

describe('Subscriber', () => {
  it('lets a second caller go only once the first caller\'s SUBSCRIBE is confirmed', async () => {
    const ch = channel()
    const order: string[] = []
    const got: string[] = []
    const first = sub.subscribe(ch, (m) => got.push(`a:${m}`)).then((u) => (order.push('first'), u))
    const second = sub.subscribe(ch, (m) => got.push(`b:${m}`)).then((u) => (order.push('second'), u))
    const unsubs = await Promise.all([first, second])
    expect(order).toEqual(['first', 'second'])
    expect(await redis.publish(ch, 'x')).toBe(1)
    await eventually(() => Promise.resolve(got.length === 2), 5000, 'both handlers')
    expect(got.sort()).toEqual(['a:x', 'b:x'])
    for (const u of unsubs) await u()
    expect(sub.channels).toBe(0)
  })

  it('subscribes again after a SUBSCRIBE that failed', async () => {
    const ch = channel()
    const conn = (sub as unknown as { conn: RedisClient }).conn
    const spy = vi.spyOn(conn, 'subscribe').mockRejectedValueOnce(new Error('Connection is closed.'))
    await expect(sub.subscribe(ch, () => undefined)).rejects.toThrow(/closed/)
    spy.mockRestore()
    const got: string[] = []
    const unsub = await sub.subscribe(ch, (m) => got.push(m))
    expect(await redis.publish(ch, 'y')).toBe(1)
    await eventually(() => Promise.resolve(got.length === 1), 5000, 'the message')
    await unsub()
  })
})
