// Exactly once across crashes: a few hundred workflows' events, drained by two
// persister processes, one of them killed with SIGKILL while it holds an unacked
// batch and then restarted. Every event lands once (counts equal per workflow, no
// edge written twice), and the dead consumer's entries are taken over.
import type { Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { spawnRuntime, scrapeCounter, type RuntimeChild } from '../helpers/processes.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { cleanGraph, graphCounts, idPrefix, neo4jEnv, openDriver, persistedEvents } from './helpers.ts'

const cfg = testConfig()
const prefix = idPrefix()
const env = neo4jEnv()
const WORKFLOWS = 300
let driver: Driver
let client: TroupeClient
const children: RuntimeChild[] = []

async function persister(): Promise<RuntimeChild & { serviceId: string }> {
  const c = await spawnRuntime(cfg, {
    command: ['persister', '--claim-idle', '2s', '--reconcile-every', '0', '--heartbeat', '500ms'],
    env: { NEO4J_URI: env.uri, NEO4J_USER: env.user, NEO4J_PASSWORD: env.password },
  })
  children.push(c)
  const serviceId = /runtime (\S+) \(persister\)/.exec(c.output())?.[1] ?? ''
  return Object.assign(c, { serviceId })
}

beforeAll(() => {
  driver = openDriver(env)
  client = TroupeClient.connect(cfg)
})

afterAll(async () => {
  await Promise.all(children.map((c) => c.stop(5000)))
  await client?.close()
  if (driver) {
    await cleanGraph(driver, prefix)
    await driver.close()
  }
})

describe('persister crash', () => {
  it('persists every event of 300 workflows exactly once with a persister killed -9 mid-batch', async () => {
    const rt = await spawnRuntime(cfg)
    children.push(rt)
    const ids = Array.from({ length: WORKFLOWS }, (_, i) => `${prefix}-${i}`)
    // The backlog builds up before any persister runs, so the kill lands while both are busy.
    for (let i = 0; i < ids.length; i += 50) {
      await Promise.all(ids.slice(i, i + 50).map(async (wf, j) => {
        await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'relay', payload: { text: `w${i + j}` } })
        await client.sendAction(wf, 'counter', 'ping', { i: 1 })
        await client.sendAction(wf, 'counter', 'ping', { i: 2 })
        await client.sendAction(wf, 'counter', 'finish', {})
      }))
    }
    await eventually(async () => {
      const st = await Promise.all(ids.map((wf) => client.redis.hget(client.keys.status(wf), 'status')))
      return st.every((s) => s === 'completed')
    }, 60_000, 'all workflows completed')
    const lens = await Promise.all(ids.map((wf) => client.redis.xlen(client.keys.events(wf))))
    const total = lens.reduce((s, n) => s + Number(n), 0)
    expect(total).toBeGreaterThan(WORKFLOWS * 10)

    const [a, victim] = await Promise.all([persister(), persister()])
    // SIGKILL the victim while it holds entries it has read and not acked.
    const q = client.keys.persistence()
    await eventually(async () => {
      const consumers = (await client.redis.xinfo('CONSUMERS', q, 'persister')) as unknown[][]
      const mine = consumers.find((c) => c[1] === victim.serviceId)
      return mine && Number(mine[3]) > 0
    }, 30_000, 'victim holding a batch')
    victim.signal('SIGKILL')
    await victim.exited()
    const held = ((await client.redis.xinfo('CONSUMERS', q, 'persister')) as unknown[][]).find((c) => c[1] === victim.serviceId)
    // Its batch is still pending: read, maybe written, never acked.
    expect(Number(held?.[3])).toBeGreaterThan(0)

    await persister()
    await eventually(async () => (await persistedEvents(driver, ids)) >= total, 60_000, 'every event persisted')
    await eventually(async () => Number(await client.redis.xlen(q)) === 0, 20_000, 'queue drained')

    const counts = await graphCounts(driver, ids)
    ids.forEach((wf, i) => {
      const c = counts.get(wf)
      expect(c?.events, wf).toBe(Number(lens[i]))
      expect(c?.distinct, wf).toBe(c?.events)
      expect(c?.maxHas, wf).toBe(1)
      expect(c?.maxEmitted ?? 0, wf).toBeLessThanOrEqual(1)
      expect(c?.maxChild ?? 0, wf).toBeLessThanOrEqual(1)
      expect(c?.maxCaused ?? 0, wf).toBeLessThanOrEqual(1)
    })
    expect(await persistedEvents(driver, ids)).toBe(total)
    const pending = await client.redis.xpending(q, 'persister')
    expect(Number(pending[0])).toBe(0)
    // Statuses reached the graph too, and the survivor reports what it wrote.
    const done = await driver.executeQuery('UNWIND $ids AS id MATCH (w:Workflow {id: id}) WHERE w.status = "completed" RETURN count(w) AS n', { ids })
    expect(Number(done.records[0]?.get('n'))).toBe(WORKFLOWS)
    expect(await scrapeCounter(a.metricsUrl, 'troupe_persister_events_total')).toBeGreaterThan(0)
    // Three rounds of starts (spawnRuntime allows 30 s each) and the waits above
    // (170 s), with a minute for the sends and the graph reads: a slow run fails on
    // the wait that ran out, not on the test's timeout.
  }, 3 * 30_000 + 170_000 + 60_000)
})
