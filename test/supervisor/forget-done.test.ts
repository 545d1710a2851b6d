// The leader forgets the records of finished actions of workflows that never
// end (sweep_done.lua, with the persister's forget_done.lua as its rule): only
// `done` records finished over the hour ago whose `action.completed` the stream
// no longer holds, only in live workflows, only under a current term, a bounded
// page at a time. The persister's trim removed them only as it trimmed their
// completion: with persistence off, or a stream turned over faster than the
// hour, they stayed for good.
import type { Redis } from 'ioredis'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { supervisorService } from '../../agents/supervisor.ts'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import type { Logger } from '../../runtime/log.ts'
import { FORGET_DONE_AFTER_MS } from '../../runtime/persister/trim.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { LeaderDuties, type TickReport } from '../../runtime/supervisor/duties.ts'
import { LeaderDeposedError, LeaderFence } from '../../runtime/supervisor/fence.ts'
import { SupervisorMetrics } from '../../runtime/supervisor/metrics.ts'
import { resolveSupervisorOptions } from '../../runtime/supervisor/options.ts'
import { FORGET_AFTER_MS, WorkflowSweep, type SweepOptions } from '../../runtime/supervisor/sweep.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

const HOUR = 3600_000
let redis: Redis

beforeAll(() => {
  redis = rawRedis()
})
afterAll(async () => {
  await redis?.quit()
})

/** Steps a leader's pass forgetting records until it completes; returns the sweep and the steps taken. */
async function forgetPass(keys: Keys, term: number, opts: SweepOptions = {}, sweep = new WorkflowSweep(redis, keys, opts)): Promise<{ sweep: WorkflowSweep; steps: number }> {
  const fence = new LeaderFence(redis, keys, 'sup-test', term)
  const before = sweep.lastForget
  let steps = 0
  while (sweep.lastForget === before) {
    if (++steps > 1000) throw new Error('the pass did not finish')
    await sweep.forget(fence)
  }
  return { sweep, steps }
}

/** A record and its state, written as the runtime's scripts write them. */
function record(wf: string, id: string, st: Record<string, unknown>): [string, string, string, string] {
  return [id, JSON.stringify({ id, workflowId: wf, agent: 'counter', type: 'ping', payload: null }), `${id}:st`, JSON.stringify(st)]
}

function completion(wf: string, id: string): string {
  return JSON.stringify({ id: `${wf}-${id}-done`, workflowId: wf, type: 'action.completed', content: { actionId: id, agent: 'counter' }, metadata: { agent: 'counter', actionId: id } })
}

/** Ids of the actions whose `action.completed` the stream holds. */
async function completedInStream(keys: Keys, wf: string): Promise<Set<string>> {
  const entries = (await redis.xrange(keys.events(wf), '-', '+')) as [string, string[]][]
  const out = new Set<string>()
  for (const [, fields] of entries) {
    const ev = JSON.parse(fields[1] as string) as { type: string; metadata?: { actionId?: string } }
    if (ev.type === 'action.completed' && ev.metadata?.actionId) out.add(ev.metadata.actionId)
  }
  return out
}

