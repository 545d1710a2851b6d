// Registrations of agents nobody hosts any more. Runtimes rewrite theirs every
// 10 s and nothing removed one, so an agent a release dropped stayed registered:
// runtimes sent to it (the actions queued for no one), and the supervisor
// reported figures for every agent name ever deployed. A registration not
// rewritten for 10 minutes (REGISTRATION_STALE_MS, on Redis's clock) no longer
// counts, and the leader removes one older than an hour unless a live service
// hosts the agent or work is still queued for it.
import { setup } from 'xstate'
import { afterEach, describe, expect, it } from 'vitest'
import { supervisorService } from '../../agents/supervisor.ts'
import { defineAgent, startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { fleetSettings, type TroupeConfig } from '../../runtime/config.ts'
import { serverNow } from '../../runtime/supervisor/queues.ts'
import { readRollup } from '../../runtime/supervisor/rollups.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const MINUTE = 60_000
const idle = defineAgent({ name: 'idle', machine: setup({}).createMachine({ on: { t: { actions: () => undefined } } }) })

const running: Runtime[] = []
const clients: TroupeClient[] = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()))
  await Promise.all(clients.splice(0).map((c) => c.close()))
})

function clientFor(cfg: TroupeConfig): TroupeClient {
  const c = TroupeClient.connect(cfg)
  clients.push(c)
  return c
}

/** Registers `name` as a runtime would have, `ageMs` ago by Redis's clock; returns the value written. */
async function register(c: TroupeClient, name: string, ageMs: number, actionTypes = ['t']): Promise<string> {
  const json = JSON.stringify({ version: 1, actionTypes, actionPatterns: [], ...fleetSettings(c.cfg), updatedAt: (await serverNow(c.redis)) - ageMs })
  await c.redis.hset(c.keys.agents(), name, json)
  return json
}

describe('stale agent registrations', () => {
  it('a runtime refuses a send to an agent last registered 11 minutes ago, as to an unknown one', async () => {
    const cfg = testConfig()
    const c = clientFor(cfg)
    await register(c, 'echo', 11 * MINUTE, ['echo'])
    running.push(await startRuntime({ agents: [counter], config: cfg, metricsPort: false }))
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'relay', payload: { text: 'hi' } })
    const failed = await eventually(async () => (await c.readEvents(workflowId, '0', 100)).find((e) => e.event.type === 'action.failed'), 10_000, 'the relay to fail')
    expect(JSON.stringify(failed.event)).toMatch(/unknown agent 'echo' \(no live runtime hosts it: it was last registered 11 minutes ago\)/)
    expect(await c.redis.zcard(c.keys.mailbox(workflowId, 'echo'))).toBe(0)
  })

  it('a runtime sends to an agent registered a minute ago (its runtimes restarting)', async () => {
    const cfg = testConfig()
    const c = clientFor(cfg)
    await register(c, 'echo', MINUTE, ['echo'])
    running.push(await startRuntime({ agents: [counter], config: cfg, metricsPort: false }))
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'relay', payload: { text: 'hi' } })
    // Nobody hosts echo here: the action waits in its mailbox.
    await eventually(async () => (await c.redis.zcard(c.keys.mailbox(workflowId, 'echo'))) === 1, 10_000, 'the relayed action queued for echo')
    expect((await c.readEvents(workflowId, '0', 100)).filter((e) => e.event.type === 'action.failed')).toEqual([])
  })

  it('the leader removes registrations over an hour old that nobody hosts', async () => {
    const { c } = await fleetWithRegistrations()
    await eventually(async () => (await c.redis.hexists(c.keys.agents(), 'legacy')) === 0, 10_000, 'legacy removed')
    const left = await c.redis.hgetall(c.keys.agents())
    expect(left.unsaid).toBeUndefined()
    expect(Object.keys(left).sort()).toEqual(['fresh', 'idle', 'leftover', 'recent'])
  })

  it('the leader reports no agent whose registration is stale, unless work is queued for it', async () => {
    const { c, values } = await fleetWithRegistrations()
    const rollup = await eventually(async () => {
      const r = await readRollup(c.redis, c.keys)
      return r && 'idle' in r.agents ? r : null
    }, 10_000, 'a rollup')
    expect(Object.keys(rollup.agents).sort()).toEqual(['fresh', 'idle', 'leftover'])
    expect(rollup.agents.leftover?.hinted).toBe(1)
    // Removed or not, nothing live was touched.
    const left = await c.redis.hgetall(c.keys.agents())
    for (const name of ['recent', 'fresh', 'leftover'] as const) expect(left[name]).toBe(values[name])
    // The worker may have rewritten its own since: kept either way.
    expect(left.idle).toBeDefined()
  })
})

/**
 * A namespace with a live worker hosting `idle`, a leader supervisor, and
 * registrations of every age: `legacy` (61 minutes, nobody hosts it), `unsaid`
 * (no time: a hand edit), `recent` (11 minutes), `fresh` (1 minute),
 * `leftover` (61 minutes, an actor still hinted) and `idle` (61 minutes, but
 * hosted: the worker's next rewrite is seconds away).
 */
async function fleetWithRegistrations(): Promise<{ c: TroupeClient; values: Record<'recent' | 'fresh' | 'leftover', string> }> {
  const cfg = testConfig()
  const c = clientFor(cfg)
  running.push(await startRuntime({ agents: [idle], config: cfg, heartbeatMs: 100, metricsPort: false }))
  await register(c, 'legacy', 61 * MINUTE)
  await c.redis.hset(c.keys.agents(), 'unsaid', JSON.stringify({ version: 1, actionTypes: ['t'] }))
  const values = { recent: await register(c, 'recent', 11 * MINUTE), fresh: await register(c, 'fresh', MINUTE), leftover: await register(c, 'leftover', 61 * MINUTE) }
  await c.redis.zadd(c.keys.ready('leftover'), await serverNow(c.redis), 'wfleft')
  await register(c, 'idle', 61 * MINUTE)
  running.push(await startRuntime({ agents: [], services: [supervisorService({ tickMs: 100, leaseMs: 2000 })], config: cfg, heartbeatMs: 100, metricsPort: false }))
  return { c, values }
}
