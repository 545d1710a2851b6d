// A workflow that never ends (a periodic timer) used to grow its event stream
// forever with persistence on: the scripts append without a cap, and retention
// only expires ended workflows. The persister now trims a stream longer than the
// cap (TROUPE_STREAM_MAXLEN, here 20) once Neo4j holds its older entries, never
// past one it lacks; reconciliation keeps seeing the trimmed stream as complete.
import type { Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { persisterService, type PersisterService } from '../../agents/persister.ts'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { cleanGraph, idPrefix, neo4jEnv, openDriver, persistedEvents } from './helpers.ts'

const CAP = 20
/** What a stream may exceed the cap by before it is trimmed (trimSlack in runtime/persister/trim.ts: a tenth). */
const SLACK = 2
const cfg = testConfig({ streamMaxLen: CAP })
const prefix = idPrefix()
const env = neo4jEnv()
let driver: Driver
let client: TroupeClient
let rt: Runtime
let svc: PersisterService
let seq = 0
const wfId = (): string => `${prefix}-${++seq}`

async function running(wf: string): Promise<void> {
  await client.redis.hset(client.keys.status(wf), { status: 'running', owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
}

/** Appends `n` events to `wf`'s stream, each with its pointer unless `point` is false; returns their stream ids. */
async function append(wf: string, n: number, point = true): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const id = (await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ id: `${wf}-${seq}-${Date.now()}-${i}-${Math.random()}`, workflowId: wf, type: 'tick', content: { i } }))) as string
    if (point) await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', id, 'to', id)
    ids.push(id)
  }
  return ids
}

async function drained(): Promise<void> {
  await eventually(async () => Number(await client.redis.xlen(client.keys.persistence())) === 0 && svc.state === 'consuming', 30_000, 'persistence:queue drained')
}

const xlen = async (wf: string): Promise<number> => Number(await client.redis.xlen(client.keys.events(wf)))
const firstId = async (wf: string): Promise<string | undefined> => ((await client.redis.xrange(client.keys.events(wf), '-', '+', 'COUNT', 1)) as [string, string[]][])[0]?.[0]
/** Events ever appended to the stream (XINFO STREAM entries-added), trimmed ones included. */
async function added(wf: string): Promise<number> {
  const info = (await client.redis.xinfo('STREAM', client.keys.events(wf))) as unknown[]
  return Number(info[info.indexOf('entries-added') + 1])
}

async function parkedFor(wf: string): Promise<string[]> {
  const entries = (await client.redis.xrange(client.keys.persistenceParked(), '-', '+')) as [string, string[]][]
  const field = (f: string[], name: string): string => f[f.indexOf(name) + 1] ?? ''
  return entries.filter(([, f]) => (JSON.parse(field(f, 'fields') || '[]') as string[])[1] === wf).map(([, f]) => field(f, 'reason'))
}