describe('forgetting finished actions, records written by hand', () => {
  const cfg = testConfig()
  const keys = new Keys(cfg.namespace)

  it('waits the persister\'s hour', () => {
    expect(FORGET_AFTER_MS).toBe(FORGET_DONE_AFTER_MS)
  })

  it('removes done records over an hour old whose completion left the stream, and only those, only in live workflows', async () => {
    const now = await redis.time().then(([s, us]) => Number(s) * 1000 + Math.floor(Number(us) / 1000))
    await redis.set(keys.leaderTerm(), '3')
    const wf = 'fd-live'
    // The stream starts with the completion of `kept`, two hours ago: the
    // records of actions that finished before it went with the entries trimmed.
    await redis.hset(keys.status(wf), 'status', 'running', 'updatedAt', String(now))
    await redis.xadd(keys.events(wf), `${now - 2 * HOUR}-0`, 'e', completion(wf, 'kept'))
    await redis.xadd(keys.events(wf), '*', 'e', completion(wf, 'recent'))
    await redis.hset(keys.actions(wf),
      ...record(wf, 'old1', { status: 'done', attempt: 1, finishedAt: now - 3 * HOUR }),
      ...record(wf, 'old2', { status: 'done', attempt: 2, finishedAt: now - 2 * HOUR - 5000 }),
      ...record(wf, 'kept', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }),
      ...record(wf, 'recent', { status: 'done', attempt: 1, finishedAt: now - 60_000 }),
      ...record(wf, 'dead', { status: 'dead', attempt: 3, error: 'x', finishedAt: now - 5 * HOUR }),
      ...record(wf, 'queued', { status: 'queued', attempt: 0, seq: 7, availableAt: now - 5 * HOUR }),
      ...record(wf, 'cancelled', { status: 'cancelled', attempt: 0, finishedAt: now - 5 * HOUR }),
      // An action named `x:st` (ids are not checked here): its record is a field ending in `:st`.
      ...record(wf, 'odd:st', { status: 'done', attempt: 1, finishedAt: now - 3 * HOUR }),
    )
    // Waiting between its actions is live too (a ticker is, most of the time); its stream is gone altogether.
    await redis.hset(keys.status('fd-waiting'), 'status', 'waiting')
    await redis.hset(keys.actions('fd-waiting'), ...record('fd-waiting', 'w1', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
    // An ended workflow's records go with its keys: left alone.
    await redis.hset(keys.status('fd-ended'), 'status', 'completed')
    await redis.hset(keys.actions('fd-ended'), ...record('fd-ended', 'e1', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))

    const { sweep } = await forgetPass(keys, 3)
    expect((await redis.hkeys(keys.actions(wf))).sort()).toEqual(['cancelled', 'cancelled:st', 'dead', 'dead:st', 'kept', 'kept:st', 'queued', 'queued:st', 'recent', 'recent:st'])
    expect(await redis.exists(keys.actions('fd-waiting'))).toBe(0)
    expect(await redis.hlen(keys.actions('fd-ended'))).toBe(2)
    expect(sweep.lastForget).toMatchObject({ workflows: 3, removed: 4, removedFrom: 2, failed: 0 })
  })

  it('writes nothing from the sweep\'s steps, nor under a term that is over', async () => {
    const now = Date.now()
    const wf = 'fd-fenced'
    await redis.hset(keys.status(wf), 'status', 'running')
    await redis.hset(keys.actions(wf), ...record(wf, 'a1', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
    const sweep = new WorkflowSweep(redis, keys)
    for (let i = 0; i < 5; i++) await sweep.step(100, null)
    expect(sweep.lastForget).toBeNull()
    await redis.set(keys.leaderTerm(), '8')
    await expect(sweep.forget(new LeaderFence(redis, keys, 'sup-old', 7))).rejects.toBeInstanceOf(LeaderDeposedError)
    expect(await redis.hlen(keys.actions(wf))).toBe(2)
    // The new term's leader (a deposed one's sweep is dropped with its duties).
    await forgetPass(keys, 8)
    expect(await redis.exists(keys.actions(wf))).toBe(0)
  })

  it('pages a workflow with many records over steps, the others going on beside it', async () => {
    // A namespace of its own: the first step's pages go to these two, whatever order SCAN finds them in.
    const keys = new Keys(testConfig().namespace)
    const now = Date.now()
    await redis.set(keys.leaderTerm(), '4')
    await redis.hset(keys.status('fd-big'), 'status', 'running')
    await redis.hset(keys.status('fd-small'), 'status', 'running')
    for (let i = 0; i < 3000; i += 500) {
      const fields: string[] = []
      for (let j = i; j < i + 500; j++) fields.push(...record('fd-big', `b${j}`, { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
      await redis.hset(keys.actions('fd-big'), ...fields)
    }
    await redis.hset(keys.actions('fd-small'), ...record('fd-small', 's1', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
    const fence = new LeaderFence(redis, keys, 'sup-test', 4)
    const sweep = new WorkflowSweep(redis, keys, { forgetPage: 100, forgetCalls: 4 })
    // Paging starts once the SCAN has listed both (in a Redis shared with
    // other tests that can take several steps, and the step that finishes the
    // listing may have a single call left, which the small one can take). By
    // the time the small one is done, the big one has had a couple of pages
    // at most (about 100 fields a page, half of them states); the next step
    // pages it.
    let steps = 0
    while ((await redis.exists(keys.actions('fd-small'))) === 1) {
      if (++steps > 1000) throw new Error('the small workflow was never reached')
      await sweep.forget(fence)
    }
    const before = await redis.hlen(keys.actions('fd-big'))
    expect(before).toBeGreaterThan(6000 - 2 * 600)
    await sweep.forget(fence)
    expect(await redis.hlen(keys.actions('fd-big'))).toBeLessThan(before)
    const { steps: more } = await forgetPass(keys, 4, {}, sweep)
    expect(more).toBeGreaterThan(3)
    expect(await redis.exists(keys.actions('fd-big'))).toBe(0)
  })

  it('starts the next pass only forgetEveryMs after the last one started', async () => {
    const now = Date.now()
    await redis.set(keys.leaderTerm(), '5')
    await redis.hset(keys.status('fd-later'), 'status', 'running')
    const fence = new LeaderFence(redis, keys, 'sup-test', 5)
    const { sweep } = await forgetPass(keys, 5, { forgetEveryMs: 600_000 })
    await redis.hset(keys.actions('fd-later'), ...record('fd-later', 'l1', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
    for (let i = 0; i < 5; i++) await sweep.forget(fence)
    expect(await redis.hlen(keys.actions('fd-later'))).toBe(2)
    // A new term starts with fresh memory, and a pass at once.
    await forgetPass(keys, 5, { forgetEveryMs: 600_000 })
    expect(await redis.exists(keys.actions('fd-later'))).toBe(0)
  })
})

/** A logger that keeps what it is told at info and warn. */
function recorder(): Logger & { infos: string[]; warns: string[] } {
  const infos: string[] = []
  const warns: string[] = []
  return { infos, warns, info: (m) => infos.push(m), warn: (m) => warns.push(m), error: () => undefined, debug: () => undefined }
}

describe('forgetting finished actions as a duty of the leader\'s tick', () => {
  /** The duties of a leader of `term` in a namespace of its own, its fence on `fenceRedis`. */
  function duties(term: number, fenceRedis: Redis = redis, opts: Parameters<typeof resolveSupervisorOptions>[0] = {}) {
    const cfg = testConfig({ persistence: false })
    const client = TroupeClient.connect(cfg)
    const log = recorder()
    const deps = { redis: client.redis, keys: client.keys, client, log, metrics: new SupervisorMetrics(new Registry()) }
    // A budget that finishes a sweep of the shared test Redis in a tick or two.
    const o = resolveSupervisorOptions({ sweepBudget: 10_000, sweepMaxMs: 60_000, ...opts })
    return { keys: client.keys, client, log, d: new LeaderDuties(deps, new LeaderFence(fenceRedis, client.keys, 'sup-test', term), o) }
  }

  /** Ticks until `done` says so (at most 20 ticks); returns every report. */
  async function tickUntil(d: LeaderDuties, done: (r: TickReport) => boolean): Promise<TickReport[]> {
    const reports: TickReport[] = []
    for (let i = 0; i < 20 && !reports.some(done); i++) reports.push(await d.tick())
    return reports
  }

  it('a failure there keeps the sweep that completed in the same tick, and says which duty failed', async () => {
    // The fence's connection refuses SCAN, which only the pass forgetting records sends on it.
    const fenceRedis = rawRedis()
    Object.assign(fenceRedis, { scan: () => Promise.reject(new Error('scan refused')) })
    const { keys, client, log, d } = duties(2, fenceRedis)
    try {
      await redis.set(keys.leaderTerm(), '2')
      await redis.hset(keys.status('fd-tick'), 'status', 'running', 'updatedAt', String(Date.now()))
      const reports = await tickUntil(d, (r) => r.sweptAt !== null)
      const swept = reports.find((r) => r.sweptAt !== null)
      expect(swept, `no sweep completed: ${JSON.stringify(reports.map((r) => r.errors))}`).toBeDefined()
      expect(swept?.errors).toEqual(['forgetting finished actions: scan refused'])
      expect(swept?.forgot).toBeNull()
      expect(swept?.rollup?.workflows).toEqual({ running: 1 })
      expect(log.warns).toContain('supervisor forgetting finished actions failed; continuing')
      expect(log.warns.some((m) => m.includes('sweep failed'))).toBe(false)
    } finally {
      await client.close()
      await fenceRedis.quit()
    }
  })

  it('says at info how many records a pass removed, from how many workflows', async () => {
    const { keys, client, log, d } = duties(3, redis, { forgetEveryMs: 3_600_000 })
    try {
      const now = Date.now()
      await redis.set(keys.leaderTerm(), '3')
      for (const wf of ['fd-log1', 'fd-log2', 'fd-log3']) await redis.hset(keys.status(wf), 'status', 'running')
      await redis.hset(keys.actions('fd-log1'), ...record('fd-log1', 'a', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }), ...record('fd-log1', 'b', { status: 'done', attempt: 1, finishedAt: now - 3 * HOUR }))
      await redis.hset(keys.actions('fd-log2'), ...record('fd-log2', 'c', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }))
      await redis.hset(keys.actions('fd-log3'), ...record('fd-log3', 'd', { status: 'done', attempt: 1, finishedAt: now }))
      const reports = await tickUntil(d, (r) => r.forgot !== null)
      expect(reports.flatMap((r) => r.errors)).toEqual([])
      expect(reports.find((r) => r.forgot)?.forgot).toMatchObject({ workflows: 3, removed: 3, removedFrom: 2, failed: 0 })
      expect(log.infos.filter((m) => m.startsWith('forgot the records of 3 finished actions in 2 of 3 live workflows'))).toHaveLength(1)
      // A pass that removes nothing says nothing.
      const quiet = duties(4, redis, { forgetEveryMs: 3_600_000 })
      try {
        await redis.set(quiet.keys.leaderTerm(), '4')
        await redis.hset(quiet.keys.status('fd-none'), 'status', 'running')
        expect((await tickUntil(quiet.d, (r) => r.forgot !== null)).find((r) => r.forgot)?.forgot).toMatchObject({ workflows: 1, removed: 0 })
        expect(quiet.log.infos.filter((m) => m.startsWith('forgot'))).toEqual([])
      } finally {
        await quiet.client.close()
      }
    } finally {
      await client.close()
    }
  })

  it('takes its settings from the supervisor\'s options, validated', () => {
    const o = resolveSupervisorOptions({ forgetAfterMs: 0, forgetEveryMs: 60_000, forgetPage: 50, forgetCalls: 8 })
    expect(o).toMatchObject({ forgetAfterMs: 0, forgetEveryMs: 60_000, forgetPage: 50, forgetCalls: 8 })
    expect(resolveSupervisorOptions()).toMatchObject({ forgetAfterMs: FORGET_AFTER_MS, forgetEveryMs: HOUR, forgetPage: 200, forgetCalls: 64 })
    expect(() => resolveSupervisorOptions({ forgetAfterMs: -1 })).toThrow(/forgetAfterMs must be at least 0/)
    expect(() => resolveSupervisorOptions({ forgetEveryMs: 10 })).toThrow(/forgetEveryMs must be at least 1000/)
    expect(() => resolveSupervisorOptions({ forgetPage: 0 })).toThrow(/forgetPage must be at least 1/)
    expect(() => resolveSupervisorOptions({ forgetPage: 20_000 })).toThrow(/forgetPage must be at most 10000/)
    expect(() => resolveSupervisorOptions({ forgetCalls: Number.NaN })).toThrow(/forgetCalls must be at least 1/)
  })
})

/** Sends `n` pings with ids `<prefix><i>` and waits until all are done. */
async function pings(client: TroupeClient, wf: string, prefix: string, n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) ids.push((await client.sendAction(wf, 'counter', 'ping', { i }, { actionId: `${prefix}${i}` })).actionId)
  await eventually(async () => {
    const sts = await client.redis.hmget(client.keys.actions(wf), ...ids.map((id) => `${id}:st`))
    return sts.every((s) => s !== null && (JSON.parse(s) as { status: string }).status === 'done')
  }, 30_000, `${prefix} done`)
  return ids
}

/** Runs a workflow that never ends: a batch of pings, a pause of over two seconds (the script's margin), and another. */
async function neverEnding(client: TroupeClient, wf: string): Promise<{ first: string[]; second: string[] }> {
  await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: -1 } })
  const first = await pings(client, wf, 'a', 60)
  await new Promise((r) => setTimeout(r, 2200))
  const second = await pings(client, wf, 'b', 120)
  expect(['running', 'waiting']).toContain((await client.getStatus(wf))?.status)
  return { first, second }
}

/** Every done action whose completion the stream holds keeps its record and state; returns how many. */
async function keptWithTheirCompletion(keys: Keys, wf: string): Promise<number> {
  const inStream = await completedInStream(keys, wf)
  expect(inStream.size).toBeGreaterThan(0)
  for (const id of inStream) expect(await redis.hexists(keys.actions(wf), `${id}:st`), id).toBe(1)
  return inStream.size
}

describe('forgetting finished actions of a real workflow that never ends', () => {
  let rt: Runtime | undefined
  let client: TroupeClient | undefined
  afterAll(async () => {
    await rt?.stop()
    await client?.close()
  })

  it('with persistence off: those whose completion the stream\'s cap dropped', async () => {
    // A small cap: the second batch turns the stream over, as a busy ticker's does within the hour.
    const cfg = testConfig({ persistence: false, streamMaxLen: 20 })
    const keys = new Keys(cfg.namespace)
    rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false })
    client = TroupeClient.connect(cfg)
    const wf = 'fd-off'
    const { first } = await neverEnding(client, wf)
    const inStream = await completedInStream(keys, wf)
    expect(first.some((id) => inStream.has(id))).toBe(false)
    await redis.set(keys.leaderTerm(), '1')
    // The hour is the default; here only the stream decides.
    const { sweep } = await forgetPass(keys, 1, { forgetAfterMs: 0 })
    for (const id of first) expect(await redis.hexists(keys.actions(wf), id), id).toBe(0)
    await keptWithTheirCompletion(keys, wf)
    expect(sweep.lastForget?.removed).toBeGreaterThanOrEqual(first.length)
    // The workflow goes on as before.
    await pings(client, wf, 'c', 1)
    await rt.stop()
    await client.close()
    rt = undefined
    client = undefined
  }, 60_000)

  it('with persistence on: only once the persister trimmed their completion', async () => {
    // No persister runs: the stream keeps everything until trimmed by hand below, as the persister would.
    const cfg = testConfig({ persistence: true })
    const keys = new Keys(cfg.namespace)
    rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false })
    client = TroupeClient.connect(cfg)
    const wf = 'fd-on'
    const { first, second } = await neverEnding(client, wf)
    await redis.set(keys.leaderTerm(), '1')
    const before = await redis.hlen(keys.actions(wf))
    await forgetPass(keys, 1, { forgetAfterMs: 0 })
    expect(await redis.hlen(keys.actions(wf))).toBe(before)
    // The persister trims what Neo4j holds: here, up to the second batch's first action.
    const entries = (await redis.xrange(keys.events(wf), '-', '+')) as [string, string[]][]
    const cut = entries.find(([, f]) => (f[1] as string).includes(`"${second[0]}"`))
    if (!cut) throw new Error('no event of the second batch')
    await redis.xtrim(keys.events(wf), 'MINID', cut[0])
    await forgetPass(keys, 1, { forgetAfterMs: 0 })
    for (const id of first) expect(await redis.hexists(keys.actions(wf), id), id).toBe(0)
    expect(await keptWithTheirCompletion(keys, wf)).toBe(second.length)
  }, 60_000)
})

