// A requeued action in the graph: `action.requeued` puts its (:Action) back to
// queued when only the events tell its status (its record gone from Redis), and
// a real requeue ends with the action done and the requeue in its history.
import type { Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { persisterService, type PersisterService } from '../../agents/persister.ts'
import { startRuntime, TroupeClient, type Runtime, type WorkflowEvent } from '../../runtime/index.ts'
import { switchableAgent } from '../fixtures/agents.ts'
import { workflowRows } from '../../runtime/persister/rows.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { cleanGraph, idPrefix, neo4jEnv, openDriver } from './helpers.ts'

const cfg = testConfig()
const prefix = idPrefix()
const env = neo4jEnv()
/** While set, `wobbly` fails every action; maxAttempts 1 dead-letters it at once. */
let failing = true

const wobbly = switchableAgent(`${prefix}wobbly`, () => failing)

let driver: Driver
let client: TroupeClient
let rt: Runtime
let svc: PersisterService

beforeAll(async () => {
  driver = openDriver(env)
  svc = persisterService({ neo4jUri: env.uri, neo4jUser: env.user, neo4jPassword: env.password, claimIdleMs: 1000, reconcileMs: 0, blockMs: 200, retentionMs: 60_000 })
  rt = await startRuntime({ agents: [wobbly], services: [svc], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
  await eventually(() => Promise.resolve(svc.state === 'consuming'), 60_000, 'persister consuming')
})

afterAll(async () => {
  await rt?.stop()
  await client?.close()
  if (driver) {
    await cleanGraph(driver, prefix)
    await driver.executeQuery('MATCH (a:Agent) WHERE a.name STARTS WITH $p DETACH DELETE a', { p: prefix })
    await driver.close()
  }
})

async function drained(): Promise<void> {
  await eventually(async () => Number(await client.redis.xlen(client.keys.persistence())) === 0 && svc.state === 'consuming', 30_000, 'persistence:queue drained')
}

async function actionStatus(id: string): Promise<string | null> {
  const r = await driver.executeQuery('MATCH (a:Action {id: $id}) RETURN a.status AS s', { id })
  return (r.records[0]?.get('s') as string | null | undefined) ?? null
}

const ev = (wf: string, type: string, actionId: string, content: Record<string, unknown>): WorkflowEvent => ({
  id: `${wf}-${type}`, workflowId: wf, type, content: { actionId, agent: `${prefix}a`, ...content }, metadata: { at: 1, agent: `${prefix}a`, actionId },
})

describe('action.requeued in the graph', () => {
  it('reads as queued when the events alone tell an action\'s status', () => {
    const wf = `${prefix}-rows`
    const rows = workflowRows({
      wf,
      entries: [ev(wf, 'action.enqueued', 'x', { type: 'work' }), ev(wf, 'action.dead', 'x', { error: 'boom' }), ev(wf, 'action.requeued', 'x', { type: 'work' })]
        .map((event, i) => ({ streamId: `1-${i}`, event })),
      status: { status: 'running' },
      lastId: '1-2',
      actions: new Map(),
    })
    expect(rows.actions).toMatchObject([{ id: 'x', status: 'queued', agent: `${prefix}a`, type: 'work' }])
  })

  it('puts the (:Action) back to queued from the stream when its record is gone', async () => {
    const wf = `${prefix}-gone`
    const actionId = `${wf}-act`
    const ids: string[] = []
    for (const e of [ev(wf, 'action.dead', actionId, { error: 'boom' }), ev(wf, 'action.requeued', actionId, { type: 'work' })]) {
      ids.push((await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify(e))) as string)
    }
    await client.redis.hset(client.keys.status(wf), { status: 'running', owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
    await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', ids[0] as string, 'to', ids[1] as string)
    await drained()
    await eventually(async () => (await actionStatus(actionId)) !== null, 20_000, 'the action written')
    expect(await actionStatus(actionId)).toBe('queued')
  })

  it('records a real requeue: dead, then done, with the requeue caused by the action', async () => {
    failing = true
    const { workflowId: wf, actionId } = await client.startWorkflow({ agent: wobbly.name, type: 'work', workflowId: `${prefix}-real` })
    await eventually(async () => (await client.getStatus(wf))?.counts.dead === 1, 20_000, 'dead-lettered')
    await drained()
    await eventually(async () => (await actionStatus(actionId)) === 'dead', 20_000, 'dead in the graph')
    failing = false
    expect((await client.requeueDead(wf)).requeued).toEqual([actionId])
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 20_000, 'done after the requeue')
    await drained()
    await eventually(async () => (await actionStatus(actionId)) === 'done', 20_000, 'done in the graph')
    const caused = await driver.executeQuery("MATCH (:Action {id: $id})-[:CAUSED]->(e:Event) WHERE e.type STARTS WITH 'action.' RETURN e.type AS t ORDER BY e.streamKey", { id: actionId })
    const types = caused.records.map((r) => r.get('t') as string)
    expect(types.slice(types.indexOf('action.dead'))).toEqual(['action.dead', 'action.requeued', 'action.completed'])
  }, 60_000)
})
