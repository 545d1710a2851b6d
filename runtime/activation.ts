// One activation of one actor (agent × workflow): lock, activate, deliver actions
// one at a time while the mailbox has due work (each commit claims the next), then
// release. DESIGN §4 steps 3–7.
import { randomBytes } from 'node:crypto'
import { Lock, type Redlock } from '@sesamecare-oss/redlock'
import { backoffDelay, type AgentDefinition } from './agent.ts'
import { nanoid } from 'nanoid'
import {
  activateOp, commit, emitEvents, extendHint, followUpOps, parseActivation, pushBusyHint, releaseHintOp, writeFollowUps,
  type Activation, type ActionResult, type Appended, type Claimed, type CommitResult, type Hint, type ProtocolContext,
} from './claims.ts'
import { execOps, execPhases, isCluster, throwFirst, type Op } from './redis/batch.ts'
import { TroupeError } from './errors.ts'
import { LiveActor, type DeliveryOutcome, type LiveActorHooks, type SendProblem } from './live-actor.ts'
import type { Logger } from './log.ts'
import type { RuntimeMetrics } from './metrics.ts'
import type { ActionRecord } from './types.ts'

/** What an activation needs from its worker. */
export interface ActivationEnv {
  ctx: ProtocolContext
  redlock: Redlock
  metrics: RuntimeMetrics
  log: Logger
  /** Validates an outgoing action (known agent, payload size); null when it may be sent. */
  checkSend(to: string, type: string, payloadJson: string): SendProblem | null
  /** Runs follow-up writes (hints, persistence pointers) without blocking the actor. */
  background(p: Promise<unknown>): void
  /**
   * Takes `agent`'s actor in `wf`, just sent `actionIds` by a commit here, for
   * this process's own next pick, if it hosts that agent and has a free slot (or
   * already runs that actor, whose activation claimed them); false otherwise
   * (then a hint and a wake-up go out as usual).
   */
  handOff(agent: string, wf: string, actionIds: readonly string[]): boolean
}

/**
 * What an activation learns and asks about newer versions of its agent during a
 * rolling update (one per worker: see NewerVersions in worker.ts).
 */
export interface VersionWatch {
  /** A newer version is at work: an activation found a snapshot it wrote. */
  saw(version: number): void
  /**
   * The newest version of the agent known to be running or registered, when it
   * is newer than this process's; null when none is known. Asked only for an
   * action whose type this version does not handle at all.
   */
  newer(): Promise<number | null>
}

/** Consecutive actions one activation handles before yielding its slot (fairness)... */
const MAX_TURNS = 256
/** ...or how long it works before yielding, whichever comes first: slow actions reach no turn count. */
const MAX_ACTIVE_MS = 1000
/** Actions an activation's first claim takes (the pick's); later claims adapt (see nextClaim). */
export const CLAIM_BATCH = 16
const BATCH = CLAIM_BATCH
/** Most actions one commit claims for the next batch. */
const MAX_CLAIM_BATCH = 64
/**
 * How long a batch may deliver before the rest of it is handed back undelivered
 * and what is done is committed: group commit must not hold the acks and sends
 * of fast actions behind slow ones.
 */
const BATCH_BUDGET_MS = 20
/** How often a worker extends the locks of its running activations: a third of the lock's TTL. */
export function keeperPeriodMs(lockTtlMs: number): number {
  return Math.max(250, Math.floor(lockTtlMs / 3))
}

/** How far a pick pushes a hint whose actor another process holds. */
const BUSY_RETRY_MS = 250
/**
 * How long actions handed back for a newer agent version wait before they are due
 * again: long enough not to spin between processes of the old version during a
 * rolling update, short enough not to hold the workflow up much.
 */
const VERSION_HANDBACK_MS = 2000

/**
 * Pauses before each resend of a commit whose outcome is unknown (about 2 s in
 * all, well within a lock's TTL, which the keeper goes on extending).
 */
const COMMIT_RESENDS_MS = [100, 400, 1600] as const

/**
 * Whether a failed commit is worth sending again: its outcome is unknown (no
 * reply from Redis: a dropped connection, too many Cluster redirections, a
 * timeout), or Redis refused it for a moment (a Cluster without a quorum, a
 * slot migrating, a replica loading). A reply error of the script itself (a
 * fence, bad data) or an out-of-memory refusal would only be answered again.
 */
