// Typed wrappers around the claim-protocol scripts (DESIGN §4). Each function is one
// round trip on a single Redis (on a Cluster, one per phase: see execPhases); the
// global keys (ready hints, persistence pointers) are written by the follow-ups,
// after the per-workflow script, so a crash in between leaves at worst a harmless hint.
import { randomInt } from 'node:crypto'
import { nanoid } from 'nanoid'
import type { TroupeConfig } from './config.ts'
import { effectiveMaxLen, effectiveRetention } from './config.ts'
import { runScript } from './redis/scripts.ts'
import { fromRedisError } from './errors.ts'
import { execOps, execPhases, isCluster, throwFirst, type CmdOp, type Op, type OpResult, type ScriptOp } from './redis/batch.ts'
import type { Keys } from './redis/keys.ts'
import type { RedisClient } from './redis/connection.ts'
import { createLogger, type Logger } from './log.ts'

/** Shared context of every protocol call. */
export interface ProtocolContext {
  redis: RedisClient
  keys: Keys
  cfg: TroupeConfig
}

/** A ready hint to (re)set after a script: the actor of `agent` in `wf` is due at `score`. */
export interface Hint {
  agent: string
  wf: string
  score: number
  /** The actions a commit sent that actor (a commit's hints only). */
  sent?: readonly string[]
  /**
   * A commit's hint that its own write already made due (single Redis: the
   * post-hint after the script). Not so for a join the commit completed, whose
   * pre-hint waited for the join's timeout, nor on a Cluster.
   */
  written?: boolean
}

/** Stream ids a script appended, for the persister's pointer entry. */
export interface Appended {
  wf: string
  first: string
  last: string
}

function str(v: unknown): string {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'bigint') return String(v)
  if (Buffer.isBuffer(v)) return v.toString()
  return ''
}

/**
 * The follow-up writes after a script, as two phases for execPhases: first the
 * ready hints (ZADD LT: never postpone an earlier due time) and persistence
 * pointers, then the wake-ups for idle workers, which must not reach a worker
 * before the hint it is to pick (on a Cluster the two keys live on different nodes).
 */
export function followUpOps(ctx: ProtocolContext, hints: readonly Hint[], appended: readonly Appended[], wake = true): [Op[], Op[]] {
  const ops: Op[] = []
  for (const h of hints) ops.push({ cmd: 'zadd', args: [ctx.keys.ready(h.agent), 'LT', h.score, h.wf] })
  if (ctx.cfg.persistence) {
    for (const a of appended) if (a.first) ops.push({ cmd: 'xadd', args: [ctx.keys.persistence(), '*', 'wf', a.wf, 'from', a.first, 'to', a.last] })
  }
  // One wake-up per agent is enough: the woken worker picks every due hint at
  // once and passes the wake-up on when more is due than it can take.
  const wakes = wake ? [...new Set(hints.map((h) => h.agent))].map((agent) => wakeOp(ctx, agent)) : []
  return [ops, wakes]
}

/**
 * Wakes one idle worker of `agent`: sets the agent's single wake-up marker, which
 * exactly one worker blocked in BZPOPMIN receives (or the next one to block).
 */
export function wakeOp(ctx: ProtocolContext, agent: string): CmdOp {
  return { cmd: 'zadd', args: [ctx.keys.wake(agent), 0, 'w'] }
}

/** Sends {@link followUpOps} and waits for them; throws the first error. */
export async function writeFollowUps(ctx: ProtocolContext, hints: readonly Hint[], appended: readonly Appended[], wake = true): Promise<void> {
  throwFirst(await execPhases(ctx.redis, followUpOps(ctx, hints, appended, wake)))
}

/**
 * The hints and wake-ups after a script that is not an enqueue (a requeue of
 * dead letters), tried as an enqueue's post-hints are: now, then after each
 * pause of {@link FOLLOW_UP_RETRY_MS}, each wake-up after the hints (sent again
 * whenever a hint was, which it must not overtake). Resolves to the last error
 * of what never succeeded, or null.
 */
