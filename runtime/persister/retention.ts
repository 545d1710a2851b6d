// Retention: with persistence on, the runtime's scripts never trim or expire a
// workflow; once a finished workflow's stream is entirely in Neo4j, the persister
// puts the retention TTL on all of its keys. "Entirely" is checked against Neo4j
// (event count and last stream id) and then re-checked atomically in Redis by a
// script, so nothing unpersisted ever expires.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import neo4j, { type Driver, type Integer } from 'neo4j-driver'
import type { RedisClient } from '../redis/connection.ts'
import { execOps } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
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

/** How far Neo4j has a workflow: its last stream id and number of events. */
export interface PersistedState {
  lastStreamId: string | null
  events: number
  status: string | null
  /** Stream length at the last whole-stream backfill (see reconcile.ts), or null. */
  backfilledLen: number | null
}

/** Reads, for each id, what Neo4j holds of that workflow (absent ids are not in the map). */
export async function persistedState(driver: Driver, database: string | undefined, ids: readonly string[]): Promise<Map<string, PersistedState>> {
  const out = new Map<string, PersistedState>()
  if (ids.length === 0) return out
  const res = await driver.executeQuery(
    'UNWIND $ids AS id MATCH (w:Workflow {id: id}) RETURN id, w.lastStreamId AS last, w.status AS status, w.backfilledLen AS backfilled, COUNT { (w)-[:HAS_EVENT]->(:Event) } AS n',
    { ids },
    { routing: 'READ', ...(database ? { database } : {}) },
  )
  for (const r of res.records) {
    const backfilled = r.get('backfilled') as Integer | null
    out.set(r.get('id') as string, {
      lastStreamId: (r.get('last') as string | null) ?? null,
      events: neo4j.integer.toNumber(r.get('n') as Integer),
      status: (r.get('status') as string | null) ?? null,
      backfilledLen: backfilled === null ? null : neo4j.integer.toNumber(backfilled),
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
  const res = await execOps(deps.redis, done.flatMap((c) => [
    { cmd: 'xlen', args: [deps.keys.events(c.wf)] },
    { cmd: 'xrevrange', args: [deps.keys.events(c.wf), '+', '-', 'COUNT', 1] },
  ]))
  const neo = await persistedState(deps.driver, deps.database, done.map((c) => c.wf))
  const expired: string[] = []
  for (let i = 0; i < done.length; i++) {
    const c = done[i] as RetentionCandidate
    const [e1, len] = res[i * 2] ?? [new Error('no reply'), 0]
    const [e2, lastEntries] = res[i * 2 + 1] ?? [new Error('no reply'), []]
    if (e1 || e2) throw (e1 ?? e2) as Error
    const last = (lastEntries as [string, unknown][])[0]?.[0]
    const p = neo.get(c.wf)
    if (!last || !p || p.lastStreamId !== last || (p.events < Number(len) && p.backfilledLen !== Number(len))) continue
    if (await expire(deps.redis, workflowKeys(deps.keys, c.wf, agentsOf(c.status)), deps.ttlMs, Number(len), last)) expired.push(c.wf)
  }
  return expired
}