describe('the supervisor service', () => {
  it('forgets them with its defaults, keeping those of the last hour', async () => {
    const cfg = testConfig({ persistence: false })
    const keys = new Keys(cfg.namespace)
    const now = Date.now()
    const wf = 'fd-service'
    await redis.hset(keys.status(wf), 'status', 'waiting')
    await redis.xadd(keys.events(wf), '*', 'e', completion(wf, 'new'))
    await redis.hset(keys.actions(wf),
      ...record(wf, 'old', { status: 'done', attempt: 1, finishedAt: now - 2 * HOUR }),
      ...record(wf, 'hour', { status: 'done', attempt: 1, finishedAt: now - HOUR + 120_000 }),
      ...record(wf, 'new', { status: 'done', attempt: 1, finishedAt: now }),
    )
    const sup = await startRuntime({ agents: [], services: [supervisorService({ tickMs: 100, leaseMs: 2000, sdPort: false })], config: cfg, heartbeatMs: 100, metricsPort: false })
    try {
      await eventually(async () => (await redis.hexists(keys.actions(wf), 'old')) === 0, 20_000, 'the old record forgotten')
      expect((await redis.hkeys(keys.actions(wf))).sort()).toEqual(['hour', 'hour:st', 'new', 'new:st'])
    } finally {
      await sup.stop()
    }
  }, 30_000)

  it('forgets them after its own forgetAfterMs', async () => {
    const cfg = testConfig({ persistence: false })
    const keys = new Keys(cfg.namespace)
    const now = Date.now()
    const wf = 'fd-service-opts'
    await redis.hset(keys.status(wf), 'status', 'waiting')
    await redis.xadd(keys.events(wf), '*', 'e', completion(wf, 'new'))
    // Within the default hour, past the 20 minutes set here.
    await redis.hset(keys.actions(wf),
      ...record(wf, 'half', { status: 'done', attempt: 1, finishedAt: now - HOUR / 2 }),
      ...record(wf, 'new', { status: 'done', attempt: 1, finishedAt: now }),
    )
    const sup = await startRuntime({ agents: [], services: [supervisorService({ tickMs: 100, leaseMs: 2000, sdPort: false, forgetAfterMs: HOUR / 3 })], config: cfg, heartbeatMs: 100, metricsPort: false })
    try {
      await eventually(async () => (await redis.hexists(keys.actions(wf), 'half')) === 0, 20_000, 'the half-hour-old record forgotten')
      expect((await redis.hkeys(keys.actions(wf))).sort()).toEqual(['new', 'new:st'])
    } finally {
      await sup.stop()
    }
  }, 30_000)
})
