// Retention: with persistence on, the runtime's scripts never trim or expire a
// workflow; once a finished workflow's stream is entirely in Neo4j, the persister
// puts the retention TTL on all of its keys. "Entirely" is checked against Neo4j
// (event count and last stream id) and then re-checked atomically in Redis by a
// script, so nothing unpersisted ever expires. The count covers only the events
// of the stream Redis holds now (stream ids from its first on): a workflow id
// started again after its keys expired has the earlier run's events in Neo4j too,
// and counted with them they hid a hole in the new run.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import neo4j, { type Driver, type Integer } from 'neo4j-driver'
import type { RedisClient } from '../redis/connection.ts'
import { execOps, type CmdOp, type OpResult } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
import { streamKey } from './pointers.ts'
import { agentsOf } from './rows.ts'

const TERMINAL = new Set(['completed', 'failed', 'cancelled'])
const source = readFileSync(new URL('./scripts/expire_persisted.lua', import.meta.url), 'utf8')
const sha = createHash('sha1').update(source).digest('hex')

/** What retention needs to know about a workflow: its status hash as just read. */
export interface RetentionCandidate {
  wf: string
  status: Record<string, string>
}

/** Dependencies of {@link applyRetention}. */
export interface RetentionDeps {
  redis: RedisClient
  keys: Keys
  driver: Driver
  database: string | undefined
  ttlMs: number
}

/** How far Neo4j has a workflow: its last stream id and its events from the first id Redis still holds. */
export interface PersistedState {
  lastStreamId: string | null
  events: number
  status: string | null
  /** Stream length at the last whole-stream backfill (see reconcile.ts), or null. */
  backfilledLen: number | null
  /** The stream's first id at that backfill, or null. */
  backfilledFirst: string | null
}

/** What Redis holds of a workflow's event stream. */
export interface StreamExtent {
  len: number
  first: string | null
  last: string | null
}

/** The reads behind {@link readExtent}: three commands per workflow. */
export function extentOps(keys: Keys, wf: string): CmdOp[] {
  const stream = keys.events(wf)
  return [
    { cmd: 'xlen', args: [stream] },
    { cmd: 'xrange', args: [stream, '-', '+', 'COUNT', 1] },
    { cmd: 'xrevrange', args: [stream, '+', '-', 'COUNT', 1] },
  ]
}

/** Reads the replies of {@link extentOps} from `res` at `at`; throws the first error. */
export function readExtent(res: readonly OpResult[], at: number): StreamExtent {
  const [len, first, last] = [0, 1, 2].map((i) => {
    const [err, v] = res[at + i] ?? [new Error('no reply'), null]
    if (err) throw err
    return v
  })
  const id = (v: unknown): string | null => (v as [string, unknown][] | undefined)?.[0]?.[0] ?? null
  return { len: Number(len ?? 0), first: id(first), last: id(last) }
}

/**
 * True when Neo4j may lack some event of the stream: it counts fewer of them than
 * the stream has, and no whole-stream backfill of this very stream (same length,
 * same first id) explains it (two entries sharing an event id are one node).
 */
export function lacksEvents(p: PersistedState, x: StreamExtent): boolean {
  return p.events < x.len && !(p.backfilledLen === x.len && p.backfilledFirst === x.first)
}

/**
 * Reads, for each workflow, what Neo4j holds of it, counting only events from
 * `first` on (all of them when null). Absent ids are not in the map.
 */
export async function persistedState(driver: Driver, database: string | undefined, streams: readonly { wf: string; first: string | null }[]): Promise<Map<string, PersistedState>> {
  const out = new Map<string, PersistedState>()
  if (streams.length === 0) return out
  const res = await driver.executeQuery(
    `UNWIND $rows AS row MATCH (w:Workflow {id: row.id})
     RETURN row.id AS id, w.lastStreamId AS last, w.status AS status, w.backfilledLen AS backfilled, w.backfilledFirst AS backfilledFirst,
       COUNT { (w)-[:HAS_EVENT]->(e:Event) WHERE e.streamKey >= row.from } AS n`,
    { rows: streams.map((s) => ({ id: s.wf, from: s.first === null ? '' : streamKey(s.first) })) },
    { routing: 'READ', ...(database ? { database } : {}) },
  )
  for (const r of res.records) {
    const backfilled = r.get('backfilled') as Integer | null
    out.set(r.get('id') as string, {
      lastStreamId: (r.get('last') as string | null) ?? null,
      events: neo4j.integer.toNumber(r.get('n') as Integer),
      status: (r.get('status') as string | null) ?? null,
      backfilledLen: backfilled === null ? null : neo4j.integer.toNumber(backfilled),
      backfilledFirst: (r.get('backfilledFirst') as string | null) ?? null,
    })
  }
  return out
}

/** The keys of a workflow that retention expires, the stream and status hash first. */
export function workflowKeys(keys: Keys, wf: string, agents: readonly string[]): string[] {
  return [
    keys.events(wf), keys.status(wf), keys.actions(wf), keys.seq(wf), keys.dead(wf),
    ...agents.flatMap((a) => [keys.actor(wf, a), keys.mailbox(wf, a)]),
  ]
}

async function expire(redis: RedisClient, keyList: string[], ttlMs: number, len: number, last: string): Promise<boolean> {
  const args = [ttlMs, len, last]
  try {
    return Number(await redis.evalsha(sha, keyList.length, ...keyList, ...args)) === 1
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err
    return Number(await redis.eval(source, keyList.length, ...keyList, ...args)) === 1
  }
}

/**
 * Puts the retention TTL on the finished workflows among `candidates` whose every
 * event is in Neo4j. Returns the ids that got it.
 */
export async function applyRetention(deps: RetentionDeps, candidates: readonly RetentionCandidate[]): Promise<string[]> {
  const done = candidates.filter((c) => TERMINAL.has(c.status.status ?? ''))
  if (done.length === 0) return []
  const res = await execOps(deps.redis, done.flatMap((c) => extentOps(deps.keys, c.wf)))
  const extents = done.map((_c, i) => readExtent(res, i * 3))
  const neo = await persistedState(deps.driver, deps.database, done.map((c, i) => ({ wf: c.wf, first: extents[i]?.first ?? null })))
  const expired: string[] = []
  for (let i = 0; i < done.length; i++) {
    const c = done[i] as RetentionCandidate
    const x = extents[i] as StreamExtent
    const p = neo.get(c.wf)
    if (!x.last || !p || p.lastStreamId !== x.last || lacksEvents(p, x)) continue
    if (await expire(deps.redis, workflowKeys(deps.keys, c.wf, agentsOf(c.status)), deps.ttlMs, x.len, x.last)) expired.push(c.wf)
  }
  return expired
}