export async function writeHintsRetrying(ctx: ProtocolContext, hints: readonly Hint[]): Promise<Error | null> {
  const [ops, wakes] = followUpOps(ctx, hints, [])
  const res = await execPhases(ctx.redis, [ops, wakes])
  const retry: FollowUp[] = ops.flatMap((op, i) => (res[i]?.[0] ? [{ op, wake: false, at: null }] : []))
  wakes.forEach((op, i) => {
    if (retry.length > 0 || res[ops.length + i]?.[0]) retry.push({ op, wake: true, at: null })
  })
  if (retry.length === 0) return null
  return (await retryFollowUps(ctx, retry, []))[0]?.[1] ?? null
}

/** Arguments of one enqueue. */
export interface EnqueueArgs {
  wf: string
  actionId: string
  agent: string
  type: string
  record: string
  delayMs: number
  eventId: string
  parentEventId: string
  mode: 'start' | 'send'
  owner: string
  deadlineMs: number
}

/** Result of the enqueue script. */
export interface EnqueueResult {
  availableAt: number
  appended: Appended
}

function enqueueKeysArgs(ctx: ProtocolContext, a: EnqueueArgs): [string[], (string | number)[]] {
  const k = ctx.keys
  return [
    [k.status(a.wf), k.actions(a.wf), k.seq(a.wf), k.events(a.wf), k.mailbox(a.wf, a.agent)],
    [a.wf, a.actionId, a.agent, a.type, a.record, a.delayMs, a.eventId, a.parentEventId, ctx.keys.channel(a.wf), a.mode, a.owner, effectiveMaxLen(ctx.cfg), `${a.eventId}.w`, a.deadlineMs],
  ]
}

function parseEnqueue(wf: string, raw: unknown): EnqueueResult {
  const r = raw as unknown[]
  return { availableAt: Number(r[0]), appended: { wf, first: str(r[1]), last: str(r[2]) } }
}

/** What {@link enqueueWith} did. */
export interface Enqueued {
  /** One result or error per action, in order. */
  results: (EnqueueResult | Error)[]
  /** The replies of the caller's `extra` ops, in order; empty when they were not sent (an enqueue failed). */
  extra: OpResult[]
}

/**
 * Pauses before each new try of an enqueue's failed follow-up writes, in ms
 * (about a second in all). A Cluster has no sweep to repair a lost post-hint
 * (docs/supervisor.md), so a node that answers again within that time must
 * not leave the action stranded.
 */
const FOLLOW_UP_RETRY_MS = [50, 200, 800] as const

/**
 * Enqueues actions in one write (on a Cluster, two phases): per action a pre-hint and the script, then the
 * post-hints and one wake-up per agent; then the persistence pointers, with
 * `extra` when every enqueue succeeded.
 *
 * The pre-hint goes first so that even a write cut short after the script leaves
 * a hint. The post-hint (`ZADD LT now`, also for delayed actions: see
 * docs/architecture.md) covers the one race the pre-hint cannot: a worker that
 * picked the pre-hint, found nothing yet and released between the two. It must
 * land after the script and before any worker the wake-up rouses can lease the
 * hint: on one Redis the pipeline's order gives both in the same write (sent
 * after the reply, it turned such fresh leases back into due hints that other
 * processes then found locked); on a Cluster the script's node and the hint's
 * are different servers, so the post-hints and wake-ups wait for the replies.
 *
 * Only an enqueue's own script decides its result. Once it took, the action is
 * queued: a follow-up write that fails must not make the call fail, or a caller
 * who retries queues the work twice. Failed hints, wake-ups and `extra` ops
 * (which must be safe to send twice) are tried again a few times
 * ({@link FOLLOW_UP_RETRY_MS}); what still fails, and a failed persistence
 * pointer, is logged and left to the repairs: the persister's reconciliation
 * for a pointer, the supervisor's sweep for a hint (single Redis) and for a
 * deadline entry.
 */
