// The persister against real Redis and Neo4j, in process: the graph it builds
// (same whatever order parents and children arrive in), hostile strings stored
// verbatim, malformed entries parked without blocking, redelivery writing nothing
// twice, reconciliation of a gap made on purpose, retention, and the CLI views.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { persisterService, type PersisterService } from '../../agents/persister.ts'
import { showHistory } from '../../examples/research-team/history.ts'
import { startRuntime, TroupeClient, type Runtime, type WorkflowEvent } from '../../runtime/index.ts'
import { readHistory } from '../../runtime/persister/history.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { cleanGraph, graphCounts, idPrefix, neo4jEnv, openDriver } from './helpers.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
const cfg = testConfig()
const prefix = idPrefix()
const env = neo4jEnv()
let driver: Driver
let client: TroupeClient
let rt: Runtime
let svc: PersisterService
let seq = 0
const wfId = (): string => `${prefix}-${++seq}`

async function append(wf: string, events: (Partial<WorkflowEvent> & { id: string; type: string })[]): Promise<string[]> {
  const ids: string[] = []
  for (const e of events) ids.push((await client.redis.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ workflowId: wf, content: null, ...e }))) as string)
  return ids
}
async function point(wf: string, from: string, to = from): Promise<void> {
  await client.redis.xadd(client.keys.persistence(), '*', 'wf', wf, 'from', from, 'to', to)
}
async function setStatus(wf: string, status: string, extra: Record<string, string> = {}): Promise<void> {
  await client.redis.hset(client.keys.status(wf), { status, owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()), ...extra })
}
async function drained(): Promise<void> {
  await eventually(async () => Number(await client.redis.xlen(client.keys.persistence())) === 0 && svc.state === 'consuming', 30_000, 'persistence:queue drained')
}
function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['bin/troupe.mjs', ...args], {
      cwd: root,
      env: { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace, NEO4J_URI: env.uri, NEO4J_USER: env.user, NEO4J_PASSWORD: env.password, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr.on('data', (d: Buffer) => (err += d.toString()))
    c.once('exit', (code) => resolve({ code, out, err }))
  })
}

