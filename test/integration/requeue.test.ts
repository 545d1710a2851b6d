// Re-queueing dead-lettered actions (TroupeClient.requeueDead): a requeued action
// runs again and is done once, the counters and the stream say so, a second call
// or an id that was never dead changes nothing, an ended workflow is refused. The
// locks last a minute, idle workers poll every two minutes and no supervisor
// sweeps: a requeue that left the agent's idle actor without its hint and wake-up
// would time these tests out.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { assign, fromPromise, setup } from 'xstate'
import { defineAgent, startRuntime, TroupeClient, TroupeError, type ActionEvent, type Runtime } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 60_000, idlePollMs: 120_000 })
/** While set, `fragile`'s work fails (a target that is down); maxAttempts 1 dead-letters it at once. */
let failing = true

const fragile = defineAgent({
  name: 'fragile',
  maxAttempts: 1,
  machine: setup({
    types: { context: {} as { done: number }, events: {} as ActionEvent<'work', unknown> },
    actors: {
      job: fromPromise(async () => {
        await Promise.resolve()
        if (failing) throw new Error('target down')
        return 1
      }),
    },
  }).createMachine({
    context: { done: 0 },
    initial: 'idle',
    states: {
      idle: { on: { work: 'working' } },
      working: { invoke: { src: 'job', onDone: { target: 'idle', actions: assign({ done: ({ context }) => context.done + 1 }) } } },
    },
  }),
})

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

  it('requeues more dead letters than one script call takes, in batches, every one of them', async () => {
    const { wf, actionId } = await deadOne()
    // 1,199 more dead letters like the first, written as the commit writes them.
    const k = client.keys
    const [rec, st] = await client.redis.hmget(k.actions(wf), actionId, `${actionId}:st`)
    const base = JSON.parse(rec ?? '{}') as Record<string, unknown>
    const p = client.redis.pipeline()
    for (let i = 0; i < 1199; i++) {
      const id = `more${i}`
      p.hset(k.actions(wf), id, JSON.stringify({ ...base, id, eventId: `ev-${id}` }), `${id}:st`, st ?? '')
      p.zadd(k.dead(wf), Date.now(), id)
    }
    p.hincrby(k.status(wf), 'dead', 1199)
    await p.exec()
    failing = false
    const r = await client.requeueDead(wf)
    expect(r.requeued).toHaveLength(1200)
    expect(new Set(r.requeued).size).toBe(1200)
    expect(r.skipped).toEqual([])
    // Three script calls of at most 500 (each names its events after its own id base), not one holding Redis for all.
    const requeuedEvents = (await client.readEvents(wf, '0', 5000)).filter((e) => e.event.type === 'action.requeued')
    expect(requeuedEvents).toHaveLength(1200)
    expect(new Set(requeuedEvents.map((e) => e.event.id.split('.')[0])).size).toBe(3)
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1200, 60_000, 'all 1,200 done')
    const status = await client.getStatus(wf)
    expect(status?.counts.dead).toBe(0)
    expect(await client.redis.zcard(k.dead(wf))).toBe(0)
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
