// The per-agent loop of a runtime process: pick due actors (batched, one round trip
// for many), start an activation for each within the agent's concurrency, and
// sleep until the next due time or a wake-up when nothing is due.
import type { AgentDefinition } from './agent.ts'
import { randomBytes } from 'node:crypto'
import { ActorActivation, CLAIM_BATCH, keeperPeriodMs, type ActivationEnv, type PreActivated, type VersionWatch } from './activation.ts'
import { giveUpLease, pick, pickActivate, wakeOp, type PickedActivation } from './claims.ts'
import { isCluster } from './redis/batch.ts'
import { duplicateClient, type RedisClient } from './redis/connection.ts'
import { isWorkflowId } from './redis/keys.ts'

/** Shortest gap between two wake-ups a busy worker passes on (and how long a pick that started nothing waits to look again). */
const PASS_ON_MS = 50

/** Least time between two reads of the agent's registration by {@link NewerVersions}. */
const REGISTRATION_READ_MS = 1000
/**
 * How long a newer version, once seen, is taken to be about: six of the
 * runtimes' 10 s registration refreshes. Past that with no sign of it (a
 * rollback), an action only it handles is rejected again at once.
 */
const NEWER_VERSION_MEMORY_MS = 60_000

/**
 * What this process knows of newer versions of its agent, for actions whose
 * type only a newer version handles (a rolling update that added it): the
 * version in the agent's `system:agents` registration, read when such an
 * action comes (at most once a second, shared by the activations asking), and
 * the version of any newer snapshot an activation found. Remembered for
 * {@link NEWER_VERSION_MEMORY_MS}: every runtime hosting the agent rewrites
 * the one registration with its own version every 10 s, so while old and new
 * processes run side by side a read sees either.
 */
export class NewerVersions implements VersionWatch {
  private newest = 0
  private seenAt = 0
  private readAt = 0
  private reading: Promise<void> | null = null

  constructor(
    private readonly env: ActivationEnv,
    private readonly def: AgentDefinition,
  ) {}

  saw(version: number): void {
    if (version <= this.def.version) return
    this.newest = this.seenAt > 0 && Date.now() - this.seenAt <= NEWER_VERSION_MEMORY_MS ? Math.max(this.newest, version) : version
    this.seenAt = Date.now()
  }

  async newer(): Promise<number | null> {
    if (Date.now() - this.readAt >= REGISTRATION_READ_MS) {
      this.reading ??= this.read().finally(() => (this.reading = null))
      await this.reading
    }
    return this.newest > this.def.version && Date.now() - this.seenAt <= NEWER_VERSION_MEMORY_MS ? this.newest : null
  }

  private async read(): Promise<void> {
    this.readAt = Date.now()
    const { ctx } = this.env
    let version: unknown
    try {
      const raw = await ctx.redis.hget(ctx.keys.agents(), this.def.name)
      version = raw === null ? undefined : (JSON.parse(raw) as { version?: unknown }).version
    } catch {
      // Unreadable now: what was seen before still counts, nothing new is learnt.
      return
    }
    if (typeof version === 'number' && Number.isSafeInteger(version)) this.saw(version)
  }
}

/**
 * Lifecycle of a worker, one line per state:
 * - `running`: picking and activating;
 * - `draining`: no new picks; activations finish their current action and release;
 * - `stopped`: no activation left.
 */
export type WorkerState = 'running' | 'draining' | 'stopped'

/** Runs one agent's actors in this process. */
export class AgentWorker {
  state: WorkerState = 'running'
  readonly active = new Map<string, ActorActivation>()
  private wakeUp: (() => void) | null = null
  private wakePending = false
  private loopDone: Promise<void> = Promise.resolve()
  /** Own connection for BZPOPMIN on the agent's wake-up marker (a blocked connection serves nothing else). */
  private blocker: RedisClient | null = null
  /** Actors picked again while their activation here was running: run again, under the pick's lease. */
  private readonly rerun = new Map<string, { lease: number; pre: PreActivated | null }>()
  /** Workflows aborted here lately (cancel, deadline): activations a pick made for them start aborted. */
  private readonly aborted = new Map<string, { at: number; reason: string }>()
  /** The BZPOPMIN in flight, if any: it cannot be cancelled, so at most one at a time. */
  private listening: Promise<void> | null = null
  /** Extends the locks of the running activations (see ActorActivation.keepAlive). */
  private keeper: NodeJS.Timeout | null = null
  /** Actors handed to this worker since its last pick was sent: the next pick takes them, so their slots are spoken for. */
  private promised = 0
  /** When the loop last passed a wake-up on because more was due than it took. */
  private passedAt = 0
  /** Newer versions of this agent seen lately (a rolling update): see NewerVersions. */
  private readonly versions: NewerVersions

