// One activation of one actor (agent × workflow): lock, activate, deliver actions
// one at a time while the mailbox has due work (each commit claims the next), then
// release. DESIGN §4 steps 3–7.
import type { Lock, Redlock } from '@sesamecare-oss/redlock'
import { backoffDelay, type AgentDefinition } from './agent.ts'
import { nanoid } from 'nanoid'
import { activate, commit, emitEvents, releaseHint, writeFollowUps, type ActionResult, type Appended, type Claimed, type CommitResult, type Hint, type ProtocolContext } from './claims.ts'
import { TroupeError } from './errors.ts'
import { LiveActor, type DeliveryOutcome } from './live-actor.ts'
import type { Logger } from './log.ts'
import type { RuntimeMetrics } from './metrics.ts'
import type { ActionRecord } from './types.ts'

/** What an activation needs from its worker. */
export interface ActivationEnv {
  ctx: ProtocolContext
  redlock: Redlock
  metrics: RuntimeMetrics
  log: Logger
  /** Validates an outgoing action (known agent, payload size); returns an error text or null. */
  checkSend(to: string, type: string, payloadJson: string): string | null
  /** Runs follow-up writes (hints, persistence pointers) without blocking the actor. */
  background(p: Promise<unknown>): void
}

/** Consecutive actions one activation handles before yielding its slot (fairness). */
const MAX_TURNS = 64
/** Most actions claimed, delivered (one at a time) and committed together. */
const BATCH = 16
/** How far a pick pushes a hint whose actor another process holds. */
const BUSY_RETRY_MS = 250

/**
 * Lifecycle of an activation, one line per state:
 * - `locking`: trying the actor's Redlock once, no retries;
 * - `active`: delivering and committing actions, lock extended in the background;
 * - `draining`: finishing the current action, then releasing whatever is due;
 * - `done`: lock released (or lost) and hint settled; nothing more happens.
 */
export type ActivationState = 'locking' | 'active' | 'draining' | 'done'

/** One activation; `run()` resolves when the actor is released. */
export class ActorActivation {
  state: ActivationState = 'locking'
  private lock: Lock | null = null
  private extender: NodeJS.Timeout | null = null
  private extending: Promise<void> = Promise.resolve()
  private abortCtl = new AbortController()
  private live: LiveActor | null = null
  /** State value last written to the status hash by this activation (skip rewriting it). */
  private lastState = ''

  constructor(
    private readonly env: ActivationEnv,
    private readonly def: AgentDefinition,
    readonly wf: string,
    private lease: number,
  ) {}

  /** The hint's score was re-leased to `lease` by a pick in this process: release against that. */
  adoptLease(lease: number): void {
    this.lease = lease
  }

  /** Finish the current action, then release (graceful shutdown). */
  drain(): void {
    if (this.state === 'active') this.state = 'draining'
  }

  /** True once the activation should hand its actor back (drain, abort). */
  private stopping(): boolean {
    return this.state !== 'active' || this.abortCtl.signal.aborted
  }

  /** Abort the running action now (cancel, deadline, drain timeout). */
  abort(reason: string): void {
    if (this.state === 'locking') this.state = 'draining'
    this.abortCtl.abort(new Error(reason))
  }

  async run(): Promise<void> {
    const { ctx, metrics } = this.env
    const agent = this.def.name
    try {
      this.lock = await this.env.redlock.acquire([ctx.keys.lock(this.wf, agent)], ctx.cfg.lockTtlMs, { retryCount: 0 })
    } catch {
      metrics.lockContention.inc({ agent })
      await ctx.redis.zadd(ctx.keys.ready(agent), 'XX', Date.now() + BUSY_RETRY_MS, this.wf).catch(() => undefined)
      this.state = 'done'
      return
    }
    if (this.state === 'locking') this.state = 'active'
    this.startExtender()
    metrics.activeActors.inc({ agent })
    try {
      await this.activated()
    } catch (err) {
      // The lock expires by itself and an action in flight is redelivered; report only.
      metrics.protocolErrors.inc({ step: err instanceof TroupeError ? err.code : 'activation' })
      this.env.log.error(`activation of ${agent} in ${this.wf} failed`, { error: err instanceof Error ? err.message : String(err) })
    } finally {
      metrics.activeActors.dec({ agent })
      await this.stopExtender()
      this.live?.discard()
      this.state = 'done'
    }
  }