export async function enqueueWith(
  ctx: ProtocolContext, list: readonly EnqueueArgs[], opts: { extra?: readonly Op[]; log?: Logger } = {},
): Promise<Enqueued> {
  if (list.length === 0) return { results: [], extra: [] }
  const first: Op[] = []
  const then: Op[] = []
  for (const a of list) {
    const [keys, args] = enqueueKeysArgs(ctx, a)
    const now = Date.now()
    const ready = ctx.keys.ready(a.agent)
    first.push({ cmd: 'zadd', args: [ready, 'LT', now + a.delayMs, a.wf] }, { script: 'enqueue', keys, args })
    then.push({ cmd: 'zadd', args: [ready, 'LT', now, a.wf] })
  }
  const agents = [...new Set(list.map((a) => a.agent))]
  for (const agent of agents) then.push(wakeOp(ctx, agent))
  const res = await execPhases(ctx.redis, [first, then])
  const out: (EnqueueResult | Error)[] = []
  const appended: Appended[] = []
  for (let i = 0; i < list.length; i++) {
    const a = list[i] as EnqueueArgs
    const [err, raw] = res[i * 2 + 1] ?? [new Error('no reply'), null]
    const r: EnqueueResult | Error = err ?? parseEnqueue(a.wf, raw)
    out.push(r)
    if (!(r instanceof Error)) appended.push(r.appended)
  }
  if (appended.length === 0) return { results: out, extra: [] }
  const [pointers] = followUpOps(ctx, [], appended)
  // The caller's own writes (e.g. a start's owner index) ride along, only when every enqueue took.
  const extra = out.every((r) => !(r instanceof Error)) ? (opts.extra ?? []) : []
  const after = await execOps(ctx.redis, [...pointers, ...extra])
  const log = opts.log ?? createLogger('enqueue')
  const lostPointers = after.slice(0, pointers.length).flatMap(([err]) => (err ? [err] : []))
  if (lostPointers.length > 0) {
    // Not sent again: a pointer whose reply alone was lost would be read twice.
    log.warn('persistence pointers of enqueued actions not written: the persister\'s reconciliation writes their events', { workflows: [...new Set(appended.map((a) => a.wf))], count: lostPointers.length, error: lostPointers[0]?.message })
  }
  const extraRes = after.slice(pointers.length)
  const retry: FollowUp[] = []
  // A post-hint is retried only for an action that took, with its agent's
  // wake-up (the first one may have come before the hint); a failed wake-up when any took.
  const rewake = new Set<string>()
  list.forEach((a, i) => {
    if (!res[first.length + i]?.[0] || out[i] instanceof Error) return
    retry.push({ op: then[i] as Op, wake: false, at: null })
    rewake.add(a.agent)
  })
  agents.forEach((agent, j) => {
    if (res[first.length + list.length + j]?.[0]) rewake.add(agent)
  })
  for (const agent of rewake) retry.push({ op: wakeOp(ctx, agent), wake: true, at: null })
  extra.forEach((op, at) => {
    if (extraRes[at]?.[0]) retry.push({ op, wake: false, at })
  })
  const failed = await retryFollowUps(ctx, retry, extraRes)
  if (failed.length > 0) {
    log.warn(
      'follow-up writes of enqueued actions failed; the actions are queued. A lost ready hint is restored by the supervisor\'s sweep on a single Redis ' +
        '(on a Cluster the action waits for its pre-hint, if that was written, or for the next write to its actor), a lost deadline entry by its restore',
      { workflows: [...new Set(appended.map((a) => a.wf))], failed: failed.map(([f]) => ('cmd' in f.op ? `${f.op.cmd} ${String(f.op.args[0])}` : f.op.script)), error: failed[0]?.[1].message },
    )
  }
  return { results: out, extra: extraRes }
}