beforeAll(async () => {
  driver = openDriver(env)
  svc = persisterService({ neo4jUri: env.uri, neo4jUser: env.user, neo4jPassword: env.password, claimIdleMs: 1000, reconcileMs: 0, blockMs: 200, retentionMs: 60_000 })
  rt = await startRuntime({ agents: [counter, echo], services: [svc], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
  await eventually(() => Promise.resolve(svc.state === 'consuming'), 60_000, 'persister consuming')
})

afterAll(async () => {
  await rt?.stop()
  await client?.close()
  if (driver) {
    await cleanGraph(driver, prefix)
    await driver.executeQuery('MATCH (a:Agent) WHERE a.name STARTS WITH $p DETACH DELETE a', { p: `${prefix}\`` })
    await driver.close()
  }
})

describe('graph model', () => {
  it('builds the same graph whether parents arrive before or after their children', async () => {
    const shape = async (wf: string): Promise<string[]> => {
      const r = await driver.executeQuery(
        'MATCH (:Workflow {id: $wf})-[:HAS_EVENT]->(e:Event) OPTIONAL MATCH (e)-[:CHILD_OF]->(p:Event) RETURN e.type + "<-" + coalesce(p.type, "") + coalesce(toString(p.placeholder), "") AS s ORDER BY s',
        { wf },
      )
      return r.records.map((x) => x.get('s') as string)
    }
    const tree = (wf: string) => ({
      root: { id: `${wf}-r`, type: 'root' },
      c1: { id: `${wf}-c1`, type: 'child1', parentId: `${wf}-r`, metadata: { agent: 'counter', actionId: `${wf}-a1` } },
      c2: { id: `${wf}-c2`, type: 'child2', parentId: `${wf}-r` },
      g: { id: `${wf}-g`, type: 'grand', parentId: `${wf}-c1`, metadata: { agent: 'echo' } },
    })
    const inOrder = wfId()
    await setStatus(inOrder, 'running')
    const a = tree(inOrder)
    const ids = await append(inOrder, [a.root, a.c1, a.c2, a.g])
    await point(inOrder, ids[0] as string, ids[3])
    await drained()

    // Children first, each in its own batch: the parents exist only as placeholders meanwhile.
    const reversed = wfId()
    await setStatus(reversed, 'running')
    const b = tree(reversed)
    const [g] = await append(reversed, [b.g])
    await point(reversed, g as string)
    await drained()
    const placeholder = await driver.executeQuery('MATCH (p:Event {id: $id}) RETURN p.placeholder AS ph, p.type AS t', { id: b.c1.id })
    expect(placeholder.records[0]?.get('ph')).toBe(true)
    expect(placeholder.records[0]?.get('t')).toBeNull()
    const cs = await append(reversed, [b.c1, b.c2])
    await point(reversed, cs[0] as string, cs[1])
    await drained()
    const [r] = await append(reversed, [b.root])
    await point(reversed, r as string)
    await drained()

    expect(await shape(reversed)).toEqual(await shape(inOrder))
    expect(await shape(inOrder)).toEqual(['child1<-root', 'child2<-root', 'grand<-child1', 'root<-'])
    const left = await driver.executeQuery('MATCH (e:Event) WHERE e.id STARTS WITH $p AND e.placeholder RETURN count(e) AS n', { p: prefix })
    expect(Number(left.records[0]?.get('n'))).toBe(0)
    const links = await driver.executeQuery('MATCH (a:Action {id: $id})-[:CAUSED]->(e:Event)-[:EMITTED_BY]->(ag:Agent) RETURN e.type AS t, ag.name AS agent', { id: `${reversed}-a1` })
    expect(links.records.map((x) => [x.get('t') as string, x.get('agent') as string])).toEqual([['child1', 'counter']])
  })

  it('stores hostile strings and a 1 MB content verbatim', async () => {
    const wf = wfId()
    await setStatus(wf, 'running', { owner: `o'"\`}` })
    const hostile = [
      `it's "quoted"`, 'back`tick`', '}) MATCH (n) DETACH DELETE n //', "'; DROP DATABASE neo4j; //", '$param {x: 1}',
      'MERGE (x:Event {id: "1"}) RETURN x', 'CALL dbms.killQueries(["x"]) YIELD *', 'nul \u0000 byte', '\\\\ backslashes \\',
      'üñîçødé 🚀 中文 עברית \u202Eright-to-left', 'line\nbreak\r\ttab', '${not.a.template}', '{}', '}', '{', '`',
    ]
    const content = { strings: hostile, [hostile[2] as string]: hostile[0], big: 'é🚀x'.repeat(1024 * 1024 / 4) }
    const agent = `${prefix}\`}) DETACH DELETE n //`
    const event = { id: `${wf}-'"\`}{ MATCH`, type: 'MATCH (n) DETACH DELETE n', content, metadata: { agent, note: hostile } }
    const [sid] = await append(wf, [event])
    await point(wf, sid as string)
    await drained()
    const h = await readHistory(driver, undefined, wf)
    expect(h?.events).toHaveLength(1)
    const e = h?.events[0]
    expect(e?.id).toBe(event.id)
    expect(e?.type).toBe(event.type)
    expect(e?.content).toEqual(content)
    expect(e?.metadata.note).toEqual(hostile)
    expect(e?.agent).toBe(agent)
    expect(h?.workflow.owner).toBe(`o'"\`}`)
    const still = await driver.executeQuery('MATCH (w:Workflow) WHERE w.id STARTS WITH $p RETURN count(w) AS n', { p: prefix })
    expect(Number(still.records[0]?.get('n'))).toBeGreaterThanOrEqual(3)
  })
})

describe('queue handling', () => {
  it('parks malformed entries with their reason and writes the entries behind them', async () => {
    const wf = wfId()
    await setStatus(wf, 'running')
    const q = client.keys.persistence()
    const parkedBefore = Number(await client.redis.xlen(client.keys.persistenceParked()))
    const good = await append(wf, [{ id: `${wf}-1`, type: 'one' }, { id: `${wf}-2`, type: 'two' }, { id: `${wf}-3`, type: 'three' }])
    await client.redis
      .pipeline()
      .xadd(q, '*', 'wf', wf)
      .xadd(q, '*', 'wf', 'not{a}valid id', 'from', '1-0', 'to', '1-0')
      .xadd(q, '*', 'wf', wf, 'from', 'abc', 'to', '1-0')
      .xadd(q, '*', 'wf', wf, 'from', '9-0', 'to', '1-0')
      .xadd(q, '*', 'wf', `${prefix}-nowhere`, 'from', '1-0', 'to', '1-5')
      .xadd(q, '*', 'foo', 'bar')
      .xadd(q, '*', 'wf', wf, 'from', good[0] as string, 'to', good[0] as string)
      .xadd(q, '*', 'wf', wf, 'from', good[1] as string, 'to', good[2] as string)
      .exec()
    await drained()
    expect((await graphCounts(driver, [wf])).get(wf)?.events).toBe(3)
    const parked = (await client.redis.xrange(client.keys.persistenceParked(), '-', '+')) as [string, string[]][]
    const reasons = parked.slice(parkedBefore).map(([, f]) => f[f.indexOf('reason') + 1]).sort()
    expect(reasons).toEqual(['bad_range', 'bad_range', 'bad_workflow_id', 'empty_range', 'missing_fields', 'missing_fields'])
    expect(svc.health().persisterParked).toBe(String(svc.stats.parked))
    const metric = await rt.metrics.registry.getSingleMetric('troupe_persister_parked_total')?.get()
    expect(metric?.values.reduce((s, v) => s + v.value, 0)).toBe(6)
    const status = await cli(['persister', 'status', '--json'])
    expect(status.code, status.err).toBe(0)
    const view = JSON.parse(status.out) as { backlog: number; parked: number; recentParked: { reason: string }[] }
    expect(view.parked).toBe(parkedBefore + 6)
    expect(view.backlog).toBe(0)
  })

  it('writes nothing twice when entries are delivered again, and takes over a dead consumer\'s entries', async () => {
    const wf = wfId()
    await setStatus(wf, 'running')
    const events = Array.from({ length: 40 }, (_, i) => ({ id: `${wf}-${i}`, type: 'step', parentId: i > 0 ? `${wf}-${i - 1}` : undefined, metadata: { agent: 'counter', actionId: `${wf}-act` } }))
    const ids = await append(wf, events)
    for (let i = 0; i < ids.length; i += 10) await point(wf, ids[i] as string, ids[i + 9])
    await drained()
    const first = (await graphCounts(driver, [wf])).get(wf)
    expect(first).toEqual({ events: 40, distinct: 40, maxHas: 1, maxEmitted: 1, maxChild: 1, maxCaused: 1 })

    // The same pointers again, plus a batch a consumer read and then died holding.
    for (let i = 0; i < ids.length; i += 10) await point(wf, ids[i] as string, ids[i + 9])
    const q = client.keys.persistence()
    const ghost = await client.redis.multi().xadd(q, '*', 'wf', wf, 'from', ids[0] as string, 'to', ids[39] as string).xreadgroup('GROUP', 'persister', 'ghost', 'COUNT', 100, 'STREAMS', q, '>').exec()
    expect(ghost?.[1]?.[1]).toBeTruthy()
    await drained()
    expect((await graphCounts(driver, [wf])).get(wf)).toEqual(first)
    const pending = await client.redis.xpending(q, 'persister')
    expect(Number(pending[0])).toBe(0)
    const action = await driver.executeQuery('MATCH (a:Action {id: $id}) RETURN COUNT { (a)-[:CAUSED]->() } AS n', { id: `${wf}-act` })
    expect(Number(action.records[0]?.get('n'))).toBe(40)
  })
})

describe('reconciliation and retention', () => {
  it('backfills events that reached the stream without a pointer (troupe reconcile), and the periodic job does too', async () => {
    const wf = wfId()
    await setStatus(wf, 'running')
    const [a] = await append(wf, [{ id: `${wf}-a`, type: 'a' }])
    await point(wf, a as string)
    await drained()
    // A middle gap and a tail gap: appended, never pointed at.
    await append(wf, [{ id: `${wf}-b`, type: 'b', parentId: `${wf}-a` }])
    const [c] = await append(wf, [{ id: `${wf}-c`, type: 'c' }])
    await point(wf, c as string)
    await drained()
    await append(wf, [{ id: `${wf}-d`, type: 'd' }])
    await setStatus(wf, 'completed')
    expect((await graphCounts(driver, [wf])).get(wf)?.events).toBe(2)

    const res = await cli(['reconcile', wf, '--json'])
    expect(res.code, res.err).toBe(0)
    const report = JSON.parse(res.out) as { backfilledEvents: number; workflows: { outcome: string; expired: boolean }[] }
    expect(report.workflows[0]?.outcome).toBe('backfilled')
    expect(report.workflows[0]?.expired).toBe(true)
    expect((await graphCounts(driver, [wf])).get(wf)).toMatchObject({ events: 4, distinct: 4, maxHas: 1 })
    const h = await readHistory(driver, undefined, wf)
    expect(h?.events.map((e) => e.type)).toEqual(['a', 'b', 'c', 'd'])
    expect(h?.workflow.status).toBe('completed')
    expect(await client.redis.pttl(client.keys.events(wf))).toBeGreaterThan(0)

    // The periodic sweep, in a second persister, finds a gap by itself.
    const wf2 = wfId()
    await setStatus(wf2, 'waiting')
    await append(wf2, [{ id: `${wf2}-x`, type: 'x' }, { id: `${wf2}-y`, type: 'y' }])
    const sweeper = persisterService({ neo4jUri: env.uri, neo4jUser: env.user, neo4jPassword: env.password, reconcileMs: 300, reconcileSettleMs: 200, reconcileScanBudget: 50, blockMs: 200 })
    const rt2 = await startRuntime({ agents: [], services: [sweeper], config: cfg, metricsPort: false })
    try {
      await eventually(async () => (await graphCounts(driver, [wf2])).get(wf2)?.events === 2, 30_000, 'periodic reconciliation')
    } finally {
      await rt2.stop()
    }
  })

  it('expires a finished workflow once fully persisted, and never one with an unpersisted event', async () => {
    const done = wfId()
    await setStatus(done, 'completed', { 'agent:counter': '"done"' })
    await client.redis.hset(client.keys.actor(done, 'counter'), 'snapshot', '{}')
    await client.redis.hset(client.keys.actions(done), 'x', '{}')
    const ids = await append(done, [{ id: `${done}-1`, type: 'one' }, { id: `${done}-2`, type: 'workflow.completed' }])
    await point(done, ids[0] as string, ids[1])
    await drained()
    for (const key of [client.keys.events(done), client.keys.status(done), client.keys.actions(done), client.keys.actor(done, 'counter')]) {
      const ttl = await client.redis.pttl(key)
      expect(ttl, key).toBeGreaterThan(50_000)
      expect(ttl, key).toBeLessThanOrEqual(60_000)
    }

    const gap = wfId()
    await setStatus(gap, 'cancelled')
    const [g1] = await append(gap, [{ id: `${gap}-1`, type: 'one' }])
    await append(gap, [{ id: `${gap}-2`, type: 'late token' }])
    const [g3] = await append(gap, [{ id: `${gap}-3`, type: 'workflow.cancelled' }])
    await point(gap, g1 as string)
    await drained()
    await point(gap, g3 as string)
    await drained()
    expect(await client.redis.pttl(client.keys.events(gap))).toBe(-1)
    expect(await client.redis.pttl(client.keys.status(gap))).toBe(-1)
    await svc.reconcileNow([gap])
    expect((await graphCounts(driver, [gap])).get(gap)?.events).toBe(3)
    expect(await client.redis.pttl(client.keys.events(gap))).toBeGreaterThan(0)
  })

  it('does not let an earlier run of a reused workflow id hide a hole in the new run', async () => {
    const wf = wfId()
    await setStatus(wf, 'completed')
    const old = await append(wf, [{ id: `${wf}-old1`, type: 'one' }, { id: `${wf}-old2`, type: 'two' }, { id: `${wf}-old3`, type: 'workflow.completed' }])
    await point(wf, old[0] as string, old[2])
    await drained()
    expect(await client.redis.pttl(client.keys.events(wf))).toBeGreaterThan(0)
    // Its keys expire; the same id is started again and its middle event's pointer is lost.
    await client.redis.del(client.keys.events(wf), client.keys.status(wf))
    await setStatus(wf, 'cancelled')
    const now = await append(wf, [{ id: `${wf}-new1`, type: 'one' }, { id: `${wf}-new2`, type: 'late token' }, { id: `${wf}-new3`, type: 'workflow.cancelled' }])
    await point(wf, now[0] as string)
    await drained()
    await point(wf, now[2] as string)
    await drained()
    // Neo4j holds five events of this id, more than the three in the stream, and the stream's last one.
    expect((await graphCounts(driver, [wf])).get(wf)?.events).toBe(5)
    expect(await client.redis.pttl(client.keys.events(wf))).toBe(-1)

    const report = await svc.reconcileNow([wf])
    expect(report.workflows[0]).toMatchObject({ outcome: 'backfilled', backfilled: 3, expired: true })
    expect((await graphCounts(driver, [wf])).get(wf)?.events).toBe(6)
    expect(await client.redis.pttl(client.keys.events(wf))).toBeGreaterThan(0)
    // Rewritten whole, and recorded as this stream (its length and first id): a
    // second run finds nothing to do.
    const marker = await driver.executeQuery('MATCH (w:Workflow {id: $wf}) RETURN w.backfilledLen AS len, w.backfilledFirst AS first', { wf })
    expect(Number(marker.records[0]?.get('len'))).toBe(3)
    expect(marker.records[0]?.get('first')).toBe(now[0])
    const again = await svc.reconcileNow([wf])
    expect(again.workflows[0]?.outcome).not.toBe('backfilled')
  })
})

describe('history', () => {
  it('reads a real workflow back: timeline, actions and causal tree (troupe history, showHistory)', async () => {
    const wf = wfId()
    await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'relay', payload: { text: 'hey' } })
    await eventually(async () => (await client.readEvents(wf)).some((e) => e.event.type === 'echoed'), 20_000, 'echoed')
    await client.sendAction(wf, 'counter', 'finish', {})
    await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 20_000, 'completed')
    const total = Number(await client.redis.xlen(client.keys.events(wf)))
    await eventually(async () => (await graphCounts(driver, [wf])).get(wf)?.events === total, 20_000, 'persisted')

    const res = await cli(['history', wf, '--json'])
    expect(res.code, res.err).toBe(0)
    const h = JSON.parse(res.out) as { workflow: { status: string }; events: { type: string }[]; actions: { status: string; type: string }[]; tree: { type: string; children: unknown[] }[] }
    expect(h.workflow.status).toBe('completed')
    expect(h.events).toHaveLength(total)
    expect(h.actions.map((a) => `${a.type}:${a.status}`).sort()).toEqual(['echo:done', 'finish:done', 'relay:done'])
    const relay = h.tree.find((n) => n.type === 'action.enqueued' && n.children.length > 0)
    expect(relay).toBeTruthy()
    const text = await cli(['history', wf])
    expect(text.out).toMatch(/causal tree:/)
    expect(text.out).toMatch(/token/)
    // --limit is applied by the query: only that many events are read, the total is counted.
    const limited = await readHistory(driver, undefined, wf, { limit: 3 })
    expect(limited?.events.map((e) => e.streamId)).toEqual(h.events.slice(0, 3).map((e) => (e as unknown as { streamId: string }).streamId))
    expect(limited?.eventCount).toBe(total)
    const short = await cli(['history', wf, '--limit', '3'])
    expect(short.code, short.err).toBe(0)
    expect(short.out).toContain(`${total} events`)
    expect(short.out).toContain(`… ${total - 3} more`)
    expect((await cli(['history', wf, '--limit', '2.5'])).code).toBe(2)

    const out: string[] = []
    const write = process.stdout.write.bind(process.stdout)
    process.stdout.write = ((chunk: string | Uint8Array) => {
      out.push(String(chunk))
      return true
    })
    try {
      process.env.NEO4J_URI = env.uri
      await showHistory(client, wf)
    } finally {
      process.stdout.write = write
    }
    const shown = out.join('')
    expect(shown).toContain(`persisted ${total}/${total} events`)
    expect(shown).toMatch(/causal tree: \d+ roots?, depth [3-9]/)
    expect(shown).toContain('MATCH (w:Workflow')
  })
})
