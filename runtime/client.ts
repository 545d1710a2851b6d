// The client side of Troupe: start workflows, send actions, cancel, read status,
// and follow events (replay + live, no gap, no duplicate). Used by the CLI, the
// gateway and tests; agents use the XState helpers in agent.ts instead.
import { randomInt } from 'node:crypto'
import { nanoid } from 'nanoid'
import { handlesType } from './agent.ts'
import { describeFleetSettings, effectiveMaxLen, effectiveRetention, fleetSettings, loadConfig, sameFleetSettings, type FleetSettings, type TroupeConfig } from './config.ts'
import { enqueueWith, followUpOps, writeFollowUps, writeHintsRetrying, type EnqueueArgs, type EnqueueResult, type ProtocolContext } from './claims.ts'
import { TroupeError } from './errors.ts'
import { compareStreamIds, FINAL_EVENT_TYPES, isLastStreamId, isStreamId, parseEntry, parseLive } from './events.ts'
import { createLogger, type Logger } from './log.ts'
import { dropFromOwnerIndex } from './owner-index.ts'
import { closeRedis, createRedis, type RedisClient } from './redis/connection.ts'
import { assertActionType, assertAgentName, assertWorkflowId, isWorkflowId, Keys, newId } from './redis/keys.ts'
import { runScript } from './redis/scripts.ts'
import { execOps, execPhases, isCluster, type Op, type OpResult } from './redis/batch.ts'
import { Subscriber } from './subscriber.ts'
import { MAX_DELAY_MS, TERMINAL_STATUSES, type ActionRecord, type ActionState, type StreamedEvent, type WorkflowStatus, type WorkflowStatusValue } from './types.ts'

/**
 * An agent as registered in `system:agents` by the runtimes hosting it. The
 * {@link FleetSettings} fields are those runtimes' (absent from runtimes that
 * predate them, or when any of them does not read as one).
 */
export interface AgentRegistration extends Partial<FleetSettings> {
  name: string
  version: number
  actionTypes: string[]
  /** Wildcard descriptors of the agent's machine (`*`, `research.*`); absent from runtimes before they were registered. */
  actionPatterns?: string[]
  updatedAt: number
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((t) => typeof t === 'string')
}

/**
 * One `system:agents` field, or null when it cannot be used. A registration
 * whose types are not a list of strings (a plain object passed as an agent, a
 * hand edit) is dropped here: the registry is read whole, and one bad field
 * broke validated sends to every agent of the namespace.
 */
