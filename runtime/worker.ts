// The per-agent loop of a runtime process: pick due actors (batched, one round trip
// for many), start an activation for each within the agent's concurrency, and
// sleep until the next due time or a wake message when nothing is due.
import type { AgentDefinition } from './agent.ts'
import { ActorActivation, type ActivationEnv } from './activation.ts'
import { pick } from './claims.ts'
import { isWorkflowId } from './redis/keys.ts'

/** Longest idle sleep between picks; wake messages normally cut it short. */
const IDLE_POLL_MS = 1000

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

  constructor(
    private readonly env: ActivationEnv,
    readonly def: AgentDefinition,
  ) {}

  start(): void {
    this.loopDone = this.loop()
  }

  /** Someone hinted work for this agent: stop sleeping. */
  wake(): void {
    if (this.wakeUp) this.wakeUp()
    else this.wakePending = true
  }

  /** Aborts the running action of `wf`'s actor here, if any (cancel, deadline). */
  abortWorkflow(wf: string, reason: string): void {
    this.active.get(wf)?.abort(reason)
  }

  private async sleep(ms: number): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false
      return
    }
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

  private async loop(): Promise<void> {
    const { ctx, log, metrics } = this.env
    const agent = this.def.name
    while (this.state === 'running') {
      const free = this.def.concurrency - this.active.size
      if (free <= 0) {
        await this.sleep(IDLE_POLL_MS)
        continue
      }
      let res: Awaited<ReturnType<typeof pick>>
      try {
        res = await pick(ctx, agent, Math.min(free, 64), ctx.cfg.lockTtlMs)
      } catch (err) {
        metrics.protocolErrors.inc({ step: 'pick' })
        log.warn(`pick for ${agent} failed; retrying`, { error: err instanceof Error ? err.message : String(err) })
        await this.sleep(500)
        continue
      }
      let started = 0
      for (const p of res.picked) {
        if (!isWorkflowId(p.wf)) {
          // Written by hand or by a bug: never a valid actor, so never let it come due again.
          log.warn(`dropping malformed ready hint ${JSON.stringify(p.wf)} of ${agent}`)
          await ctx.redis.zrem(ctx.keys.ready(agent), p.wf)
          continue
        }
        const local = this.active.get(p.wf)
        if (local) {
          // We hold this actor already; the pick just re-leased its hint. Hand the
          // new lease to the activation, or its compare-and-delete at release would
          // miss and leave the hint parked for a whole lease (delaying a retry).
          local.adoptLease(p.lease)
          continue
        }
        this.launch(p.wf, p.lease)
        started++
      }
      if (res.picked.length === 0) {
        const wait = res.nextDue === null ? IDLE_POLL_MS : Math.min(IDLE_POLL_MS, Math.max(0, res.nextDue - res.now))
        if (wait > 0) await this.sleep(wait)
      } else if (started === 0) {
        await this.sleep(50)
      }
    }
  }

  /**
   * Runs `wf`'s actor here now, without a pick, when a slot is free (a commit in
   * this process just sent it work); false when busy or draining.
   */
  handOff(wf: string): boolean {
    if (this.state !== 'running' || this.active.size >= this.def.concurrency || this.active.has(wf)) return false
    this.env.metrics.handOffs.inc({ agent: this.def.name })
    this.launch(wf, null)
    return true
  }

  private launch(wf: string, lease: number | null): void {
    const act = new ActorActivation(this.env, this.def, wf, lease)
    this.active.set(wf, act)
    this.env.background(
      act.run().finally(() => {
        this.active.delete(wf)
        this.wake()
      }),
    )
  }

  /** Stops picking; activations finish their action (aborted after `timeoutMs`) and release. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.state === 'stopped') return
    this.state = 'draining'
    this.wake()
    await this.loopDone
    for (const a of this.active.values()) a.drain()
    const deadline = Date.now() + timeoutMs
    while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    for (const a of this.active.values()) a.abort('runtime is shutting down')
    // An activation stuck on an unreachable Redis is abandoned: its lock expires and
    // its action is redelivered elsewhere.
    const hard = Date.now() + timeoutMs
    while (this.active.size > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 20))
    this.state = 'stopped'
  }
}
