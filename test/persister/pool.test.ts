// Neo4j's memory pool for transactions, full: a moment's load (someone else's
// transactions hold the memory) is waited out like an outage, with nothing
// parked; an event too big for the pool even alone is parked after a few tries,
// by itself (the other events of its pointer are written), and the entries
// behind it are written; two such entries in one batch are both
// parked after about twice as many tries, not 5^2. An event parked (or one
// reconciliation cannot write, after as many sweeps) is recorded as refused, so
// its workflow is complete: it expires, and no sweep rewrites it again. Uses a Neo4j of its own with a small
// pool (24 MB), so the other test files' writes cannot fill it or be refused.
import neo4j, { type Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { persisterService, type PersisterService } from '../../agents/persister.ts'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { BatchWriter, POOL_RETRIES } from '../../runtime/persister/batch.ts'
import { PersisterMetrics } from '../../runtime/persister/metrics.ts'
import { createNeo4jDriver, neo4jCode } from '../../runtime/persister/neo4j.ts'
import { resolvePersisterOptions } from '../../runtime/persister/options.ts'
import { PersistenceQueue } from '../../runtime/persister/queue.ts'
import { Reconciler } from '../../runtime/persister/reconcile.ts'
import { createLogger } from '../../runtime/log.ts'
import { Registry } from 'prom-client'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { idPrefix, neo4jEnv, persistedEvents, startOwnNeo4j, type OwnNeo4j } from './helpers.ts'

const cfg = testConfig()
const prefix = idPrefix()
const MB = 1024 * 1024
let own: OwnNeo4j | undefined
let driver: Driver
let client: TroupeClient
let rt: Runtime
let svc: PersisterService
let seq = 0

/** A finished workflow with one event of `bytes` characters of content, and its queue pointer unless `point` is false. */
async function workflowWith(bytes: number, point = true): Promise<string> {
  const wf = `${prefix}-${++seq}`
  await client.redis.hset(client.keys.status(wf), { status: 'completed', owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
  const id = (await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ id: `${wf}-e`, workflowId: wf, type: 'note', content: 'x'.repeat(bytes) }))) as string
  if (point) await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', id, 'to', id)
  return wf
}

/** Like workflowWith, with a small event before and after the big one, all three behind one pointer (one commit's events). */
async function workflowWithNeighbours(bytes: number, point = true): Promise<{ wf: string; big: string }> {
  const wf = `${prefix}-${++seq}`
  await client.redis.hset(client.keys.status(wf), { status: 'completed', owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
  const add = async (n: number, content: string): Promise<string> =>
    (await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ id: `${wf}-e${n}`, workflowId: wf, type: 'note', content }))) as string
  const first = await add(1, 'before')
  const big = await add(2, 'x'.repeat(bytes))
  const last = await add(3, 'after')
  if (point) await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', first, 'to', last)
  return { wf, big }
}

/** The events of `wf` recorded as refused: their stream ids, with whether they kept any content. */
async function refusedEvents(wf: string): Promise<{ streamId: string; content: boolean }[]> {
  const res = await driver.executeQuery('MATCH (:Workflow {id: $wf})-[:HAS_EVENT]->(e:Event) WHERE e.refused IS NOT NULL RETURN e.streamId AS s, e.content IS NOT NULL AS c ORDER BY e.streamKey', { wf })
  return res.records.map((r) => ({ streamId: r.get('s') as string, content: r.get('c') as boolean }))
}

/** A reconciler on a driver that does not retry a refused transaction for 3 s first. */
function fastReconciler(): { reconciler: Reconciler; close: () => Promise<void> } {
  const fast = neo4j.driver(own?.uri ?? '', undefined, { maxTransactionRetryTime: 0, logging: { level: 'error', logger: () => undefined } })
  const reconciler = new Reconciler({ redis: client.redis, keys: client.keys, driver: fast, metrics: new PersisterMetrics(new Registry()), log: createLogger('reconcile-test'), opts: resolvePersisterOptions({ neo4jUri: own?.uri ?? '' }) })
  return { reconciler, close: () => fast.close() }
}