function parseRegistration(name: string, json: string): AgentRegistration | null {
  let v: unknown
  try {
    v = JSON.parse(json)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null
  const { persistence, streamMaxLen, retentionMs, ...rest } = v as Record<string, unknown>
  if (!isStringArray(rest.actionTypes)) return null
  if (rest.actionPatterns !== undefined && !isStringArray(rest.actionPatterns)) return null
  const fleet = typeof persistence === 'boolean' && Number.isSafeInteger(streamMaxLen) && Number.isSafeInteger(retentionMs)
    ? { persistence, streamMaxLen: streamMaxLen as number, retentionMs: retentionMs as number }
    : {}
  return { ...(rest as Omit<AgentRegistration, 'name'>), ...fleet, name }
}

/** The fleet settings a registration carries, or null for one written by a runtime that predates them. */
export function registeredFleet(r: AgentRegistration): FleetSettings | null {
  return r.persistence === undefined || r.streamMaxLen === undefined || r.retentionMs === undefined
    ? null
    : { persistence: r.persistence, streamMaxLen: r.streamMaxLen, retentionMs: r.retentionMs }
}

/**
 * How long a registration in `system:agents` counts after its runtime last
 * wrote it (runtimes rewrite theirs every 10 s). An older one is an agent no
 * live runtime hosts (removed or renamed, or every runtime of it gone): sends
 * to it are refused as to an unknown agent, instead of queued for no one. Long
 * enough that a restart or a deploy, every process down for a minute or two,
 * does not refuse sends; the runtimes' own send checks and the supervisor's
 * pruning of the registry use the same limit.
 */
export const REGISTRATION_STALE_MS = 10 * 60_000

/**
 * True when `r` was written less than {@link REGISTRATION_STALE_MS} before
 * `now` (ms, Redis's clock: see TroupeClient.agents). A registration without a
 * time (written by hand) never counts.
 */
export function isLiveRegistration(r: Pick<AgentRegistration, 'updatedAt'>, now: number): boolean {
  const at = Number(r.updatedAt)
  return Number.isFinite(at) && at > now - REGISTRATION_STALE_MS
}

/** Options of {@link TroupeClient.startWorkflow}. */
export interface StartOptions {
  agent: string
  type: string
  payload?: unknown
  owner?: string
  workflowId?: string
  /** Fail the workflow with reason `deadline` after this long (enforced by the supervisor). */
  deadlineMs?: number
  /**
   * Check the agent and type against `system:agents` first (default true). A pair
   * found there is trusted for 5 s without reading the registry again.
   */
  validate?: boolean
}

/** A dead-lettered action with the reason it died. */
export interface DeadLetter {
  actionId: string
  agent: string
  type: string
  error: string
  attempt: number
  at: number
}

/** Dead letters one requeue.lua call takes in 'all' mode (ALL_BATCH there). */
const REQUEUE_BATCH = 500

/** What {@link TroupeClient.requeueDead} did. */
export interface RequeueResult {
  /** The actions sent back to their agents' mailboxes, in the order handled. */
  requeued: string[]
  /** The ids asked for that were not dead-lettered in the workflow (never were, or requeued already). */
  skipped: string[]
}

/** Encodes a payload, enforcing JSON-ness and the size limit. */
export function encodePayload(payload: unknown, maxBytes: number): string {
  let json: string | undefined
  try {
    json = JSON.stringify(payload ?? null)
  } catch (err) {
    throw new TroupeError('bad_payload', `payload is not JSON-serialisable: ${err instanceof Error ? err.message : String(err)}`)
  }
  if (json === undefined) throw new TroupeError('bad_payload', 'payload is not JSON-serialisable')
  const size = Buffer.byteLength(json)
  if (size > maxBytes) throw new TroupeError('payload_too_large', `payload is ${size} bytes, over the limit of ${maxBytes} (TROUPE_MAX_PAYLOAD_BYTES)`)
  return json
}

function safeJson<T>(text: string | null | undefined): T | null {
  if (!text) return null
  try {
    const v = JSON.parse(text) as unknown
    return typeof v === 'object' && v !== null ? (v as T) : null
  } catch {
    return null
  }
}

/** How long a send target seen in the agent registry is trusted without reading it again. */
const VALIDATION_TTL_MS = 5000

/** Entries of an owner's index a start checks at most, among those created more than the retention ago (see pruneOwnerIndex). */
const OWNER_PRUNE_BATCH = 16

/** Talks to Troupe through Redis. */
export class TroupeClient {
  readonly keys: Keys
  readonly ctx: ProtocolContext
  private sub: Subscriber | null = null
  private readonly ownsRedis: boolean
  /** (agent, action type) pairs seen registered, until when they are trusted (see validateTarget). */
  private readonly validated = new Map<string, number>()
  /** The last registry read and until when cancelWorkflow trusts it (see checkFleet). */
  private registry: { reg: Map<string, AgentRegistration>; until: number } | null = null
  /** This client's own settings, as the scripts it runs will apply them. */
  private readonly fleet: FleetSettings
  /** Where writes that failed after a call took effect are reported (the call itself succeeds). */
  readonly log: Logger

  constructor(
    readonly redis: RedisClient,
    readonly cfg: TroupeConfig,
    opts: { ownsRedis?: boolean; log?: Logger } = {},
  ) {
    this.keys = new Keys(cfg.namespace)
    this.ctx = { redis, keys: this.keys, cfg }
    this.ownsRedis = opts.ownsRedis ?? false
    this.fleet = fleetSettings(cfg)
    this.log = opts.log ?? createLogger('client')
  }

  /**
   * Connects with configuration from the environment plus `overrides`. The
   * connection retries forever and commands wait while Redis is unreachable (a
   * restart looks like a pause): to fail fast instead, await
   * `waitReachable(client.redis, client.cfg.redisUrl)` first, as the CLI does.
   */
  static connect(overrides: Partial<TroupeConfig> = {}): TroupeClient {
    const cfg = loadConfig(overrides)
    return new TroupeClient(createRedis(cfg.redisUrl, { name: 'troupe-client' }), cfg, { ownsRedis: true })
  }

  /** The shared pub/sub connection, created on first use. */
  subscriber(): Subscriber {
    this.assertOpen()
    this.sub ??= new Subscriber(this.redis)
    return this.sub
  }

  /** Open follows, woken by close() so that each ends instead of waiting forever. */
  private readonly followers = new Set<() => void>()
  private closed = false

  /**
   * Closes the client's connections (its Redis connection only when it made
   * it). Every open {@link TroupeClient.follow} ends, as if its signal aborted.
   */
  async close(): Promise<void> {
    this.closed = true
    for (const wake of this.followers) wake()
    this.sub?.close()
    this.sub = null
    if (this.ownsRedis) await closeRedis(this.redis)
  }

  /**
   * Every call after close() fails alike: the calls that reach Redis failed
   * with ioredis's own "Connection is closed", follow() with this.
   */
  private assertOpen(): void {
    if (this.closed) throw new TroupeError('config', 'this client is closed')
  }

  /**
   * Agents registered by running runtimes: a corrupted registration is left out
   * (its runtime rewrites it every 10 s), and so is a stale one (see
   * {@link REGISTRATION_STALE_MS}).
   */
  async agents(): Promise<Map<string, AgentRegistration>> {
    return (await this.readRegistry()).live
  }

  /**
   * The registry split into live and stale registrations. Their age is judged
   * on Redis's clock, read with the registry, so a client whose clock is off
   * does not refuse sends (or accept them) for it.
   */
  private async readRegistry(): Promise<{ live: Map<string, AgentRegistration>; stale: Map<string, AgentRegistration>; now: number }> {
    this.assertOpen()
    const [raw, [s, us]] = await Promise.all([this.redis.hgetall(this.keys.agents()), this.redis.time()])
    const now = Number(s) * 1000 + Math.floor(Number(us) / 1000)
    const live = new Map<string, AgentRegistration>()
    const stale = new Map<string, AgentRegistration>()
    for (const [name, json] of Object.entries(raw)) {
      const r = parseRegistration(name, json)
      if (r) (isLiveRegistration(r, now) ? live : stale).set(name, r)
    }
    this.registry = { reg: live, until: Date.now() + VALIDATION_TTL_MS }
    return { live, stale, now }
  }

  /**
   * Refuses to act for a fleet whose settings differ from this client's: the
   * scripts a client runs trim the stream and set TTLs by the client's settings,
   * so a mismatch lost history the persister had not read yet, or left ended
   * workflows without a TTL. A registration that carries none (an older
   * runtime) is accepted, as before.
   */
  private checkFleet(r: AgentRegistration): void {
    const theirs = registeredFleet(r)
    if (!theirs || sameFleetSettings(theirs, this.fleet)) return
    throw new TroupeError(
      'config',
      `the runtimes hosting agent '${r.name}' run with ${describeFleetSettings(theirs)}, this client with ${describeFleetSettings(this.fleet)}: ` +
        'every process and client of a namespace must share TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN and TROUPE_RETENTION_MS',
    )
  }

  private async validateTarget(agent: string, type: string): Promise<void> {
    // A target seen registered lately is taken on trust for a few seconds: a
    // producer sending in a loop read the whole registry once per send. A runtime
    // that stops within that window leaves the action queued, which is what a
    // send just before it stopped would have done too.
    const key = `${agent}\u0000${type}`
    const now = Date.now()
    if ((this.validated.get(key) ?? 0) > now) return
    const { live: reg, stale, now: redisNow } = await this.readRegistry()
    const a = reg.get(agent)
    if (!a) {
      const known = [...reg.keys()].sort().join(', ') || 'none'
      const old = stale.get(agent)
      if (old) {
        const at = Number(old.updatedAt)
        const when = Number.isFinite(at) ? `it was last registered ${Math.floor((redisNow - at) / 60_000)} minutes ago` : 'its registration carries no time'
        throw new TroupeError(
          'unknown_agent',
          `unknown agent '${agent}': ${when} and no live runtime hosts it now (registered: ${known}); start a runtime hosting it: troupe start --agents <module>`,
        )
      }
      throw new TroupeError('unknown_agent', `unknown agent '${agent}' (registered: ${known}); start a runtime hosting it: troupe start --agents <module>`)
    }
    const handled = [...a.actionTypes, ...(a.actionPatterns ?? [])]
    if (!handlesType(handled, type)) {
      throw new TroupeError('unknown_action', `agent '${agent}' does not handle action '${type}' (it handles: ${handled.join(', ') || 'nothing'})`)
    }
    this.checkFleet(a)
    // The registry as just read, so the cache never outgrows it; an agent whose
    // runtimes' settings differ from ours stays out, to be refused at its send.
    this.validated.clear()
    for (const [name, r] of reg) {
      const theirs = registeredFleet(r)
      if (theirs && !sameFleetSettings(theirs, this.fleet)) continue
      for (const t of r.actionTypes) this.validated.set(`${name}\u0000${t}`, now + VALIDATION_TTL_MS)
    }
    // A type a wildcard matched is cached as itself.
    this.validated.set(key, now + VALIDATION_TTL_MS)
  }

  // The payload goes in as encodePayload checked it, not parsed and encoded again:
  // a payload nested just deep enough to pass that check overflowed the stack
  // here, one level deeper (a 500 at the gateway).
  private record(wf: string, agent: string, type: string, payloadJson: string, actionId: string, eventId: string): string {
    const rec: Omit<ActionRecord, 'payload'> = { id: actionId, workflowId: wf, agent, type, eventId, enqueuedAt: Date.now() }
    return `${JSON.stringify(rec).slice(0, -1)},"payload":${payloadJson}}`
  }

  /**
   * Starts a workflow with its first action to `agent`. An error means it did
   * not start (or, for a lost connection, that the outcome is unknown): once it
   * has started, a failed index or hint write after it is logged to
   * {@link TroupeClient.log} and repaired, not thrown.
   * @returns the new workflow id and the id of the first action
   */
  async startWorkflow(opts: StartOptions): Promise<{ workflowId: string; actionId: string }> {
    this.assertOpen()
    const wf = opts.workflowId ?? newId()
    assertWorkflowId(wf)
    assertAgentName(opts.agent)
    assertActionType(opts.type)
    const owner = opts.owner ?? 'local'
    if (!/^[A-Za-z0-9_.@-]{1,128}$/.test(owner)) throw new TroupeError('bad_id', `invalid owner ${JSON.stringify(owner)}`)
    // Whole: 0.3 rounded to no deadline in the status, yet its entry in
    // system:deadlines was written all the same.
    if (opts.deadlineMs !== undefined && !(Number.isInteger(opts.deadlineMs) && opts.deadlineMs >= 1 && opts.deadlineMs <= MAX_DELAY_MS)) {
      throw new TroupeError('config', `deadlineMs must be a whole number of milliseconds from 1 to ${MAX_DELAY_MS} (ten years), not ${String(opts.deadlineMs)}`)
    }
    const payload = encodePayload(opts.payload, this.cfg.maxPayloadBytes)
    if (opts.validate !== false) await this.validateTarget(opts.agent, opts.type)
    const actionId = newId()
    const eventId = nanoid()
    const args: EnqueueArgs = {
      wf, actionId, agent: opts.agent, type: opts.type, record: this.record(wf, opts.agent, opts.type, payload, actionId, eventId), delayMs: 0, eventId,
      parentEventId: '', mode: 'start', owner, deadlineMs: opts.deadlineMs ?? 0,
    }
    // The index writes and the reads pruneOwnerIndex starts from ride with the
    // start's follow-ups: no round trip of their own.
    const byOwner = this.keys.byOwner(owner)
    const cutoff = Date.now() - this.cfg.retentionMs
    const index: Op[] = [
      { cmd: 'zadd', args: [byOwner, Date.now(), wf] },
      { cmd: 'zcount', args: [byOwner, '-inf', cutoff] },
      { cmd: 'zrange', args: [byOwner, '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, OWNER_PRUNE_BATCH] },
    ]
    // At this client's clock: the ops are fixed before the script answers with
    // Redis's (see fixDeadlineEntry). Sent with the index writes, so retried as they are.
    if (opts.deadlineMs) index.push({ cmd: 'zadd', args: [this.keys.deadlines(), Date.now() + opts.deadlineMs, wf] })
    // Past the script nothing fails the call: the workflow is started (enqueueWith).
    const { results: [r], extra } = await enqueueWith(this.ctx, [args], { extra: index, log: this.log })
    if (r instanceof Error) throw r
    if (opts.deadlineMs && r) await this.fixDeadlineEntry(wf, r, opts.deadlineMs)
    await this.pruneOwnerIndex(owner, cutoff, extra[1], extra[2])
    return { workflowId: wf, actionId }
  }

  /**
   * The round trip after a start with a deadline, both of its writes best
   * effort (the start took effect, and a failure here must not say it did not:
   * a retry would then start it twice).
   *
   * It moves the entry to Redis's clock: the start wrote it at this client's
   * clock plus the deadline, and the status's `deadline` is the script's time
   * plus the deadline, which a fresh start answers as `availableAt` (no delay).
   * A client running ahead delayed enforcement by its skew. `XX` never writes
   * an entry back that the workflow's end removed meanwhile. A replayed start
   * (its reply lost, resent after a reconnect) answers the first action's
   * availableAt as it stands now, which a retry may have moved: its entry keeps
   * this client's clock (the supervisor corrects one that comes due early).
   *
   * And it reads the status: a workflow that ended between the start and the
   * entry's write had its ending's ZREM come first, and the entry stayed until
   * due (up to ten years). The status turned terminal before that ZREM was
   * sent, so this read, sent after the write's reply, sees the end whenever it
   * came first. An entry left behind is dropped by the supervisor when it
   * comes due.
   */
  private async fixDeadlineEntry(wf: string, r: EnqueueResult, deadlineMs: number): Promise<void> {
    const ops: Op[] = [{ cmd: 'hget', args: [this.keys.status(wf), 'status'] }]
    if (r.appended.first !== '') ops.push({ cmd: 'zadd', args: [this.keys.deadlines(), 'XX', r.availableAt + deadlineMs, wf] })
    const [err, st] = (await execOps(this.redis, ops))[0] ?? [new Error('no reply'), null]
    if (err || !(st === null || TERMINAL_STATUSES.has(st as WorkflowStatusValue))) return
    await this.redis.zrem(this.keys.deadlines(), wf).catch(() => undefined)
  }

  /**
   * Keeps an owner's index from growing without bound: of the entries created
   * more than the retention ago (`count` and the oldest of them, `head`, as the
   * start read them), up to {@link OWNER_PRUNE_BATCH} are checked, and those
   * whose status key is gone (expired after retention) are removed. Age alone
   * does not say a workflow is gone: one waiting for a human past the retention
   * still runs, and the listing reads this index only. When there are more old
   * entries than a batch, a random window of them is checked, so workflows that
   * live on at the head cannot keep the gone ones behind them forever. One
   * EXISTS per status key (other slots on a Cluster: execOps sends each to its
   * node), then {@link dropFromOwnerIndex}: one ZREM, and one HMGET per
   * removed id to put back one that was started again meanwhile.
   * Best effort, as the start has taken effect; the listing drops gone ids it
   * meets too.
   */
  private async pruneOwnerIndex(owner: string, cutoff: number, count: OpResult | undefined, head: OpResult | undefined): Promise<void> {
    const key = this.keys.byOwner(owner)
    try {
      const n = Number(count?.[1] ?? 0)
      if (!count || count[0] || !(n > 0)) return
      let ids = !head || head[0] ? [] : (head[1] as string[])
      if (n > OWNER_PRUNE_BATCH || ids.length === 0) {
        const from = n > OWNER_PRUNE_BATCH ? randomInt(0, n - OWNER_PRUNE_BATCH + 1) : 0
        ids = await this.redis.zrange(key, '-inf', String(cutoff), 'BYSCORE', 'LIMIT', from, OWNER_PRUNE_BATCH)
      }
      if (ids.length === 0) return
      const exists = await execOps(this.redis, ids.map((id) => ({ cmd: 'exists', args: [this.keys.status(id)] })))
      // A failed read keeps its entry: only a key known to be gone drops one.
      const gone = ids.filter((_id, i) => exists[i]?.[0] === null && Number(exists[i]?.[1]) === 0)
      // An id started again between the EXISTS and the ZREM is put back.
      await dropFromOwnerIndex(this.redis, this.keys, owner, gone)
    } catch (err) {
      this.log.warn('pruning an owner index of expired workflows failed; the next start tries again', { key, error: err instanceof Error ? err.message : String(err) })
    }
  }

  /**
   * Sends an action to `agent` inside an existing workflow. `actionId` makes the
   * send idempotent: sending the same id again (after an error whose outcome is
   * unknown) answers as the first send did and queues nothing more; the same id
   * for another agent or type is refused (`duplicate_action`). Without it every
   * call sends a new action. Once the action is queued the call succeeds: a
   * failed write after it is logged, as for a start.
   */
  async sendAction(wf: string, agent: string, type: string, payload?: unknown, opts: { delayMs?: number; validate?: boolean; actionId?: string } = {}): Promise<{ actionId: string }> {
    this.assertOpen()
    assertWorkflowId(wf)
    assertAgentName(agent)
    assertActionType(type)
    if (opts.actionId !== undefined && !isWorkflowId(opts.actionId)) {
      throw new TroupeError('bad_id', `invalid action id ${JSON.stringify(opts.actionId)}: use 1-64 characters from A-Z a-z 0-9 _ -`)
    }
    const delay = opts.delayMs ?? 0
    if (!Number.isFinite(delay) || delay < 0 || delay > MAX_DELAY_MS) throw new TroupeError('config', `delayMs must be a non-negative number, at most ${MAX_DELAY_MS} (ten years)`)
    const json = encodePayload(payload, this.cfg.maxPayloadBytes)
    if (opts.validate !== false) await this.validateTarget(agent, type)
    const actionId = opts.actionId ?? newId()
    const eventId = nanoid()
    // Past the script nothing fails the call: the action is queued (enqueueWith).
    const { results: [r] } = await enqueueWith(this.ctx, [{
      wf, actionId, agent, type, record: this.record(wf, agent, type, json, actionId, eventId), delayMs: Math.round(delay), eventId, parentEventId: '', mode: 'send', owner: '', deadlineMs: 0,
    }], { log: this.log })
    if (r instanceof Error) throw r
    return { actionId }
  }

  /**
   * Ends a workflow as `cancelled` (or `failed`, e.g. for deadlines): queued actions
   * are dropped, running ones aborted through the control channel. Refused
   * (`config`) when the runtimes' registered settings differ from this client's
   * (see {@link FleetSettings}); with `adoptFleet` it acts with the runtimes'
   * settings instead and says so in `adoptedFleet` (the supervisor's deadline
   * cancels, which must not go unenforced over a misconfigured supervisor).
   */
  async cancelWorkflow(
    wf: string, reason = 'cancelled', final: 'cancelled' | 'failed' = 'cancelled', opts: { adoptFleet?: boolean } = {},
  ): Promise<{ dropped: number; adoptedFleet?: FleetSettings }> {
    this.assertOpen()
    assertWorkflowId(wf)
    // From JS anything went through: 'completed' ended a cancelled workflow as completed.
    if (final !== 'cancelled' && final !== 'failed') throw new TroupeError('config', `the final status of a cancel must be 'cancelled' or 'failed', not ${JSON.stringify(final)}`)
    const fleet = await this.checkFleetForCancel(opts.adoptFleet === true)
    const cfg = fleet ? { ...this.cfg, ...fleet } : this.cfg
    // The script finds the agents itself (see cancel.lua): the last three keys
    // are templates, and so is the ready key on a single Redis.
    const keys = [this.keys.status(wf), this.keys.actions(wf), this.keys.events(wf), this.keys.seq(wf), this.keys.dead(wf), this.keys.mailbox(wf, ''), this.keys.actor(wf, ''), this.keys.lock(wf, '')]
    const cluster = isCluster(this.redis)
    let r: unknown[]
    try {
      r = (await runScript(this.redis, 'cancel', keys, [
        wf, final, reason, nanoid(), this.keys.channel(wf), effectiveMaxLen(cfg), effectiveRetention(cfg), cluster ? '' : this.keys.ready(''),
      ])) as unknown[]
    } catch (err) {
      // "Already ended" may answer our own cancel: run, its reply lost, and sent
      // again by ioredis after the reconnect. Its abort must still go out, or
      // the actions it meant to stop run on; for a workflow that did end
      // earlier an abort stops nothing that should run.
      if (err instanceof TroupeError && err.code === 'workflow_ended') await this.redis.publish(this.keys.control(), JSON.stringify({ op: 'abort', wf, reason })).catch(() => undefined)
      throw err
    }
    // The workflow has ended: from here a failed write is logged and left to its
    // repair, never thrown past the abort (a thrown pointer write kept the abort
    // from going out, so running actions ran on).
    const lost = (what: string, err: unknown): void => this.log.warn(`cancel of ${wf}: ${what}`, { error: err instanceof Error ? err.message : String(err) })
    await writeFollowUps(fleet ? { ...this.ctx, cfg } : this.ctx, [], [{ wf, first: String(r[1]), last: String(r[1]) }])
      .catch((err: unknown) => lost('its persistence pointer was not written; the persister\'s reconciliation writes its events', err))
    // Thrown when it fails: the caller's retry answers workflow_ended and sends it again (above).
    await this.redis.publish(this.keys.control(), JSON.stringify({ op: 'abort', wf, reason }))
    // Enforced now: the supervisor need not look at its deadline entry again (see activation.ts).
    await this.redis.zrem(this.keys.deadlines(), wf).catch((err: unknown) => lost('its deadline entry stays until due, when the supervisor finds it ended', err))
    if (cluster) {
      // The ready hints cancel.lua could not reach, on other nodes (see there).
      const hints = r.slice(2).map((agent) => ({ cmd: 'zrem', args: [this.keys.ready(String(agent)), wf] }))
      const failed = (await execOps(this.redis, hints)).find(([err]) => err)
      if (failed?.[0]) lost('ready hints not removed; each is dropped when its due time comes and an activation finds the workflow ended', failed[0])
    }
    return { dropped: Number(r[0]), ...(fleet ? { adoptedFleet: fleet } : {}) }
  }

  /**
   * {@link checkFleet} against the registration refreshed last (a cancel names
   * no agent), with the registry read at most once per VALIDATION_TTL_MS. An
   * unreadable registry does not stop a cancel (on a Cluster it lives on
   * another node than the workflow), nor does an empty one. With `adopt`, a
   * mismatch is no refusal: the fleet's settings are returned for the cancel to
   * act with (the supervisor's deadline cancels: a supervisor configured apart
   * from the runtimes enforced no deadline at all, only warned).
   */
  private async checkFleetForCancel(adopt = false): Promise<FleetSettings | null> {
    let reg = this.registry && this.registry.until > Date.now() ? this.registry.reg : null
    if (!reg) {
      try {
        reg = await this.agents()
      } catch (err) {
        if (this.closed) throw err
        return null
      }
    }
    let freshest: AgentRegistration | null = null
    for (const r of reg.values()) {
      if (registeredFleet(r) && (freshest === null || Number(r.updatedAt) > Number(freshest.updatedAt))) freshest = r
    }
    if (!freshest) return null
    const theirs = registeredFleet(freshest)
    if (adopt) return theirs && !sameFleetSettings(theirs, this.fleet) ? theirs : null
    this.checkFleet(freshest)
    return null
  }

  /** The workflow's status, or null when it does not exist. */
  async getStatus(wf: string): Promise<WorkflowStatus | null> {
    this.assertOpen()
    assertWorkflowId(wf)
    const h = await this.redis.hgetall(this.keys.status(wf))
    if (!h.status) return null
    const agents: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(h)) {
      if (!k.startsWith('agent:')) continue
      try {
        agents[k.slice(6)] = v === '' ? null : (JSON.parse(v) as unknown)
      } catch {
        agents[k.slice(6)] = v
      }
    }
    const num = (v: string | undefined): number => (v === undefined ? 0 : Number(v))
    const parsed = (v: string | undefined, key: string): unknown => {
      if (v === undefined) return undefined
      try {
        return (JSON.parse(v) as Record<string, unknown>)[key]
      } catch {
        return v
      }
    }
    const status: WorkflowStatus = {
      workflowId: wf,
      status: h.status as WorkflowStatusValue,
      owner: h.owner ?? '',
      entry: h.entry ?? '',
      createdAt: num(h.createdAt),
      updatedAt: num(h.updatedAt),
      agents,
      counts: { actions: num(h.actions), queued: num(h.queued), done: num(h.done), dead: num(h.dead), malformed: num(h.malformed) },
    }
    // An ended workflow dropped what its joins held (their fields stay until the keys expire).
    const joins = TERMINAL_STATUSES.has(status.status) ? [] : openJoins(h, Date.now())
    if (joins.length > 0) status.joins = joins
    if (h.endedAt) status.endedAt = num(h.endedAt)
    if (h.deadline) status.deadline = num(h.deadline)
    if (h.error) {
      const e = parsed(h.error, 'error')
      status.error = typeof e === 'string' ? e : h.error
    }
    if (h.result) status.result = parsed(h.result, 'result')
    return status
  }

  /** Dead-lettered actions of a workflow, oldest first. */
  async deadLetters(wf: string): Promise<DeadLetter[]> {
    this.assertOpen()
    assertWorkflowId(wf)
    const ids = await this.redis.zrange(this.keys.dead(wf), '0', '-1', 'WITHSCORES')
    const out: DeadLetter[] = []
    for (let i = 0; i < ids.length; i += 2) {
      const id = ids[i] as string
      const [rec, st] = await this.redis.hmget(this.keys.actions(wf), id, `${id}:st`)
      // A record written by hand may not parse; report what is known.
      const r = safeJson<Partial<ActionRecord>>(rec) ?? {}
      const s = safeJson<Partial<ActionState>>(st) ?? {}
      out.push({ actionId: id, agent: r.agent ?? '?', type: r.type ?? '?', error: s.error ?? '', attempt: s.attempt ?? 0, at: Number(ids[i + 1]) })
    }
    return out
  }

  /**
   * Sends a workflow's dead-lettered actions (all, or those of `opts.actionIds`)
   * back to their agents as fresh deliveries: attempt 0, due now, with the payload
   * they were sent with; each gets an `action.requeued` event and its old error is
   * kept in its state as `requeuedFrom`. In script calls of at most 500 actions
   * (requeue.lua), each with the agents' ready hints before it and after it and
   * their wake-ups, as an enqueue has. An id that is not dead-lettered in this
   * workflow (never was, or requeued already), or whose record names no agent
   * (written by hand), is skipped, so a requeue run again changes nothing.
   * Without ids only the actions dead when the call began are taken (one that
   * dies again meanwhile stays dead). Refused for a workflow that does not
   * exist (`workflow_not_found`) or has ended (`workflow_ended`). Once a script
   * ran, failed hint or pointer writes after it are logged to
   * {@link TroupeClient.log} and left to their repair, as for a send. The
   * target agents are not checked against the registry: a requeue may come
   * before their runtimes start.
   */
  async requeueDead(wf: string, opts: { actionIds?: readonly string[] } = {}): Promise<RequeueResult> {
    this.assertOpen()
    assertWorkflowId(wf)
    const ids = opts.actionIds === undefined ? [] : [...new Set(opts.actionIds)]
    for (const id of ids) {
      if (!isWorkflowId(id)) throw new TroupeError('bad_id', `invalid action id ${JSON.stringify(id)}: use 1-64 characters from A-Z a-z 0-9 _ -`)
    }
    const all: RequeueResult = { requeued: [], skipped: [] }
    const add = (r: RequeueResult): void => {
      all.requeued.push(...r.requeued)
      all.skipped.push(...r.skipped)
    }
    if (opts.actionIds !== undefined) {
      // Listed ids in calls of the same size: one call for 20,000 held Redis for over half a second.
      for (let i = 0; i < ids.length; i += REQUEUE_BATCH) add(await this.requeueBatch(wf, ids.slice(i, i + REQUEUE_BATCH)))
      return all
    }
    // Every dead letter, by score up to the first call's time; those a call
    // could not send stay dead at the head and are passed over after.
    let cutoff = ''
    for (;;) {
      const r = await this.requeueBatch(wf, null, cutoff, all.skipped.length)
      add(r)
      cutoff = r.cutoff
      if (r.examined < REQUEUE_BATCH) return all
    }
  }

  /** One requeue.lua call with its hints and wake-ups (see requeueDead): the listed `ids`, or (null) the dead up to `cutoff` past `offset`. */
  private async requeueBatch(wf: string, ids: readonly string[] | null, cutoff = '', offset = 0): Promise<RequeueResult & { cutoff: string; examined: number }> {
    const k = this.keys
    // The pre-hints: every agent of a workflow still going, known before the
    // script reads which of them get work (a hint for one that gets none is a
    // pick that finds nothing). A caller that dies after the script, or whose
    // follow-ups fail, leaves no requeued action without a hint, on a Cluster too.
    const [read, listed] = await execOps(this.redis, [{ cmd: 'hget', args: [k.status(wf), 'status'] }, { cmd: 'hkeys', args: [k.status(wf)] }])
    const st = read?.[1]
    const fields = listed?.[1]
    const going = typeof st === 'string' && !TERMINAL_STATUSES.has(st as WorkflowStatusValue)
    const agentsOf = going && Array.isArray(fields) ? fields.map(String).filter((f) => f.startsWith('agent:')).map((f) => f.slice(6)) : []
    const at = Date.now()
    const pre: Op[] = agentsOf.map((agent) => ({ cmd: 'zadd', args: [k.ready(agent), 'LT', at, wf] }))
    const keys = [k.status(wf), k.actions(wf), k.events(wf), k.seq(wf), k.dead(wf), k.mailbox(wf, ''), k.requeued(wf)]
    const args = [wf, nanoid(), k.channel(wf), effectiveMaxLen(this.cfg), ids ? 'listed' : 'all', cutoff, offset, ...(ids ?? [])]
    const res = await execPhases(this.redis, [[...pre, { script: 'requeue', keys, args }]])
    const [err, raw] = res[pre.length] ?? [new Error('no reply'), null]
    if (err) throw err
    const r = raw as unknown[]
    const text = (v: unknown): string => (Buffer.isBuffer(v) ? v.toString() : String(v))
    const n = Number(r[5])
    const requeued = r.slice(6, 6 + n).map(text)
    const m = Number(r[6 + n])
    const skipped = r.slice(7 + n, 7 + n + m).map(text)
    const agents = r.slice(7 + n + m).map(text)
    if (requeued.length > 0) {
      const lost = (what: string, e: unknown): void => this.log.warn(`requeue of ${wf}: ${what} failed; the actions are queued (${what === 'hints' ? 'their pre-hints stand' : 'the persister\'s reconciliation writes their events'})`, {
        agents, error: e instanceof Error ? e.message : String(e),
      })
      // The pointer once (one whose reply alone was lost would be read twice),
      // then the hints at the script's time and the wake-ups, retried as an enqueue's.
      const [pointers] = followUpOps(this.ctx, [], [{ wf, first: text(r[1]), last: text(r[2]) }])
      const failedPointer = (await execOps(this.redis, pointers)).find(([e]) => e)?.[0]
      if (failedPointer) lost('the persistence pointer', failedPointer)
      const failedHint = await writeHintsRetrying(this.ctx, agents.map((agent) => ({ agent, wf, score: Number(text(r[0])) })))
      if (failedHint) lost('hints', failedHint)
    }
    return { requeued, skipped, cutoff: text(r[3]), examined: Number(r[4]) }
  }

  /** Events after `after` (exclusive), oldest first, at most `count`. */
  async readEvents(wf: string, after = '0', count = 1000): Promise<StreamedEvent[]> {
    this.assertOpen()
    assertWorkflowId(wf)
    assertCursor(after)
    if (!Number.isSafeInteger(count) || count < 1) throw new TroupeError('config', `count must be a whole number, at least 1, not ${String(count)}`)
    return this.read(wf, after, count)
  }

  /** readEvents without its checks, for follow(): a close() in the middle of its read ends it as documented, not with an error. */
  private async read(wf: string, after: string, count: number): Promise<StreamedEvent[]> {
    const start = after === '0' || after === '0-0' ? '-' : `(${after}`
    const entries = (await this.redis.xrange(this.keys.events(wf), start, '+', 'COUNT', count)) as [string, string[]][] | null
    return (entries ?? []).map((e) => parseEntry(wf, e))
  }

  /**
   * Follows a workflow's events: everything after `after`, then live, with no gap
   * and no duplicate across the replay-to-live handoff (subscribe first, buffer,
   * replay, then drop buffered ids already replayed). Ends after the workflow's
   * final event when `untilEnd` is set, or when `signal` aborts.
   */
  async *follow(wf: string, opts: { after?: string; signal?: AbortSignal; untilEnd?: boolean } = {}): AsyncGenerator<StreamedEvent> {
    this.assertOpen()
    assertWorkflowId(wf)
    if (opts.after !== undefined) assertCursor(opts.after)
    let last = opts.after ?? '0'
    const buffer: StreamedEvent[] = []
    let notify: (() => void) | null = null
    let resync = true
    const poke = (): void => {
      const n = notify
      notify = null
      n?.()
    }
    const sub = this.subscriber()
    let unsubscribe: () => Promise<void>
    try {
      unsubscribe = await sub.subscribe(this.keys.channel(wf), (msg) => {
        const ev = parseLive(msg)
        if (ev) buffer.push(ev)
        poke()
      })
    } catch (err) {
      // close() cut the subscription on its way: the follow ends, as documented.
      if (this.closed) return
      throw err
    }
    const stopResync = sub.onResync(() => {
      resync = true
      poke()
    })
    const onAbort = (): void => poke()
    opts.signal?.addEventListener('abort', onAbort)
    this.followers.add(onAbort)
    const over = (): boolean => this.closed || opts.signal?.aborted === true
    try {
      for (;;) {
        if (over()) return
        if (resync) {
          resync = false
          for (;;) {
            const page = await this.read(wf, last, 500)
            for (const ev of page) {
              last = ev.streamId
              yield ev
              if (opts.untilEnd && FINAL_EVENT_TYPES.has(ev.event.type)) return
              // A long replay ends at an abort too, not after its last page.
              if (over()) return
            }
            if (page.length < 500) break
          }
        }
        const ev = buffer.shift()
        if (ev) {
          if (compareStreamIds(ev.streamId, last) <= 0) continue
          last = ev.streamId
          yield ev
          if (opts.untilEnd && FINAL_EVENT_TYPES.has(ev.event.type)) return
          continue
        }
        if (opts.untilEnd) {
          // A workflow that ended before we subscribed has its final event in the replay;
          // this guards against one that ended with its last event trimmed away.
          const st = await this.redis.hget(this.keys.status(wf), 'status')
          if (st === null || ['completed', 'failed', 'cancelled'].includes(st)) {
            const rest = await this.read(wf, last, 500)
            for (const e of rest) yield e
            if (rest.length === 0) return
            last = rest[rest.length - 1]?.streamId ?? last
            continue
          }
        }
        await new Promise<void>((r) => {
          notify = r
          if (buffer.length > 0 || resync || over()) poke()
        })
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
      this.followers.delete(onAbort)
      stopResync()
      // After close() the subscriber is gone with its subscriptions.
      if (!this.closed) await unsubscribe()
    }
  }
}

/**
 * A position to read events after: '0' or a stream id below the largest Redis
 * takes after one (the gateway and the CLI check the same; Redis answered the
 * rest with a raw error).
 */
function assertCursor(after: string): void {
  if (typeof after !== 'string' || !(after === '0' || (isStreamId(after) && !isLastStreamId(after)))) {
    throw new TroupeError('bad_id', `invalid event position ${JSON.stringify(after)}: use '0' or a stream id such as 1700000000000-0`)
  }
}

/**
 * The joins of a status hash still holding actions: `join:<agent>:<key>` fields
 * of the form `o <deadline> <member>...` whose deadline is ahead (one past it let
 * its actions go; see join_send in lib.lua).
 */
export function openJoins(h: Record<string, string>, now: number): NonNullable<WorkflowStatus['joins']> {
  const out: NonNullable<WorkflowStatus['joins']> = []
  for (const [field, v] of Object.entries(h)) {
    if (!field.startsWith('join:')) continue
    const colon = field.indexOf(':', 5)
    const words = v.split(' ')
    const until = Number(words[1])
    if (colon < 0 || words[0] !== 'o' || !(until > now)) continue
    out.push({ agent: field.slice(5, colon), key: field.slice(colon + 1), waiting: words.length - 2, until })
  }
  return out.sort((a, b) => a.until - b.until)
}
