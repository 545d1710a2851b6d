// The sweep's event counts and the fleet listing at their limits, on workflows
// and services written straight into Redis: a stream with more events in the
// window than one page is counted whole, one past the per-workflow cap is
// reported truncated, a listing past its limit leaves out the longest gone, a
// cleanly stopped service is forgotten before its record expires, and liveness
// is judged by Redis's clock, whatever a host's clock says.
import type { Command, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { startRuntime } from '../../runtime/index.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { LeaderFence } from '../../runtime/supervisor/fence.ts'
import { healthDuty, readFleet, UNANNOUNCED_DEATH_MS } from '../../runtime/supervisor/health.ts'
import { serverNow } from '../../runtime/supervisor/queues.ts'
import { MAX_EVENTS_PER_WORKFLOW, WorkflowSweep } from '../../runtime/supervisor/sweep.ts'
import { counter } from '../fixtures/agents.ts'
import { rawRedis, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const keys = new Keys(cfg.namespace)
let redis: Redis

beforeAll(() => {
  redis = rawRedis()
})
afterAll(async () => {
  await redis?.quit()
})

/** A running workflow whose stream holds `completed` and `failed` action events of `agent`, all just now. */
async function workflow(wf: string, agent: string, completed: number, failed: number): Promise<void> {
  await redis.hset(keys.status(wf), 'status', 'running', 'updatedAt', String(Date.now()), `agent:${agent}`, '')
  for (let i = 0; i < completed + failed; i += 500) {
    const p = redis.pipeline()
    for (let j = i; j < Math.min(i + 500, completed + failed); j++) {
      const type = j < completed ? 'action.completed' : 'action.failed'
      p.xadd(keys.events(wf), '*', 'e', JSON.stringify({ id: `e${j}`, workflowId: wf, type, content: { agent, actionId: `a${j}`, text: 'x'.repeat(200) } }))
    }
    await p.exec()
  }
}

async function sweepAll(): Promise<NonNullable<WorkflowSweep['last']>> {
  const sweep = new WorkflowSweep(redis, keys, { windowMs: 60_000 })
  for (let i = 0; i < 1000 && !(await sweep.step(100, null)); i++);
  if (!sweep.last) throw new Error('sweep did not finish')
  return sweep.last
}

describe('the workflow sweep', () => {
  it('counts every action outcome of a busy stream, page by page, and says when it stopped short', async () => {
    await workflow('sweep-busy', 'scribe', 1234, 7)
    await workflow('sweep-small', 'scribe', 3, 1)
    let fig = await sweepAll()
    expect(fig.completed.scribe).toBe(1237)
    expect(fig.failed.scribe).toBe(8)
    expect(fig.truncated).toBe(false)
    await workflow('sweep-flood', 'flood', MAX_EVENTS_PER_WORKFLOW + 200, 0)
    fig = await sweepAll()
    expect(fig.completed.flood).toBe(MAX_EVENTS_PER_WORKFLOW)
    expect(fig.truncated).toBe(true)
  })
})

describe('the deadline repair', () => {
  it('takes back the entry it restored for a workflow that ended while it looked', async () => {
    // Running with a deadline and no entry (its starter died before writing it):
    // the sweep puts the entry back. The workflow ends between the sweep's read
    // and that write, its ending commit's ZREM coming first.
    const wf = 'sweep-deadline-race'
    await redis.hset(keys.status(wf), 'status', 'running', 'updatedAt', String(Date.now()), 'deadline', String(Date.now() + 7 * 24 * 3600_000))
    await redis.set(keys.leaderTerm(), '9')
    const conn = redis as unknown as { sendCommand: (c: Command) => unknown }
    const send = conn.sendCommand.bind(conn)
    let ended = false
    conn.sendCommand = (c: Command) => {
      if (!ended && c.name === 'evalsha' && c.args.some((a) => String(a) === keys.deadlines())) {
        ended = true
        return redis.hset(keys.status(wf), 'status', 'completed').then(() => redis.zrem(keys.deadlines(), wf)).then(() => send(c))
      }
      return send(c)
    }
    try {
      const sweep = new WorkflowSweep(redis, keys, { windowMs: 60_000 })
      const fence = new LeaderFence(redis, keys, 'sup-test', 9)
      for (let i = 0; i < 1000 && !(await sweep.step(100, fence)); i++);
      expect(ended).toBe(true)
      expect(await redis.zscore(keys.deadlines(), wf)).toBeNull()
    } finally {
      conn.sendCommand = send
      await redis.del(keys.status(wf))
    }
  })
})

describe('the fleet listing', () => {
  it('forgets a cleanly stopped service before its record expires, so it is never reported as an unknown id', async () => {
    const now = Date.now()
    const record = (lastSeen: number, status: string): Record<string, string> => ({ status, lastSeen: String(lastSeen), heartbeatMs: '1000', active: '{}', roles: 'worker' })
    for (const [id, ago, status] of [['stop-old', UNANNOUNCED_DEATH_MS + 60_000, 'stopped'], ['stop-new', 10_000, 'stopped'], ['alive-one', 500, 'alive']] as const) {
      await redis.zadd(keys.services(), now - ago, id)
      await redis.hset(keys.health(id), record(now - ago, status))
    }
    await redis.set(keys.leaderTerm(), '7')
    const fleet = await readFleet(redis, keys, { now })
    const pass = await healthDuty(new LeaderFence(redis, keys, 'sup-test', 7), fleet, { deadAfterMissed: 3, keepDeadMs: 3_600_000 })
    expect(pass.forgotten).toEqual(['stop-old'])
    expect(await redis.zscore(keys.services(), 'stop-old')).toBeNull()
    expect(await redis.zscore(keys.services(), 'stop-new')).not.toBeNull()
    // Its record stays until its own TTL: only the index entry went.
    expect(await redis.hget(keys.health('stop-old'), 'status')).toBe('stopped')
    for (const id of ['stop-old', 'stop-new', 'alive-one']) await redis.del(keys.health(id))
    await redis.zrem(keys.services(), 'stop-new', 'alive-one')
  })

  it('reads the most recently seen services first, so a limit leaves out the longest gone', async () => {
    const now = Date.now()
    for (const [id, ago] of [['svc-old', 3_000_000], ['svc-mid', 60_000], ['svc-new', 1000]] as const) {
      await redis.zadd(keys.services(), now - ago, id)
      await redis.hset(keys.health(id), { status: 'alive', lastSeen: String(now - ago), heartbeatMs: '1000', active: '{}', roles: 'worker' })
    }
    const fleet = await readFleet(redis, keys, { now, limit: 2 })
    expect(fleet.services.map((s) => s.serviceId).sort()).toEqual(['svc-mid', 'svc-new'])
    // What the listing left out is still there to be pruned.
    expect([...fleet.oldest.keys()]).toEqual(['svc-old'])
    expect((await readFleet(redis, keys, { now })).oldest.size).toBe(0)
  })
})

describe('heartbeats', () => {
  it('are stamped with Redis\'s clock, so a host ten minutes ahead is judged alive', async () => {
    // Only Date is faked: this process's clock runs ten minutes ahead, timers run as usual.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 10 * 60_000 })
    try {
      const rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false, heartbeatMs: 200 })
      try {
        const lastSeen = Number(await redis.hget(keys.health(rt.serviceId), 'lastSeen'))
        const now = await serverNow(redis)
        expect(Math.abs(lastSeen - now)).toBeLessThan(5000)
        expect(Math.abs((Number(await redis.zscore(keys.services(), rt.serviceId))) - now)).toBeLessThan(5000)
        const fleet = await readFleet(redis, keys, { now })
        expect(fleet.services.find((s) => s.serviceId === rt.serviceId)?.status).toBe('alive')
      } finally {
        await rt.stop()
      }
    } finally {
      vi.useRealTimers()
    }
  })
})
