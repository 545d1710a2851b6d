// The supervisor's Lua scripts and the leader fence. Every write a leader makes
// goes through a script that first compares the caller's term with
// `system:leader:term` (INCR on every takeover), so a leader that was deposed while
// paused cannot act on top of its successor: its write fails with TROUPE_DEPOSED.
//
// These scripts touch the term key and their target keys together, which needs
// one Redis node (or, on Redis Cluster, the keys in one slot); see docs/supervisor.md.
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { LuaScripts } from '../redis/scripts.ts'

/** Names of the scripts in runtime/supervisor/scripts (without `.lua`). */
export type SupervisorScript = 'takeover' | 'fenced' | 'mark_dead' | 'claim_deadlines' | 'dead_agents' | 'forget_agents'

const scripts = new LuaScripts<SupervisorScript>(new URL('./scripts/', import.meta.url))

/** Thrown when a write is refused because another leader took over since `term`. */
export class LeaderDeposedError extends Error {
  constructor(readonly term: number, detail: string) {
    super(`leader term ${term} is over: ${detail}`)
    this.name = 'LeaderDeposedError'
  }
}

/** Thrown by {@link runSupervisorScript} when the leader lock is no longer ours at takeover. */
export class NotLeaderError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'NotLeaderError'
  }
}

/**
 * Runs one supervisor script by EVALSHA, re-sending the source on NOSCRIPT, and maps
 * its TROUPE_DEPOSED / TROUPE_NOTLEADER errors to typed errors.
 */
export async function runSupervisorScript(redis: RedisClient, name: SupervisorScript, keys: readonly string[], args: readonly (string | number)[], term = 0): Promise<unknown> {
  try {
    return await scripts.run(redis, name, keys, args)
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    if (msg.includes('TROUPE_DEPOSED')) throw new LeaderDeposedError(term, msg.replace(/^.*TROUPE_DEPOSED /s, '').replace(/ script: .*$/s, ''))
    if (msg.includes('TROUPE_NOTLEADER')) throw new NotLeaderError(msg.replace(/^.*TROUPE_NOTLEADER /s, '').replace(/ script: .*$/s, ''))
    throw err
  }
}

/** Commands a fenced write may use (fenced.lua refuses anything else). */
export type FencedCommand = 'DEL' | 'HSET' | 'HDEL' | 'PEXPIRE' | 'ZADD' | 'ZREM' | 'PUBLISH'

/** One write of a fenced batch: a command on `key` (none for PUBLISH) with its arguments. */
export interface FencedWrite {
  cmd: FencedCommand
  key?: string
  args: readonly (string | number)[]
}

/** Writes of one batch are capped so a script never holds Redis for long. */
const MAX_WRITES_PER_BATCH = 500
/**
 * Values of one command in fenced.lua, which passes them with `unpack`: Lua
 * refuses more than about 8,000 ("too many results to unpack"), which one
 * ZREM of every forgotten service id reached on a fleet of short-lived
 * workers, failing the health duty on every tick from then on.
 */
const MAX_ARGS_PER_WRITE = 1000
/** Values of one batch, for the same reason as MAX_WRITES_PER_BATCH. */
const MAX_ARGS_PER_BATCH = 20_000
/** Commands whose arguments are a list of members or pairs, which split into several commands of the same effect. */
const SPLITS: Partial<Record<FencedCommand, number>> = { ZREM: 1, HDEL: 1, HSET: 2, ZADD: 2 }

/** `w` as commands of at most MAX_ARGS_PER_WRITE values each, with the same effect. */
export function splitWrite(w: FencedWrite): FencedWrite[] {
  const unit = SPLITS[w.cmd]
  // A ZADD with flags (NX, LT, ...) in front is left whole: its pairs do not start at 0.
  if (unit === undefined || w.args.length <= MAX_ARGS_PER_WRITE || w.args.length % unit !== 0) return [w]
  if (w.cmd === 'ZADD' && !Number.isFinite(Number(w.args[0]))) return [w]
  const out: FencedWrite[] = []
  const step = MAX_ARGS_PER_WRITE - (MAX_ARGS_PER_WRITE % unit)
  for (let i = 0; i < w.args.length; i += step) out.push({ ...w, args: w.args.slice(i, i + step) })
  return out
}

/**
 * The write capability of one leadership term. Handed to every leader duty;
 * nothing a duty writes bypasses it.
 *
 * @example
 * ```ts
 * const fence = new LeaderFence(rt.redis, rt.keys, rt.serviceId, term)
 * await fence.write([{ cmd: 'HSET', key: rt.keys.systemMetrics('summary'), args: ['term', term] }])
 * ```
 */