function resendable(err: unknown): boolean {
  if (!(err instanceof Error) || err instanceof TroupeError) return false
  if (err.name !== 'ReplyError') return true
  return /^(CLUSTERDOWN|TRYAGAIN|LOADING|MASTERDOWN)\b/.test(err.message)
}

/**
 * Lifecycle of an activation, one line per state:
 * - `locking`: taking the actor's lock once, no retries (inside the activate script);
 * - `active`: delivering and committing actions, lock extended in the background;
 * - `draining`: finishing the current action, then releasing whatever is due;
 * - `done`: lock released (or lost) and hint settled; nothing more happens.
 */
export type ActivationState = 'locking' | 'active' | 'draining' | 'done'

/** An activation the worker's pick already made (pick_activate.lua): the activation picks up from its reply. */
export interface PreActivated {
  lockValue: string
  /** When the pick was sent: the lock's TTL counts from before then. */
  sentAt: number
  /** The activate step's reply, or why it failed (handled like a failed activate call). */
  activation: Activation | Error
}

/** A delivery refused before it reached the machine. */
function reject(error: string): { record: ActionRecord | null; delivery: DeliveryOutcome } {
  return { record: null, delivery: { outcome: 'rejected', error, events: [], outbox: [], op: '', opPayload: '', stateValue: '', transitions: 0 } }
}

/**
 * One activation; `run()` resolves when the actor is released. It is its live
 * actor's hooks itself: per-activation closures cost more than they look when
 * run through tsx, whose keepNames wraps each named one in a `__name()`
 * property definition (about 3% of a workflow's CPU with the ones removed here
 * and in live-actor.ts, 2026-12-06).
 */
export class ActorActivation implements LiveActorHooks {
  state: ActivationState = 'locking'
  /** Our lock value and Redlock's estimate of its expiry, set once activated. */
  private lockValue = ''
  private lockExpires = 0
  /** Redlock's handle on the lock, made at the first extension (most activations end before one). */
  private lock: Lock | null = null
  /** True from activation until the release starts: the worker's keeper may extend the lock. */
  private keeping = false
  private extending: Promise<void> = Promise.resolve()
  /** Why the activation was aborted (cancel, deadline, drain timeout), once it was. */
  private abortReason: Error | null = null
  /**
   * Made on first use: most actions settle synchronously and never need a
   * signal, and an AbortSignal (an EventTarget) is a measurable share of a cold
   * activation's allocations.
   */
  private abortCtl: AbortController | null = null
  private live: LiveActor | null = null
  /**
   * True when the worker should look at its ready queue right after this
   * activation: the release found the hint rewritten meanwhile and left it due,
   * or the actor still has work, due now (fairness, drain) or later (a retry, a
   * durable timer), whose time the worker's next pick learns.
   */
  lookAgain = false
  /** A lease this process's worker took on the hint for a rerun after this activation: the release leaves it. */
  rerunLease: number | null = null
  /** Every action this activation claimed (a hand-off of work it already has needs no hint). */
  private readonly claimed = new Set<string>()
  /** State value last written to the status hash by this activation (skip rewriting it). */
  private lastState = ''
  /** On a single Redis the commit's pipeline also runs settle.lua (its keys span slots, so not on a Cluster). */
  private readonly fusedSettle: boolean

  constructor(
    private readonly env: ActivationEnv,
    private readonly def: AgentDefinition,
    readonly wf: string,
    /** The ready hint's score as this process's pick leased it. */
    private lease: number,
    /** Already activated by the pick (pick_activate.lua): its lock value, when the pick was sent, and the reply. */
    private readonly pre: PreActivated | null = null,
    /** Newer versions of the agent, for actions only they handle (null: such actions are rejected). */
    private readonly versions: VersionWatch | null = null,
  ) {
    this.fusedSettle = !isCluster(env.ctx.redis)
  }

  /** True when this activation claimed every one of `actionIds` (at least one). */
  hasClaimed(actionIds: readonly string[]): boolean {
    return actionIds.length > 0 && actionIds.every((id) => this.claimed.has(id))
  }

  /** Finish the current action, then release (graceful shutdown). */
  drain(): void {
    // Also while still taking the lock (a rerun, or any activation on a Cluster):
    // it then hands back what it claims instead of running up to MAX_TURNS.
    if (this.state === 'active' || this.state === 'locking') this.state = 'draining'
  }

  /** True once the activation should hand its actor back (drain, abort). */
  private stopping(): boolean {
    return this.state !== 'active' || this.abortReason !== null
  }

