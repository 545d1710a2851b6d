// The leader fence against real Redis (a stale term cannot write, mark or claim),
// and the supervisor machine's lifecycle with fake ports.
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createActor, waitFor } from 'xstate'
import { createSupervisorMachine, type Leadership, type StepDownReason, type SupervisorPorts } from '../../agents/supervisor.ts'
import { createRedis, type RedisClient } from '../../runtime/redis/connection.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { LeaderDeposedError, LeaderFence, runSupervisorScript } from '../../runtime/supervisor/fence.ts'
import { rawRedis, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const keys = new Keys(cfg.namespace)
let redis: RedisClient
let raw: Redis

beforeAll(() => {
  redis = createRedis(cfg.redisUrl)
  raw = rawRedis()
})
afterAll(async () => {
  await redis?.quit()
  await raw?.quit()
})

describe('leader fence', () => {
  it('writes a command with more members than a script can unpack, as several of the same effect', async () => {
    await raw.set(keys.leaderTerm(), '9')
    const fence = new LeaderFence(redis, keys, 'big', 9)
    const key = keys.services()
    // A fleet of short-lived workers leaves this many ids to forget at once.
    const ids = Array.from({ length: 12_000 }, (_, i) => `svc-${i}`)
    await fence.write([{ cmd: 'ZADD', key, args: ids.flatMap((id, i) => [i, id]) }])
    expect(await raw.zcard(key)).toBe(12_000)
    await fence.write([{ cmd: 'ZREM', key, args: ids.slice(0, 11_000) }])
    expect(await raw.zrange(key, '0', '-1')).toEqual(ids.slice(11_000))
    const h = keys.systemMetrics('wide')
    await fence.write([{ cmd: 'HSET', key: h, args: ids.flatMap((id) => [id, '1']) }, { cmd: 'HDEL', key: h, args: ids.slice(1) }])
    expect(await raw.hgetall(h)).toEqual({ 'svc-0': '1' })
    await raw.del(key, h)
  })

  it('refuses every write of a term that is over', async () => {
    await raw.set(keys.leaderTerm(), '7')
    const stale = new LeaderFence(redis, keys, 'old', 6)
    const current = new LeaderFence(redis, keys, 'new', 7)
    const key = keys.systemMetrics('fence-test')
    await expect(stale.write([{ cmd: 'HSET', key, args: ['by', 'old'] }])).rejects.toBeInstanceOf(LeaderDeposedError)
    await current.write([{ cmd: 'HSET', key, args: ['by', 'new'] }, { cmd: 'PEXPIRE', key, args: [60_000] }])
    expect(await raw.hget(key, 'by')).toBe('new')

    await raw.zadd(keys.deadlines(), Date.now() - 1000, 'wf-due', Date.now() + 60_000, 'wf-later')
    await expect(stale.claimDeadlines(10, 5000)).rejects.toBeInstanceOf(LeaderDeposedError)
    const claimed = await current.claimDeadlines(10, 5000)
    expect(claimed.map((c) => c.wf)).toEqual(['wf-due'])
    // Claimed entries are leased, not removed: a leader dying now loses nothing.
    expect(Number(await raw.zscore(keys.deadlines(), 'wf-due'))).toBeGreaterThan(Date.now() + 3000)
    expect(await current.claimDeadlines(10, 5000)).toEqual([])

    await raw.hset(keys.health('svc'), { status: 'alive', lastSeen: '1000', roles: 'worker' })
    await expect(stale.markDead('svc', '1000', 60_000, 3)).rejects.toBeInstanceOf(LeaderDeposedError)
    // A heartbeat since the leader looked: left alone.
    expect(await current.markDead('svc', '999', 60_000, 3)).toBe(false)
    expect(await current.markDead('svc', '1000', 60_000, 3)).toBe(true)
    expect(await current.markDead('svc', '1000', 60_000, 3)).toBe(false)
    expect(await raw.hget(keys.health('svc'), 'status')).toBe('dead')
    expect(await raw.pttl(keys.health('svc'))).toBeGreaterThan(50_000)
  })

  it('only runs the commands it allows', async () => {
    await raw.set(keys.leaderTerm(), '1')
    // A write outside the list, on a key of this test's own: should the guard let it
    // through, the key appears and nothing the parallel test files hold is touched.
    const sentinel = keys.systemMetrics('fence-badop')
    await expect(runSupervisorScript(redis, 'fenced', [keys.leaderTerm(), sentinel], ['1', JSON.stringify([['SET', 2, 'written']])])).rejects.toThrow(/TROUPE_BADOP/)
    expect(await raw.exists(sentinel)).toBe(0)
    // A write without a key is refused before anything is written, too.
    await expect(runSupervisorScript(redis, 'fenced', [keys.leaderTerm(), sentinel], ['1', JSON.stringify([['HSET', 2, 'f', 'v'], ['DEL', 9]])])).rejects.toThrow(/TROUPE_BADOP DEL without a key/)
    expect(await raw.exists(sentinel)).toBe(0)
    // Refused as a whole: an allowed write ahead of the refused one is not applied either.
    await expect(runSupervisorScript(redis, 'fenced', [keys.leaderTerm(), sentinel], ['1', JSON.stringify([['HSET', 2, 'f', 'v'], ['SET', 2, 'written']])])).rejects.toThrow(/TROUPE_BADOP/)
    expect(await raw.exists(sentinel)).toBe(0)
  })
})

describe('supervisor machine', () => {
  function fakePorts(): SupervisorPorts & { log: string[]; tickFails: boolean; grant: boolean } {
    let term = 0
    const ports = {
      log: [] as string[],
      tickFails: false,
      grant: true,
      elect: () => {
        if (!ports.grant) return Promise.resolve(null)
        term++
        ports.log.push(`elected ${term}`)
        return Promise.resolve({ term } as unknown as Leadership)
      },
      renew: () => Promise.resolve(),
      tick: (l: Leadership) => {
        ports.log.push(`tick ${l.term}`)
        return ports.tickFails ? Promise.reject(new LeaderDeposedError(l.term, 'test')) : Promise.resolve()
      },
      resign: (l: Leadership | null, reason: StepDownReason) => {
        ports.log.push(`resign ${l?.term ?? 0} ${reason}`)
        return Promise.resolve()
      },
    }
    return ports
  }

  it('steps down when deposed, stands by, leads again, and stops cleanly', async () => {
    const ports = fakePorts()
    const actor = createActor(createSupervisorMachine(ports, { retryMs: 20, renewMs: 30, tickMs: 20 })).start()
    await waitFor(actor, (s) => s.matches('leading'), { timeout: 2000 })
    await new Promise((r) => setTimeout(r, 100))
    ports.grant = false
    ports.tickFails = true
    await waitFor(actor, (s) => s.matches('standby'), { timeout: 2000 })
    ports.tickFails = false
    ports.grant = true
    await waitFor(actor, (s) => s.matches('leading') && s.context.leadership?.term === 2, { timeout: 2000 })
    actor.send({ type: 'STOP' })
    await waitFor(actor, (s) => s.status === 'done', { timeout: 2000 })
    expect(ports.log.filter((l) => !l.startsWith('tick'))).toEqual(['elected 1', 'resign 1 deposed', 'elected 2', 'resign 2 stopping'])
    expect(ports.log.filter((l) => l === 'tick 1').length).toBeGreaterThan(2)
  })
})
