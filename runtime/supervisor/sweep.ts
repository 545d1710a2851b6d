// The leader's slow sweep over every workflow (SCAN of `workflow:status:*`, a
// bounded number of SCAN calls per tick, so a big keyspace is spread over ticks).
// Per sweep it figures dead letters per agent, actions completed and failed per
// agent in the minute before the sweep began (from the workflows' event streams,
// whose ids are server times), workflows by status, and it verifies the claim
// protocol's invariant: an actor with a due action or an action in flight and no
// lock holder must have a ready hint that comes due now. Where one is missing it
// re-hints with `ZADD LT` (which can only bring a look forward, never hide work);
// the actor lock and fence still decide who delivers, so this never double-delivers.
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { runSupervisorScript, type FencedWrite, type LeaderFence } from './fence.ts'
import { serverNow } from './queues.ts'

/** Figures of one complete sweep. */
export interface SweepFigures {
  startedAt: number
  finishedAt: number
  /** Start of the counting window; the window ends at `startedAt`. */
  windowStart: number
  workflows: Record<string, number>
  deadLetters: Record<string, number>
  completed: Record<string, number>
  failed: Record<string, number>
  /** Agents named by the workflows swept (so agents nobody hosts still get figures). */
  agents: string[]
  /** Hints re-added during this sweep. */
  repairs: number
  /** True when some event stream had more entries in the window than were read. */
  truncated: boolean
}

/** Options of {@link WorkflowSweep}. */
export interface SweepOptions {
  /** Counting window for completed/failed actions (default 60 s). */
  windowMs?: number
  /** Keys asked per SCAN call (default 500). */
  scanCount?: number
  /** How long a due action or orphaned in-flight action must wait before it is re-hinted (default 2 s). */
  graceMs?: number
  /** Told about each batch of re-hinted actors as soon as it is written. */
  onRepair?: (actors: { agent: string; wf: string }[]) => void
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled'])
/** Most events read from one workflow's stream per sweep (past it, `truncated`). */
export const MAX_EVENTS_PER_WORKFLOW = 5000
// Events are read in pages, for a few workflows per round trip: a stream busy
// with streamed tokens holds thousands of big entries a minute, and reading up
// to MAX_EVENTS_PER_WORKFLOW of every workflow of a SCAN batch in one pipeline
// could put hundreds of megabytes in one reply.
const EVENTS_PAGE = 500
const EVENT_STREAMS_PER_TRIP = 16
const MAX_DEAD_READ = 1000

type Reply = [Error | null, unknown]

function inc(rec: Record<string, number>, k: string, by = 1): void {
  rec[k] = (rec[k] ?? 0) + by
}

/** Sweeps workflows step by step; `last` holds the figures of the last complete sweep. */
export class WorkflowSweep {
  last: SweepFigures | null = null
  private cur: SweepFigures | null = null
  private node = 0
  private cursor = '0'
  private readonly windowMs: number
  private readonly scanCount: number
  private readonly graceMs: number
  private readonly onRepair: NonNullable<SweepOptions['onRepair']>

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    opts: SweepOptions = {},
  ) {
    this.onRepair = opts.onRepair ?? (() => undefined)
    this.windowMs = opts.windowMs ?? 60_000
    this.scanCount = opts.scanCount ?? 500
    this.graceMs = opts.graceMs ?? 2000
  }

  private nodes(): RedisClient[] {
    return 'nodes' in this.redis ? this.redis.nodes('master') : [this.redis]
  }

  /**
   * Runs up to `budget` SCAN calls, stopping early after `maxMs`; repairs go
   * through `fence` (none without one: read-only). Resolves to true when this
   * step completed a sweep.
   */
  async step(budget: number, fence: LeaderFence | null, signal?: AbortSignal, maxMs = Infinity): Promise<boolean> {
    const until = Date.now() + maxMs
    if (!this.cur) {
      const now = await serverNow(this.redis)
      this.cur = { startedAt: now, finishedAt: 0, windowStart: now - this.windowMs, workflows: {}, deadLetters: {}, completed: {}, failed: {}, agents: [], repairs: 0, truncated: false }
      this.node = 0
      this.cursor = '0'
    }
    const prefix = this.keys.status('')
    const head = prefix.slice(0, prefix.indexOf('{'))
    for (let calls = 0; calls < budget && !signal?.aborted && Date.now() < until; calls++) {
      const nodes = this.nodes()
      const node = nodes[this.node]
      if (!node) return this.finish()
      const [next, found] = await node.scan(this.cursor, 'MATCH', `${head}*`, 'COUNT', this.scanCount)
      this.cursor = next
      const wfs = found.filter((k) => k.startsWith(`${head}{`) && k.endsWith('}')).map((k) => k.slice(head.length + 1, -1))
      if (wfs.length > 0) await this.visit(wfs, this.cur, fence)
      if (next === '0') {
        this.node++
        if (this.node >= nodes.length) return this.finish()
      }
    }
    return false
  }

