// The persister's benchmark (called by the bench harness, bench/lib/sections.ts):
// events/s the persister writes from a backlog, against (a) one transaction per
// event and (b) a raw `UNWIND ... CREATE` of the same rows straight from the
// driver, on the same Neo4j in the same run; and the persistence lag while the
// runtime's own emit path produces ~2,000 events/s.
import neo4j, { type Driver } from 'neo4j-driver'
import { nanoid } from 'nanoid'
import { persisterService, type PersisterService } from '../agents/persister.ts'
import { emitEvents, writeFollowUps } from '../runtime/claims.ts'
import { loadConfig } from '../runtime/config.ts'
import { createRedis, type RedisClient } from '../runtime/redis/connection.ts'
import { Keys } from '../runtime/redis/keys.ts'
import { loadScripts } from '../runtime/redis/scripts.ts'
import { startRuntime, type Runtime } from '../runtime/runtime.ts'
import { runBatch } from '../runtime/persister/graph.ts'
import { workflowRows, type GraphRows } from '../runtime/persister/rows.ts'
import type { StreamedEvent, WorkflowEvent } from '../runtime/types.ts'

/** Options the harness passes. */
export interface PersisterBenchOptions {
  redisUrl?: string
  neo4jUri?: string
  quick?: boolean
}

/** What the benchmark measured. */
export interface PersisterBenchResult {
  events: number
  persisterEventsPerSec: number
  oneTxPerEventEventsPerSec: number
  rawCreateEventsPerSec: number
  rawCreateGraphEventsPerSec: number
  speedupVsOneTxPerEvent: number
  fractionOfRawCreate: number
  fractionOfRawCreateGraph: number
  lag: { targetEventsPerSec: number; achievedEventsPerSec: number; seconds: number; p50Ms: number; p95Ms: number; maxMs: number; drainMs: number }
}

const AGENTS = ['planner', 'researcher', 'writer']

/** A workflow's worth of events shaped like a real run: per action, enqueue, transition, streamed tokens, completion. */
function fakeRun(wf: string, actions: number, tokens: number): { events: WorkflowEvent[]; pointers: [number, number][]; records: Record<string, string> } {
  const events: WorkflowEvent[] = []
  const pointers: [number, number][] = []
  const records: Record<string, string> = {}
  let parentEnq = ''
  for (let a = 0; a < actions; a++) {
    const actionId = `${wf}-a${a}`
    const agent = AGENTS[a % AGENTS.length] as string
    const enq = `${wf}-e${a}`
    const meta = (attempt: number) => ({ at: Date.now(), agent, actionId, ...(attempt ? { attempt } : {}) })
    records[actionId] = JSON.stringify({ id: actionId, workflowId: wf, agent, type: 'work', payload: { n: a }, eventId: enq, enqueuedAt: Date.now() })
    records[`${actionId}:st`] = JSON.stringify({ status: 'done', attempt: 1, seq: a + 1, availableAt: Date.now() })
    const start = events.length
    events.push({ id: enq, workflowId: wf, type: 'action.enqueued', content: { actionId, agent, type: 'work' }, metadata: meta(0), ...(parentEnq ? { parentId: parentEnq } : {}) })
    pointers.push([start, start])
    const t = events.length
    events.push({ id: `${enq}.t`, workflowId: wf, type: 'agent.transition', content: { agent, from: 'idle', to: 'working' }, metadata: meta(1), parentId: enq })
    for (let k = 0; k < tokens; k++) events.push({ id: `${enq}.k${k}`, workflowId: wf, type: 'token', content: `token ${k} of a streamed answer `, metadata: meta(1), parentId: enq })
    pointers.push([t, events.length - 1])
    const c = events.length
    events.push({ id: `${enq}.c`, workflowId: wf, type: 'action.completed', content: { actionId, agent, durationMs: 12 }, metadata: meta(1), parentId: enq })
    pointers.push([c, c])
    parentEnq = enq
  }
  return { events, pointers, records }
}

