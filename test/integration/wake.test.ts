// Idle workers block on their agent's wake-up marker: one enqueue wakes one
// worker, not every process. The idle poll is set far beyond the test's waits, so
// anything that completes here was started by a wake-up.
import type { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, flaky, slow } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ idlePollMs: 60_000, lockTtlMs: 60_000 })
const client = TroupeClient.connect(cfg)
let runtimes: Runtime[] = []

afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stop()))
  await client.close()
})

async function total(name: string): Promise<number> {
  let sum = 0
  for (const rt of runtimes) {
    const m = await rt.metrics.registry.getSingleMetric(name)?.get()
    sum += m?.values.find((v) => v.labels.agent === 'counter')?.value ?? 0
  }
  return sum
}

/** The local port of the connection `rt`'s worker for `agent` blocks on (the runtime keeps it private). */
function blockerPort(rt: Runtime, agent: string): number | undefined {
  const w = rt.workers.get(agent) as unknown as { blocker: Redis | null } | undefined
  return w?.blocker?.stream?.localPort
}

/** Client ports of the connections Redis holds blocked in BZPOPMIN now. */
async function blockedPorts(): Promise<Set<number>> {
  const list = String(await client.redis.call('CLIENT', 'LIST'))
  const ports = new Set<number>()
  for (const line of list.split('\n')) {
    if (!/ flags=\S*b/.test(line) || !/ cmd=bzpopmin /.test(line)) continue
    const m = / addr=\S+:(\d+) /.exec(line)
    if (m) ports.add(Number(m[1]))
  }
  return ports
}

async function pings(wf: string): Promise<number> {
  return (await client.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.completed').length
}

describe('wake-ups', () => {
  it('an action for an idle agent wakes exactly one of three idle processes', async () => {
    runtimes = await Promise.all([1, 2, 3].map(() => startRuntime({ agents: [counter], config: cfg, metricsPort: false })))
    // Every worker finished its first pick and blocks on the marker, as Redis sees
    // it: otherwise a worker still on its first pick could take the ping unwoken.
    await eventually(async () => {
      const ports = runtimes.map((rt) => blockerPort(rt, 'counter'))
      const blocked = await blockedPorts()
      return ports.every((p) => p !== undefined && blocked.has(p))
    }, 10_000, 'the three workers blocked in BZPOPMIN')
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    await eventually(async () => (await pings(workflowId)) === 1, 10_000, 'the ping to run (only a wake-up can start it)')
    expect(await total('troupe_wakeups_total')).toBe(1)
    expect(await total('troupe_activations_total')).toBe(1)

    // Later actions to the same idle agent keep waking one worker each.
    for (let i = 0; i < 3; i++) {
      await client.sendAction(workflowId, 'counter', 'ping', { i })
      await eventually(async () => (await pings(workflowId)) === i + 2, 10_000, `ping ${i + 2}`)
    }
    expect(await total('troupe_wakeups_total')).toBe(4)
  })

  it('an actor handed back for fairness (a second active, 256 turns) with work still due is picked again at once', async () => {
    // A runtime of its own (slow's only host), so slow's activation count is this test's alone.
    const rt = await startRuntime({ agents: [slow, counter], config: cfg, metricsPort: false })
    try {
      const activations = async (): Promise<number> =>
        (await rt.metrics.registry.getSingleMetric('troupe_activations_total')?.get())?.values.find((v) => v.labels.agent === 'slow')?.value ?? 0
      // The first action runs past MAX_ACTIVE_MS (1 s) while 300 quick ones queue
      // behind it: its commit hands the actor back (time), and the next activation
      // hands it back again after 256 of them (turns). Each hand-back leaves work
      // due that only an immediate re-pick runs: the idle poll is 60 s.
      const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 1500, i: 0 } })
      await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'working')
      for (let i = 1; i <= 300; i += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, j) => client.sendAction(workflowId, 'slow', 'work', { ms: 0, i: i + j })))
      }
      // Each work sends counter a ping: 301 of each.
      await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 602, 30_000, '301 works and their pings')
      // Two hand-backs at least: three activations. Without them one activation ran it all.
      expect(await activations()).toBeGreaterThanOrEqual(3)
    } finally {
      await rt.stop()
    }
  })

  it('a draining process hands an actor it meant to run again to another process at once', async () => {
    const a = await startRuntime({ agents: [slow], config: cfg, metricsPort: false })
    // Long enough that b starts and a begins to drain while it runs, even on a slow machine.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 5000, i: 1 } })
    await eventually(async () => (await client.getStatus(wf))?.agents.slow === 'working', 10_000, 'working')
    // The second action's wake-up reaches a's own worker while the actor runs
    // there: its pick only leases the hint (a lease carries a fraction of a ms),
    // to run the actor again when this activation ends.
    await client.sendAction(wf, 'slow', 'work', { ms: 10, i: 2 })
    const ready = client.keys.ready('slow')
    await eventually(async () => !Number.isInteger(Number(await client.redis.zscore(ready, wf))), 10_000, 'a leased the hint for a rerun')
    const b = await startRuntime({ agents: [slow], config: cfg, metricsPort: false })
    runtimes.push(b)
    // a drains: its action finishes and its release leaves the rerun's lease (60 s) on the hint.
    await a.stop()
    const slowDone = async (): Promise<number> =>
      (await client.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.completed' && e.event.metadata?.agent === 'slow').length
    await eventually(async () => (await slowDone()) === 2, 10_000, 'the second action run by b, not after the 60 s lease')
    // b ran it: a, draining, did not rerun the actor itself.
    const bActivations = (await b.metrics.registry.getSingleMetric('troupe_activations_total')?.get())?.values.find((v) => v.labels.agent === 'slow')?.value ?? 0
    expect(bActivations).toBeGreaterThanOrEqual(1)
  })

  it('a retry runs when its backoff ends, not at the next poll', async () => {
    runtimes.push(await startRuntime({ agents: [flaky], config: cfg, metricsPort: false }))
    const { workflowId } = await client.startWorkflow({ agent: 'flaky', type: 'flaky', payload: { failTimes: 2 } })
    // Backoff 50 ms then 100 ms: only a wake-up at the retry's time can finish it before the 60 s poll.
    await eventually(async () => (await client.readEvents(workflowId, '0', 1000)).some((e) => e.event.type === 'succeeded'), 15_000, 'success after two retries')
  })
})