export class LeaderFence {
  constructor(
    readonly redis: RedisClient,
    readonly keys: Keys,
    readonly serviceId: string,
    readonly term: number,
  ) {}

  /**
   * Runs `writes` if this term is still current, checked atomically with them;
   * throws LeaderDeposedError otherwise. Each batch of up to
   * `MAX_WRITES_PER_BATCH` writes is one script: no other client's command runs
   * inside it, and a command the script refuses refuses the whole batch, but a
   * write Redis itself fails (e.g. WRONGTYPE on a hand-written key) leaves the
   * batch's earlier writes applied, as any Redis script does. A ZREM, HDEL,
   * HSET or ZADD of more than MAX_ARGS_PER_WRITE values goes as several
   * commands (see splitWrite), which may land in different batches; the
   * replies are one per command sent.
   */
  async write(writes: readonly FencedWrite[]): Promise<unknown[]> {
    const out: unknown[] = []
    const batches: FencedWrite[][] = []
    let args = 0
    for (const w of writes.flatMap(splitWrite)) {
      const last = batches.at(-1)
      if (!last || last.length >= MAX_WRITES_PER_BATCH || args + w.args.length > MAX_ARGS_PER_BATCH) {
        batches.push([w])
        args = w.args.length
      } else {
        last.push(w)
        args += w.args.length
      }
    }
    for (const batch of batches) {
      const keys = [this.keys.leaderTerm()]
      const index = new Map<string, number>()
      const encoded = batch.map((w) => {
        let idx = 0
        if (w.key !== undefined) {
          idx = index.get(w.key) ?? 0
          if (idx === 0) {
            keys.push(w.key)
            idx = keys.length
            index.set(w.key, idx)
          }
        }
        return [w.cmd, idx, ...w.args.map(String)]
      })
      const r = await runSupervisorScript(this.redis, 'fenced', keys, [String(this.term), JSON.stringify(encoded)], this.term)
      out.push(...(r as unknown[]))
    }
    return out
  }

  /** Publishes a fleet event on the system channel, fenced like any write. */
  async publish(event: SystemEvent): Promise<void> {
    await this.write([{ cmd: 'PUBLISH', args: [this.keys.systemChannel(), JSON.stringify(event)] }])
  }

  /**
   * Marks a service dead if its record still shows `lastSeen` (or, when the record
   * expired, its index entry does); true when marked.
   */
  async markDead(serviceId: string, lastSeen: string, keepMs: number, missed: number): Promise<boolean> {
    const r = await runSupervisorScript(
      this.redis, 'mark_dead', [this.keys.leaderTerm(), this.keys.health(serviceId), this.keys.services()],
      [String(this.term), lastSeen, Math.round(keepMs), this.keys.systemChannel(), serviceId, this.serviceId, missed], this.term,
    )
    return Number(r) === 1
  }

  /**
   * Removes the `system:agents` fields of `stale` (agent name and value as
   * read), each only if it still holds that value; returns the names removed.
   */
  async forgetAgents(stale: readonly { name: string; raw: string }[]): Promise<string[]> {
    if (stale.length === 0) return []
    const r = (await runSupervisorScript(this.redis, 'forget_agents', [this.keys.leaderTerm(), this.keys.agents()], [String(this.term), ...stale.flatMap((e) => [e.name, e.raw])], this.term)) as unknown[]
    return r.map(String)
  }

  /** Leases up to `max` passed deadlines for `leaseMs`; returns them with their due times. */
  async claimDeadlines(max: number, leaseMs: number): Promise<{ wf: string; due: number }[]> {
    const r = (await runSupervisorScript(this.redis, 'claim_deadlines', [this.keys.leaderTerm(), this.keys.deadlines()], [String(this.term), max, Math.round(leaseMs)], this.term)) as unknown[]
    const out: { wf: string; due: number }[] = []
    for (let i = 0; i + 1 < r.length; i += 2) out.push({ wf: String(r[i]), due: Number(r[i + 1]) })
    return out
  }
}

/** An event on the system channel (`keys.systemChannel()`), JSON-encoded. */
export interface SystemEvent {
  type: 'system.leader.elected' | 'system.leader.resigned' | 'system.service.dead' | 'system.actor.stuck' | 'system.deadline.fired'
  /** Milliseconds since the epoch. */
  at: number
  /** Term of the leader that published it. */
  term: number
  /** serviceId of the leader that published it. */
  leader: string
  [field: string]: unknown
}