  constructor(
    private readonly env: ActivationEnv,
    readonly def: AgentDefinition,
  ) {
    this.versions = new NewerVersions(env, def)
  }

  start(): void {
    const blocker = duplicateClient(this.env.ctx.redis)
    // Failures surface as rejected BZPOPMINs; the poll keeps the worker going meanwhile.
    blocker.on('error', () => undefined)
    this.blocker = blocker
    this.keeper = setInterval(() => {
      for (const a of this.active.values()) a.keepAlive()
    }, keeperPeriodMs(this.env.ctx.cfg.lockTtlMs))
    // An activation's Redis calls keep the process alive; the keeper alone must not.
    this.keeper.unref()
    this.loopDone = this.loop()
  }

  /** Work for this agent appeared in this process (a slot freed): stop sleeping. */
  wake(): void {
    if (this.wakeUp) this.wakeUp()
    else this.wakePending = true
  }

  /**
   * Aborts the running action of `wf`'s actor here, if any (cancel, deadline, or
   * another agent ending the workflow). With `remember`, an activation a pick
   * already on its way makes for it starts aborted too.
   */
  abortWorkflow(wf: string, reason: string, remember = true): void {
    this.active.get(wf)?.abort(reason)
    if (!remember) return
    // A pick on its way may have activated this actor before the cancel landed:
    // the activation it starts is aborted too (hands its batch back unrun).
    // Entries stay in time order (deleted before they are set again), so only the
    // stale ones at the front are looked at.
    const now = Date.now()
    for (const [w, at] of this.aborted) {
      if (now - at.at <= this.env.ctx.cfg.lockTtlMs) break
      this.aborted.delete(w)
    }
    this.aborted.delete(wf)
    this.aborted.set(wf, { at: now, reason })
  }

