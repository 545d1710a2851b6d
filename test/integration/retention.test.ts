// With persistence off no persister expires a finished workflow: the scripts that
// end it (the completing commit, cancel) must put the retention TTL on every key
// it has, every agent's included. A soak with persistence off once left thousands
// of other agents' actor hashes behind.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, echo, flaky } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const RETENTION = 600_000
const cfg = testConfig({ persistence: false, retentionMs: RETENTION })
let rt: Runtime
let client: TroupeClient

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo, flaky], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

/** Every key of the workflow with its PTTL (-1: none). */
async function keysOf(wf: string, c = client): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  let cursor = '0'
  do {
    const [next, batch] = await c.redis.scan(cursor, 'MATCH', `${c.keys.ns}*{${wf}}*`, 'COUNT', 1000)
    cursor = next
    for (const k of batch) out.set(k, await c.redis.pttl(k))
  } while (cursor !== '0')
  return out
}

function withoutTtl(keys: Map<string, number>): string[] {
  return [...keys].filter(([, ttl]) => !(ttl > 0 && ttl <= RETENTION)).map(([k, ttl]) => `${k} (${ttl})`)
}

describe('retention of ended workflows', () => {
  it('a completing commit expires every agent\'s keys, not only its own', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    await client.sendAction(wf, 'counter', 'relay', { text: 'hi' })
    await eventually(async () => (await client.readEvents(wf)).some((e) => e.event.type === 'echoed'), 10_000, 'echo ran')
    await eventually(async () => (await client.getStatus(wf))?.agents.echo === 'idle', 10_000, 'echo idle')
    await client.sendAction(wf, 'counter', 'finish')
    await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 10_000, 'completed')
    const keys = await keysOf(wf)
    // echo's actor hash is the key the completing commit (counter's) used to leave behind.
    expect([...keys.keys()]).toContain(client.keys.actor(wf, 'echo'))
    expect(withoutTtl(keys)).toEqual([])
  })

  it('a completing commit drops every agent\'s queue, as cancel does', async () => {
    // Before, only the completing agent's own queue went: another agent's
    // delayed action stayed "queued" (and counted) in a completed workflow
    // until an activation came for it, an hour later here.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    const { actionId } = await client.sendAction(wf, 'echo', 'echo', { text: 'later' }, { delayMs: 3_600_000, validate: false })
    await client.sendAction(wf, 'counter', 'finish')
    await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 10_000, 'completed')
    expect(await client.redis.exists(client.keys.mailbox(wf, 'echo'))).toBe(0)
    const st = JSON.parse((await client.redis.hget(client.keys.actions(wf), `${actionId}:st`)) ?? '{}') as { status?: string }
    expect(st.status).toBe('cancelled')
    expect((await client.getStatus(wf))?.counts.queued).toBe(0)
    expect(withoutTtl(await keysOf(wf))).toEqual([])
  })

  it('cancel expires every agent\'s keys, the dead letters and the sequence', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'flaky', type: 'throw' })
    await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1, 15_000, 'dead letter')
    await client.sendAction(wf, 'counter', 'ping', { i: 1 })
    await eventually(async () => (await client.getStatus(wf))?.agents.counter != null, 10_000, 'counter ran')
    // One action still queued when the workflow is cancelled.
    await client.sendAction(wf, 'echo', 'echo', { text: 'later' }, { delayMs: 3_600_000, validate: false })
    const { dropped } = await client.cancelWorkflow(wf)
    expect(dropped).toBe(1)
    const keys = await keysOf(wf)
    for (const k of [client.keys.dead(wf), client.keys.seq(wf), client.keys.actor(wf, 'flaky'), client.keys.actor(wf, 'counter')]) {
      expect([...keys.keys()]).toContain(k)
    }
    expect(withoutTtl(keys)).toEqual([])
  })

  it('cancel drops the queue of an agent whose first action came after the caller looked', async () => {
    // A caller that read the workflow's agents before the script ran (as the
    // client once did) missed an agent whose first action landed in between: its
    // mailbox stayed, the action "queued" in a cancelled workflow, without a TTL.
    // The client's own read of the agents is pinned to that earlier moment here.
    const { workflowId: wf } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 10_000, 'counter ran')
    const before = await client.redis.hkeys(client.keys.status(wf))
    expect(before).not.toContain('agent:echo')
    const { actionId } = await client.sendAction(wf, 'echo', 'echo', { text: 'late' }, { delayMs: 3_600_000, validate: false })
    // Today's client reads nothing first (the script finds the agents); a client
    // that did would get this stale answer.
    const hkeys = vi.spyOn(client.redis, 'hkeys').mockResolvedValue(before)
    try {
      const { dropped } = await client.cancelWorkflow(wf)
      expect(dropped).toBe(1)
    } finally {
      hkeys.mockRestore()
    }
    expect(await client.redis.exists(client.keys.mailbox(wf, 'echo'))).toBe(0)
    const st = JSON.parse((await client.redis.hget(client.keys.actions(wf), `${actionId}:st`)) ?? '{}') as { status?: string }
    expect(st.status).toBe('cancelled')
    expect(withoutTtl(await keysOf(wf))).toEqual([])
  })

  it('an activation for a workflow that does not exist touches nothing of its actor', async () => {
    // A stale ready hint (its workflow expired) with persistence on: a hash the
    // activation made would never expire. And on a Cluster a hint can come before
    // its workflow's start script: a TTL put on the actor then would later expire
    // the live workflow's actor.
    const on = testConfig({ persistence: true, idlePollMs: 50 })
    const rt2 = await startRuntime({ agents: [counter], config: on, metricsPort: false })
    const admin = TroupeClient.connect(on)
    try {
      const wf = 'not-yet-a-workflow'
      const actor = admin.keys.actor(wf, 'counter')
      await admin.redis.zadd(admin.keys.ready('counter'), Date.now(), wf)
      await eventually(async () => (await admin.redis.zscore(admin.keys.ready('counter'), wf)) === null, 10_000, 'the hint taken')
      expect(await admin.redis.exists(actor)).toBe(0)
      // Now it starts, as the enqueue after an early hint does: it runs, and its actor lasts.
      await admin.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 1 } })
      await admin.sendAction(wf, 'counter', 'ping', { i: 2 })
      await eventually(async () => (await admin.getStatus(wf))?.counts.done === 2, 10_000, 'both pings')
      expect(await admin.redis.hget(actor, 'fence')).not.toBeNull()
      expect(await admin.redis.pttl(actor)).toBe(-1)
    } finally {
      await rt2.stop()
      await admin.close()
    }
  })

  it('an activation for an ended workflow whose keys expire makes no key without a TTL', async () => {
    // With persistence on, the persister puts the TTLs on every key the ended
    // workflow has; a stale hint that came due after that (an agent's delayed
    // first action, its mailbox dropped by the cancel) once made an actor hash
    // that never expired.
    const on = testConfig({ persistence: true, idlePollMs: 50 })
    const rt2 = await startRuntime({ agents: [counter, echo], config: on, metricsPort: false })
    const admin = TroupeClient.connect(on)
    try {
      const { workflowId: wf } = await admin.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
      await eventually(async () => (await admin.getStatus(wf))?.counts.done === 1, 10_000, 'counter ran')
      await admin.cancelWorkflow(wf)
      // What the persister does once the workflow's history is in Neo4j.
      for (const k of (await keysOf(wf, admin)).keys()) await admin.redis.pexpire(k, RETENTION)
      const counterFence = await admin.redis.hget(admin.keys.actor(wf, 'counter'), 'fence')
      for (const agent of ['echo', 'counter']) await admin.redis.zadd(admin.keys.ready(agent), Date.now(), wf)
      for (const agent of ['echo', 'counter']) {
        await eventually(async () => (await admin.redis.zscore(admin.keys.ready(agent), wf)) === null, 10_000, `${agent}'s hint taken`)
      }
      expect(await admin.redis.exists(admin.keys.actor(wf, 'echo'))).toBe(0)
      // The actor that did run is fenced as before (a stale activation's commit must fail) and keeps its TTL.
      expect(Number(await admin.redis.hget(admin.keys.actor(wf, 'counter'), 'fence'))).toBe(Number(counterFence) + 1)
      expect(withoutTtl(await keysOf(wf, admin))).toEqual([])
    } finally {
      await rt2.stop()
      await admin.close()
    }
  })
})