/** {@link enqueueWith} answering only its results: one result or error per action, in order. */
export async function enqueueMany(ctx: ProtocolContext, list: readonly EnqueueArgs[], extra: readonly Op[] = []): Promise<(EnqueueResult | Error)[]> {
  return (await enqueueWith(ctx, list, { extra })).results
}

/** A follow-up write of an enqueue to try again: a wake-up goes after the others; `at` is an extra op's place in the caller's list. */
interface FollowUp {
  op: Op
  wake: boolean
  at: number | null
}

/**
 * Tries `ops` again after each pause of {@link FOLLOW_UP_RETRY_MS}, the
 * wake-ups phased after the rest as at first (a worker they rouse must find
 * the hints written); a retried extra op's reply replaces its entry in
 * `extraRes`. Returns the writes that never succeeded, with their last error.
 */
async function retryFollowUps(ctx: ProtocolContext, ops: readonly FollowUp[], extraRes: OpResult[]): Promise<[FollowUp, Error][]> {
  let pending: [FollowUp, Error][] = ops.map((f) => [f, new Error('not retried')])
  for (const ms of FOLLOW_UP_RETRY_MS) {
    if (pending.length === 0) break
    await new Promise((r) => setTimeout(r, ms))
    const order = [...pending.filter(([f]) => !f.wake), ...pending.filter(([f]) => f.wake)].map(([f]) => f)
    const again = await execPhases(ctx.redis, [order.filter((f) => !f.wake).map((f) => f.op), order.filter((f) => f.wake).map((f) => f.op)])
    const still: [FollowUp, Error][] = []
    order.forEach((f, i) => {
      const [err, val] = again[i] ?? [new Error('no reply'), null]
      if (err) still.push([f, err])
      else if (f.at !== null) extraRes[f.at] = [null, val]
    })
    pending = still
  }
  return pending
}

/**
 * How long a lease on a ready hint lasts, in ms, with a random fraction of a
 * millisecond added: every lease score then has a fraction (1/1024 to 1023/1024)
 * and no other hint write has one (due times, the supervisor's repairs and a busy
 * activation's push to the end of the holder's lock are whole milliseconds).
 * A release deletes the hint only when it still holds the releaser's own lease,
 * so a score that merely equals it must not come from anyone else. With whole
 * milliseconds it could: pick_activate.lua sets a lease and the lock it guards in
 * the same millisecond, so a busy push to the end of that lock wrote the holder's
 * lease back; and two picks of one actor in the same millisecond got equal leases.
 * Hint scores stay exact: about 1.8e12 ms leaves a double 12 bits of fraction.
 */
export function leaseMs(ttlMs: number): number {
  return ttlMs + randomInt(1, 1024) / 1024
}

/** Picks up to `max` due actors of `agent`, leasing each for `leaseMs` (plus a fraction: see {@link leaseMs}). */
export async function pick(ctx: ProtocolContext, agent: string, max: number, ttlMs: number): Promise<{ picked: { wf: string; lease: number }[]; nextDue: number | null; now: number }> {
  const r = (await runScript(ctx.redis, 'pick', [ctx.keys.ready(agent)], [max, leaseMs(ttlMs)])) as string[]
  const picked: { wf: string; lease: number }[] = []
  for (let i = 0; i < r.length - 2; i += 2) picked.push({ wf: str(r[i]), lease: Number(r[i + 1]) })
  const next = str(r[r.length - 2])
  return { picked, nextDue: next === '' ? null : Number(next), now: Number(r[r.length - 1]) }
}

function pickedActivation(reply: unknown[]): PickedActivation['activation'] {
  const code = str(reply[0])
  if (code === 'invalid' || code === 'local') return code
  if (code === 'error') {
    const err = fromRedisError(new Error(str(reply[1])))
    return err instanceof Error ? err : new Error(str(reply[1]))
  }
  return parseActivation(reply)
}

/** Stands for the workflow id in the key templates pick_activate.lua fills in (never valid in an id). */
const WF_MARK = '\u0000wf\u0000'

