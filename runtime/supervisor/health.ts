// Reading the fleet from `system:services` + `system:health:<id>` (shared by the
// supervisor and `troupe status`), and the leader's health duty: mark services dead
// after missed heartbeats, forget very old index entries. Records are written by
// other processes (or by hand), so each one is validated and a bad one is reported
// and skipped rather than trusted.
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import type { LeaderFence } from './fence.ts'

/** What `troupe status` and the rollups call a service. */
export type ServiceStatus = 'alive' | 'stopped' | 'dead'

/** One service, from its health record. */
export interface ServiceRecord {
  serviceId: string
  status: ServiceStatus
  roles: string[]
  agents: string[]
  host: string
  pid: string
  version: string
  startedAt: number
  lastSeen: number
  heartbeatMs: number
  metricsUrl: string
  /** Actors active in that process, per agent. */
  active: Record<string, number>
  /** The status field as stored (`alive` for a stale record not yet marked dead). */
  stored: string
  /** Why it counts as dead, when it does. */
  note: string
  /** Every field as stored, for fields hosted services add (e.g. `sdUrl`, `supervisor`). */
  fields: Record<string, string>
}

/** A record that could not be used. */
export interface FleetProblem {
  serviceId: string
  kind: 'corrupt' | 'bad-id' | 'unknown'
  detail: string
}

/** The fleet at one moment. */
export interface FleetSnapshot {
  now: number
  services: ServiceRecord[]
  problems: FleetProblem[]
  /** Index score (last seen) of every id in `system:services` read (the newest `limit`), usable or not. */
  indexed: Map<string, number>
  /**
   * When the index holds more than `limit` ids: the oldest ones (up to 1,000),
   * which the listing left out, so that they can still be pruned. Empty otherwise.
   */
  oldest: Map<string, number>
}

/** Options of {@link readFleet}. */
export interface ReadFleetOptions {
  /** Heartbeats a service may miss before it counts as dead (default 3). */
  deadAfterMissed?: number
  now?: number
  /** Longest listing read (default 10,000 services). */
  limit?: number
}

/**
 * An id whose health record is gone but that heartbeated less than this ago died
 * unannounced (a live record expires after 5 missed heartbeats, while the runtime
 * keeps a stopped one for 10 minutes). Older ids without a record are unknown.
 */
export const UNANNOUNCED_DEATH_MS = 5 * 60_000

const SERVICE_ID_RE = /^[A-Za-z0-9_.:@-]{1,200}$/
const DEFAULT_HEARTBEAT_MS = 2000

function int(v: string | undefined): number | null {
  if (v === undefined || v === '' || !/^\d+$/.test(v)) return null
  return Number(v)
}

function parseActive(raw: string | undefined): Record<string, number> | null {
  if (raw === undefined || raw === '') return {}
  try {
    const v = JSON.parse(raw) as unknown
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return null
    const out: Record<string, number> = {}
    for (const [k, n] of Object.entries(v as Record<string, unknown>)) {
      if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return null
      out[k] = n
    }
    return out
  } catch {
    return null
  }
}

/**
 * Validates one health record; returns the service or why it is unusable.
 * A live record whose last heartbeat is older than `deadAfterMissed` beats is dead.
 */
export function parseHealth(serviceId: string, h: Record<string, string>, now: number, deadAfterMissed: number): ServiceRecord | string {
  const lastSeen = int(h.lastSeen)
  if (lastSeen === null) return `lastSeen is ${JSON.stringify(h.lastSeen ?? null)}, not a timestamp`
  const stored = h.status ?? ''
  if (!['alive', 'stopped', 'dead'].includes(stored)) return `status is ${JSON.stringify(h.status ?? null)}`
  const active = parseActive(h.active)
  if (!active) return `active is not a JSON object of counts: ${JSON.stringify((h.active ?? '').slice(0, 80))}`
  const hb = int(h.heartbeatMs) ?? DEFAULT_HEARTBEAT_MS
  const heartbeatMs = hb > 0 ? hb : DEFAULT_HEARTBEAT_MS
  let status = stored as ServiceStatus
  let note = ''
  if (stored === 'alive' && now - lastSeen > deadAfterMissed * heartbeatMs) {
    status = 'dead'
    note = `missed ${Math.floor((now - lastSeen) / heartbeatMs)} heartbeats`
  } else if (stored === 'dead') note = h.note || 'marked dead by the supervisor'
  const list = (v: string | undefined): string[] => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean)
  return {
    serviceId, status, stored, note, lastSeen, heartbeatMs, active,
    roles: list(h.roles), agents: list(h.agents), host: h.host ?? '', pid: h.pid ?? '', version: h.version ?? '',
    startedAt: int(h.startedAt) ?? 0, metricsUrl: h.metricsUrl ?? '', fields: h,
  }
}

/**
 * Reads every service listed in `system:services`. Ids whose record expired are
 * listed as dead (they stopped heartbeating long ago); unusable records and ids
 * land in `problems` instead of `services`.
 */