  /**
   * Sleeps up to `ms`, cut short by a local wake() or, when `listen`, by the
   * agent's wake-up marker (Redis hands it to exactly one blocked worker).
   */
  private async sleep(ms: number, listen = false): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false
      return
    }
    if (listen) this.listen()
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, ms)
      function done(): void {
        clearTimeout(t)
        resolve()
      }
      this.wakeUp = done
    })
    this.wakeUp = null
  }

  private listen(): void {
    const blocker = this.blocker
    if (!blocker || this.listening) return
    const { ctx } = this.env
    const key = ctx.keys.wake(this.def.name)
    this.listening = blocker.bzpopmin(key, this.env.ctx.cfg.idlePollMs / 1000).then(
      (got) => {
        this.listening = null
        if (!got) return
        // Popped while full or stopping (the BZPOPMIN outlived the sleep that
        // started it): hand the wake-up to another worker instead of losing it.
        if (this.state !== 'running' || this.active.size >= this.def.concurrency) this.passWakeOn()
        else {
          this.env.metrics.wakeUps.inc({ agent: this.def.name })
          this.wake()
        }
      },
      () => {
        // Closed at shutdown, a reconnect, or junk in the key: the poll covers it.
        this.listening = null
      },
    )
  }

  private passWakeOn(): void {
    const op = wakeOp(this.env.ctx, this.def.name)
    this.env.background(this.env.ctx.redis.call(op.cmd, ...op.args))
  }

  private async loop(): Promise<void> {
    const { ctx, log, metrics } = this.env
    const agent = this.def.name
    while (this.state === 'running') {
      const free = this.def.concurrency - this.active.size
      if (free <= 0) {
        await this.sleep(this.env.ctx.cfg.idlePollMs)
        continue
      }
      let res: { picked: { wf: string; lease: number; pre?: PickedActivation }[]; nextDue: number | null; now: number }
      const sentAt = Date.now()
      // This pick sees the pre-hints of everything handed over so far (written before their commits replied).
      this.promised = 0
      try {
        res = await this.pick(Math.min(free, 64))
      } catch (err) {
        metrics.protocolErrors.inc({ step: 'pick' })
        log.warn(`pick for ${agent} failed; retrying`, { error: err instanceof Error ? err.message : String(err) })
        await this.sleep(500)
        continue
      }
      let started = 0
      for (const p of res.picked) {
        if (!isWorkflowId(p.wf) || p.pre?.activation === 'invalid') {
          // Written by hand or by a bug: never a valid actor, so never let it come due again.
          log.warn(`dropping malformed ready hint ${JSON.stringify(p.wf)} of ${agent}`)
          // In the background: the other actors of this pick are activated already and must start now.
          this.env.background(ctx.redis.zrem(ctx.keys.ready(agent), p.wf))
          continue
        }
        const act = p.pre?.activation
        const pre = p.pre && act && act !== 'local' ? { lockValue: p.pre.lockValue, sentAt, activation: act } : null
        const running = this.active.get(p.wf)
        if (running) {
          // An activation of this actor is running here; the pick leased its hint
          // again, so new work may have arrived after that activation's last
          // claim. Run the actor once more when it ends, under this lease. (Handing
          // the lease to the running activation instead lost a hint when its final
          // commit had already gone idle: its release deleted the new one.) A rerun
          // that started while the pick was on its way may even have lost the lock to
          // it: then the pick's activation holds the actor and must run, not wait
          // out its lock.
          // Only an activation that holds the lock and claimed work is kept for the
          // rerun; a stale busy or idle reply would act on a lock long changed (a
          // fresh activation asks again). A later pick (which only leases) must not
          // drop an earlier one's activation.
          const held = pre && !(pre.activation instanceof Error) && pre.activation.code === 'ok' ? pre : null
          this.rerun.set(p.wf, { lease: p.lease, pre: held ?? this.rerun.get(p.wf)?.pre ?? null })
          running.rerunLease = p.lease
          continue
        }
        this.launch(p.wf, p.lease, pre)
        started++
      }
      const idleFor = res.nextDue === null ? this.env.ctx.cfg.idlePollMs : Math.min(this.env.ctx.cfg.idlePollMs, Math.max(0, res.nextDue - res.now))
      if (res.picked.length === 0) {
        if (idleFor > 0) await this.sleep(idleFor, true)
      } else if (res.nextDue !== null && res.nextDue <= res.now) {
        // More is due than this worker took: wake another one for the rest, and
        // look again when a slot frees. At most once per PASS_ON_MS: the marker
        // is one member, so setting it again before someone pops it does
        // nothing, and whoever pops it passes it on while more is due (in a
        // burst this was one write per pick, 2% of a workflow's CPU).
        const now = Date.now()
        if (now - this.passedAt >= PASS_ON_MS) {
          this.passedAt = now
          this.passWakeOn()
        }
        if (started === 0) await this.sleep(PASS_ON_MS, true)
      } else if (idleFor > 0) {
        // The pick took everything due: nothing to look at until a wake-up or the next due time.
        await this.sleep(idleFor, true)
      }
    }
  }

  /**
   * Takes due actors: on a single Redis picked and activated in one script (one
   * round trip from "due" to delivering), on a Cluster picked here and activated
   * by each activation (the run queue and the workflows live in other slots).
   */
  private async pick(max: number): Promise<{ picked: { wf: string; lease: number; pre?: PickedActivation }[]; nextDue: number | null; now: number }> {
    const { ctx } = this.env
    if (isCluster(ctx.redis)) return await pick(ctx, this.def.name, max, ctx.cfg.lockTtlMs)
    const res = await pickActivate(ctx, this.def.name, max, randomBytes(14).toString('hex'), CLAIM_BATCH, this.active.keys())
    return { ...res, picked: res.picked.map((p) => ({ wf: p.wf, lease: p.lease, pre: p })) }
  }

  /**
   * Takes work a commit in this process just sent to `wf`'s actor, when a slot is
   * free for it: this worker's next pick runs the actor (the commit's pre-hint,
   * written before the commit replied, is due), so no wake-up goes to other
   * processes. One pick takes every actor handed over meanwhile, in one round
   * trip; starting each at once cost a round trip per actor and raced the
   * worker's own picks for the same hints (docs/architecture.md). An actor
   * already running here whose activation claimed `actionIds` (a pick took the
   * pre-hint before the commit's reply came back) has its work: nothing to do.
   * False when busy or draining, or when the actor runs here without that
   * work: the caller hints and wakes as usual.
   */
  handOff(wf: string, actionIds: readonly string[]): boolean {
    const running = this.active.get(wf)
    if (running) {
      if (!running.hasClaimed(actionIds)) return false
      this.env.metrics.handOffs.inc({ agent: this.def.name })
      return true
    }
    if (this.state !== 'running' || this.active.size + this.promised >= this.def.concurrency) return false
    this.promised++
    this.env.metrics.handOffs.inc({ agent: this.def.name })
    this.wake()
    return true
  }

  private launch(wf: string, lease: number, pre: PreActivated | null = null): void {
    const act = new ActorActivation(this.env, this.def, wf, lease, pre, this.versions)
    this.active.set(wf, act)
    if (pre) {
      // Made by a pick: it holds the lock and may have claimed work. While this
      // worker drains, or when its workflow was just aborted here, it hands that
      // work back undelivered instead of running it.
      const aborted = this.aborted.get(wf)
      if (aborted && Date.now() - aborted.at <= this.env.ctx.cfg.lockTtlMs) act.abort(aborted.reason)
      else if (this.state !== 'running') act.abort('runtime is shutting down')
    }
    this.env.background(
      act.run().finally(() => {
        const wasFull = this.active.size >= this.def.concurrency
        this.active.delete(wf)
        const again = this.rerun.get(wf)
        this.rerun.delete(wf)
        // A rerun runs here, also while draining when the pick's activation holds
        // the lock and claimed work (the drain waits for it).
        if (again !== undefined && (this.state === 'running' || again.pre)) return this.launch(wf, again.lease, again.pre)
        if (this.state !== 'running') {
          // Draining: this worker picks nothing more. A rerun it leased would
          // keep the actor's new work waiting until that lease ran out (a whole
          // lock TTL), and a hint the release left due (or due work this full
          // worker left unpicked) might wait for another process's poll: make
          // the hint due and wake another process instead.
          if (again !== undefined) this.env.background(giveUpLease(this.env.ctx, this.def.name, wf, again.lease).then(() => this.passWakeOn()))
          else if (act.lookAgain || wasFull) this.passWakeOn()
          return
        }
        // Look again only when this worker may have left due work unpicked (it
        // was full and not listening), or the release left a hint that may be
        // due; otherwise it is already listening for wake-ups.
        if (wasFull || act.lookAgain) this.wake()
      }),
    )
  }

  /** Stops picking; activations finish their action (aborted after `timeoutMs`) and release. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.state === 'stopped') return
    this.state = 'draining'
    this.wake()
    // Bounded by the same deadline as the running actions: a pick in flight waits in
    // ioredis's offline queue while Redis is unreachable.
    const deadline = Date.now() + timeoutMs
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.loopDone, new Promise((r) => (timer = setTimeout(r, timeoutMs)))])
    clearTimeout(timer)
    const wasListening = this.listening !== null
    this.blocker?.disconnect()
    this.blocker = null
    // A wake-up the BZPOPMIN popped just before the disconnect is passed on to
    // another process (passWakeOn) while the runtime's connection is still open.
    if (this.listening) await Promise.race([this.listening, new Promise((r) => setTimeout(r, 1000).unref())])
    // Work handed to this worker's next pick, which will not come, and a wake-up
    // whose reply the disconnect may have cut (popped on the server, never seen
    // here): another process is woken for them instead of finding them at its poll.
    if (this.promised > 0 || wasListening) {
      this.promised = 0
      this.passWakeOn()
    }
    for (const a of this.active.values()) a.drain()
    while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    for (const a of this.active.values()) a.abort('runtime is shutting down')
    // An activation stuck on an unreachable Redis is abandoned: its lock expires and
    // its action is redelivered elsewhere.
    const hard = Date.now() + timeoutMs
    while (this.active.size > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 20))
    if (this.keeper) clearInterval(this.keeper)
    this.keeper = null
    this.state = 'stopped'
  }
}
