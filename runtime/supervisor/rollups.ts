// Cluster-wide rollups in `system:metrics:<name>`: one HASH per figure, field =
// agent (or status), value = a number, rewritten whole by the leader (DEL + HSET +
// PEXPIRE in one fenced script, so a reader never sees half a rollup) and expiring
// when no leader refreshes them. docs/supervisor.md lists every key.
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import type { FencedWrite } from './fence.ts'
import type { FleetSnapshot, ServiceStatus } from './health.ts'
import type { AgentQueue } from './queues.ts'
import type { StuckReason } from './stuck.ts'
import type { SweepFigures } from './sweep.ts'

/** Backlog of the persistence stream and its `persister` consumer group. */
export interface PersistenceBacklog {
  /** Entries in `persistence:queue` (XLEN). */
  length: number
  /** Entries delivered to a persister and not yet acknowledged (XPENDING). */
  pending: number
  /** Entries not yet delivered to the group (Redis 7 `lag`; the length when the group is missing). */
  lag: number
  /** Whether the `persister` consumer group exists. */
  group: boolean
}

/** Every figure of one rollup. */
export interface Rollup {
  at: number
  term: number
  leader: string
  services: Record<ServiceStatus | 'unusable', number>
  /** Per agent: figures from queues, health records and the last sweep. */
  agents: Record<string, AgentFigures>
  persistence: PersistenceBacklog
  workflows: Record<string, number>
  deadLettersTotal: number
  sweepAt: number
  windowStart: number
}

/** One agent's figures. */
export interface AgentFigures {
  queued: number
  due: number
  hinted: number
  oldestDueMs: number
  active: number
  stuck: number
  deadLetters: number
  completedPerMin: number
  failedPerMin: number
}

/** The rollup hashes, named `system:metrics:<name>`; each maps agent → number unless noted. */
export const ROLLUP_NAMES = {
  queued: 'queue_depth',
  due: 'due_actions',
  hinted: 'hinted_actors',
  oldestDueMs: 'oldest_due_ms',
  active: 'active_actors',
  stuck: 'stuck_actors',
  deadLetters: 'dead_letters',
  completedPerMin: 'completed_per_min',
  failedPerMin: 'failed_per_min',
} as const satisfies Record<keyof AgentFigures, string>

/** Reads the persistence backlog (XLEN + the `persister` group's pending and lag). */
export async function readPersistence(redis: RedisClient, keys: Keys): Promise<PersistenceBacklog> {
  const key = keys.persistence()
  const length = Number(await redis.xlen(key))
  let groups: unknown[] = []
  try {
    groups = (await redis.xinfo('GROUPS', key)) as unknown[]
  } catch {
    // No stream yet: nothing to persist.
  }
  for (const g of groups) {
    if (!Array.isArray(g)) continue
    const f: Record<string, unknown> = {}
    for (let i = 0; i + 1 < g.length; i += 2) f[String(g[i])] = g[i + 1]
    if (f.name !== 'persister') continue
    const lag = f.lag === null || f.lag === undefined ? length : Number(f.lag)
    return { length, pending: Number(f.pending ?? 0), lag, group: true }
  }
  return { length, pending: 0, lag: length, group: false }
}

/** Builds a rollup from one tick's readings. */
export function buildRollup(input: {
  at: number
  term: number
  leader: string
  fleet: FleetSnapshot
  queues: Map<string, AgentQueue>
  stuck: Map<string, Record<StuckReason, number>>
  sweep: SweepFigures | null
  persistence: PersistenceBacklog
}): Rollup {
  const services: Rollup['services'] = { alive: 0, stopped: 0, dead: 0, unusable: input.fleet.problems.length }
  const active: Record<string, number> = {}
  for (const s of input.fleet.services) {
    services[s.status]++
    if (s.status !== 'alive') continue
    for (const [a, n] of Object.entries(s.active)) active[a] = (active[a] ?? 0) + n
  }
  const sweep = input.sweep
  // Counts over the sweep's window, which is sweepWindowMs (60 s unless set): per minute whatever it is.
  const perMin = sweep && sweep.startedAt > sweep.windowStart ? 60_000 / (sweep.startedAt - sweep.windowStart) : 1
  const rate = (n: number | undefined): number => Math.round((n ?? 0) * perMin * 100) / 100
  const names = new Set([...input.queues.keys(), ...Object.keys(active), ...Object.keys(sweep?.deadLetters ?? {}), ...Object.keys(sweep?.completed ?? {}), ...Object.keys(sweep?.failed ?? {})])
  const agents: Record<string, AgentFigures> = {}
  for (const a of [...names].sort()) {
    const q = input.queues.get(a)
    const st = input.stuck.get(a)
    agents[a] = {
      queued: q?.queued ?? 0,
      due: q?.due ?? 0,
      hinted: q?.hinted ?? 0,
      oldestDueMs: q?.oldestDueAt == null ? 0 : Math.max(0, input.at - q.oldestDueAt),
      active: active[a] ?? 0,
      stuck: st ? st.unpicked + st.failing : 0,
      deadLetters: sweep?.deadLetters[a] ?? 0,
      completedPerMin: rate(sweep?.completed[a]),
      failedPerMin: rate(sweep?.failed[a]),
    }
  }
  return {
    at: input.at, term: input.term, leader: input.leader, services, agents, persistence: input.persistence,
    workflows: sweep?.workflows ?? {},
    deadLettersTotal: Object.values(sweep?.deadLetters ?? {}).reduce((s, n) => s + n, 0),
    sweepAt: sweep?.startedAt ?? 0,
    windowStart: sweep?.windowStart ?? 0,
  }
}