  private finish(): boolean {
    if (!this.cur) return false
    this.cur.finishedAt = Date.now()
    this.last = this.cur
    this.cur = null
    return true
  }

  private async visit(wfs: string[], fig: SweepFigures, fence: LeaderFence | null): Promise<void> {
    const k = this.keys
    const p1 = this.redis.pipeline()
    for (const wf of wfs) {
      p1.hmget(k.status(wf), 'status', 'updatedAt', 'dead', 'deadline')
      p1.hkeys(k.status(wf))
    }
    const r1 = ((await p1.exec()) ?? []) as Reply[]
    const now = await serverNow(this.redis)
    const p2 = this.redis.pipeline()
    const reads: { wf: string; kind: 'dead' | 'actor' | 'deadline'; agent?: string; due?: number }[] = []
    const counted: string[] = []
    wfs.forEach((wf, i) => {
      const [e1, fields] = r1[i * 2] ?? [null, null]
      const [e2, names] = r1[i * 2 + 1] ?? [null, null]
      if (e1 || e2 || !Array.isArray(fields)) return
      const [status, updatedAt, dead, deadline] = fields as (string | null)[]
      if (!status) return
      inc(fig.workflows, status)
      for (const f of (names ?? []) as string[]) if (f.startsWith('agent:') && !fig.agents.includes(f.slice(6))) fig.agents.push(f.slice(6))
      if (Number(dead ?? 0) > 0) {
        p2.zrange(k.dead(wf), '0', String(MAX_DEAD_READ - 1))
        reads.push({ wf, kind: 'dead' })
      }
      if (Number(updatedAt ?? 0) >= fig.windowStart) counted.push(wf)
      if (!TERMINAL.has(status) && deadline !== null && deadline !== undefined && Number.isFinite(Number(deadline))) {
        p2.zscore(k.deadlines(), wf)
        reads.push({ wf, kind: 'deadline', due: Number(deadline) })
      }
      if (!TERMINAL.has(status)) {
        for (const f of (names ?? []) as string[]) {
          if (!f.startsWith('agent:')) continue
          const agent = f.slice(6)
          p2.zrange(k.mailbox(wf, agent), '0', '0', 'WITHSCORES')
          p2.exists(k.lock(wf, agent))
          p2.zscore(k.ready(agent), wf)
          p2.hget(k.actor(wf, agent), 'inflight')
          reads.push({ wf, kind: 'actor', agent })
        }
      }
    })
    // Counted after the reads that decide repairs, which must see the lock, the
    // hints and the mailboxes as of `now` (paging the events may take a while).
    const r2 = reads.length > 0 ? (((await p2.exec()) ?? []) as Reply[]) : []
    if (counted.length > 0) await this.countEventsPaged(counted, fig)
    if (reads.length === 0) return
    const deadIds: { wf: string; ids: string[] }[] = []
    const repairs: FencedWrite[] = []
    const repaired: { agent: string; wf: string }[] = []
    const deadlinesPut: string[] = []
    let at = 0
    for (const r of reads) {
      if (r.kind === 'dead') {
        const [err, ids] = r2[at++] ?? [null, []]
        if (!err && Array.isArray(ids) && ids.length > 0) deadIds.push({ wf: r.wf, ids: ids as string[] })
      } else if (r.kind === 'deadline') {
        // The start script records the deadline; its index entry is written one
        // round trip later. A starter that died in between left a deadline
        // nobody would enforce: put the entry back (NX: never move a lease).
        const [err, score] = r2[at++] ?? [null, null]
        if (!err && (score === null || score === undefined)) {
          repairs.push({ cmd: 'ZADD', key: k.deadlines(), args: ['NX', r.due as number, r.wf] })
          deadlinesPut.push(r.wf)
        }
      } else {
        const replies = r2.slice(at, at + 4)
        at += 4
        const agent = r.agent as string
        const [, headRaw] = replies[0] ?? [null, []]
        const [, locked] = replies[1] ?? [null, 1]
        const [, hintRaw] = replies[2] ?? [null, null]
        const [, inflight] = replies[3] ?? [null, null]
        if (replies.some(([e]) => e) || Number(locked) === 1) continue
        const headAt = Array.isArray(headRaw) && headRaw[1] !== undefined ? Number(headRaw[1]) : null
        const hint = hintRaw === null || hintRaw === undefined ? null : Number(hintRaw)
        const orphaned = typeof inflight === 'string' && inflight !== '' && inflight !== '[]'
        const waiting = headAt !== null && headAt <= now - this.graceMs
        // A hint in the future with no lock holder is a lease nobody extends any more.
        const late = hint === null || hint > now + this.graceMs
        if ((waiting || orphaned) && late) {
          repairs.push({ cmd: 'ZADD', key: k.ready(agent), args: ['LT', now, r.wf] })
          repairs.push({ cmd: 'ZADD', key: k.wake(agent), args: [0, 'w'] })
          repaired.push({ agent, wf: r.wf })
        }
      }
    }
    if (deadIds.length > 0) await this.countDead(deadIds, fig)
    if (repairs.length > 0 && fence) {
      await fence.write(repairs)
      fig.repairs += repaired.length
      this.onRepair(repaired)
      if (deadlinesPut.length > 0) await this.dropEndedDeadlines(deadlinesPut)
    }
  }

