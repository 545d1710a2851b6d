// Re-queueing dead-lettered actions (TroupeClient.requeueDead): a requeued action
// runs again and is done once, the counters and the stream say so, a second call
// or an id that was never dead changes nothing, an ended workflow is refused. The
// locks last a minute, idle workers poll every two minutes and no supervisor
// sweeps: a requeue that left the agent's idle actor without its hint and wake-up
// would time these tests out.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, TroupeError, type Runtime } from '../../runtime/index.ts'
import { switchableAgent } from '../fixtures/agents.ts'
import { runScript } from '../../runtime/redis/scripts.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 60_000, idlePollMs: 120_000 })
/** While set, `fragile`'s work fails (a target that is down); maxAttempts 1 dead-letters it at once. */
let failing = true

const fragile = switchableAgent('fragile', () => failing)

let rt: Runtime
let client: TroupeClient
beforeAll(async () => {
  rt = await startRuntime({ agents: [fragile], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})
beforeEach(() => {
  failing = true
})

/** A workflow whose first action to `fragile` is dead-lettered; resolves with its ids. */
async function deadOne(): Promise<{ wf: string; actionId: string }> {
  const { workflowId: wf, actionId } = await client.startWorkflow({ agent: 'fragile', type: 'work', payload: { n: 1 } })
  await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1, 20_000, 'the action dead-lettered')
  return { wf, actionId }
}

async function doneCount(wf: string): Promise<number> {
  const raw = await client.redis.hget(client.keys.actor(wf, 'fragile'), 'snapshot')
  return (JSON.parse(raw ?? '{}') as { context?: { done: number } }).context?.done ?? 0
}

describe('requeueDead', () => {
  it('sends a dead action back to its idle actor, which runs it once; counters and stream follow', async () => {
    const { wf, actionId } = await deadOne()
    expect((await client.getStatus(wf))?.status).toBe('waiting')
    failing = false
    expect(await client.requeueDead(wf)).toEqual({ requeued: [actionId], skipped: [] })
    expect(await client.deadLetters(wf)).toEqual([])
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the requeued action done')
    const status = await client.getStatus(wf)
    expect(status?.counts).toMatchObject({ actions: 1, queued: 0, done: 1, dead: 0 })
    expect(status?.status).toBe('waiting')
    expect(await doneCount(wf)).toBe(1)

    const events = (await client.readEvents(wf)).map((e) => e.event)
    const requeued = events.filter((e) => e.type === 'action.requeued')
    expect(requeued).toHaveLength(1)
    const content = requeued[0]?.content as { previous?: { error?: string } } | undefined
    expect(content).toMatchObject({ actionId, agent: 'fragile', type: 'work', previous: { attempt: 1 } })
    expect(content?.previous?.error).toMatch(/target down/)
    expect(requeued[0]?.metadata).toMatchObject({ agent: 'fragile', actionId })
    // After the dead letter: requeued, the workflow running again, then done once.
    const types = events.filter((e) => e.type.startsWith('action.') || e.type === 'workflow.status').map((e) => e.type)
    expect(types.slice(types.indexOf('action.dead'))).toEqual(['action.dead', 'workflow.status', 'action.requeued', 'workflow.status', 'action.completed', 'workflow.status'])
    expect(events.filter((e) => e.type === 'action.completed' && e.metadata?.actionId === actionId)).toHaveLength(1)
  })

  it('keeps the first death on record when a requeued action dies again', async () => {
    const { wf, actionId } = await deadOne()
    // Still failing: requeued, it dies again, with its first death on record meanwhile.
    expect((await client.requeueDead(wf, { actionIds: [actionId] })).requeued).toEqual([actionId])
    await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1, 20_000, 'dead again')
    const [dead] = await client.deadLetters(wf)
    expect(dead).toMatchObject({ actionId, attempt: 1 })
    expect(dead?.error).toMatch(/target down/)
    const st = JSON.parse((await client.redis.hget(client.keys.actions(wf), `${actionId}:st`)) ?? '{}') as { requeuedFrom?: { error?: string } }
    expect(st).toMatchObject({ status: 'dead', requeuedFrom: { attempt: 1 } })
    expect(st.requeuedFrom?.error).toMatch(/target down/)
    expect((await client.readEvents(wf)).filter((e) => e.event.type === 'action.dead')).toHaveLength(2)
  })

  it('skips what is not dead-lettered: a second call, an id never dead, an unknown id', async () => {
    const { wf, actionId } = await deadOne()
    failing = false
    const { actionId: fine } = await client.sendAction(wf, 'fragile', 'work')
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the good action done')
    expect(await client.requeueDead(wf, { actionIds: [fine, 'nosuchaction', actionId, actionId] })).toEqual({ requeued: [actionId], skipped: [fine, 'nosuchaction'] })
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 2, 20_000, 'the requeued action done')
    expect(await client.requeueDead(wf, { actionIds: [actionId] })).toEqual({ requeued: [], skipped: [actionId] })
    expect(await client.requeueDead(wf)).toEqual({ requeued: [], skipped: [] })
    expect(await client.requeueDead(wf, { actionIds: [] })).toEqual({ requeued: [], skipped: [] })
    const status = await client.getStatus(wf)
    expect(status?.counts).toMatchObject({ actions: 2, queued: 0, done: 2, dead: 0 })
    expect(await doneCount(wf)).toBe(2)
    expect((await client.readEvents(wf)).filter((e) => e.event.type === 'action.requeued')).toHaveLength(1)
  })

  /** `n` more dead letters like `actionId`'s, written as the commit writes them (`noAgent`: records a hand edit left without one, first in line). */
  async function moreDead(wf: string, actionId: string, n: number, opts: { prefix?: string; noAgent?: boolean } = {}): Promise<string[]> {
    const k = client.keys
    const [rec, st] = await client.redis.hmget(k.actions(wf), actionId, `${actionId}:st`)
    const base = JSON.parse(rec ?? '{}') as Record<string, unknown>
    const p = client.redis.pipeline()
    const ids: string[] = []
    for (let i = 0; i < n; i++) {
      const id = `${opts.prefix ?? 'more'}${i}`
      ids.push(id)
      p.hset(k.actions(wf), id, JSON.stringify({ ...base, id, eventId: `ev-${id}`, ...(opts.noAgent ? { agent: '' } : {}) }), `${id}:st`, st ?? '')
      p.zadd(k.dead(wf), opts.noAgent ? 0 : Date.now(), id)
    }
    p.hincrby(k.status(wf), 'dead', n)
    await p.exec()
    return ids
  }

  /** How many script calls appended the workflow's action.requeued events (each names them after its own id base). */
  async function requeueCalls(wf: string): Promise<number> {
    const events = (await client.readEvents(wf, '0', 5000)).filter((e) => e.event.type === 'action.requeued')
    return new Set(events.map((e) => e.event.id.split('.')[0])).size
  }

  it('requeues more dead letters than one script call takes, in batches, every one of them', async () => {
    const { wf, actionId } = await deadOne()
    await moreDead(wf, actionId, 1199)
    const k = client.keys
    failing = false
    const r = await client.requeueDead(wf)
    expect(r.requeued).toHaveLength(1200)
    expect(new Set(r.requeued).size).toBe(1200)
    expect(r.skipped).toEqual([])
    // Three script calls of at most 500, not one holding Redis for all.
    expect(await requeueCalls(wf)).toBe(3)
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1200, 60_000, 'all 1,200 done')
    const status = await client.getStatus(wf)
    expect(status?.counts.dead).toBe(0)
    expect(await client.redis.zcard(k.dead(wf))).toBe(0)
  })

  it('takes only the actions dead when it began: one that dies again meanwhile is not requeued twice', async () => {
    const { wf, actionId } = await deadOne()
    await moreDead(wf, actionId, 1499)
    // Still failing: the requeued actions die again while later batches are taken.
    const r = await client.requeueDead(wf)
    expect(r.requeued).toHaveLength(1500)
    expect(new Set(r.requeued).size).toBe(1500)
    await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1500, 60_000, 'all dead again')
  })

  it('passes over dead letters it cannot send instead of stopping at them', async () => {
    const { wf, actionId } = await deadOne()
    // 500 records a hand edit left without an agent, dead before the good one.
    const bad = await moreDead(wf, actionId, 500, { prefix: 'bad', noAgent: true })
    failing = false
    const r = await client.requeueDead(wf)
    expect(r.requeued).toEqual([actionId])
    expect(r.skipped.sort()).toEqual([...bad].sort())
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the good one done')
  })

  it('requeues a long list of ids in calls of at most 500', async () => {
    const { wf, actionId } = await deadOne()
    const ids = [actionId, ...(await moreDead(wf, actionId, 1099))]
    failing = false
    const r = await client.requeueDead(wf, { actionIds: ids })
    expect(r.requeued).toHaveLength(1100)
    expect(await requeueCalls(wf)).toBe(3)
  })

  it('answers a resent call (its reply lost) as its first run, taking nothing more under the same event ids', async () => {
    const { wf, actionId } = await deadOne()
    await moreDead(wf, actionId, 2)
    const k = client.keys
    const keys = [k.status(wf), k.actions(wf), k.events(wf), k.seq(wf), k.dead(wf), k.mailbox(wf, ''), k.requeued(wf)]
    const args = [wf, 'base1', k.channel(wf), 0, 'listed', '', 0, actionId]
    const first = await runScript(client.redis, 'requeue', keys, args)
    // A dead letter that a different batch would now take, had the resend not known itself.
    const again = await runScript(client.redis, 'requeue', keys, [...args.slice(0, 7), actionId, 'more0'])
    expect(again).toEqual(first)
    expect((await client.deadLetters(wf)).map((d) => d.actionId).sort()).toEqual(['more0', 'more1'])
    expect(await requeueCalls(wf)).toBe(1)
    // The answer is kept for resends only, not with the workflow.
    expect(await client.redis.pttl(k.requeued(wf))).toBeGreaterThan(0)
  })

  it('refuses a workflow that does not exist or has ended, and a bad id', async () => {
    const { wf, actionId } = await deadOne()
    await client.cancelWorkflow(wf)
    await expect(client.requeueDead(wf)).rejects.toMatchObject({ code: 'workflow_ended' })
    await expect(client.requeueDead(wf, { actionIds: [actionId] })).rejects.toMatchObject({ code: 'workflow_ended' })
    // Still dead-lettered, for the record.
    expect((await client.deadLetters(wf)).map((d) => d.actionId)).toEqual([actionId])
    await expect(client.requeueDead('nosuchworkflow')).rejects.toMatchObject({ code: 'workflow_not_found' })
    await expect(client.requeueDead(wf, { actionIds: ['a:b'] })).rejects.toBeInstanceOf(TroupeError)
  })
})
