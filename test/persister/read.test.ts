// A batch's memory is bounded by bytes, not entries: readEvents stops near its
// byte budget and hands back the rest, and a batch or a reconciliation backfill
// writes what it read before reading more. The end-to-end cases run in a child
// process whose heap (64 MB) is far smaller than the events it writes (100 MB):
// a reader that held a whole batch, or a whole 2,000-entry page, died there.
import type { Driver } from 'neo4j-driver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { readEvents, type ReadRange } from '../../runtime/persister/collect.ts'
import { killStragglers, runNode } from '../helpers/processes.ts'
import { testConfig } from '../helpers/redis.ts'
import { cleanGraph, graphCounts, idPrefix, neo4jEnv, openDriver } from './helpers.ts'

const cfg = testConfig()
const prefix = idPrefix()
const env = neo4jEnv()
const KB = 1024
let driver: Driver
let client: TroupeClient

beforeAll(() => {
  driver = openDriver(env)
  client = TroupeClient.connect(cfg)
})

afterAll(async () => {
  killStragglers()
  if (client) {
    const keys = await client.redis.keys(`${cfg.namespace}*`)
    for (let i = 0; i < keys.length; i += 500) await client.redis.del(...keys.slice(i, i + 500))
    await client.close()
  }
  if (driver) {
    await dropBig(`${prefix}-big`)
    await cleanGraph(driver, prefix)
    await driver.close()
  }
})

/** Deletes a workflow of big events from Neo4j, a few per transaction: 2,000 of them at once (cleanGraph) fill its memory pool. */
async function dropBig(wf: string): Promise<void> {
  const session = driver.session()
  try {
    await session.run('MATCH (e:Event) WHERE e.workflowId = $wf CALL (e) { DETACH DELETE e } IN TRANSACTIONS OF 20 ROWS', { wf })
    await session.run('MATCH (w:Workflow {id: $wf}) DETACH DELETE w', { wf })
  } finally {
    await session.close()
  }
}

/** Appends `n` events of about `bytes` each to `wf`'s stream; returns their stream ids. */
async function appendEvents(wf: string, n: number, bytes: (i: number) => number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i += 20) {
    const p = client.redis.pipeline()
    for (let j = i; j < Math.min(n, i + 20); j++) p.xadd(client.keys.events(wf), '*', 'e', JSON.stringify({ id: `${wf}-${j}`, workflowId: wf, type: 'big', content: 'x'.repeat(bytes(j)) }))
    for (const [err, id] of (await p.exec()) ?? []) {
      if (err) throw err
      ids.push(id as string)
    }
  }
  return ids
}

describe('readEvents', () => {
  it('stops near its byte budget and hands back the rest, which reads every entry once, in order', async () => {
    // Many short ranges and one long one, with sizes from 1 to 5 KB.
    const wfs = Array.from({ length: 40 }, (_, i) => `${prefix}-r${i}`)
    const expected = new Map<string, string[]>()
    for (const [i, wf] of wfs.entries()) expected.set(wf, await appendEvents(wf, i === 0 ? 300 : 1 + (i % 7), (j) => KB * (1 + ((i + j) % 5))))
    const budget = 64 * KB
    let ranges: ReadRange[] = wfs.map((wf) => ({ wf, start: '-', end: '+' }))
    const got = new Map<string, string[]>(wfs.map((wf) => [wf, []]))
    let calls = 0
    while (ranges.length > 0) {
      const read = await readEvents(client.redis, client.keys, ranges, { pageSize: 1000, maxBytes: budget })
      calls++
      // Near the budget: over it by at most part of one round, and under it only at the end.
      expect(read.bytes).toBeLessThan(budget * 1.5)
      if (read.rest.length > 0) expect(read.bytes).toBeGreaterThanOrEqual(budget)
      for (const [wf, list] of read.events) got.get(wf)?.push(...list.map((e) => e.streamId))
      ranges = read.rest
      expect(calls).toBeLessThan(1000)
    }
    // About 1.1 MB in all: read in many calls, none of them the whole.
    expect(calls).toBeGreaterThan(10)
    expect(got).toEqual(expected)
  })
})

describe('a batch far bigger than memory', () => {
  const wf = `${prefix}-big`
  const EVENTS = 400
  let ids: string[] = []
  const child = (args: string[]): Promise<{ code: number | null; out: string; err: string }> =>
    runNode(['--max-old-space-size=64', '--import', 'tsx', 'test/persister/bounded-child.ts', ...args], {
      REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace, NEO4J_URI: env.uri, NEO4J_USER: env.user, NEO4J_PASSWORD: env.password, TROUPE_LOG_LEVEL: 'warn',
    })

  beforeAll(async () => {
    await client.redis.hset(client.keys.status(wf), { status: 'running', owner: 'tester', createdAt: String(Date.now()), updatedAt: String(Date.now()) })
    // 100 MB of events, one pointer for all of them.
    ids = await appendEvents(wf, EVENTS, () => 256 * KB)
  }, 120_000)

  it('is written by the batch writer in reads of about maxBytesPerRead, each event once', async () => {
    const r = await child(['batch', wf, ids[0] as string, ids[ids.length - 1] as string])
    expect(r.code, r.err).toBe(0)
    const report = JSON.parse(r.out) as { events: number; parked: number; reads: number; maxReadBytes: number }
    expect(report).toMatchObject({ events: EVENTS, parked: 0 })
    // 2 MB reads (4 × maxBytesPerTx of 512 KB): about fifty of them.
    expect(report.reads).toBeGreaterThanOrEqual(40)
    expect(report.maxReadBytes).toBeLessThan(3 * 1024 * KB)
    expect((await graphCounts(driver, [wf])).get(wf)).toMatchObject({ events: EVENTS, distinct: EVENTS, maxHas: 1 })
  }, 240_000)

  it('is backfilled by reconciliation the same way', async () => {
    await dropBig(wf)
    expect((await graphCounts(driver, [wf])).get(wf)).toBeUndefined()
    const r = await child(['backfill', wf])
    expect(r.code, r.err).toBe(0)
    expect(JSON.parse(r.out)).toEqual({ events: EVENTS, outcome: 'backfilled' })
    expect((await graphCounts(driver, [wf])).get(wf)).toMatchObject({ events: EVENTS, distinct: EVENTS, maxHas: 1 })
  }, 240_000)
})