async function drainedQueue(redis: RedisClient, keys: Keys, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Number(await redis.xlen(keys.persistence())) > 0) {
    if (Date.now() > deadline) throw new Error('the persister did not drain the queue in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Writes workflows' events and status into Redis; returns their pointers (as XADD args) and the events. */
async function seed(redis: RedisClient, keys: Keys, prefix: string, workflows: number, actions: number, tokens: number): Promise<{ pointers: string[][]; streamed: Map<string, StreamedEvent[]>; count: number }> {
  const pointers: string[][] = []
  const streamed = new Map<string, StreamedEvent[]>()
  let count = 0
  for (let w = 0; w < workflows; w++) {
    const wf = `${prefix}-${w}`
    const run = fakeRun(wf, actions, tokens)
    const pipe = redis.pipeline()
    pipe.hset(keys.status(wf), { status: 'running', owner: 'bench', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
    pipe.hset(keys.actions(wf), run.records)
    for (const e of run.events) pipe.xadd(keys.events(wf), '*', 'e', JSON.stringify(e))
    const res = (await pipe.exec()) ?? []
    const ids = res.slice(2).map(([, id]) => String(id))
    streamed.set(wf, run.events.map((event, i) => ({ streamId: ids[i] as string, event })))
    for (const [a, b] of run.pointers) pointers.push(['wf', wf, 'from', ids[a] as string, 'to', ids[b] as string])
    count += run.events.length
  }
  return { pointers, streamed, count }
}

/** Rows of the same events under fresh ids, so every baseline creates rather than matches. */
function freshRows(streamed: Map<string, StreamedEvent[]>, tag: string) {
  const parts = [...streamed].map(([wf, list]) => {
    const id = `${wf}-${tag}`
    return workflowRows({
      wf: id,
      entries: list.map((e) => ({ streamId: e.streamId, event: { ...e.event, id: `${e.event.id}-${tag}`, workflowId: id, ...(e.event.parentId ? { parentId: `${e.event.parentId}-${tag}` } : {}), metadata: { ...e.event.metadata, actionId: `${String(e.event.metadata?.actionId)}-${tag}` } } })),
      status: { status: 'running', owner: 'bench', createdAt: String(Date.now()), updatedAt: String(Date.now()) },
      lastId: list[list.length - 1]?.streamId ?? '',
      actions: new Map(),
    })
  })
  return parts
}

async function persisterRun(redis: RedisClient, keys: Keys, pointers: string[][], events: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < pointers.length; i += 2000) {
    const pipe = redis.pipeline()
    for (const p of pointers.slice(i, i + 2000)) pipe.xadd(keys.persistence(), '*', ...p)
    await pipe.exec()
  }
  await drainedQueue(redis, keys, 600_000)
  return events / (Number(process.hrtime.bigint() - t0) / 1e9)
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t0) / 1e9
}

/** (a): the persister's own statements, one event per transaction. */
async function oneTxPerEvent(driver: Driver, streamed: Map<string, StreamedEvent[]>, limit: number): Promise<number> {
  const parts = freshRows(streamed, 'tx')
  const single: GraphRows[] = []
  for (const p of parts) {
    for (const e of p.events) {
      if (single.length >= limit) break
      single.push({ workflows: [p.workflow], actions: p.actions.filter((a) => a.id === e.actionId), groups: [{ wf: p.workflow.id, events: [e] }] })
    }
  }
  const s = driver.session()
  try {
    const secs = await timed(async () => {
      for (const rows of single) await s.executeWrite((tx) => runBatch(tx, rows))
    })
    return single.length / secs
  } finally {
    await s.close()
  }
}

/**
 * (b): a raw `UNWIND ... CREATE` of the same event rows: bare nodes (the ceiling),
 * or (`graph`) the same nodes with all four relationships of the model, created
 * rather than merged, the parents looked up through an index as MERGE would.
 */
async function rawCreate(driver: Driver, streamed: Map<string, StreamedEvent[]>, graph: boolean): Promise<number> {
  const parts = freshRows(streamed, graph ? 'rawg' : 'raw')
  const rows = parts.flatMap((p) => p.events.map((e) => ({ wf: p.workflow.id, ...e })))
  const s = driver.session()
  try {
    if (graph) {
      await s.run('CREATE INDEX bench_event_id IF NOT EXISTS FOR (e:BenchEvent) ON (e.id)')
      await s.run('CREATE INDEX bench_action_id IF NOT EXISTS FOR (a:BenchAction) ON (a.id)')
      await s.run('CALL db.awaitIndexes(60)')
      await s.run('UNWIND $ids AS id CREATE (:BenchWorkflow {id: id})', { ids: parts.map((p) => p.workflow.id) })
      await s.run('UNWIND $names AS n MERGE (:BenchAgent {name: n})', { names: AGENTS })
      await s.run('UNWIND $ids AS id CREATE (:BenchAction {id: id})', { ids: parts.flatMap((p) => p.actions.map((a) => a.id)) })
    }
    const q = graph
      ? `UNWIND $rows AS row
         MATCH (w:BenchWorkflow {id: row.wf})
         CREATE (e:BenchEvent {id: row.id, type: row.type, content: row.content, metadata: row.metadata, createdAt: row.createdAt, streamId: row.streamId, streamKey: row.streamKey})
         CREATE (w)-[:HAS_EVENT]->(e)
         WITH e, row
         OPTIONAL MATCH (ag:BenchAgent {name: row.agent})
         OPTIONAL MATCH (p:BenchEvent {id: row.parentId})
         OPTIONAL MATCH (ac:BenchAction {id: row.actionId})
         FOREACH (_ IN CASE WHEN ag IS NULL THEN [] ELSE [1] END | CREATE (e)-[:EMITTED_BY]->(ag))
         FOREACH (_ IN CASE WHEN p IS NULL THEN [] ELSE [1] END | CREATE (e)-[:CHILD_OF]->(p))
         FOREACH (_ IN CASE WHEN ac IS NULL THEN [] ELSE [1] END | CREATE (ac)-[:CAUSED]->(e))`
      : 'UNWIND $rows AS row CREATE (e:BenchRaw) SET e = row'
    const secs = await timed(async () => {
      for (let i = 0; i < rows.length; i += 2000) {
        const chunk = rows.slice(i, i + 2000).map(({ wf, id, type, content, metadata, createdAt, streamId, streamKey, agent, parentId, actionId }) =>
          graph ? { wf, id, type, content, metadata, createdAt, streamId, streamKey, agent, parentId, actionId } : { id, type, content, metadata, createdAt, streamId, streamKey })
        await s.executeWrite((tx) => tx.run(q, { rows: chunk }))
      }
    })
    return rows.length / secs
  } finally {
    await s.close()
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))] as number
}