/** A key template cut at the workflow id: what comes before it and after it. */
function cut(key: string): [string, string] {
  const at = key.indexOf(WF_MARK)
  return [key.slice(0, at), key.slice(at + WF_MARK.length)]
}

/**
 * One actor taken by {@link pickActivate}: its lease on the hint and its activation,
 * `'local'` for an actor active in this process (leased only), `'invalid'` for a
 * member that is not a workflow id, an error when its activation failed.
 */
export interface PickedActivation {
  wf: string
  lease: number
  lockValue: string
  activation: Activation | 'local' | 'invalid' | Error
}

/**
 * {@link pick} and {@link activateOp} in one round trip (pick_activate.lua), on a
 * single Redis only: leases up to `max` due actors of `agent` and activates each
 * but those in `activeHere` (this process runs them already).
 * The lock values are `lockPrefix` (28 hex characters) plus a 4-digit index, so
 * each is as unique as a Redlock value.
 */
export async function pickActivate(
  ctx: ProtocolContext, agent: string, max: number, lockPrefix: string, batch: number, activeHere: Iterable<string>,
): Promise<{ picked: PickedActivation[]; nextDue: number | null; now: number }> {
  const k = ctx.keys
  const templates = [
    k.actor(WF_MARK, agent), k.lock(WF_MARK, agent), k.mailbox(WF_MARK, agent), k.actions(WF_MARK), k.status(WF_MARK), k.events(WF_MARK), k.channel(WF_MARK),
  ].flatMap(cut)
  const args = [max, leaseMs(ctx.cfg.lockTtlMs), agent, lockPrefix, nanoid(), effectiveMaxLen(ctx.cfg), effectiveRetention(ctx.cfg), batch, ctx.cfg.lockTtlMs, ...templates, ...activeHere]
  const r = (await runScript(ctx.redis, 'pick_activate', [k.ready(agent)], args)) as unknown[]
  const picked: PickedActivation[] = []
  for (let i = 2; i + 2 < r.length; i += 3) {
    const reply = r[i + 2] as unknown[]
    const index = picked.length + 1
    picked.push({
      wf: str(r[i]),
      lease: Number(r[i + 1]),
      lockValue: `${lockPrefix}${index.toString(16).padStart(4, '0')}`,
      activation: pickedActivation(reply),
    })
  }
  const next = str(r[0])
  return { picked, nextDue: next === '' ? null : Number(next), now: Number(r[1]) }
}

/** One claimed action: its record JSON, this delivery's attempt number, its id. */
export interface Claimed {
  record: string
  attempt: number
  actionId: string
  /** When it became due (ms, server clock): its delay's end, or when its join let it go; 0 if unknown. */
  dueAt: number
}

function parseClaimed(r: unknown[], from: number): Claimed[] {
  const out: Claimed[] = []
  for (let i = from; i + 3 < r.length; i += 4) {
    out.push({ record: str(r[i]), attempt: Number(r[i + 1]), actionId: str(r[i + 2]), dueAt: Number(r[i + 3]) || 0 })
  }
  return out
}

/** Outcome of activate. */
export type Activation =
  | { code: 'ok'; fence: number; snapshot: string; version: number; redelivered: boolean; batch: Claimed[] }
  | { code: 'idle'; fence: number; nextDue: number | null }
  | { code: 'ended'; fence: number }
  | { code: 'busy'; fence: number; lockMs: number }

/**
 * The activate script as an op: takes the actor's lock (value `lockValue`, TTL
 * `cfg.lockTtlMs`), bumps the fence, claims up to `batch` due actions. Its reply
 * goes through {@link parseActivation}; `busy` when another activation holds the lock.
 */