  private async activated(): Promise<void> {
    const { ctx, metrics } = this.env
    const agent = this.def.name
    const lockValue = (this.lock as Lock).value
    const act = await activate(ctx, this.wf, agent, lockValue, BATCH)
    metrics.activations.inc({ agent })
    if (act.code !== 'ok') {
      await this.settleHint(act.code === 'idle' ? act.nextDue : null)
      return
    }
    if (act.redelivered) metrics.redeliveries.inc({ agent }, act.batch.length)
    let snapshot = act.snapshot
    let restoreError = ''
    if (snapshot && act.version !== this.def.version) {
      if (this.def.migrate) {
        try {
          snapshot = JSON.stringify(this.def.migrate(JSON.parse(snapshot), act.version))
        } catch (err) {
          restoreError = `migrating ${agent} snapshot from version ${act.version} failed: ${err instanceof Error ? err.message : String(err)}`
        }
      } else {
        restoreError = `snapshot of ${agent} was written by version ${act.version}, agent is version ${this.def.version} and has no migrate()`
      }
    }
    const live = new LiveActor(this.def, this.wf, snapshot, {
      flush: async (events, stateValue) => {
        const app = await emitEvents(ctx, this.wf, events, stateValue === null ? undefined : { agent, value: stateValue })
        metrics.eventsPublished.inc({ agent }, events.length)
        this.followUps([], [app])
      },
      checkSend: (to, type, payload) => this.env.checkSend(to, type, payload),
    })
    this.live = live
    const eventBase = nanoid(12)
    let commits = 0
    let turns = 0
    let batch = act.batch
    while (batch.length > 0) {
      const results: ActionResult[] = []
      let op: DeliveryOutcome['op'] = ''
      let opPayload = ''
      let stateValue = ''
      let transitions = 0
      for (const claimed of batch) {
        // Once the workflow is ending, or the activation must stop, the rest of the
        // batch goes back undelivered (the commit drops it if the workflow ended).
        if (op || this.stopping()) {
          results.push({ actionId: claimed.actionId, outcome: 'return', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 0, attempt: claimed.attempt, events: [], outbox: [] })
          continue
        }
        const started = Date.now()
        const { record, delivery: o } = await this.deliver(claimed, restoreError)
        turns++
        let outcome: ActionResult['outcome'] = 'ok'
        let retryDelay = 0
        if (o.outcome === 'rejected') outcome = 'dead'
        else if (o.outcome === 'failed') {
          if (claimed.attempt >= this.def.maxAttempts) outcome = 'dead'
          else {
            outcome = 'retry'
            retryDelay = this.stopping() ? 0 : backoffDelay(this.def.backoff, claimed.attempt)
          }
        }
        if (outcome !== 'ok') live.discard()
        else {
          stateValue = o.stateValue
          if (o.op) {
            op = o.op
            opPayload = o.opPayload
          }
        }
        transitions += o.transitions
        const durationMs = Date.now() - started
        metrics.actionDuration.observe({ agent }, durationMs / 1000)
        results.push({ actionId: claimed.actionId, outcome, error: o.error, retryDelayMs: retryDelay, parentEventId: record?.eventId ?? '', durationMs, attempt: claimed.attempt, events: o.events, outbox: o.outbox })
      }
      const release = this.stopping() || turns >= MAX_TURNS
      let res: CommitResult
      try {
        res = await commit(ctx, {
          wf: this.wf, agent, fence: act.fence, lockValue, snapshot: live.takeSnapshot(), stateValue: this.stateToWrite(stateValue, transitions),
          version: this.def.version, op, opPayload, release, batch: Math.max(1, Math.min(BATCH, MAX_TURNS - turns)), eventBase: `${eventBase}.${commits++}`, results,
        })
      } catch (err) {
        if (err instanceof TroupeError && (err.code === 'fence_rejected' || err.code === 'stale_action')) {
          // A newer activation owns the actor (we were paused past our lease): our
          // work is discarded and redone there. Leave the hint to the new owner.
          metrics.fenceRejections.inc({ agent })
          this.env.log.warn(`commit of ${agent} in ${this.wf} rejected: ${err.message}`)
          return
        }
        throw err
      }
      for (const r of results) {
        if (r.outcome === 'return') continue
        const label = res.code === 'ended' && !op ? 'cancelled' : r.outcome === 'ok' ? 'completed' : r.outcome === 'retry' ? 'retried' : 'dead'
        metrics.actions.inc({ agent, outcome: label })
        if (r.events.length > 0) metrics.eventsPublished.inc({ agent }, r.events.length)
      }
      if (transitions > 0) metrics.transitions.inc({ agent }, transitions)
      this.followUps(res.hints, [res.appended])
      if (res.code === 'next') {
        batch = res.next
        continue
      }
      await this.settleHint(res.code === 'idle' ? res.nextDue : null)
      batch = []
    }
  }

