// Every persister process joins the consumer group `persister` under a name of
// its own, so the consumers of persisters gone pile up in XINFO CONSUMERS unless
// removed. They were removed only by the reconciliation sweep: with it off
// (--reconcile-every 0) never. Pruning now runs on a timer of its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { persisterService, type PersisterService } from '../../agents/persister.ts'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { GROUP } from '../../runtime/persister/queue.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { neo4jEnv } from './helpers.ts'

const cfg = testConfig()
const env = neo4jEnv()
let client: TroupeClient
let rt: Runtime | undefined
let svc: PersisterService

async function consumers(): Promise<Map<string, number>> {
  const raw = (await client.redis.xinfo('CONSUMERS', client.keys.persistence(), GROUP)) as unknown[][]
  const out = new Map<string, number>()
  for (const c of raw) {
    const f = (name: string): unknown => c[c.indexOf(name) + 1]
    out.set(String(f('name')), Number(f('pending')))
  }
  return out
}

beforeAll(() => {
  client = TroupeClient.connect(cfg)
})

afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

describe('consumers of persisters gone', () => {
  it('are removed with reconciliation off, unless they hold entries', async () => {
    const queue = client.keys.persistence()
    await client.redis.xgroup('CREATE', queue, GROUP, '0', 'MKSTREAM')
    // Two persisters gone: one that held nothing, one that died holding an entry
    // (only another persister's claim may take that over, never a prune).
    await client.redis.call('XGROUP', 'CREATECONSUMER', queue, GROUP, 'gone-idle')
    await client.redis.xadd(queue, '*', 'wf', 'no-such-workflow', 'from', '1-0', 'to', '1-0')
    await client.redis.xreadgroup('GROUP', GROUP, 'gone-holding', 'COUNT', 1, 'STREAMS', queue, '>')
    svc = persisterService({ neo4jUri: env.uri, neo4jUser: env.user, neo4jPassword: env.password, reconcileMs: 0, pruneIdleMs: 1000, claimIdleMs: 600_000, blockMs: 200 })
    rt = await startRuntime({ agents: [counter], services: [svc], config: cfg, metricsPort: false })
    const own = rt.serviceId
    await eventually(() => Promise.resolve(svc.state === 'consuming'), 60_000, 'the persister consuming')
    // Redis before 7.2 lists a consumer once it has read something.
    await client.redis.xadd(queue, '*', 'wf', 'no-such-workflow', 'from', '1-0', 'to', '1-0')
    await eventually(async () => (await consumers()).has(own), 20_000, 'the persister reading')
    await eventually(async () => !(await consumers()).has('gone-idle'), 20_000, 'the idle consumer removed')
    const left = await consumers()
    expect(left.get('gone-holding')).toBe(1)
    expect(left.has(own)).toBe(true)
  }, 90_000)
})
