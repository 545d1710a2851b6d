// The leader's slow sweep over every workflow (SCAN of `workflow:status:*`, a
// bounded number of SCAN calls per tick, so a big keyspace is spread over ticks).
// Per sweep it figures dead letters per agent, actions completed and failed per
// agent in the minute before the sweep began (from the workflows' event streams,
// whose ids are server times), workflows by status, and it verifies the claim
// protocol's invariant: an actor with a due action or an action in flight and no
// lock holder must have a ready hint that comes due now. Where one is missing it
// re-hints with `ZADD LT` (which can only bring a look forward, never hide work);
// the actor lock and fence still decide who delivers, so this never double-delivers.
//
// Beside it, at its own slower pace and as a duty of its own (a failure there
// must not cost a sweep its figures), the leader forgets the records of
// finished actions of workflows that never end (sweep_done.lua, see forget).
import { readFileSync } from 'node:fs'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { LuaScripts } from '../redis/scripts.ts'
import { LeaderDeposedError, runSupervisorScript, type FencedWrite, type LeaderFence } from './fence.ts'
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
  /**
   * How long a `done` action's record stays at least before the leader forgets
   * it (default 1 h, the persister's FORGET_DONE_AFTER_MS): a send with a
   * caller's own action id is idempotent while the first one's record exists.
   */
  forgetAfterMs?: number
  /**
   * From the start of one pass forgetting finished actions' records to the
   * start of the next (default 1 h): a pass reads every record of every live
   * workflow again, about 6 µs of Redis each (docs/supervisor.md).
   */
  forgetEveryMs?: number
  /** Fields asked per HSCAN of a workflow's action records (default 200). */
  forgetPage?: number
  /** Most sweep_done.lua calls per step (default 64). */
  forgetCalls?: number
}

/** What one complete pass forgetting finished actions' records did (see WorkflowSweep.lastForget). */
export interface ForgetFigures {
  startedAt: number
  finishedAt: number
  /** Workflows looked through (an ended one costs one call, which tells it). */
  workflows: number
  /** Records removed, each an action's record and its state. */
  removed: number
  /** Workflows that had records removed. */
  removedFrom: number
  /** Workflows left for the next pass after an error, and the last error. */
  failed: number
  lastError: string | null
}

/**
 * How long a `done` action's record stays at least. The persister's trim has
 * its own (FORGET_DONE_AFTER_MS in runtime/persister/trim.ts, the same hour,
 * checked equal by test/supervisor/forget-done.test.ts): importing it would load
 * the Neo4j driver into every process that can host the supervisor.
 */
export const FORGET_AFTER_MS = 3_600_000
// Every sweep_done call holds Redis for one HSCAN page, so a workflow with
// 100,000 records is paged over many steps; a round trip carries the pages of
// a few workflows, so the small ones do not queue behind a big one.
const FORGET_PER_TRIP = 16

/** A pass forgetting finished actions' records under way: its own SCAN of the status keys, and the workflows listed and not done. */
interface ForgetPass {
  fig: ForgetFigures
  cursor: string
  listed: boolean
  /** `hit`: some record of it was removed already (a workflow is paged over steps). */
  todo: { wf: string; cursor: string; hit: boolean }[]
}

let doneScripts: LuaScripts<'sweep_done'> | null = null

/**
 * sweep_done.lua with the persister's forget_done.lua in front of it as a
 * function of its own KEYS and ARGV (parameters shadow the globals), so the
 * rule for which records may go is read from the persister's file, not
 * copied. Indented, the whole file is one definition to the prelude's parser
 * (preludeFor in runtime/redis/scripts.ts). Loaded on first use.
 */