beforeAll(async () => {
  driver = openDriver(env)
  svc = persisterService({ neo4jUri: env.uri, neo4jUser: env.user, neo4jPassword: env.password, claimIdleMs: 1000, reconcileMs: 0, blockMs: 200 })
  rt = await startRuntime({ agents: [counter], services: [svc], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
  await eventually(() => Promise.resolve(svc.state === 'consuming'), 60_000, 'persister consuming')
}, 90_000)

afterAll(async () => {
  await rt?.stop()
  await client?.close()
  if (driver) {
    await cleanGraph(driver, prefix)
    await driver.close()
  }
})

describe('trimming the streams of running workflows', () => {
  it('keeps about the cap of a running workflow once Neo4j holds the rest, and reconciliation sees it complete', async () => {
    const wf = wfId()
    await running(wf)
    const ids = await append(wf, 100)
    await drained()
    await eventually(async () => (await xlen(wf)) <= CAP + SLACK, 20_000, 'the stream trimmed')
    expect(await xlen(wf)).toBeGreaterThanOrEqual(CAP)
    expect(await persistedEvents(driver, [wf])).toBe(100)
    // The newest entries are kept.
    const kept = ((await client.redis.xrange(client.keys.events(wf), '-', '+')) as [string, string[]][]).map(([id]) => id)
    expect(kept).toEqual(ids.slice(ids.length - kept.length))
    expect(await client.redis.hget(client.keys.status(wf), 'status')).toBe('running')
    expect(await client.redis.pttl(client.keys.events(wf))).toBe(-1)
    // Neo4j's count from the stream's first id on matches the trimmed stream: nothing to backfill.
    const report = await svc.reconcileNow([wf])
    expect(report.workflows.map((c) => [c.outcome, c.backfilled, c.redisEvents, c.neo4jEvents])).toEqual([['ok', 0, kept.length, kept.length]])
    // A pointer delivered again after its events were trimmed is not parked as pointing at nothing.
    await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', ids[0] as string, 'to', ids[1] as string)
    await drained()
    expect(await parkedFor(wf)).toEqual([])
  }, 60_000)

  it('forgets the records of actions finished over an hour ago whose completion it trimmed, and keeps the rest', async () => {
    // A workflow that never ends kept two fields per action for good. Four
    // actions complete early in the stream: two long ago, one a minute ago (a
    // caller may still resend it by its own id), one dead-lettered.
    const wf = wfId()
    await running(wf)
    const now = Date.now()
    const actions = { old1: now - 2 * 3600_000, old2: now - 3 * 3600_000, recent: now - 60_000 }
    for (const [id, finishedAt] of Object.entries(actions)) {
      await client.redis.hset(client.keys.actions(wf), id, JSON.stringify({ id, workflowId: wf, agent: 'counter', type: 'ping', payload: null }), `${id}:st`, JSON.stringify({ status: 'done', attempt: 1, finishedAt }))
    }
    await client.redis.hset(client.keys.actions(wf), 'gone', JSON.stringify({ id: 'gone', workflowId: wf, agent: 'counter', type: 'ping', payload: null }), 'gone:st', JSON.stringify({ status: 'dead', attempt: 3, finishedAt: now - 5 * 3600_000 }))
    for (const id of [...Object.keys(actions), 'gone']) {
      const sid = (await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ id: `${wf}-${id}-done`, workflowId: wf, type: 'action.completed', content: { actionId: id, agent: 'counter' }, metadata: { agent: 'counter', actionId: id } }))) as string
      await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', sid, 'to', sid)
    }
    await append(wf, 60)
    await drained()
    await eventually(async () => (await xlen(wf)) <= CAP + SLACK, 20_000, 'the stream trimmed')
    await eventually(async () => (await client.redis.hexists(client.keys.actions(wf), 'old1')) === 0, 10_000, 'the old records forgotten')
    const left = await client.redis.hkeys(client.keys.actions(wf))
    expect(left.sort()).toEqual(['gone', 'gone:st', 'recent', 'recent:st'])
    // Neo4j holds the forgotten ones.
    expect(await persistedEvents(driver, [wf])).toBe(64)
  }, 60_000)

  it('never trims an entry Neo4j lacks, and trims past it once reconciliation wrote it', async () => {
    const wf = wfId()
    await running(wf)
    // 30 events, one whose pointer was lost (a runtime died between the two writes), 30 more.
    // Written in turn: a batch reading across the gap would write the lost one too.
    await append(wf, 30)
    await drained()
    const [lost] = await append(wf, 1, false)
    await append(wf, 30)
    await drained()
    // Trimmed up to the lost one, not past it.
    await eventually(async () => (await firstId(wf)) === lost, 20_000, 'the stream trimmed up to the unwritten entry')
    expect(await xlen(wf)).toBeGreaterThan(CAP)
    expect(await persistedEvents(driver, [wf])).toBe(60)
    // Further batches leave it as it is while the entry is missing from Neo4j.
    await append(wf, SLACK + 1)
    await drained()
    expect(await firstId(wf)).toBe(lost)
    // Reconciliation finds the hole and writes it, then the next batches trim again.
    const report = await svc.reconcileNow([wf])
    expect(report.workflows.map((c) => c.outcome)).toEqual(['backfilled'])
    expect(await persistedEvents(driver, [wf])).toBe(await added(wf))
    expect((await svc.reconcileNow([wf])).workflows.map((c) => [c.outcome, c.backfilled])).toEqual([['ok', 0]])
    await append(wf, SLACK + 1)
    await drained()
    await eventually(async () => (await xlen(wf)) <= CAP + SLACK, 20_000, 'the stream trimmed once the entry is in Neo4j')
    expect(await persistedEvents(driver, [wf])).toBe(await added(wf))
    expect((await svc.reconcileNow([wf])).workflows.map((c) => [c.outcome, c.backfilled])).toEqual([['ok', 0]])
  }, 60_000)

  it('bounds the stream of a real workflow that keeps running', async () => {
    const wf = wfId()
    await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 0 } })
    for (let i = 1; i < 40; i++) await client.sendAction(wf, 'counter', 'ping', { i })
    // Not ended: between its actions it waits ('waiting'), as a timer workflow does between ticks.
    const live = async (): Promise<boolean> => ['running', 'waiting'].includes((await client.getStatus(wf))?.status ?? '')
    await eventually(async () => (await live()) && Number(await client.redis.xlen(client.keys.persistence())) === 0 && (await persistedEvents(driver, [wf])) === (await added(wf)), 30_000, 'every event persisted')
    await eventually(async () => (await xlen(wf)) <= CAP + SLACK, 20_000, 'the stream trimmed')
    expect(await added(wf)).toBeGreaterThan(2 * CAP)
    expect(await persistedEvents(driver, [wf])).toBe(await added(wf))
    expect(await live()).toBe(true)
    expect((await svc.reconcileNow([wf])).workflows.map((c) => [c.outcome, c.backfilled])).toEqual([['ok', 0]])
  }, 60_000)
})