  private async deliver(next: Claimed, restoreError: string): Promise<{ record: ActionRecord | null; delivery: DeliveryOutcome }> {
    const reject = (error: string): { record: ActionRecord | null; delivery: DeliveryOutcome } => ({
      record: null,
      delivery: { outcome: 'rejected', error, events: [], outbox: [], op: '', opPayload: '', stateValue: '', transitions: 0 },
    })
    let record: ActionRecord
    try {
      record = JSON.parse(next.record) as ActionRecord
      if (typeof record !== 'object' || record === null || typeof record.type !== 'string' || typeof record.id !== 'string') throw new Error('missing id or type')
    } catch (err) {
      return reject(`malformed action record: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (restoreError) return { ...reject(restoreError), record }
    if (next.attempt > this.def.maxAttempts) return { ...reject(`gave up after ${next.attempt - 1} deliveries that did not finish (crashed or timed out activations)`), record }
    const queuedFor = Date.now() - record.enqueuedAt
    if (next.attempt === 1 && queuedFor >= 0) this.env.metrics.queueWait.observe({ agent: this.def.name }, queuedFor / 1000)
    return { record, delivery: await (this.live as LiveActor).deliver(record, next.attempt, this.abortCtl.signal, this.def.actionTimeoutMs) }
  }

  /**
   * The state value to record in the status hash: skipped when no transition
   * happened since this activation last wrote it (a live flush may have written
   * an intermediate state, and any transition forces the final one).
   */
  private stateToWrite(stateValue: string, transitions: number): string {
    if (!stateValue || (transitions === 0 && stateValue === this.lastState)) return ''
    this.lastState = stateValue
    return stateValue
  }

  private followUps(hints: Hint[], appended: Appended[]): void {
    if (hints.length === 0 && appended.every((a) => !a.first)) return
    this.env.background(writeFollowUps(this.env.ctx, hints, appended))
  }

  private async settleHint(nextDue: number | null): Promise<void> {
    await this.stopExtender()
    await releaseHint(this.env.ctx, this.def.name, this.wf, this.lease, nextDue)
  }

  private startExtender(): void {
    const ttl = this.env.ctx.cfg.lockTtlMs
    this.extender = setInterval(() => {
      this.extending = this.extending.then(async () => {
        if (!this.lock || this.state === 'done') return
        try {
          this.lock = await this.lock.extend(ttl)
          const lease = Date.now() + ttl
          await this.env.ctx.redis.zadd(this.env.ctx.keys.ready(this.def.name), 'XX', lease, this.wf)
          this.lease = lease
        } catch (err) {
          this.env.metrics.protocolErrors.inc({ step: 'extend' })
          this.env.log.warn(`could not extend lock of ${this.def.name} in ${this.wf}`, { error: err instanceof Error ? err.message : String(err) })
        }
      })
    }, Math.max(250, Math.floor(ttl / 3)))
  }

  private async stopExtender(): Promise<void> {
    if (this.extender) clearInterval(this.extender)
    this.extender = null
    await this.extending
  }
}