export function activateOp(ctx: ProtocolContext, wf: string, agent: string, lockValue: string, batch: number): ScriptOp {
  const k = ctx.keys
  return {
    script: 'activate',
    keys: [k.actor(wf, agent), k.lock(wf, agent), k.mailbox(wf, agent), k.actions(wf), k.status(wf), k.events(wf)],
    args: [lockValue, wf, agent, nanoid(), k.channel(wf), effectiveMaxLen(ctx.cfg), effectiveRetention(ctx.cfg), batch, ctx.cfg.lockTtlMs],
  }
}

/** Reads the reply of the activate script. */
export function parseActivation(raw: unknown): Activation {
  const r = raw as unknown[]
  const code = str(r[0])
  const fence = Number(r[1])
  if (code === 'busy') return { code, fence, lockMs: Math.max(0, Number(str(r[5])) || 0) }
  if (code === 'ended') return { code, fence }
  if (code === 'idle') return { code, fence, nextDue: str(r[5]) === '' ? null : Number(r[5]) }
  return { code: 'ok', fence, snapshot: str(r[2]), version: Number(str(r[3]) || '0'), redelivered: Number(r[4]) === 1, batch: parseClaimed(r, 6) }
}

/** A sent action's fan-in (JoinOptions, checked and with its default timeout). */
export interface OutboxJoin {
  key: string
  of: number
  timeoutMs: number
}

/** One action sent by agent code, written by the commit (the outbox). */
export interface OutboxEntry {
  to: string
  actionId: string
  record: string
  delayMs: number
  eventId: string
  /** Held in the target's mailbox until the join is complete (commit.lua); null: due at once. */
  join?: OutboxJoin | null
}

/** What happened to one action of the batch. */
export interface ActionResult {
  actionId: string
  /**
   * `return`: claimed but not delivered; it goes back to its place in the mailbox.
   * `handback`: the same, due again after `retryDelayMs`, for a process of a newer
   * agent version; dead-lettered with `error` an hour after its first hand-back.
   */
  outcome: 'ok' | 'retry' | 'dead' | 'return' | 'handback'
  error: string
  retryDelayMs: number
  parentEventId: string
  durationMs: number
  attempt: number
  events: readonly string[]
  outbox: readonly OutboxEntry[]
}

/** Everything the commit script needs. */
export interface CommitArgs {
  wf: string
  agent: string
  fence: number
  lockValue: string
  snapshot: string
  stateValue: string
  version: number
  op: '' | 'complete' | 'fail'
  opPayload: string
  release: boolean
  /** Most actions the commit may claim for the next batch. */
  batch: number
  /** Unique prefix for the ids of the events the script raises. */
  eventBase: string
  results: readonly ActionResult[]
  /**
   * Single Redis only: run settle.lua in the same pipeline, right after the
   * commit (persistence pointer, and the hint release when the lock was let go),
   * with these leases for the release.
   */
  settle?: { lease: number; rerunLease: number | null }
}

/** What settle.lua did after the commit (see CommitArgs.settle). */
export type Settled = { state: 'held' } | { state: 'released'; released: boolean }

/** Outcome of commit. */
export interface CommitResult {
  code: 'next' | 'idle' | 'ended'
  next: Claimed[]
  nextDue: number | null
  hints: Hint[]
  appended: Appended
  /** Set when settle.lua ran and saw this commit: its pointer is written, and its hint released if `released` state. */
  settled: Settled | null
}

/**
 * The fenced commit of a batch. The pre-hints for the outbox targets ride in the
 * same pipeline, ahead of the script, so no crash can leave a sent action without a hint.
 */
