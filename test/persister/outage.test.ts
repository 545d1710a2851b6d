// A Neo4j outage in the middle of a run: the persister backs off (entries stay in
// persistence:queue, lag grows, errors are counted), and once Neo4j is back every
// event lands exactly once. Uses a Neo4j of its own so it can stop and restart it
// on the same port and data directory without disturbing other test files.
import neo4j, { type Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { scrapeCounter, spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { graphCounts, idPrefix, neo4jEnv, persistedEvents, startOwnNeo4j, type OwnNeo4j } from './helpers.ts'

const cfg = testConfig()
const prefix = idPrefix()
let own: OwnNeo4j | undefined
let driver: Driver
let client: TroupeClient
const children: RuntimeChild[] = []

async function gauge(url: string, name: string): Promise<number> {
  return await scrapeCounter(url, name)
}

beforeAll(async () => {
  neo4jEnv()
  own = await startOwnNeo4j()
  driver = neo4j.driver(own.uri, undefined, { logging: { level: 'error', logger: () => undefined } })
  client = TroupeClient.connect(cfg)
}, 150_000)

afterAll(async () => {
  await Promise.all(children.map((c) => c.stop(5000)))
  await client?.close()
  await driver?.close()
  await own?.destroy()
}, 60_000)

describe('Neo4j outage', () => {
  it('backs off while Neo4j is down and persists every event exactly once after it returns', async () => {
    if (!own) throw new Error('no Neo4j')
    children.push(await spawnRuntime(cfg))
    const p = await spawnRuntime(cfg, {
      command: ['persister', '--claim-idle', '3s', '--reconcile-every', '0'],
      env: { NEO4J_URI: own.uri, NEO4J_USER: own.user, NEO4J_PASSWORD: own.password },
    })
    children.push(p)
    const ids: string[] = []
    let n = 0
    const run = async (count: number): Promise<void> => {
      const batch = Array.from({ length: count }, () => `${prefix}-${n++}`)
      ids.push(...batch)
      await Promise.all(batch.map(async (wf) => {
        await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 0 } })
        await client.sendAction(wf, 'counter', 'relay', { text: 'abc' })
        await client.sendAction(wf, 'counter', 'finish', {})
      }))
    }
    await run(40)
    await eventually(async () => (await persistedEvents(driver, ids)) > 0, 30_000, 'first events persisted')

    await own.stop()
    await run(60)
    await eventually(async () => (await scrapeCounter(p.metricsUrl, 'troupe_persister_errors_total', { kind: 'neo4j' })) > 0, 30_000, 'a neo4j error counted')
    await eventually(async () => Number(await client.redis.xlen(client.keys.persistence())) > 0, 10_000, 'backlog while down')
    await eventually(async () => (await gauge(p.metricsUrl, 'troupe_persister_lag_seconds')) > 1, 10_000, 'lag growing while Neo4j is down')
    expect(await gauge(p.metricsUrl, 'troupe_persister_backlog')).toBeGreaterThan(0)
    const health = await client.redis.hget(client.keys.health((/runtime (\S+) \(persister\)/.exec(p.output()) ?? [])[1] ?? ''), 'persister')
    expect(['backingOff', 'connecting', 'writing', 'releasing']).toContain(health)

    await own.start()
    await run(40)
    await eventually(async () => {
      const st = await Promise.all(ids.map((wf) => client.redis.hget(client.keys.status(wf), 'status')))
      return st.every((s) => s === 'completed')
    }, 30_000, 'all workflows completed')
    const lens = await Promise.all(ids.map((wf) => client.redis.xlen(client.keys.events(wf))))
    const total = lens.reduce((s, x) => s + Number(x), 0)
    await eventually(async () => (await persistedEvents(driver, ids)) >= total, 60_000, 'every event persisted after the outage')
    const counts = await graphCounts(driver, ids)
    ids.forEach((wf, i) => {
      const c = counts.get(wf)
      expect(c?.events, wf).toBe(Number(lens[i]))
      expect(c?.distinct, wf).toBe(c?.events)
      expect(c?.maxHas, wf).toBe(1)
    })
    await eventually(async () => Number(await client.redis.xlen(client.keys.persistence())) === 0, 20_000, 'queue drained')
    await eventually(async () => (await gauge(p.metricsUrl, 'troupe_persister_lag_seconds')) < 1, 10_000, 'lag back to zero')
  }, 150_000)
})