/** The parked records of `wf`'s entries: reason and the range they name. */
async function parkedRanges(wf: string): Promise<{ reason: string; from: string; to: string }[]> {
  const entries = (await client.redis.xrange(client.keys.persistenceParked(), '-', '+')) as [string, string[]][]
  const field = (f: string[], name: string): string => f[f.indexOf(name) + 1] ?? ''
  return entries
    .map(([, f]) => ({ reason: field(f, 'reason'), fields: JSON.parse(field(f, 'fields') || '[]') as string[] }))
    .filter((p) => p.fields[1] === wf)
    .map((p) => ({ reason: p.reason, from: p.fields[3] ?? '', to: p.fields[5] ?? '' }))
}

async function parkedFor(wf: string): Promise<string[]> {
  const entries = (await client.redis.xrange(client.keys.persistenceParked(), '-', '+')) as [string, string[]][]
  const field = (f: string[], name: string): string => f[f.indexOf(name) + 1] ?? ''
  return entries.filter(([, f]) => (JSON.parse(field(f, 'fields') || '[]') as string[])[1] === wf).map(([, f]) => field(f, 'reason'))
}

const dataErrors = async (): Promise<number> => (await rt.metrics.registry.getSingleMetric('troupe_persister_errors_total')?.get())?.values.find((v) => v.labels.kind === 'data')?.value ?? 0