export async function commit(ctx: ProtocolContext, a: CommitArgs): Promise<CommitResult> {
  const k = ctx.keys
  const keys = [k.actor(a.wf, a.agent), k.lock(a.wf, a.agent), k.mailbox(a.wf, a.agent), k.actions(a.wf), k.status(a.wf), k.events(a.wf), k.seq(a.wf), k.dead(a.wf)]
  const args: (string | number)[] = [
    a.fence, a.lockValue, a.wf, a.agent, a.eventBase, k.channel(a.wf), effectiveMaxLen(ctx.cfg),
    a.snapshot, a.stateValue, a.version, effectiveRetention(ctx.cfg), a.release ? '1' : '', a.op, a.opPayload, a.batch, a.results.length,
  ]
  // Target → how far from now its pre-hint is due: at once, or, for actions held
  // by a join, when the join would time out (the join's deadline is at most that:
  // it counts from its first action). The commit that completes a join hints it
  // due at once through its reply (commit.lua).
  const preHinted = new Map<string, number>()
  for (const r of a.results) {
    args.push(r.actionId, r.outcome, r.error, r.retryDelayMs, r.parentEventId, r.durationMs, r.attempt, r.events.length, r.outbox.length, ...r.events)
    for (const o of r.outbox) {
      keys.push(k.mailbox(a.wf, o.to), k.lock(a.wf, o.to))
      args.push(o.to, o.actionId, o.record, o.delayMs, o.eventId, o.join?.key ?? '', o.join?.of ?? 0, o.join?.timeoutMs ?? 0)
      // A commit that ends the workflow drops what it sends (commit.lua): no hint for it.
      if (o.to !== a.agent && r.outcome === 'ok' && a.op === '') {
        const after = o.join ? o.join.timeoutMs : 0
        preHinted.set(o.to, Math.min(after, preHinted.get(o.to) ?? after))
      }
    }
  }
  let raw: unknown
  let settled: Settled | null = null
  /** Pre-hints that failed while the commit went through (on a Cluster they run in parallel): the follow-ups write them. */
  const unhinted: Hint[] = []
  if (preHinted.size > 0 || a.settle) {
    const now = Date.now()
    const hintOps: Op[] = [...preHinted].map(([to, after]) => ({ cmd: 'zadd', args: [k.ready(to), 'LT', now + after, a.wf] }))
    const ops: Op[] = [...hintOps]
    const at = ops.length
    ops.push({ script: 'commit', keys, args })
    if (a.settle) {
      ops.push({
        script: 'settle',
        keys: [k.actor(a.wf, a.agent), k.mailbox(a.wf, a.agent), k.ready(a.agent), k.persistence()],
        args: [a.wf, a.eventBase, a.settle.lease, a.settle.rerunLease ?? '', ctx.cfg.persistence ? '1' : ''],
      })
    }
    // On a single Redis the hints go out again right after the commit, in the same
    // write: a pick that ran between the pre-hint and the commit (another client's
    // command can land there) leased the pre-hint, found the mailbox empty and
    // deletes its lease on release; this write leaves the sent work a due hint
    // whatever happened in between, so a hand-off (which writes none) can rely on
    // one. On a Cluster the hints are phased after the commit's reply instead
    // (the activation's follow-ups).
    if (!isCluster(ctx.redis)) ops.push(...hintOps)
    const res = await execOps(ctx.redis, ops)
    const [err, val] = res[at] ?? [new Error('no reply'), null]
    if (err) throw err
    raw = val
    // A held join's pre-hint is its only hint until the join completes.
    hintOps.forEach((op, i) => {
      if (res[i]?.[0]) unhinted.push({ agent: [...preHinted.keys()][i] ?? '', wf: a.wf, score: Number(op.args[2]) })
    })
    // A failed or skipping settle leaves its work to the separate follow-ups.
    const [settleErr, sv] = res[at + 1] ?? [null, null]
    if (a.settle && !settleErr && Array.isArray(sv)) {
      const state = str(sv[0])
      if (state === 'held') settled = { state }
      else if (state === 'released') settled = { state, released: Number(sv[1]) === 1 }
    }
  } else {
    raw = await runScript(ctx.redis, 'commit', keys, args)
  }
  const r = raw as unknown[]
  const code = str(r[0]) as CommitResult['code']
  const nHints = Number(r[4])
  const hints: Hint[] = []
  for (let i = 0; i < nHints; i++) {
    const agent = str(r[5 + i * 2])
    const sent: string[] = []
    for (const res of a.results) if (res.outcome === 'ok') for (const o of res.outbox) if (o.to === agent) sent.push(o.actionId)
    hints.push({ agent, wf: a.wf, score: Number(r[6 + i * 2]), sent, written: !isCluster(ctx.redis) && preHinted.get(agent) === 0 })
  }
  if (code !== 'ended') for (const h of unhinted) if (!hints.some((x) => x.agent === h.agent)) hints.push(h)
  return {
    code,
    next: code === 'next' ? parseClaimed(r, 5 + nHints * 2) : [],
    nextDue: str(r[1]) === '' ? null : Number(r[1]),
    hints,
    appended: { wf: a.wf, first: str(r[2]), last: str(r[3]) },
    settled,
  }
}