  /**
   * A workflow can end between the read that found its deadline entry missing
   * and the write that put it back; its ending commit's ZREM may then have come
   * first, and the entry stayed until due (up to ten years). Read again after
   * the write: the status turns terminal before that ZREM is sent, so either
   * this read sees the end or that ZREM comes after the entry.
   */
  private async dropEndedDeadlines(wfs: readonly string[]): Promise<void> {
    const p = this.redis.pipeline()
    for (const wf of wfs) p.hget(this.keys.status(wf), 'status')
    const r = ((await p.exec()) ?? []) as Reply[]
    const ended = wfs.filter((_, i) => {
      const [err, st] = r[i] ?? [null, null]
      return !err && (st === null || (typeof st === 'string' && TERMINAL.has(st)))
    })
    if (ended.length > 0) await this.redis.zrem(this.keys.deadlines(), ...ended)
  }

  /** Counts the window's action outcomes of `wfs` (see EVENTS_PAGE). */
  private async countEventsPaged(wfs: readonly string[], fig: SweepFigures): Promise<void> {
    const end = String(fig.startedAt)
    for (let i = 0; i < wfs.length; i += EVENT_STREAMS_PER_TRIP) {
      let pending = wfs.slice(i, i + EVENT_STREAMS_PER_TRIP).map((wf) => ({ wf, from: String(fig.windowStart), read: 0 }))
      while (pending.length > 0) {
        const p = this.redis.pipeline()
        for (const x of pending) p.xrange(this.keys.events(x.wf), x.from, end, 'COUNT', EVENTS_PAGE)
        const r = ((await p.exec()) ?? []) as Reply[]
        const next: typeof pending = []
        pending.forEach((x, j) => {
          const [err, entries] = r[j] ?? [null, null]
          if (err || !Array.isArray(entries)) return
          const page = entries as [string, string[]][]
          this.countEvents(page, fig)
          x.read += page.length
          const last = page[page.length - 1]
          if (page.length < EVENTS_PAGE || !last) return
          if (x.read >= MAX_EVENTS_PER_WORKFLOW) fig.truncated = true
          else next.push({ ...x, from: `(${last[0]}` })
        })
        pending = next
      }
    }
  }

  private countEvents(entries: [string, string[]][], fig: SweepFigures): void {
    for (const [, fields] of entries) {
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const v = fields[i + 1] as string
        if (fields[i] !== 'e' || !v.includes('"action.')) continue
        try {
          const ev = JSON.parse(v) as { type?: string; content?: { agent?: unknown }; metadata?: { agent?: unknown } }
          const agent = typeof ev.content?.agent === 'string' ? ev.content.agent : typeof ev.metadata?.agent === 'string' ? ev.metadata.agent : '?'
          if (ev.type === 'action.completed') inc(fig.completed, agent)
          else if (ev.type === 'action.failed' || ev.type === 'action.dead') inc(fig.failed, agent)
        } catch {
          // An unparsable entry is the persister's problem to park; it is not counted here.
        }
      }
    }
  }

  private async countDead(dead: { wf: string; ids: string[] }[], fig: SweepFigures): Promise<void> {
    // Only the agent names come back (dead_agents.lua): an HMGET of the records
    // carried every payload of the batch's dead letters in one reply.
    const agents = await Promise.all(dead.map((d) => runSupervisorScript(this.redis, 'dead_agents', [this.keys.actions(d.wf)], d.ids).catch(() => null)))
    dead.forEach((d, i) => {
      const names = agents[i]
      d.ids.forEach((_, j) => {
        const a: unknown = Array.isArray(names) ? names[j] : undefined
        // Counted under '?' when unreadable: the dead letter exists all the same.
        inc(fig.deadLetters, typeof a === 'string' && a !== '' ? a : '?')
      })
    })
  }
}