  /** Abort the running action now (cancel, deadline, drain timeout). The first reason wins. */
  abort(reason: string): void {
    if (this.state === 'locking') this.state = 'draining'
    if (this.abortReason) return
    this.abortReason = new Error(reason)
    this.abortCtl?.abort(this.abortReason)
  }

  /** The signal of an action that takes time (already aborted when the activation was). */
  private signal(): AbortSignal {
    if (!this.abortCtl) {
      this.abortCtl = new AbortController()
      if (this.abortReason) this.abortCtl.abort(this.abortReason)
    }
    return this.abortCtl.signal
  }

  async run(): Promise<void> {
    const { ctx, metrics } = this.env
    const agent = this.def.name
    let act: Activation
    // The lock value a Redlock acquire would choose; the activate script sets it.
    const lockValue = this.pre?.lockValue ?? randomBytes(16).toString('hex')
    const lockedAt = this.pre?.sentAt ?? Date.now()
    try {
      if (this.pre?.activation instanceof Error) throw this.pre.activation
      act = this.pre ? this.pre.activation : await this.lockAndActivate(lockValue)
    } catch (err) {
      // Nothing was claimed, or the lock expires and the claim is redelivered.
      metrics.protocolErrors.inc({ step: err instanceof TroupeError ? err.code : 'activate' })
      this.env.log.error(`activation of ${agent} in ${this.wf} failed`, { error: err instanceof Error ? err.message : String(err) })
      this.state = 'done'
      return
    }
    if (act.code === 'busy') {
      metrics.lockContention.inc({ agent })
      // Look again when the holder's lock would run out: sooner only hammers a long
      // activation. The holder brings the hint forward itself when it releases
      // (release_hint.lua), and if it dies the lock has run out by then. Only while
      // the hint is still our lease: see pushBusyHint.
      await pushBusyHint(ctx, agent, this.wf, this.lease, Math.max(BUSY_RETRY_MS, act.lockMs)).catch(() => undefined)
      this.state = 'done'
      return
    }
    metrics.activations.inc({ agent })
    if (act.code !== 'ok') {
      // The script released the lock already.
      await this.settle(act.code === 'idle' ? act.nextDue : null, [], [])
      this.state = 'done'
      return
    }
    // From here Redlock owns the lock's life: it extends it while we work (see
    // keepAlive). Its expiry estimate is the acquire's, minus the same drift Redlock allows.
    const ttl = ctx.cfg.lockTtlMs
    const drift = Math.round(this.env.redlock.settings.driftFactor * ttl) + 2
    this.lockValue = lockValue
    this.lockExpires = lockedAt + ttl - drift
    if (this.state === 'locking') this.state = 'active'
    this.keeping = true
    metrics.activeActors.inc({ agent })
    try {
      await this.activated(act)
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

  /** The activate script, for an actor picked without it (a Cluster's pick.lua). */
  private async lockAndActivate(lockValue: string): Promise<Activation> {
    const [[err, raw] = [new Error('no reply'), null]] = await execOps(this.env.ctx.redis, [activateOp(this.env.ctx, this.wf, this.def.name, lockValue, BATCH)])
    if (err) throw err
    return parseActivation(raw)
  }

  private async activated(act: Activation & { code: 'ok' }): Promise<void> {
    const { ctx, metrics } = this.env
    const agent = this.def.name
    const lockValue = this.lockValue
    if (act.redelivered) metrics.redeliveries.inc({ agent }, act.batch.length)
    let snapshot = act.snapshot
    let restoreError = ''
    // Written by a newer version of this agent (a rolling update under way): this
    // process must neither run the machine on it nor "migrate" it backwards, so it
    // hands the batch back, due again in a moment, for a process of that version.
    const newer = snapshot !== '' && act.version > this.def.version
    if (newer) {
      this.env.log.warn(`snapshot of ${agent} in ${this.wf} was written by version ${act.version}, this process runs version ${this.def.version}: handing its actions back`)
      this.versions?.saw(act.version)
    } else if (snapshot && act.version < this.def.version) {
      if (this.def.migrate) {
        try {
          const migrated: unknown = this.def.migrate(JSON.parse(snapshot), act.version)
          // A migrate() that changes its argument and forgets to return it would
          // otherwise start the actor afresh, and the next commit would overwrite its state.
          if (typeof migrated !== 'object' || migrated === null) throw new Error(`migrate() returned ${migrated === null ? 'null' : typeof migrated}, not a snapshot object`)
          // A promise passed as an object and was restored as {} (its JSON): the
          // actor came up in 'error', and every action died blaming the agent.
          if (typeof (migrated as { then?: unknown }).then === 'function') {
            // Nobody awaits it: its rejection must not become an unhandled one.
            void (migrated as PromiseLike<unknown>).then(undefined, () => undefined)
            throw new Error('migrate() must return the snapshot synchronously; it returned a promise (is it async?)')
          }
          snapshot = JSON.stringify(migrated)
        } catch (err) {
          restoreError = `migrating ${agent} snapshot from version ${act.version} failed: ${err instanceof Error ? err.message : String(err)}`
        }
      } else {
        restoreError = `snapshot of ${agent} was written by version ${act.version}, agent is version ${this.def.version} and has no migrate()`
      }
    }
    // Every action of the batch goes to the dead letters for it: say so once, loudly.
    if (restoreError) this.env.log.error(`${restoreError} in ${this.wf}: its actions are dead-lettered`)
    let restoreLogged = restoreError !== ''
    let unknownLogged = false
    const live = new LiveActor(this.def, this.wf, snapshot, this)
    this.live = live
    const eventBase = nanoid(12)
    let commits = 0
    let turns = 0
    let batch = act.batch
    let claimSize = BATCH
    const activeSince = Date.now()
    while (batch.length > 0) {
      for (const c of batch) this.claimed.add(c.actionId)
      const results: ActionResult[] = []
      let op: DeliveryOutcome['op'] = ''
      let opPayload = ''
      let stateValue = ''
      let transitions = 0
      /** The state value after each successful action of the batch, in order (see the cut below). */
      const okStates: string[] = []
      const batchStarted = Date.now()
      let cut = false
      let delivered = 0
      for (const claimed of batch) {
        if (newer) {
          results.push(this.handBack(claimed, `snapshot of ${agent} was written by version ${act.version}; this process runs version ${this.def.version}, and no process of version ${act.version} took the action within an hour of its first hand-back`))
          continue
        }
        // Once the workflow is ending, or the activation must stop, the rest of the
        // batch goes back undelivered (the commit drops it if the workflow ended).
        // Past the batch's time budget the rest goes back too, in its place: what is
        // done is committed now (see BATCH_BUDGET_MS).
        if (!cut && delivered > 0 && Date.now() - batchStarted >= BATCH_BUDGET_MS) cut = true
        if (op || this.stopping() || cut) {
          results.push({ actionId: claimed.actionId, outcome: 'return', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 0, attempt: claimed.attempt, events: [], outbox: [] })
          continue
        }
        delivered++
        const started = Date.now()
        const { record, delivery: o } = await this.deliverSafely(claimed, restoreError)
        turns++
        // A type no state of this version handles, while a newer version that
        // may is about (a rolling update that added it): handed back for a
        // process of that version, as for a newer snapshot, instead of dead.
        const newerVersion = o.unknownType && this.versions ? await this.versions.newer() : null
        if (newerVersion !== null) {
          if (!unknownLogged) {
            unknownLogged = true
            this.env.log.warn(`${agent} version ${this.def.version} does not handle action '${record?.type ?? ''}' in ${this.wf}; version ${newerVersion} is about: handing it back`)
          }
          results.push(this.handBack(claimed, `${agent} version ${this.def.version} does not handle action '${record?.type ?? ''}'; version ${newerVersion} was about, and no process of it took the action within an hour of its first hand-back`))
          continue
        }
        let outcome: ActionResult['outcome'] = 'ok'
        let retryDelay = 0
        if (o.restoreFailed && !restoreLogged) {
          restoreLogged = true
          this.env.log.error(`${o.error} in ${this.wf}: its actions are dead-lettered`)
        }
        if (o.outcome === 'rejected') outcome = 'dead'
        else if (o.aborted && this.state !== 'active') {
          // Stopped by the drain timeout: handed back undelivered, so the action
          // runs again elsewhere without an attempt spent (a cancel or deadline
          // ends the workflow, and the commit drops it either way).
          outcome = 'return'
        } else if (o.outcome === 'failed') {
          if (claimed.attempt >= this.def.maxAttempts) outcome = 'dead'
          else {
            outcome = 'retry'
            retryDelay = this.stopping() ? 0 : backoffDelay(this.def.backoff, claimed.attempt)
          }
        }
        if (outcome !== 'ok') live.discard()
        else {
          stateValue = o.stateValue
          okStates.push(stateValue)
          if (o.op) {
            op = o.op
            opPayload = o.opPayload
          }
        }
        transitions += o.transitions
        const durationMs = Date.now() - started
        metrics.actionDuration.observe({ agent }, durationMs / 1000)
        // A handed-back action runs again and raises its events then: none of its unsent ones now.
        const events = outcome === 'return' ? [] : o.events
        results.push({ actionId: claimed.actionId, outcome, error: o.error, retryDelayMs: retryDelay, parentEventId: record?.eventId ?? '', durationMs, attempt: claimed.attempt, events, outbox: o.outbox })
      }
      // Before the snapshot: serialising it is the commit's cost, not the batch's.
      const deliveredAt = Date.now()
      const taken = live.takeSnapshot()
      if ('badAt' in taken) {
        const cut = this.cutAtUnserialisable(results, taken.badAt, taken.error)
        // The state of the last action kept ('' when none was: nothing to write).
        stateValue = okStates[taken.badAt - 1] ?? ''
        if (cut) {
          op = ''
          opPayload = ''
        }
      }
      const release = this.stopping() || turns >= MAX_TURNS || Date.now() - activeSince >= MAX_ACTIVE_MS || newer
      // A batch delivered within its budget doubles the next claim (a busy actor
      // amortises the commit over more actions); one that ran past it (cut short,
      // or its last action overran) claims what fitted, so a slow actor is not
      // claimed more actions than it runs (each claimed, then handed back).
      const overran = cut || deliveredAt - batchStarted >= BATCH_BUDGET_MS
      claimSize = overran ? Math.max(1, delivered) : Math.min(MAX_CLAIM_BATCH, claimSize * 2)
      let res: CommitResult | null = null
      const commitArgs = {
        wf: this.wf, agent, fence: act.fence, lockValue, snapshot: taken.json, stateValue: this.stateToWrite(stateValue, transitions),
        version: this.def.version, op, opPayload, release, batch: Math.max(1, Math.min(claimSize, MAX_TURNS - turns)), eventBase: `${eventBase}.${commits++}`, results,
      }
      for (let resends = 0; res === null; resends++) {
        try {
          // The settle leases as they are now: the extender may have moved ours meanwhile.
          res = await commit(ctx, { ...commitArgs, ...(this.fusedSettle ? { settle: { lease: this.lease, rerunLease: this.rerunLease } } : {}) })
        } catch (err) {
          if (err instanceof TroupeError && (err.code === 'fence_rejected' || err.code === 'stale_action')) {
            if (resends > 0) {
              // A resend refused: the first run may have taken effect, its reply
              // lost, and then another activation moved the fence (or committed
              // over its marker). Its hints went with that reply: assume it ran.
              this.hintJoinedTargets(results, agent)
              this.env.log.warn(`resent commit of ${agent} in ${this.wf} refused (another activation took the actor since; the first run may have taken effect): ${err.message}`)
              return
            }
            // A newer activation owns the actor (we were paused past our lease): our
            // work is discarded and redone there. Leave the hint to the new owner.
            metrics.fenceRejections.inc({ agent })
            this.env.log.warn(`commit of ${agent} in ${this.wf} rejected: ${err.message}`)
            return
          }
          // Whether it took effect is unknown (a dropped connection, a Cluster
          // node failing over): the same commit again, which commit.lua answers
          // as it answered the first run if that took effect (its marker), and
          // runs now if not. Given up, the batch waited out the lock and was
          // delivered again: its actions ran twice if the commit had not run.
          const pause = COMMIT_RESENDS_MS[resends]
          if (pause !== undefined && resendable(err)) {
            metrics.protocolErrors.inc({ step: 'commit-resend' })
            this.env.log.warn(`commit of ${agent} in ${this.wf} failed, its outcome unknown: sending it again in ${pause} ms`, { error: err instanceof Error ? err.message : String(err) })
            await new Promise((r) => setTimeout(r, pause))
            continue
          }
          this.hintJoinedTargets(results, agent)
          throw err
        }
      }
      const handedBack: string[] = []
      for (const r of results) {
        if (r.outcome === 'handback' && res.code !== 'ended') handedBack.push(r.actionId)
        if (r.outcome === 'return' || r.outcome === 'handback') continue
        const label = res.code === 'ended' && !op ? 'cancelled' : r.outcome === 'ok' ? 'completed' : r.outcome === 'retry' ? 'retried' : 'dead'
        metrics.actions.inc({ agent, outcome: label })
        if (r.events.length > 0) metrics.eventsPublished.inc({ agent }, r.events.length)
      }
      if (handedBack.length > 0) this.env.background(this.countHandBacks(handedBack))
      if (transitions > 0) metrics.transitions.inc({ agent }, transitions)
      // Only when this commit ended the workflow: it then appended the workflow's
      // final event (a workflow already ended by a cancel or deadline appends none).
      if (op && res.code === 'ended' && res.appended.first !== '') {
        // As a cancel does: other agents' actions still running in this workflow
        // (anywhere) stop now instead of running on to their end or timeout.
        const final = op === 'complete' ? 'completed' : 'failed'
        // Its deadline entry goes too: left until it came due, every finished
        // workflow's entry cost the supervisor a pass, and the index grew with
        // every workflow started under a long deadline.
        this.env.background(execOps(ctx.redis, [
          { cmd: 'publish', args: [ctx.keys.control(), JSON.stringify({ op: 'abort', wf: this.wf, reason: final, by: 'commit' })] },
          { cmd: 'zrem', args: [ctx.keys.deadlines(), this.wf] },
        ]).then(throwFirst))
        // The other agents' ready hints: settle.lua removed them on a single
        // Redis; on a Cluster (or when settle did not run) they go from here.
        if (!res.settled) this.env.background(this.dropReadyHints())
      }
      // settle.lua wrote the persistence pointer, and released the hint if the lock went.
      const settled = res.settled && (res.settled.state === 'held') === (res.code === 'next') ? res.settled : null
      // 'held' with another code: a replay answered after our lock ran out (commit.lua
      // then says "due now"). settle.lua's first run wrote the pointer already.
      const appended = res.settled ? [] : [res.appended]
      if (res.code === 'next') {
        this.followUps(res.hints, appended)
        batch = res.next
        continue
      }
      await this.settle(res.code === 'idle' ? res.nextDue : null, res.hints, appended, settled?.state === 'released' ? settled.released : null)
      batch = []
    }
  }

  /**
   * An action for a newer version of the agent (its actor's snapshot was written
   * by one, or only a newer one handles its type): handed back, due again in
   * {@link VERSION_HANDBACK_MS}, for a process of that version. commit.lua
   * dead-letters it with `error` once an hour has passed since its first
   * hand-back (by Redis's clock): by then no such process is coming (a rollback,
   * or the newer version stopped everywhere), and the workflow must not wait forever.
   */
  private handBack(claimed: Claimed, error: string): ActionResult {
    return { actionId: claimed.actionId, outcome: 'handback', retryDelayMs: VERSION_HANDBACK_MS, parentEventId: '', durationMs: 0, attempt: claimed.attempt, events: [], outbox: [], error }
  }

  /**
   * After this activation's commit ended the workflow: removes the workflow
   * from the ready sets of the agents the commit listed in the actor's `unhint`
   * field (nobody held them; see unheld_agents in lib.lua). Their mailboxes
   * went with the commit, and a hint left for a delayed action waited for its
   * due time, up to ten years. A hint some process leased meanwhile may go too:
   * its release, finding none, has nothing to do.
   */
  private async dropReadyHints(): Promise<void> {
    const { ctx } = this.env
    const names = (await ctx.redis.hget(ctx.keys.actor(this.wf, this.def.name), 'unhint'))?.split(' ').filter((n) => n !== '') ?? []
    if (names.length > 0) throwFirst(await execOps(ctx.redis, names.map((n) => ({ cmd: 'zrem', args: [ctx.keys.ready(n), this.wf] }))))
  }

  /**
   * Counts the actions a commit was told to hand back: commit.lua dead-lettered
   * those first handed back over an hour ago (by Redis's clock, which only it
   * reads), and they are dead, not handed back. Which ones is read back from
   * the dead letters, once the commit took effect, off the activation's path:
   * hand-backs happen only during a rolling update (the commit's reply is
   * parsed in claims.ts and says nothing of them).
   */
  private async countHandBacks(ids: readonly string[]): Promise<void> {
    const { ctx, metrics } = this.env
    const agent = this.def.name
    const [[err, scores] = [new Error('no reply'), null]] = await execOps(ctx.redis, [{ cmd: 'zmscore', args: [ctx.keys.dead(this.wf), ...ids] }])
    if (err) throw err
    const dead = (scores as (string | null)[]).filter((s) => s !== null).length
    if (dead > 0) {
      metrics.actions.inc({ agent, outcome: 'dead' }, dead)
      this.env.log.warn(`${dead} action(s) of ${agent} in ${this.wf} dead-lettered: handed back for a newer version for over an hour`)
    }
    if (ids.length > dead) metrics.versionHandBacks.inc({ agent }, ids.length - dead)
  }

  /**
   * After a commit whose outcome is unknown (given up, or a resend refused): a
   * join it may have completed has no hint due before the join's deadline but
   * the one its lost reply carried, so one is made due now for every target it
   * sent joined actions to (at worst an activation finds nothing).
   */
  private hintJoinedTargets(results: readonly ActionResult[], agent: string): void {
    const joined = [...new Set(results.flatMap((r) => (r.outcome === 'ok' ? r.outbox.filter((o) => o.join && o.to !== agent).map((o) => o.to) : [])))]
    if (joined.length > 0) this.env.background(writeFollowUps(this.env.ctx, joined.map((to) => ({ agent: to, wf: this.wf, score: Date.now() })), []))
  }

  /**
   * After a snapshot that cannot be serialised: the `badAt`-th successful result
   * fails with the reason (its state cannot be stored, so it did not happen), and
   * every result after it goes back undelivered, since it ran on that state.
   * Returns true when the workflow op (the last successful result's) was cut.
   */
  private cutAtUnserialisable(results: ActionResult[], badAt: number, error: string): boolean {
    let ok = -1
    let cutOp = false
    for (let i = 0; i < results.length; i++) {
      const r = results[i] as ActionResult
      if (ok >= badAt) {
        results[i] = { ...r, outcome: 'return', error: '', retryDelayMs: 0, events: [], outbox: [] }
        continue
      }
      if (r.outcome !== 'ok' || ++ok < badAt) continue
      // Dead at once: another attempt runs the same action on the same state
      // and stores the same value (and repeats whatever the action did outside).
      results[i] = {
        ...r, outcome: 'dead', outbox: [],
        error: `the state of ${this.def.name} after this action cannot be stored: ${error}`,
        retryDelayMs: 0,
      }
      cutOp = true
    }
    return cutOp
  }

  /** LiveActorHooks: publishes events of an action still running. */
  async flush(events: string[], stateValue: string | null): Promise<void> {
    const agent = this.def.name
    const app = await emitEvents(this.env.ctx, this.wf, events, stateValue === null ? undefined : { agent, value: stateValue })
    this.env.metrics.eventsPublished.inc({ agent }, events.length)
    this.followUps([], [app])
  }

  /** LiveActorHooks: validates an outgoing action. */
  checkSend(to: string, type: string, payloadJson: string): SendProblem | null {
    return this.env.checkSend(to, type, payloadJson)
  }

  /**
   * {@link deliver}, with anything it throws (agent code XState does not catch)
   * turned into a failed delivery: thrown out of the activation, it held the
   * lock until its TTL and ran the whole batch again.
   */
  private async deliverSafely(next: Claimed, restoreError: string): Promise<{ record: ActionRecord | null; delivery: DeliveryOutcome }> {
    try {
      return await this.deliver(next, restoreError)
    } catch (err) {
      this.live?.discard()
      const { delivery } = reject(`delivery failed: ${err instanceof Error ? err.message : String(err)}`)
      return { record: null, delivery: { ...delivery, outcome: 'failed' } }
    }
  }

  private async deliver(next: Claimed, restoreError: string): Promise<{ record: ActionRecord | null; delivery: DeliveryOutcome }> {
    let record: ActionRecord
    try {
      record = JSON.parse(next.record) as ActionRecord
      if (typeof record !== 'object' || record === null || typeof record.type !== 'string' || typeof record.id !== 'string') throw new Error('missing id or type')
    } catch (err) {
      return reject(`malformed action record: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (restoreError) return { ...reject(restoreError), record }
    if (next.attempt > this.def.maxAttempts) return { ...reject(`gave up after ${next.attempt - 1} deliveries that did not finish (crashed or timed out activations)`), record }
    // From when it became due (a delay's end, the join that let it go; the server's
    // clock), not from its enqueue: a delayed send's delay is no wait for capacity.
    const queuedFor = Date.now() - Math.max(record.enqueuedAt, next.dueAt)
    if (next.attempt === 1 && queuedFor >= 0) this.env.metrics.queueWait.observe({ agent: this.def.name }, queuedFor / 1000)
    return { record, delivery: await (this.live as LiveActor).deliver(record, next.attempt, () => this.signal(), this.def.actionTimeoutMs) }
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

  /**
   * Follow-up writes of a commit: actors it sent work to that this process can run
   * now are handed to its own worker's next pick (no hint write, no wake-up of
   * every process); the others get their hint and a wake-up.
   */
  private followUpOps(hints: Hint[], appended: Appended[]): [Op[], Op[]] {
    const now = Date.now()
    const rest: Hint[] = []
    const kept: Hint[] = []
    for (const h of hints) {
      if (h.score > now || !this.env.handOff(h.agent, h.wf, h.sent ?? [])) rest.push(h)
      else kept.push(h)
    }
    const [writes, wakes] = followUpOps(this.env.ctx, rest, appended)
    // Kept here: no wake-up. Their hint is written again all the same, after the
    // commit, unless the commit's own write did so (single Redis): a pick that
    // ran before the commit may have leased and released the pre-hint, and the
    // pre-hint of a join the commit completed is not due yet.
    const unwritten = kept.filter((h) => h.written !== true)
    if (unwritten.length === 0) return [writes, wakes]
    return [[...followUpOps(this.env.ctx, unwritten, [], false)[0], ...writes], wakes]
  }

  private followUps(hints: Hint[], appended: Appended[]): void {
    const phases = this.followUpOps(hints, appended)
    if (phases[0].length + phases[1].length > 0) this.env.background(execPhases(this.env.ctx.redis, phases).then(throwFirst))
  }

  /**
   * Stops the extender, then releases our hint together with the last follow-ups
   * (one pipeline on one Redis). `released`: settle.lua already released it right
   * after the commit (true when it changed the hint, false when it left it for a
   * second look); only other actors' hints and wake-ups are left to send.
   */
  private async settle(nextDue: number | null, hints: Hint[], appended: Appended[], released: boolean | null = null): Promise<void> {
    await this.stopExtender()
    const phases = this.followUpOps(hints, appended)
    if (released !== null) {
      this.lookAgain = !released || nextDue !== null
      if (phases[0].length + phases[1].length > 0) this.env.background(execPhases(this.env.ctx.redis, phases).then(throwFirst))
      return
    }
    const at = phases[0].length
    phases[0].push(releaseHintOp(this.env.ctx, this.def.name, this.wf, this.lease, nextDue, this.rerunLease))
    const res = await execPhases(this.env.ctx.redis, phases)
    const [releaseErr, changed] = res[at] ?? [null, 0]
    // nextDue in the future (a retry's backoff, a durable timer): the worker's
    // next pick learns it and sleeps exactly until then, instead of up to the poll.
    this.lookAgain = releaseErr !== null || Number(changed) !== 1 || nextDue !== null
    const failed = res.find(([err]) => err)
    if (failed?.[0]) {
      this.env.metrics.protocolErrors.inc({ step: 'follow-up' })
      this.env.log.error(`releasing ${this.def.name} in ${this.wf} failed`, { error: failed[0].message })
    }
  }

  /**
   * Extends the actor's lock, and our lease on its ready hint, by a whole TTL.
   * The worker calls it for each of its running activations every third of the
   * TTL ({@link keeperPeriodMs}): one timer per worker instead of one per
   * activation, and the lock never goes longer than that period unextended.
   * Extensions run one at a time; none starts once the release has begun.
   */
  keepAlive(): void {
    if (!this.keeping) return
    this.extending = this.extending.then(async () => {
      if (!this.keeping) return
      const ttl = this.env.ctx.cfg.lockTtlMs
      try {
        this.lock ??= new Lock(this.env.redlock, [this.env.ctx.keys.lock(this.wf, this.def.name)], this.lockValue, [], this.lockExpires)
        this.lock = await this.lock.extend(ttl)
        const moved = await extendHint(this.env.ctx, this.def.name, this.wf, this.lease)
        // Left alone: the release will find someone else's score and bring it forward.
        if (moved !== null) this.lease = moved
      } catch (err) {
        this.env.metrics.protocolErrors.inc({ step: 'extend' })
        this.env.log.warn(`could not extend the lock or hint lease of ${this.def.name} in ${this.wf}`, { error: err instanceof Error ? err.message : String(err) })
      }
    })
  }

  private async stopExtender(): Promise<void> {
    this.keeping = false
    await this.extending
  }
}