/** Compare-and-delete (or move to `nextDue`) of our lease on an actor's ready hint, as an op. */
export function releaseHintOp(ctx: ProtocolContext, agent: string, wf: string, lease: number, nextDue: number | null, rerunLease: number | null = null): ScriptOp {
  // On a single Redis the script also reads the mailbox (see release_hint.lua).
  const keys = isCluster(ctx.redis) ? [ctx.keys.ready(agent)] : [ctx.keys.ready(agent), ctx.keys.mailbox(wf, agent)]
  return { script: 'release_hint', keys, args: [wf, lease, nextDue === null ? '' : nextDue, rerunLease ?? ''] }
}

/**
 * Moves our lease on an active actor's hint forward, only while the hint still
 * holds `lease` (see extend_hint.lua). Returns the new lease, or null when the
 * hint holds someone else's score and was left alone.
 */
export async function extendHint(ctx: ProtocolContext, agent: string, wf: string, lease: number): Promise<number | null> {
  return await moveOwnHint(ctx, agent, wf, lease, leaseMs(ctx.cfg.lockTtlMs))
}

/**
 * After a pick found the actor locked by someone else: makes the hint due when
 * the holder's lock runs out (`ms`, whole milliseconds from now, so the score is
 * a due time and no lease), but only while the hint still holds our lease. By the
 * time the pick's reply is handled the holder may have released and a new
 * enqueue made the hint due; a blind write then pushed that work out by a whole
 * lock TTL. Returns the new score, or null when the hint was left alone.
 */
export async function pushBusyHint(ctx: ProtocolContext, agent: string, wf: string, lease: number, ms: number): Promise<number | null> {
  return await moveOwnHint(ctx, agent, wf, lease, Math.round(ms))
}

/**
 * Gives up a lease this process took on a hint and will not use (a rerun
 * dropped while draining): the hint is made due now, but only while it still
 * holds that lease. Left alone it would keep the actor's work waiting until the
 * lease ran out. Returns the new score, or null when the hint was left alone.
 */
export async function giveUpLease(ctx: ProtocolContext, agent: string, wf: string, lease: number): Promise<number | null> {
  return await moveOwnHint(ctx, agent, wf, lease, 0)
}

async function moveOwnHint(ctx: ProtocolContext, agent: string, wf: string, lease: number, ms: number): Promise<number | null> {
  const r = str(await runScript(ctx.redis, 'extend_hint', [ctx.keys.ready(agent)], [wf, lease, ms]))
  return r === '' ? null : Number(r)
}

/** Appends and publishes events right away; returns the stream ids for the persister. */
export async function emitEvents(ctx: ProtocolContext, wf: string, events: readonly string[], state?: { agent: string; value: string }): Promise<Appended> {
  const r = (await runScript(ctx.redis, 'emit', [ctx.keys.events(wf), ctx.keys.status(wf)], [
    ctx.keys.channel(wf), effectiveMaxLen(ctx.cfg), state ? `agent:${state.agent}` : '', state?.value ?? '', ...events,
  ])) as unknown[]
  return { wf, first: str(r[0]), last: str(r[1]) }
}
