// Group commit as an activation adapts it: a busy actor's claims grow (one commit
// for many actions), and a batch whose actions are slow is committed as far as it
// got once its time budget is spent, the rest handed back in place, so the acks
// and sends of the first actions are not held behind the last ones.
import { afterEach, describe, expect, it } from 'vitest'
import { assign, fromPromise, setup } from 'xstate'
import { defineAgent, startRuntime, TroupeClient, type ActionEvent, type Runtime, type StreamedEvent } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 10_000 })
const opened: { stop(): Promise<void> }[] = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.stop()
})

type Ev = ActionEvent<string, { n: number }>

/** Each `work` takes `ms` (an invoked promise), recording its n. */
const slowAgent = (name: string, ms: number) => defineAgent({
  name,
  machine: setup({
    types: { context: {} as { seen: number[] }, events: {} as Ev },
    actors: { job: fromPromise(() => new Promise<void>((r) => setTimeout(r, ms))) },
  }).createMachine({
    context: { seen: [] },
    initial: 'idle',
    states: {
      idle: { on: { work: { target: 'working', actions: assign({ seen: ({ context, event }) => [...context.seen, event.payload.n] }) } } },
      working: { invoke: { src: 'job', onDone: 'idle' } },
    },
  }),
})
const slowpoke = slowAgent('slowpoke', 60)
const sloth = slowAgent('sloth', 400)

/** Counts `tick`s, in order. */
const ticker = defineAgent({
  name: 'ticker',
  machine: setup({ types: { context: {} as { seen: number[] }, events: {} as Ev } }).createMachine({
    context: { seen: [] },
    on: { tick: { actions: assign({ seen: ({ context, event }) => [...context.seen, event.payload.n] }) } },
  }),
})

/** Enqueues `n` actions to one actor before any runtime runs, so the first pick finds them all due. */
async function backlog(c: TroupeClient, agent: string, type: string, n: number): Promise<{ wf: string; ids: string[] }> {
  const first = await c.startWorkflow({ agent, type, payload: { n: 0 }, validate: false })
  const ids = [first.actionId]
  for (let i = 1; i < n; i++) ids.push((await c.sendAction(first.workflowId, agent, type, { n: i }, { validate: false })).actionId)
  return { wf: first.workflowId, ids }
}

async function run(agents: Parameters<typeof startRuntime>[0]['agents']): Promise<{ rt: Runtime; c: TroupeClient }> {
  const c = TroupeClient.connect(cfg)
  opened.push({ stop: () => c.close() })
  const rt = await startRuntime({ agents, config: cfg, metricsPort: false })
  opened.push(rt)
  return { rt, c }
}

const completedOf = (events: StreamedEvent[]): StreamedEvent[] => events.filter((e) => e.event.type === 'action.completed')
const actionOf = (e: StreamedEvent): string => {
  const id = (e.event.content as { actionId?: unknown }).actionId ?? e.event.metadata?.actionId
  return typeof id === 'string' ? id : ''
}

describe('group commit', () => {
  it('commits a slow batch as far as it got, so the first ack does not wait for the last action', async () => {
    const c0 = TroupeClient.connect(cfg)
    const { wf, ids } = await backlog(c0, 'slowpoke', 'work', 3)
    await c0.close()
    const { c } = await run([slowpoke])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 3, 15_000, 'three works done')
    const events = await c.readEvents(wf, '0', 1000)
    const completed = completedOf(events)
    expect(completed.map(actionOf)).toEqual(ids)
    // Handed back and claimed again: still the first attempt of each.
    expect(completed.map((e) => e.event.metadata?.attempt)).toEqual([1, 1, 1])
    // The second action's first transition (streamed live while it runs) comes after
    // the first action's commit: the batch of three was not delivered whole first.
    const firstAck = events.indexOf(completed[0] as StreamedEvent)
    const secondStarts = events.findIndex((e) => e.event.type === 'agent.transition' && actionOf(e) === ids[1])
    expect(secondStarts).toBeGreaterThan(firstAck)
    const snap = JSON.parse((await c.redis.hget(c.keys.actor(wf, 'slowpoke'), 'snapshot')) ?? '{}') as { context: { seen: number[] } }
    expect(snap.context.seen).toEqual([0, 1, 2])
  })

  it('yields the worker slot after a second of work, whatever the number of actions', async () => {
    const c0 = TroupeClient.connect(cfg)
    const { wf } = await backlog(c0, 'sloth', 'work', 4)
    await c0.close()
    const { rt, c } = await run([sloth])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 4, 15_000, 'four works done')
    const m = await rt.metrics.registry.getSingleMetric('troupe_activations_total')?.get()
    const activations = m?.values.find((v) => v.labels.agent === 'sloth')?.value ?? 0
    // Four actions of 400 ms: the first activation yields after the third (1.2 s).
    expect(activations).toBeGreaterThanOrEqual(2)
  })

  it('grows a busy actor\'s claims, so many actions share a commit, each done once and in order', async () => {
    const c0 = TroupeClient.connect(cfg)
    const { wf, ids } = await backlog(c0, 'ticker', 'tick', 200)
    await c0.close()
    const { c } = await run([ticker])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 200, 15_000, 'two hundred ticks done')
    const completed = completedOf(await c.readEvents(wf, '0', 10_000))
    expect(completed.map(actionOf)).toEqual(ids)
    // Event ids are <activation>.<commit>.<n>: one commit per distinct prefix.
    const commits = new Set(completed.map((e) => e.event.id.split('.').slice(0, 2).join('.')))
    // Claims of 16, 32, 64, 64, 24 make five; a fixed claim of 16 made thirteen. A
    // loaded machine may cut a batch at its 20 ms budget: the bound leaves room for that.
    expect(commits.size).toBeLessThanOrEqual(12)
    expect(completed.every((e) => e.event.metadata?.attempt === 1)).toBe(true)
    const snap = JSON.parse((await c.redis.hget(c.keys.actor(wf, 'ticker'), 'snapshot')) ?? '{}') as { context: { seen: number[] } }
    expect(snap.context.seen).toEqual(Array.from({ length: 200 }, (_, i) => i))
  })
})