function hashWrites(key: string, fields: Record<string, string | number>, ttlMs: number): FencedWrite[] {
  const flat = Object.entries(fields).flatMap(([f, v]) => [f, v])
  const w: FencedWrite[] = [{ cmd: 'DEL', key, args: [] }]
  if (flat.length > 0) w.push({ cmd: 'HSET', key, args: flat }, { cmd: 'PEXPIRE', key, args: [Math.round(ttlMs)] })
  return w
}

/** The fenced writes that replace every `system:metrics:*` hash with `r`. */
export function rollupWrites(keys: Keys, r: Rollup, ttlMs: number): FencedWrite[] {
  const writes: FencedWrite[] = []
  for (const [field, name] of Object.entries(ROLLUP_NAMES) as [keyof AgentFigures, string][]) {
    writes.push(...hashWrites(keys.systemMetrics(name), Object.fromEntries(Object.entries(r.agents).map(([a, f]) => [a, f[field]])), ttlMs))
  }
  writes.push(...hashWrites(keys.systemMetrics('services'), r.services, ttlMs))
  writes.push(...hashWrites(keys.systemMetrics('workflows'), r.workflows, ttlMs))
  writes.push(...hashWrites(keys.systemMetrics('persistence'), { length: r.persistence.length, pending: r.persistence.pending, lag: r.persistence.lag, group: r.persistence.group ? 1 : 0 }, ttlMs))
  writes.push(...hashWrites(keys.systemMetrics('summary'), {
    at: r.at, term: r.term, leader: r.leader, deadLetters: r.deadLettersTotal, sweepAt: r.sweepAt, windowStart: r.windowStart,
  }, ttlMs))
  return writes
}

/**
 * The sweep figures a rollup was built from, as far as it kept them: what a new
 * leader reports until its own first sweep completes. Without them a takeover
 * wrote zero dead letters and zero actions per minute (and dropped the
 * workflow counts) for as long as a sweep of the whole keyspace takes.
 */
export function sweepFromRollup(r: Rollup): SweepFigures | null {
  if (r.sweepAt <= 0) return null
  const windowMs = r.sweepAt > r.windowStart ? r.sweepAt - r.windowStart : 60_000
  const pick = (f: (a: AgentFigures) => number, scale = 1): Record<string, number> =>
    Object.fromEntries(Object.entries(r.agents).filter(([, a]) => f(a) > 0).map(([name, a]) => [name, f(a) * scale]))
  return {
    startedAt: r.sweepAt, finishedAt: r.sweepAt, windowStart: r.windowStart, workflows: { ...r.workflows },
    deadLetters: pick((a) => a.deadLetters), completed: pick((a) => a.completedPerMin, windowMs / 60_000), failed: pick((a) => a.failedPerMin, windowMs / 60_000),
    agents: Object.keys(r.agents), repairs: 0, truncated: false,
  }
}

/** Reads the last rollup back (for `troupe status`), or null when none is live. */
export async function readRollup(redis: RedisClient, keys: Keys): Promise<Rollup | null> {
  const names = [...Object.values(ROLLUP_NAMES), 'services', 'workflows', 'persistence', 'summary']
  const p = redis.pipeline()
  for (const n of names) p.hgetall(keys.systemMetrics(n))
  const res = (await p.exec()) ?? []
  const h = (i: number): Record<string, string> => {
    const [err, v] = res[i] ?? [null, {}]
    return err || typeof v !== 'object' || v === null ? {} : (v as Record<string, string>)
  }
  const summary = h(names.length - 1)
  if (!summary.at) return null
  const num = (v: string | undefined): number => (Number.isFinite(Number(v)) ? Number(v) : 0)
  const agents: Record<string, AgentFigures> = {}
  Object.entries(ROLLUP_NAMES).forEach(([field, _name], i) => {
    for (const [a, v] of Object.entries(h(i))) {
      agents[a] ??= { queued: 0, due: 0, hinted: 0, oldestDueMs: 0, active: 0, stuck: 0, deadLetters: 0, completedPerMin: 0, failedPerMin: 0 }
      agents[a][field as keyof AgentFigures] = num(v)
    }
  })
  const base = Object.keys(ROLLUP_NAMES).length
  const svc = h(base)
  const pers = h(base + 2)
  return {
    at: num(summary.at), term: num(summary.term), leader: summary.leader ?? '',
    services: { alive: num(svc.alive), stopped: num(svc.stopped), dead: num(svc.dead), unusable: num(svc.unusable) },
    agents,
    persistence: { length: num(pers.length), pending: num(pers.pending), lag: num(pers.lag), group: pers.group === '1' },
    workflows: Object.fromEntries(Object.entries(h(base + 1)).map(([k, v]) => [k, num(v)])),
    deadLettersTotal: num(summary.deadLetters), sweepAt: num(summary.sweepAt), windowStart: num(summary.windowStart),
  }
}
