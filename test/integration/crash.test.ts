// Real child processes: work crosses processes, a kill -9 mid-action is redelivered
// with its Redis effects applied once, a paused zombie cannot commit, and SIGTERM drains.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient, type StreamedEvent } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { scrapeCounter, spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'

const cfg = testConfig({ lockTtlMs: 2000 })
let client: TroupeClient
const children: RuntimeChild[] = []

async function runtimeChild(opts: Parameters<typeof spawnRuntime>[1] = {}): Promise<RuntimeChild> {
  const c = await spawnRuntime(cfg, opts)
  children.push(c)
  return c
}

beforeAll(() => {
  client = TroupeClient.connect(cfg)
})
afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop(5000)))
})
afterAll(async () => {
  await client.close()
})

async function actorContext(wf: string, agent: string): Promise<Record<string, unknown>> {
  const snap = await client.redis.hget(client.keys.actor(wf, agent), 'snapshot')
  return (JSON.parse(snap ?? '{}') as { context?: Record<string, unknown> }).context ?? {}
}
const ofType = (l: StreamedEvent[], t: string): StreamedEvent[] => l.filter((e) => e.event.type === t)

describe('across processes', () => {
  it('completes research workflows across two processes with every event in order', async () => {
    const env = { TROUPE_FAKE_MODEL_DELAY_MS: '1' }
    // The agents are split between the processes, so every workflow crosses
    // between them four times (planner → researchers → writer → reviewer → writer
    // ...), through hints and wake-ups rather than local hand-offs. (How work
    // spreads over processes hosting the same agents: wake.test.ts, handoff.test.ts.)
    // b starts first: a reads the registry with b's agents in it, and b learns
    // a's from a's announcement long before its researchers send to a's writer.
    const args = ['--concurrency', '4']
    const b = await runtimeChild({ agents: 'examples/research-team/agents.ts', env, args: [...args, '--only', 'researcher,reviewer'] })
    const a = await runtimeChild({ agents: 'examples/research-team/agents.ts', env, args: [...args, '--only', 'planner,writer'] })
    const wfs = await Promise.all(Array.from({ length: 12 }, (_, i) => client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: `topic ${i}` } })))
    for (const { workflowId } of wfs) {
      await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 30_000, `workflow ${workflowId}`)
      const ev = await client.readEvents(workflowId, '0', 10_000)
      // each agent's transitions chain: every `from` is the previous `to`
      const lastTo = new Map<string, string>()
      for (const t of ofType(ev, 'agent.transition')) {
        const c = t.event.content as { agent: string; from: unknown; to: unknown }
        const prev = lastTo.get(c.agent)
        if (prev !== undefined) expect(JSON.stringify(c.from)).toBe(prev)
        lastTo.set(c.agent, JSON.stringify(c.to))
      }
      // every action is enqueued before it completes, and completes exactly once
      const enq = new Map(ofType(ev, 'action.enqueued').map((e, i) => [(e.event.content as { actionId: string }).actionId, i]))
      const done = ofType(ev, 'action.completed').map((e) => (e.event.content as { actionId: string }).actionId)
      expect(new Set(done).size).toBe(done.length)
      expect(done.length).toBe(10)
      for (const id of done) expect(enq.has(id)).toBe(true)
      expect(ev.at(-1)?.event.type).toBe('workflow.completed')
    }
    const perProcess = await Promise.all([a, b].map((c) => scrapeCounter(c.metricsUrl, 'troupe_actions_total', { outcome: 'completed' })))
    // Per workflow: planner 1 + writer 4 (three findings, one revision) in a;
    // researcher 3 + reviewer 2 in b.
    expect(perProcess).toEqual([60, 60])
  })

  it('redelivers an action whose process was killed with -9, with its effects applied once', async () => {
    const p1 = await runtimeChild()
    const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 1500, i: 'only' } })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'working on p1')
    p1.signal('SIGKILL')
    await p1.exited()
    await runtimeChild()
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 20_000, 'work + ping done')
    const ev = await client.readEvents(workflowId, '0', 1000)
    const redelivered = ofType(ev, 'action.redelivered')
    expect(redelivered).toHaveLength(1)
    expect((redelivered[0]?.event.content as { attempt: number }).attempt).toBe(2)
    expect(await actorContext(workflowId, 'slow')).toEqual({ done: ['only'] })
    expect((await actorContext(workflowId, 'counter')).n).toBe(1)
    expect(ofType(ev, 'action.enqueued').filter((e) => (e.event.content as { agent: string }).agent === 'counter')).toHaveLength(1)
  })

  it('rejects the commit of a zombie paused past its lease, and counts it', async () => {
    const zombie = await runtimeChild()
    const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 2500, i: 'z' } })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'working on zombie')
    zombie.signal('SIGSTOP')
    const healthy = await runtimeChild()
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 20_000, 'redone by the healthy process')
    zombie.signal('SIGCONT')
    await eventually(async () => (await scrapeCounter(zombie.metricsUrl, 'troupe_fence_rejections_total', { agent: 'slow' })) === 1, 15_000, 'fence rejection on the zombie')
    expect(await scrapeCounter(healthy.metricsUrl, 'troupe_fence_rejections_total')).toBe(0)
    expect(await actorContext(workflowId, 'slow')).toEqual({ done: ['z'] })
    expect((await actorContext(workflowId, 'counter')).n).toBe(1)
    const st = await client.getStatus(workflowId)
    expect(st?.counts).toMatchObject({ done: 2, dead: 0, queued: 0 })
  })

  it('drains on SIGTERM: finishes the running action, exits 0, leaves the rest to others', async () => {
    // A drain timeout far beyond the test's own: p1 exiting at all shows that the
    // drain ended when its action did, not on the timer (nor was the action cut
    // short by it on a slow machine).
    const p1 = await runtimeChild({ args: ['--drain-timeout', '10m'] })
    const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 800, i: 1 } })
    await client.sendAction(workflowId, 'slow', 'work', { ms: 10, i: 2 })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'working')
    const t0 = Date.now()
    p1.signal('SIGTERM')
    expect(await p1.exited()).toBe(0)
    console.log(`drained and exited ${Date.now() - t0} ms after SIGTERM`)
    const ctx1 = await actorContext(workflowId, 'slow')
    expect(ctx1.done).toEqual([1])
    await runtimeChild()
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 4, 15_000, 'second action elsewhere')
    expect((await actorContext(workflowId, 'slow')).done).toEqual([1, 2])
    expect(ofType(await client.readEvents(workflowId, '0', 1000), 'action.redelivered')).toHaveLength(0)
  })
})