beforeAll(async () => {
  neo4jEnv()
  own = await startOwnNeo4j({ txPoolMb: 24 })
  driver = neo4j.driver(own.uri, undefined, { logging: { level: 'error', logger: () => undefined } })
  // Backoffs of a second or two: the first test releases the pool well before the retries run out.
  svc = persisterService({ neo4jUri: own.uri, neo4jUser: own.user, neo4jPassword: own.password, claimIdleMs: 1000, reconcileMs: 0, blockMs: 200, backoffMinMs: 1000, backoffMaxMs: 2000 })
  rt = await startRuntime({ agents: [counter], services: [svc], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
  await eventually(() => Promise.resolve(svc.state === 'consuming'), 60_000, 'persister consuming')
}, 150_000)

afterAll(async () => {
  await rt?.stop()
  await client?.close()
  await driver?.close()
  await own?.destroy()
}, 60_000)

describe('a full transaction memory pool', () => {
  it('is waited out, as an outage is, when other transactions hold the memory', async () => {
    const session = driver.session()
    const hold = session.beginTransaction()
    try {
      // About 18 MB of the 24 held by a transaction left open; the event below needs about 8 more.
      await hold.run('CREATE (:Hold {v: $v})', { v: 'x'.repeat(8 * MB) })
      const big = await workflowWith(4 * MB)
      const small = await workflowWith(10)
      await eventually(() => Promise.resolve(svc.stats.lastError.includes('MemoryPoolOutOfMemoryError')), 30_000, 'a write refused for the full pool')
      await hold.rollback()
      await eventually(async () => (await persistedEvents(driver, [big, small])) === 2, 60_000, 'both written once the pool has room')
      expect(await parkedFor(big)).toEqual([])
      expect(await parkedFor(small)).toEqual([])
    } finally {
      await session.close()
    }
  }, 120_000)

  it('parks the event that overflows the pool by itself after a few tries, and writes its neighbours and the entries behind it', async () => {
    const before = await dataErrors()
    // About 26 MB of memory to write: more than the whole pool. Its pointer also
    // covers a small event before and after it, as a commit's pointer does.
    const huge = await workflowWithNeighbours(13 * MB)
    const small = await workflowWith(10)
    await eventually(async () => (await parkedFor(huge.wf)).length > 0, 90_000, 'the entry parked')
    // Only the big event is parked, by its own id: the pointer was split by event.
    expect(await parkedRanges(huge.wf)).toEqual([{ reason: 'unwritable', from: huge.big, to: huge.big }])
    expect(await dataErrors()).toBeGreaterThanOrEqual(before + POOL_RETRIES)
    await eventually(async () => (await persistedEvents(driver, [small])) === 1, 30_000, 'the entry behind it written')
    // Its neighbours written, and the big one recorded as refused, without its content.
    expect(await persistedEvents(driver, [huge.wf])).toBe(3)
    expect(await refusedEvents(huge.wf)).toEqual([{ streamId: huge.big, content: false }])
    // So the workflow is complete: it gets its retention TTL (it used to keep none,
    // forever) and reconciliation finds nothing to rewrite.
    expect(await client.redis.pttl(client.keys.status(huge.wf))).toBeGreaterThan(0)
    expect(await client.redis.pttl(client.keys.events(huge.wf))).toBeGreaterThan(0)
    const { reconciler, close } = fastReconciler()
    try {
      const report = await reconciler.workflows([huge.wf])
      expect(report.workflows.map((c) => [c.outcome, c.backfilled, c.redisEvents, c.neo4jEvents])).toEqual([['ok', 0, 3, 3]])
    } finally {
      await close()
    }
  }, 150_000)

  it('keeps reconciliation going past an event and a workflow Neo4j refuses', async () => {
    // Events that reached Redis without a pointer: reconciliation backfills them.
    // A workflow it cannot write used to end the run there, leaving the rest of
    // its page unwritten and without a TTL, sweep after sweep.
    const { wf: huge } = await workflowWithNeighbours(13 * MB, false)
    const small = await workflowWith(10, false)
    // A driver as the persister makes it: Neo4j's transient errors are retried for 3 s, not 30.
    const driver2 = createNeo4jDriver({ neo4jUri: own?.uri ?? '', neo4jUser: '', neo4jPassword: '' })
    const reconciler = new Reconciler({ redis: client.redis, keys: client.keys, driver: driver2, metrics: new PersisterMetrics(new Registry()), log: createLogger('reconcile-test'), opts: resolvePersisterOptions({ neo4jUri: own?.uri ?? '' }) })
    try {
      const report = await reconciler.workflows([huge, small])
      expect(report.failed).toBe(1)
      expect(report.workflows.map((c) => [c.wf, c.outcome])).toEqual([[huge, 'failed'], [small, 'backfilled']])
      expect(report.workflows[0]?.error).toContain('MemoryPoolOutOfMemoryError')
      // Its other events are backfilled all the same (the backfill used to stop at the refused one).
      expect(await persistedEvents(driver, [huge])).toBe(2)
      expect(await persistedEvents(driver, [small])).toBe(1)
      expect(await client.redis.pttl(client.keys.status(small))).toBeGreaterThan(0)
      expect(await client.redis.pttl(client.keys.status(huge))).toBe(-1)
      // A full pool twice in a row is load, not one workflow's data: the run ends there.
      const huge2 = await workflowWith(13 * MB, false)
      const small2 = await workflowWith(10, false)
      await expect(reconciler.workflows([huge, huge2, small2])).rejects.toMatchObject({ code: 'Neo.TransientError.General.MemoryPoolOutOfMemoryError' })
      expect(await persistedEvents(driver, [small2])).toBe(0)
    } finally {
      await driver2.close()
    }
  }, 90_000)

  it('records an event reconciliation keeps finding too big for the pool as refused, after as many sweeps as a batch tries it', async () => {
    // A full pool may be someone else's load: the first refusals leave the
    // workflow failed and unexpired, to be tried again at the next sweep. It used
    // to be so forever: rewritten whole every sweep, never given its TTL.
    const { wf, big } = await workflowWithNeighbours(13 * MB, false)
    const { reconciler, close } = fastReconciler()
    try {
      for (let sweep = 1; sweep < POOL_RETRIES; sweep++) {
        const r = await reconciler.workflows([wf])
        expect(r.workflows.map((c) => c.outcome)).toEqual(['failed'])
        expect(await client.redis.pttl(client.keys.status(wf))).toBe(-1)
      }
      const last = await reconciler.workflows([wf])
      expect(last.workflows.map((c) => [c.outcome, c.expired])).toEqual([['backfilled', true]])
      expect(await refusedEvents(wf)).toEqual([{ streamId: big, content: false }])
      expect(await persistedEvents(driver, [wf])).toBe(3)
      expect(await client.redis.pttl(client.keys.status(wf))).toBeGreaterThan(0)
      // Nothing left to rewrite.
      const again = await reconciler.workflows([wf])
      expect(again.workflows.map((c) => [c.outcome, c.backfilled])).toEqual([['ok', 0]])
    } finally {
      await close()
    }
  }, 150_000)

  it('parks two entries too big for the pool in one batch without either count starting again', async () => {
    // Each entry's count of full-pool failures used to be dropped as soon as it
    // was parked (or written), before the batch was acked: while the other one
    // failed, the batch was tried again and the parked one started from 0, so
    // the two took turns and needed 5^2 tries instead of about 2 × 5.
    const a = await workflowWith(13 * MB, false)
    const b = await workflowWith(13 * MB, false)
    // A writer of the test's own, so each write() is one try of the batch (the
    // service waits a backoff in between), on a driver that does not retry a
    // refused transaction for 3 s first.
    const fast = neo4j.driver(own?.uri ?? '', undefined, { maxTransactionRetryTime: 0, logging: { level: 'error', logger: () => undefined } })
    const writer = new BatchWriter({
      redis: client.redis, keys: client.keys, driver: fast, queue: new PersistenceQueue(client.redis, client.redis, client.keys, 'pool-test', 100),
      metrics: new PersisterMetrics(new Registry()), log: createLogger('pool-test'), opts: resolvePersisterOptions({ neo4jUri: own?.uri ?? '' }),
    })
    // Entries of no queue (their ack touches nothing): each points at its workflow's whole stream.
    const to = `${Date.now() + 3_600_000}-0`
    const deliveries = [a, b].map((wf, i) => ({ id: `0-${i + 1}`, fields: ['wf', wf, 'from', '0-1', 'to', to] }))
    let tries = 0
    try {
      for (;;) {
        tries++
        try {
          await writer.write(deliveries)
          break
        } catch (err) {
          expect(neo4jCode(err)).toBe('Neo.TransientError.General.MemoryPoolOutOfMemoryError')
          if (tries >= 3 * POOL_RETRIES) throw new Error(`still not parked after ${tries} tries`)
        }
      }
    } finally {
      await fast.close()
    }
    // POOL_RETRIES for the first, POOL_RETRIES - 1 more for the second (its first failure came with the first one's last).
    expect(tries).toBe(2 * POOL_RETRIES - 1)
    expect(await parkedFor(a)).toEqual(['unwritable'])
    expect(await parkedFor(b)).toEqual(['unwritable'])
    // Recorded as refused, so both expire; together in one reconciliation they
    // used to be rewritten and refused twice in a row, ending every sweep there.
    expect(await persistedEvents(driver, [a, b])).toBe(2)
    expect((await refusedEvents(a)).map((e) => e.content)).toEqual([false])
    for (const wf of [a, b]) expect(await client.redis.pttl(client.keys.status(wf))).toBeGreaterThan(0)
    const { reconciler, close } = fastReconciler()
    try {
      const report = await reconciler.workflows([a, b])
      expect(report.workflows.map((c) => [c.outcome, c.backfilled])).toEqual([['ok', 0], ['ok', 0]])
    } finally {
      await close()
    }
  }, 150_000)
})
