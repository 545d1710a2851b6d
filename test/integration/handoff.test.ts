// Work a commit sends to an actor this process can run is taken by this process's
// own next pick (no hint write, no wake-up to other processes); when the process
// has no free slot, the ready queue hands it to another process. Either way
// nothing is left behind in Redis.
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const keys = new Keys(cfg.namespace)
const client = TroupeClient.connect(cfg)
const redis = rawRedis()
let runtimes: Runtime[] = []

afterEach(async () => {
  await Promise.all(runtimes.map((r) => r.stop()))
  runtimes = []
})
afterAll(async () => {
  await client.close()
  redis.disconnect()
})

async function counterValue(rt: Runtime, name: string, agent: string, outcome?: string): Promise<number> {
  const m = await rt.metrics.registry.getSingleMetric(name)?.get()
  return m?.values.find((v) => v.labels.agent === agent && (outcome === undefined || v.labels.outcome === outcome))?.value ?? 0
}

/** True once echo's action committed (its 'echoed' event streams earlier, before the commit). */
async function echoed(wf: string): Promise<boolean> {
  return (await client.readEvents(wf, '0', 1000)).some((e) => e.event.type === 'action.completed' && (e.event.content as { agent?: string }).agent === 'echo')
}

/** Starts `n` workflows whose counter relays `text` to echo; resolves their ids once all echoed. */
async function relayAll(n: number, text: string): Promise<string[]> {
  const ids = await Promise.all(
    Array.from({ length: n }, async () => {
      const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'relay', payload: { text } })
      return workflowId
    }),
  )
  await eventually(async () => (await Promise.all(ids.map(echoed))).every(Boolean), 15_000, 'every relay echoed')
  return ids
}

async function leftovers(ids: string[]): Promise<string[]> {
  const left: string[] = []
  for (const wf of ids) {
    for (const agent of ['counter', 'echo']) {
      if ((await redis.zscore(keys.ready(agent), wf)) !== null) left.push(`hint ${agent} ${wf}`)
      if ((await redis.exists(keys.lock(wf, agent))) === 1) left.push(`lock ${agent} ${wf}`)
    }
  }
  return left
}

describe('hand-off of sent work', () => {
  it('runs the receiving actor in the sending process, and leaves no hint or lock behind', async () => {
    const rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
    runtimes.push(rt)
    // One relay at a time: each finds echo's actor free and a free local slot
    // (default concurrency 16), and no pick of echo's worker is on its way. (In a
    // burst, a pick woken by one hand-off may take the pre-hint of a commit whose
    // reply is still coming; that actor then runs from the pick, as from any pick.)
    const ids: string[] = []
    for (let i = 0; i < 12; i++) ids.push(...(await relayAll(1, 'hi')))
    expect(await counterValue(rt, 'troupe_handoffs_total', 'echo')).toBe(12)
    expect(await counterValue(rt, 'troupe_activations_total', 'echo')).toBe(12)
    // Taken by this process's own pick: no wake-up went out for echo.
    expect(await counterValue(rt, 'troupe_wakeups_total', 'echo')).toBe(0)
    expect(await redis.zcard(keys.wake('echo'))).toBe(0)
    await eventually(async () => (await leftovers(ids)).length === 0, 5000, 'hints and locks released')
  })

  it('runs a burst of relays exactly once each, handing most of them over', async () => {
    const rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
    runtimes.push(rt)
    const ids = await relayAll(12, 'hi')
    await eventually(async () => (await counterValue(rt, 'troupe_actions_total', 'echo', 'completed')) >= 12, 5000, 'twelve echo commits counted')
    expect(await counterValue(rt, 'troupe_actions_total', 'echo', 'completed')).toBe(12)
    expect(await counterValue(rt, 'troupe_handoffs_total', 'echo')).toBeGreaterThanOrEqual(1)
    await eventually(async () => (await leftovers(ids)).length === 0, 5000, 'hints and locks released')
  })

  it('falls back to the ready queue when the local slots are full, so another process runs the rest', async () => {
    const a = await startRuntime({ agents: [counter, { ...echo, concurrency: 1 }], config: cfg, metricsPort: false })
    const b = await startRuntime({ agents: [echo], config: cfg, metricsPort: false })
    runtimes.push(a, b)
    // Each echo streams 100 characters (about 0.2 s), so a's single slot stays busy.
    const ids = await relayAll(6, 'x'.repeat(100))
    // The metric follows the commit's reply, a moment after the event is visible.
    const completed = async (): Promise<number> => (await counterValue(a, 'troupe_actions_total', 'echo', 'completed')) + (await counterValue(b, 'troupe_actions_total', 'echo', 'completed'))
    await eventually(async () => (await completed()) >= 6, 5000, 'six echo commits counted')
    expect(await completed()).toBe(6)
    const handedOff = await counterValue(a, 'troupe_handoffs_total', 'echo')
    expect(handedOff).toBeGreaterThanOrEqual(1)
    expect(handedOff).toBeLessThan(6)
    expect(await counterValue(b, 'troupe_activations_total', 'echo')).toBeGreaterThanOrEqual(1)
    await eventually(async () => (await leftovers(ids)).length === 0, 5000, 'hints and locks released')
  })
})