export async function readFleet(redis: RedisClient, keys: Keys, opts: ReadFleetOptions = {}): Promise<FleetSnapshot> {
  const now = opts.now ?? Date.now()
  const missed = opts.deadAfterMissed ?? 3
  // Newest first: past the limit, what is left out is the longest gone, not the live.
  const limit = opts.limit ?? 10_000
  const flat = await redis.zrange(keys.services(), '0', String(limit - 1), 'REV', 'WITHSCORES')
  const indexed = new Map<string, number>()
  for (let i = 0; i + 1 < flat.length; i += 2) indexed.set(flat[i] as string, Number(flat[i + 1]))
  const oldest = new Map<string, number>()
  if (indexed.size >= limit) {
    const old = await redis.zrange(keys.services(), '0', '999', 'WITHSCORES')
    for (let i = 0; i + 1 < old.length; i += 2) if (!indexed.has(old[i] as string)) oldest.set(old[i] as string, Number(old[i + 1]))
  }
  const problems: FleetProblem[] = []
  const ids = [...indexed.keys()].filter((id) => {
    if (SERVICE_ID_RE.test(id)) return true
    problems.push({ serviceId: id, kind: 'bad-id', detail: 'not a service id (written by hand?)' })
    return false
  })
  const pipe = redis.pipeline()
  for (const id of ids) pipe.hgetall(keys.health(id))
  const res = ids.length > 0 ? ((await pipe.exec()) ?? []) : []
  const services: ServiceRecord[] = []
  ids.forEach((id, i) => {
    const [err, value] = res[i] ?? [new Error('no reply'), null]
    if (err) {
      problems.push({ serviceId: id, kind: 'corrupt', detail: err.message.split('\n')[0] ?? 'unreadable' })
      return
    }
    const h = (value ?? {}) as Record<string, string>
    if (Object.keys(h).length === 0) {
      const seen = indexed.get(id) ?? 0
      if (now - seen > UNANNOUNCED_DEATH_MS) {
        problems.push({ serviceId: id, kind: 'unknown', detail: `no health record; indexed as last seen ${Math.round((now - seen) / 1000)} s ago` })
        return
      }
      services.push({
        serviceId: id, status: 'dead', stored: '', note: 'health record expired', lastSeen: seen, heartbeatMs: 0, active: {},
        roles: [], agents: [], host: '', pid: '', version: '', startedAt: 0, metricsUrl: '', fields: {},
      })
      return
    }
    const parsed = parseHealth(id, h, now, missed)
    if (typeof parsed === 'string') problems.push({ serviceId: id, kind: 'corrupt', detail: parsed })
    else services.push(parsed)
  })
  return { now, services, problems, indexed, oldest }
}

/** Options of the leader's health duty. */
export interface HealthDutyOptions {
  deadAfterMissed: number
  /**
   * How long a dead service's record is kept (its TTL once marked); index entries
   * last seen longer ago than this, without a live record, are removed.
   */
  keepDeadMs: number
}

/** What one health pass did. */
export interface HealthPass {
  markedDead: string[]
  forgotten: string[]
}

/**
 * Marks stale services dead (compare-and-set on `lastSeen`, fenced) and removes
 * index entries of services gone for `keepDeadMs` and of unknown ids.
 */
export async function healthDuty(fence: LeaderFence, fleet: FleetSnapshot, opts: HealthDutyOptions): Promise<HealthPass> {
  const markedDead: string[] = []
  for (const s of fleet.services) {
    // '' is a record that expired before anyone marked it: it gets a tombstone.
    if ((s.stored !== 'alive' && s.stored !== '') || s.status !== 'dead') continue
    const missed = s.heartbeatMs > 0 ? Math.floor((fleet.now - s.lastSeen) / s.heartbeatMs) : 0
    if (await fence.markDead(s.serviceId, String(s.lastSeen), opts.keepDeadMs, missed)) markedDead.push(s.serviceId)
  }
  const cutoff = fleet.now - opts.keepDeadMs
  const live = new Set(fleet.services.filter((s) => s.status === 'alive').map((s) => s.serviceId))
  // Reported once (by the caller); nothing more will ever be learnt about them.
  const unknown = new Set(fleet.problems.filter((p) => p.kind === 'unknown').map((p) => p.serviceId))
  // A service that stopped cleanly keeps its record for 10 minutes; its index
  // entry goes once it is older than UNANNOUNCED_DEATH_MS, before the record
  // expires: left, it was reported as an unknown id (a bad record) 10 minutes
  // after every clean stop.
  const stopped = new Set(fleet.services.filter((s) => s.stored === 'stopped' && fleet.now - s.lastSeen > UNANNOUNCED_DEATH_MS).map((s) => s.serviceId))
  // The oldest entries beyond the listing are not live either (a live service's
  // heartbeat keeps its entry among the newest; one dropped here is added again).
  const forgotten = [...fleet.indexed, ...fleet.oldest].filter(([id, seen]) => !live.has(id) && (seen < cutoff || unknown.has(id) || stopped.has(id))).map(([id]) => id)
  if (forgotten.length > 0) await fence.write([{ cmd: 'ZREM', key: fence.keys.services(), args: forgotten }])
  return { markedDead, forgotten }
}
