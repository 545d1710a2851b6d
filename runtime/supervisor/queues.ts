// Per-agent queue figures from the run queues (`agent:ready:<agent>`) and the
// mailboxes they point at. The claim protocol keeps a ready hint for every actor
// with queued work (DESIGN §4 invariant), so walking the hints finds every
// non-empty mailbox without scanning the keyspace.
import type { RedisClient } from '../redis/connection.ts'
import { isWorkflowId, type Keys } from '../redis/keys.ts'
import { isLive, readRegistry, withQueuedWork, type RegistryEntry } from './registry.ts'

/** One hinted actor of an agent. */
export interface ActorQueue {
  wf: string
  /** Score of its ready hint: when someone should look next (a lease end while it is held). */
  hintAt: number
  /** Actions in its mailbox (due or delayed). */
  queued: number
  /** Actions in its mailbox that are due now. */
  due: number
  /** Mailbox member of its first action and when that is due, if any. */
  head: string | null
  headAt: number | null
  /** The actor's activation counter (bumped on every activation). */
  fence: number
}

/** Queue figures of one agent. */
export interface AgentQueue {
  agent: string
  /** Actors with a ready hint. */
  hinted: number
  /** Hints that are due (waiting for a worker to pick them). */
  dueHints: number
  /** Actions waiting in mailboxes (due or delayed). */
  queued: number
  /** Actions due now. */
  due: number
  /** Due time of the oldest due action, or null when none is due. */
  oldestDueAt: number | null
  /** The hinted actors walked (up to the limit, earliest hint first). */
  actors: ActorQueue[]
  /** True when the agent had more hints than the limit: figures cover the earliest ones. */
  truncated: boolean
}

/** Redis server time in ms; mailbox and hint scores are written in it. */
export async function serverNow(redis: RedisClient): Promise<number> {
  const [s, us] = await redis.time()
  return Number(s) * 1000 + Math.floor(Number(us) / 1000)
}

/**
 * Agents worth reporting: those with a live registration in `system:agents`
 * (see registry.ts), those with a stale one that still have hinted actors (work
 * left queued for an agent nobody runs any more), plus `extra` (named by health
 * records, by the sweep). Names that are not valid agent names are ignored.
 * `now` is Redis's clock (read here when not given); `registry` is
 * `system:agents` as the caller already read it.
 */
export async function knownAgents(redis: RedisClient, keys: Keys, extra: Iterable<string> = [], opts: { now?: number; registry?: readonly RegistryEntry[] } = {}): Promise<string[]> {
  const [entries, now] = await Promise.all([opts.registry ?? readRegistry(redis, keys), opts.now ?? serverNow(redis)])
  const stale = entries.filter((e) => !isLive(e, now))
  const names = new Set(entries.filter((e) => isLive(e, now)).map((e) => e.name))
  for (const n of await withQueuedWork(redis, keys, stale)) names.add(n)
  for (const n of extra) names.add(n)
  return [...names].filter((n) => /^[A-Za-z0-9_.-]{1,64}$/.test(n)).sort()
}

/**
 * Reads queue figures of `agents` at server time `now`, walking at most
 * `maxActors` hints per agent (earliest first, so overdue ones are always seen).
 */
export async function readQueues(redis: RedisClient, keys: Keys, agents: readonly string[], now: number, maxActors = 5000): Promise<Map<string, AgentQueue>> {
  const out = new Map<string, AgentQueue>()
  if (agents.length === 0) return out
  const p1 = redis.pipeline()
  for (const a of agents) {
    p1.zrange(keys.ready(a), '0', String(maxActors - 1), 'WITHSCORES')
    p1.zcard(keys.ready(a))
    p1.zcount(keys.ready(a), '-inf', now)
  }
  const r1 = (await p1.exec()) ?? []
  const walk: { agent: string; wf: string; hintAt: number }[] = []
  agents.forEach((agent, i) => {
    const [e1, hints] = r1[i * 3] ?? [null, []]
    const [, card] = r1[i * 3 + 1] ?? [null, 0]
    const [, dueHints] = r1[i * 3 + 2] ?? [null, 0]
    const q: AgentQueue = { agent, hinted: Number(card ?? 0), dueHints: Number(dueHints ?? 0), queued: 0, due: 0, oldestDueAt: null, actors: [], truncated: false }
    out.set(agent, q)
    if (e1) return
    const flat = (hints ?? []) as string[]
    q.truncated = q.hinted > flat.length / 2
    for (let j = 0; j + 1 < flat.length; j += 2) {
      const wf = flat[j] as string
      // Workers drop malformed hints themselves; they are not actors.
      if (isWorkflowId(wf)) walk.push({ agent, wf, hintAt: Number(flat[j + 1]) })
    }
  })
  for (let start = 0; start < walk.length; start += 1000) {
    const chunk = walk.slice(start, start + 1000)
    const p2 = redis.pipeline()
    for (const w of chunk) {
      const mb = keys.mailbox(w.wf, w.agent)
      p2.zcard(mb)
      p2.zcount(mb, '-inf', now)
      p2.zrange(mb, '0', '0', 'WITHSCORES')
      p2.hget(keys.actor(w.wf, w.agent), 'fence')
    }
    const r2 = (await p2.exec()) ?? []
    chunk.forEach((w, i) => {
      const q = out.get(w.agent) as AgentQueue
      const num = (k: number): number => {
        const [err, v] = r2[i * 4 + k] ?? [null, 0]
        return err ? 0 : Number(v ?? 0)
      }
      const [, headRaw] = r2[i * 4 + 2] ?? [null, []]
      const head = (headRaw ?? []) as string[]
      const a: ActorQueue = {
        wf: w.wf, hintAt: w.hintAt, queued: num(0), due: num(1), fence: num(3) || 0,
        head: head[0] ?? null, headAt: head[1] === undefined ? null : Number(head[1]),
      }
      q.actors.push(a)
      q.queued += a.queued
      q.due += a.due
      if (a.headAt !== null && a.headAt <= now && (q.oldestDueAt === null || a.headAt < q.oldestDueAt)) q.oldestDueAt = a.headAt
    })
  }
  return out
}
