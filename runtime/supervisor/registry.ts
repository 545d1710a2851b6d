// The agent registry (`system:agents`) as the supervisor sees it. Runtimes
// rewrite their agents' registrations every 10 s and nothing else removed one,
// so an agent a release dropped stayed registered for good: sends to it were
// accepted and queued for no one, and the leader reported figures for every
// agent name ever deployed. A registration not rewritten for
// REGISTRATION_STALE_MS (10 minutes, the clients' and runtimes' limit) no
// longer counts here either, and the leader removes it once it is older than
// REGISTRATION_FORGET_MS, unless a live service hosts the agent or work is
// still queued for it (see forgettable).
import { isLiveRegistration } from '../client.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'

/**
 * How old (by Redis's clock) a registration must be before the leader removes
 * it. Longer than the 10 minutes after which it stops counting: an agent whose
 * every runtime is down that long is refused sends, yet a runtime coming back
 * within the hour finds nothing of it changed (and a leader whose reading of
 * a registration is off by a refresh or two removes nothing live).
 */
export const REGISTRATION_FORGET_MS = 60 * 60_000

/** Registrations removed per tick at most, so the script stays short. */
const FORGET_BATCH = 500

/** One `system:agents` field. */
export interface RegistryEntry {
  name: string
  /** The value as stored (the removal compares it). */
  raw: string
  /** When its runtime last wrote it (Redis's clock), NaN when the value does not say. */
  updatedAt: number
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

/** Every field of `system:agents`. */
export async function readRegistry(redis: RedisClient, keys: Keys): Promise<RegistryEntry[]> {
  const raw = await redis.hgetall(keys.agents())
  return Object.entries(raw).map(([name, value]) => ({ name, raw: value, updatedAt: updatedAt(value) }))
}

function updatedAt(json: string): number {
  try {
    const v = JSON.parse(json) as { updatedAt?: unknown }
    return typeof v === 'object' && v !== null && typeof v.updatedAt === 'number' ? v.updatedAt : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** True when `e` counts at `now` (Redis's clock): rewritten within REGISTRATION_STALE_MS. */
export function isLive(e: RegistryEntry, now: number): boolean {
  return isLiveRegistration({ updatedAt: e.updatedAt }, now)
}

/**
 * Agents with a stale registration that still have hinted actors: their
 * leftover work is reported (an actor stuck with no worker) until someone
 * deals with it, so their registration stays, and so do their figures.
 */
export async function withQueuedWork(redis: RedisClient, keys: Keys, entries: readonly RegistryEntry[]): Promise<Set<string>> {
  const names = entries.map((e) => e.name).filter((n) => NAME_RE.test(n))
  const counts = await Promise.all(names.map((n) => redis.zcard(keys.ready(n))))
  return new Set(names.filter((_, i) => (counts[i] ?? 0) > 0))
}

/**
 * The registrations the leader may remove at `now`: written more than
 * `forgetMs` ago (or with no time at all), of agents no live service hosts and
 * with no hinted actors (`queued`). Oldest first, at most FORGET_BATCH.
 */
export function forgettable(entries: readonly RegistryEntry[], hosted: ReadonlySet<string>, queued: ReadonlySet<string>, now: number, forgetMs = REGISTRATION_FORGET_MS): RegistryEntry[] {
  return entries
    .filter((e) => !hosted.has(e.name) && !queued.has(e.name) && !(e.updatedAt > now - forgetMs))
    .sort((a, b) => (Number.isNaN(a.updatedAt) ? -1 : a.updatedAt) - (Number.isNaN(b.updatedAt) ? -1 : b.updatedAt))
    .slice(0, FORGET_BATCH)
}