/** Emits ~`rate` events/s through the runtime's emit script + pointer writes, sampling the queue's oldest-entry age. */
async function lagUnderLoad(redis: RedisClient, redisUrl: string, keys: Keys, namespace: string, prefix: string, rate: number, seconds: number) {
  const cfg = loadConfig({ redisUrl, namespace })
  const ctx = { redis, keys, cfg: { ...cfg, persistence: true } }
  const wfs = Array.from({ length: 20 }, (_, i) => `${prefix}-live-${i}`)
  for (const wf of wfs) await redis.hset(keys.status(wf), { status: 'running', owner: 'bench', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
  const tickMs = 20
  const perTick = Math.round((rate * tickMs) / 1000)
  const samples: number[] = []
  let emitted = 0
  let stop = false
  const sampler = (async () => {
    while (!stop) {
      const [[, first], [, time]] = ((await redis.pipeline().xrange(keys.persistence(), '-', '+', 'COUNT', 1).time().exec()) ?? []) as [[null, [string, string[]][]], [null, [string, string]]]
      const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000)
      const oldest = first[0]?.[0]
      samples.push(oldest ? Math.max(0, now - Number(oldest.split('-')[0])) : 0)
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  const t0 = Date.now()
  let next = t0
  let n = 0
  while (Date.now() - t0 < seconds * 1000) {
    const calls: Promise<unknown>[] = []
    for (let i = 0; i < perTick; i += 4) {
      const wf = wfs[n++ % wfs.length] as string
      const batch = Array.from({ length: Math.min(4, perTick - i) }, (_, k) => JSON.stringify({ id: nanoid(), workflowId: wf, type: 'token', content: `t${k}`, metadata: { at: Date.now(), agent: 'writer' } }))
      emitted += batch.length
      calls.push(emitEvents(ctx, wf, batch).then((a) => writeFollowUps(ctx, [], [a])))
    }
    await Promise.all(calls)
    next += tickMs
    await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())))
  }
  const elapsed = (Date.now() - t0) / 1000
  const d0 = Date.now()
  await drainedQueue(redis, keys, 120_000)
  const drainMs = Date.now() - d0
  stop = true
  await sampler
  const sorted = [...samples].sort((a, b) => a - b)
  return { targetEventsPerSec: rate, achievedEventsPerSec: Math.round(emitted / elapsed), seconds: Math.round(elapsed), p50Ms: percentile(sorted, 0.5), p95Ms: percentile(sorted, 0.95), maxMs: sorted[sorted.length - 1] ?? 0, drainMs }
}

/**
 * Runs the persister benchmark against REDIS_URL and NEO4J_URI (NEO4J_USER,
 * NEO4J_PASSWORD), cleaning up what it wrote.
 *
 * @example
 * ```ts
 * const r = await benchPersister({ quick: true })
 * console.log(r.persisterEventsPerSec, r.speedupVsOneTxPerEvent, r.lag.p95Ms)
 * ```
 */
export async function benchPersister(opts: PersisterBenchOptions = {}): Promise<PersisterBenchResult> {
  const redisUrl = opts.redisUrl ?? process.env.REDIS_URL
  const neo4jUri = opts.neo4jUri ?? process.env.NEO4J_URI
  if (!redisUrl || !neo4jUri) throw new Error('REDIS_URL and NEO4J_URI must be set: run `npm run bench`, which starts Redis and Neo4j')
  const user = process.env.NEO4J_USER || 'neo4j'
  const password = process.env.NEO4J_PASSWORD ?? ''
  const namespace = `bp${nanoid(6).replace(/[^A-Za-z0-9]/g, 'x')}:`
  const prefix = `bench-${nanoid(6).replace(/[^A-Za-z0-9]/g, 'x')}`
  const keys = new Keys(namespace)
  const redis = createRedis(redisUrl, { name: 'troupe-bench-persister' })
  const driver = neo4j.driver(neo4jUri, password ? neo4j.auth.basic(user, password) : undefined, { logging: { level: 'error', logger: () => undefined } })
  const size = opts.quick ? { workflows: 40, actions: 5, tokens: 8, txSample: 300, lagSeconds: 5 } : { workflows: 200, actions: 10, tokens: 8, txSample: 1000, lagSeconds: 15 }
  let rt: Runtime | null = null
  try {
    await loadScripts(redis)
    const svc: PersisterService = persisterService({ neo4jUri, neo4jUser: user, neo4jPassword: password, reconcileMs: 0 })
    rt = await startRuntime({ agents: [], services: [svc], config: { redisUrl, namespace }, metricsPort: false, heartbeatMs: 5000 })
    for (let i = 0; svc.state !== 'consuming'; i++) {
      if (i > 1200) throw new Error(`the persister did not start (state ${svc.state}): ${svc.stats.lastError}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    // Warm-up: Neo4j's JIT and query caches, for every contender alike.
    const warm = await seed(redis, keys, `${prefix}-warm`, 10, 3, 4)
    await persisterRun(redis, keys, warm.pointers, warm.count)
    await oneTxPerEvent(driver, warm.streamed, 50)
    await rawCreate(driver, warm.streamed, false)
    await rawCreate(driver, warm.streamed, true)

    const data = await seed(redis, keys, prefix, size.workflows, size.actions, size.tokens)
    const persisterRate = await persisterRun(redis, keys, data.pointers, data.count)
    const txRate = await oneTxPerEvent(driver, data.streamed, size.txSample)
    const rawRate = await rawCreate(driver, data.streamed, false)
    const rawGraphRate = await rawCreate(driver, data.streamed, true)
    const lag = await lagUnderLoad(redis, redisUrl, keys, namespace, prefix, 2000, size.lagSeconds)
    return {
      events: data.count,
      persisterEventsPerSec: Math.round(persisterRate),
      oneTxPerEventEventsPerSec: Math.round(txRate),
      rawCreateEventsPerSec: Math.round(rawRate),
      rawCreateGraphEventsPerSec: Math.round(rawGraphRate),
      speedupVsOneTxPerEvent: Math.round((persisterRate / txRate) * 10) / 10,
      fractionOfRawCreate: Math.round((persisterRate / rawRate) * 100) / 100,
      fractionOfRawCreateGraph: Math.round((persisterRate / rawGraphRate) * 100) / 100,
      lag,
    }
  } finally {
    await rt?.stop().catch(() => undefined)
    // CALL ... IN TRANSACTIONS (bounded memory) needs an auto-commit transaction, hence session.run.
    const s = driver.session()
    for (const q of [
      'MATCH (e:Event|BenchEvent|BenchRaw) WHERE e.id STARTS WITH $p OR e.workflowId STARTS WITH $p CALL (e) { DETACH DELETE e } IN TRANSACTIONS OF 5000 ROWS',
      'MATCH (x:Action|Workflow|BenchWorkflow|BenchAction) WHERE x.id STARTS WITH $p CALL (x) { DETACH DELETE x } IN TRANSACTIONS OF 5000 ROWS',
    ]) await s.run(q, { p: prefix }).catch(() => undefined)
    await s.close()
    await driver.executeQuery('MATCH (a:BenchAgent) DETACH DELETE a').catch(() => undefined)
    for (const idx of ['bench_event_id', 'bench_action_id']) await driver.executeQuery(`DROP INDEX ${idx} IF EXISTS`).catch(() => undefined)
    let cursor = '0'
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${namespace}*`, 'COUNT', 1000)
      cursor = next
      if (found.length > 0) await redis.unlink(...found)
    } while (cursor !== '0')
    redis.disconnect()
    await driver.close()
  }
}