function sweepDoneScripts(): LuaScripts<'sweep_done'> {
  if (!doneScripts) {
    const body = readFileSync(new URL('../persister/scripts/forget_done.lua', import.meta.url), 'utf8')
    const fn = `local function forget_done(KEYS, ARGV)\n${body.trimEnd().split('\n').map((l) => (l === '' ? l : `  ${l}`)).join('\n')}\nend\n`
    doneScripts = new LuaScripts(new URL('./scripts/', import.meta.url), fn)
  }
  return doneScripts
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

/**
 * Sweeps workflows step by step; `last` holds the figures of the last complete
 * sweep, `lastForget` those of the last complete pass forgetting finished
 * actions' records.
 */
export class WorkflowSweep {
  last: SweepFigures | null = null
  lastForget: ForgetFigures | null = null
  private forgetting: ForgetPass | null = null
  private forgetNextAt = 0
  private cur: SweepFigures | null = null
  private node = 0
  private cursor = '0'
  private readonly windowMs: number
  private readonly scanCount: number
  private readonly graceMs: number
  private readonly onRepair: NonNullable<SweepOptions['onRepair']>
  private readonly forgetAfterMs: number
  private readonly forgetEveryMs: number
  private readonly forgetPage: number
  private readonly forgetCalls: number

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    opts: SweepOptions = {},
  ) {
    this.onRepair = opts.onRepair ?? (() => undefined)
    this.windowMs = opts.windowMs ?? 60_000
    this.scanCount = opts.scanCount ?? 500
    this.graceMs = opts.graceMs ?? 2000
    this.forgetAfterMs = opts.forgetAfterMs ?? FORGET_AFTER_MS
    this.forgetEveryMs = opts.forgetEveryMs ?? 3_600_000
    this.forgetPage = opts.forgetPage ?? 200
    this.forgetCalls = opts.forgetCalls ?? 64
  }

  /** The part of a status key before the workflow's `{id}`, for SCAN's MATCH. */
  private statusHead(): string {
    const prefix = this.keys.status('')
    return prefix.slice(0, prefix.indexOf('{'))
  }

  /** Workflow ids of the status keys a SCAN found. */
  private workflowsOf(found: readonly string[]): string[] {
    const head = this.statusHead()
    return found.filter((k) => k.startsWith(`${head}{`) && k.endsWith('}')).map((k) => k.slice(head.length + 1, -1))
  }

  private nodes(): RedisClient[] {
    return 'nodes' in this.redis ? this.redis.nodes('master') : [this.redis]
  }

  /**
   * Runs up to `budget` SCAN calls, stopping early after `maxMs`; repairs go
   * through `fence` (none without one: read-only). Resolves to true when this
   * step completed a sweep. Forgetting finished actions' records is a step of
   * its own ({@link forget}).
   */
  async step(budget: number, fence: LeaderFence | null, signal?: AbortSignal, maxMs = Infinity): Promise<boolean> {
    const until = Date.now() + maxMs
    if (!this.cur) {
      const now = await serverNow(this.redis)
      this.cur = { startedAt: now, finishedAt: 0, windowStart: now - this.windowMs, workflows: {}, deadLetters: {}, completed: {}, failed: {}, agents: [], repairs: 0, truncated: false }
      this.node = 0
      this.cursor = '0'
    }
    const head = this.statusHead()
    for (let calls = 0; calls < budget && !signal?.aborted && Date.now() < until; calls++) {
      const nodes = this.nodes()
      const node = nodes[this.node]
      if (!node) return this.finish()
      const [next, found] = await node.scan(this.cursor, 'MATCH', `${head}*`, 'COUNT', this.scanCount)
      this.cursor = next
      const wfs = this.workflowsOf(found)
      if (wfs.length > 0) await this.visit(wfs, this.cur, fence)
      if (next === '0') {
        this.node++
        if (this.node >= nodes.length) return this.finish()
      }
    }
    return false
  }

  /**
   * Goes on with the pass forgetting the records of `done` actions that
   * finished over `forgetAfterMs` ago in live workflows whose event stream no
   * longer holds their completion (sweep_done.lua; the persister's trim removes
   * them only as it trims that completion, which a stream turned over faster
   * than the hour, or persistence off, never lets it). The pass has a SCAN of
   * its own, started at most every `forgetEveryMs` (the sweep's own pass can
   * take a single tick, while a pass here reads every record again, and one
   * becomes old enough only after an hour), and pages each
   * workflow's records with HSCAN: at most `forgetCalls` calls a step, a round
   * trip of up to FORGET_PER_TRIP workflows at a time and none begun after
   * `maxMs` but the first. A workflow with 100,000 records takes many steps;
   * the others go on beside it. Resolves to the figures of the pass when this
   * step completed one (also kept as `lastForget`), else null. A failed step
   * (its SCAN refused) leaves the pass where it was, for the next step.
   */
  async forget(fence: LeaderFence, signal?: AbortSignal, maxMs = Infinity): Promise<ForgetFigures | null> {
    const until = Date.now() + maxMs
    const redis = fence.redis
    // The term key and the workflow's keys are in different slots, as for
    // every fenced write (docs/supervisor.md, "Scope of the fence").
    if ('nodes' in redis) return null
    if (!this.forgetting) {
      if (Date.now() < this.forgetNextAt) return null
      this.forgetting = { fig: { startedAt: Date.now(), finishedAt: 0, workflows: 0, removed: 0, removedFrom: 0, failed: 0, lastError: null }, cursor: '0', listed: false, todo: [] }
    }
    const f = this.forgetting
    for (let calls = 0, trips = 0; calls < this.forgetCalls && !signal?.aborted && (trips === 0 || Date.now() < until); trips++) {
      if (f.todo.length < FORGET_PER_TRIP && !f.listed) {
        const [next, found] = await redis.scan(f.cursor, 'MATCH', `${this.statusHead()}*`, 'COUNT', this.scanCount)
        f.cursor = next
        f.listed = next === '0'
        f.todo.push(...this.workflowsOf(found).map((wf) => ({ wf, cursor: '0', hit: false })))
        calls++
        continue
      }
      if (f.todo.length === 0) {
        f.fig.finishedAt = Date.now()
        this.lastForget = f.fig
        this.forgetNextAt = f.fig.startedAt + this.forgetEveryMs
        this.forgetting = null
        return f.fig
      }
      const trip = f.todo.splice(0, Math.min(FORGET_PER_TRIP, this.forgetCalls - calls))
      calls += trip.length
      const res = await Promise.allSettled(trip.map((t) => this.sweepDone(fence, t.wf, t.cursor)))
      const again: ForgetPass['todo'] = []
      res.forEach((r, i) => {
        const t = trip[i] as ForgetPass['todo'][number]
        if (r.status === 'rejected') {
          if (r.reason instanceof LeaderDeposedError) throw r.reason
          // Left for the next pass: a workflow that always fails (a key of the
          // wrong type written by hand) must not hold up the others.
          f.fig.failed++
          f.fig.lastError = `${t.wf}: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`
          return
        }
        const [cursor, removed] = r.value
        f.fig.removed += removed
        const hit = t.hit || removed > 0
        if (hit && !t.hit) f.fig.removedFrom++
        if (cursor === '0') f.fig.workflows++
        else again.push({ wf: t.wf, cursor, hit })
      })
      f.todo.unshift(...again)
    }
    return null
  }

  /** One sweep_done.lua page of `wf`'s records from `cursor`: the next cursor and the records removed. */
  private async sweepDone(fence: LeaderFence, wf: string, cursor: string): Promise<[string, number]> {
    const k = this.keys
    try {
      const r = (await sweepDoneScripts().run(fence.redis, 'sweep_done', [k.leaderTerm(), k.status(wf), k.actions(wf), k.events(wf)], [String(fence.term), this.forgetAfterMs, cursor, this.forgetPage])) as [unknown, unknown]
      return [String(r[0]), Number(r[1])]
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err)
      if (msg.includes('TROUPE_DEPOSED')) throw new LeaderDeposedError(fence.term, msg)
      throw err
    }
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
