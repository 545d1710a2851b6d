// The supervisor: a leader-elected XState machine hosted next to agents (or alone,
// `troupe supervisor`). Any number of processes run it; one leads at a time,
// holding a Redlock lease on `system:leader` that it extends while alive, and every
// takeover bumps a fenced term that guards each of the leader's writes. The duties
// themselves live in runtime/supervisor/ (docs/supervisor.md describes them).
import { Redlock, type Lock } from '@sesamecare-oss/redlock'
import { assign, createActor, fromPromise, setup, waitFor, type Actor } from 'xstate'
import { TroupeClient } from '../runtime/client.ts'
import type { HostedService, Runtime } from '../runtime/runtime.ts'
import { LeaderDuties, type TickReport } from '../runtime/supervisor/duties.ts'
import { LeaderDeposedError, LeaderFence, runSupervisorScript } from '../runtime/supervisor/fence.ts'
import { SdServer } from '../runtime/supervisor/http-sd.ts'
import { SupervisorMetrics } from '../runtime/supervisor/metrics.ts'
import { resolveSupervisorOptions, type ResolvedSupervisorOptions, type SupervisorOptions } from '../runtime/supervisor/options.ts'

export type { SupervisorOptions } from '../runtime/supervisor/options.ts'

/** One leadership term held by this process. */
export interface Leadership {
  lock: Lock
  term: number
  fence: LeaderFence
  duties: LeaderDuties
  since: number
}

/** Why a leader stopped leading. */
export type StepDownReason = 'lease_lost' | 'deposed' | 'stopping'

/**
 * What the machine does to the outside world; the service provides it and tests
 * can provide fakes.
 */
export interface SupervisorPorts {
  /** One election attempt: the leadership when won, null when someone else leads. */
  elect(): Promise<Leadership | null>
  /** Extends the lease; rejects when it is lost (the machine steps down). */
  renew(l: Leadership): Promise<void>
  /** Runs the leader's duties once; a LeaderDeposedError makes the machine step down. */
  tick(l: Leadership, signal: AbortSignal): Promise<void>
  /** Gives the lease up (if still ours) and clears the leader record. */
  resign(l: Leadership | null, reason: StepDownReason): Promise<void>
}

interface Ctx {
  leadership: Leadership | null
  reason: StepDownReason
  stopping: boolean
}

/**
 * The supervisor's lifecycle, one line per state:
 * - `standby.electing`: trying the leader lock once;
 * - `standby.waiting`: someone else leads; try again after `retryMs`;
 * - `leading`: two regions, `lease` (extend every third of the lease) and `duties` (tick, rest, tick);
 * - `steppingDown`: lease lost, deposed or stopping: release and clear the leader record;
 * - `stopped`: final.
 *
 * @example
 * ```ts
 * const actor = createActor(createSupervisorMachine(ports, { retryMs: 2000, renewMs: 3000, tickMs: 2000 })).start()
 * actor.send({ type: 'STOP' })
 * ```
 */
export function createSupervisorMachine(ports: SupervisorPorts, timing: { retryMs: number; renewMs: number; tickMs: number }) {
  const leadershipOf = ({ context }: { context: Ctx }): Leadership => {
    if (!context.leadership) throw new Error('leading without a leadership')
    return context.leadership
  }
  return setup({
    types: { context: {} as Ctx, events: {} as { type: 'STOP' } },
    actors: {
      elect: fromPromise<Leadership | null>(() => ports.elect()),
      renew: fromPromise<void, Leadership>(({ input }) => ports.renew(input)),
      tick: fromPromise<void, Leadership>(({ input, signal }) => ports.tick(input, signal)),
      resign: fromPromise<void, { leadership: Leadership | null; reason: StepDownReason }>(({ input }) => ports.resign(input.leadership, input.reason)),
    },
    delays: { retry: timing.retryMs, renew: timing.renewMs, tick: timing.tickMs },
  }).createMachine({
    id: 'supervisor',
    initial: 'standby',
    context: { leadership: null, reason: 'stopping', stopping: false },
    states: {
      standby: {
        initial: 'electing',
        on: { STOP: { target: 'stopped', actions: assign({ stopping: true }) } },
        states: {
          electing: {
            invoke: {
              src: 'elect',
              onDone: [
                { guard: ({ event }) => event.output !== null, target: '#supervisor.leading', actions: assign({ leadership: ({ event }) => event.output }) },
                { target: 'waiting' },
              ],
              onError: { target: 'waiting' },
            },
          },
          waiting: { after: { retry: 'electing' } },
        },
      },
      leading: {
        type: 'parallel',
        on: { STOP: { target: 'steppingDown', actions: assign({ stopping: true, reason: 'stopping' }) } },
        states: {
          lease: {
            initial: 'holding',
            states: {
              holding: { after: { renew: 'renewing' } },
              renewing: {
                invoke: {
                  src: 'renew',
                  input: leadershipOf,
                  onDone: 'holding',
                  onError: { target: '#supervisor.steppingDown', actions: assign({ reason: ({ event }) => (event.error instanceof LeaderDeposedError ? 'deposed' : 'lease_lost') }) },
                },
              },
            },
          },
          duties: {
            initial: 'working',
            states: {
              working: {
                invoke: {
                  src: 'tick',
                  input: leadershipOf,
                  onDone: 'resting',
                  onError: [
                    { guard: ({ event }) => event.error instanceof LeaderDeposedError, target: '#supervisor.steppingDown', actions: assign({ reason: 'deposed' }) },
                    { target: 'resting' },
                  ],
                },
              },
              resting: { after: { tick: 'working' } },
            },
          },
        },
      },
      steppingDown: {
        on: { STOP: { actions: assign({ stopping: true }) } },
        invoke: {
          src: 'resign',
          input: ({ context }) => ({ leadership: context.leadership, reason: context.reason }),
          onDone: [{ guard: ({ context }) => context.stopping, target: 'stopped' }, { target: 'standby', actions: assign({ leadership: null }) }],
          onError: [{ guard: ({ context }) => context.stopping, target: 'stopped' }, { target: 'standby', actions: assign({ leadership: null }) }],
        },
      },
      stopped: { type: 'final' },
    },
  })
}

/** The supervisor's state as shown in its health record: `leader`, `standby`, `stepping-down` or `stopped`. */
export type SupervisorRole = 'leader' | 'standby' | 'stepping-down' | 'stopped'

/** `p`, unless it has not settled after `ms`: then rejects with `onTimeout()` (and `p` is left to settle unobserved). */
async function within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms))
  })
  p.catch(() => undefined)
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** The supervisor hosted by a runtime process (role `supervisor`). */
export class SupervisorService implements HostedService {
  readonly role = 'supervisor'
  readonly opts: ResolvedSupervisorOptions
  private rt: Runtime | null = null
  private actor: Actor<ReturnType<typeof createSupervisorMachine>> | null = null
  private redlock: Redlock | null = null
  private metrics: SupervisorMetrics | null = null
  private sd: SdServer | null = null
  private client: TroupeClient | null = null
  private ticking: Promise<unknown> = Promise.resolve()
  /** The election in flight: a stop waits for it, so that a lease it won is handed back while Redis is still connected. */
  private electing: Promise<unknown> = Promise.resolve()
  private stopping = false
  /** The last tick's report while leading (for tests and debugging). */
  lastTick: TickReport | null = null

  constructor(opts: SupervisorOptions = {}) {
    this.opts = resolveSupervisorOptions(opts)
  }

  /** This process's supervisor state. */
  get state(): SupervisorRole {
    const snap = this.actor?.getSnapshot()
    if (!snap || snap.status !== 'active') return 'stopped'
    if (snap.matches('leading')) return 'leader'
    if (snap.matches('steppingDown')) return 'stepping-down'
    return 'standby'
  }

  /** The term this process leads, or 0. */
  get term(): number {
    return this.state === 'leader' ? (this.actor?.getSnapshot().context.leadership?.term ?? 0) : 0
  }

  /** URL of the Prometheus HTTP SD endpoint ('' when disabled). */
  get sdUrl(): string {
    return this.sd?.url ?? ''
  }

  async start(rt: Runtime): Promise<void> {
    this.rt = rt
    this.metrics = new SupervisorMetrics(rt.metrics.registry)
    this.redlock = new Redlock([rt.redis], { retryCount: 0, driftFactor: 0.01, automaticExtensionThreshold: 0 })
    this.client = new TroupeClient(rt.redis, rt.cfg)
    if (this.opts.sdPort !== false) {
      this.sd = new SdServer(rt.redis, rt.keys, { deadAfterMissed: this.opts.deadAfterMissed })
      await this.sd.start(this.opts.sdPort, this.opts.sdHost)
    }
    const o = this.opts
    this.actor = createActor(createSupervisorMachine(this.ports(), { retryMs: o.retryMs, renewMs: Math.max(10, Math.floor(o.leaseMs / 3)), tickMs: o.tickMs }))
    this.actor.start()
    rt.log.info(`supervisor ${rt.serviceId} started as standby (lease ${o.leaseMs} ms, tick ${o.tickMs} ms${this.sdUrl ? `, service discovery ${this.sdUrl}` : ''})`)
  }

  async stop(): Promise<void> {
    this.stopping = true
    const actor = this.actor
    if (actor) {
      actor.send({ type: 'STOP' })
      await waitFor(actor, (s) => s.status === 'done', { timeout: this.opts.leaseMs + 5000 }).catch(() => undefined)
      actor.stop()
      await within(this.electing, this.opts.leaseMs + 5000, () => new Error('election did not finish')).catch(() => undefined)
    }
    await this.sd?.stop()
    this.metrics?.setCluster(null)
  }

  ready(): Promise<boolean> {
    return Promise.resolve(this.actor !== null)
  }

  health(): Record<string, string> {
    return { supervisor: this.state, supervisorTerm: String(this.term), sdUrl: this.sdUrl }
  }

  private ports(): SupervisorPorts {
    const rt = this.rt as Runtime
    const redlock = this.redlock as Redlock
    const metrics = this.metrics as SupervisorMetrics
    const o = this.opts
    const infoTtl = o.leaseMs * 2
    const resign = async (l: Leadership | null, reason: StepDownReason): Promise<void> => {
      metrics.stepDowns.inc({ reason })
      metrics.setLeader('', 0, false)
      metrics.setCluster(null)
      if (!l) return
      // The duties' writes are fenced anyway; waiting lets a clean stop finish its tick.
      await within(this.ticking, 5000, () => new Error('tick did not finish')).catch(() => undefined)
      await l.fence
        .write([
          { cmd: 'DEL', key: rt.keys.leaderInfo(), args: [] },
          { cmd: 'PUBLISH', args: [rt.keys.systemChannel(), JSON.stringify({ type: 'system.leader.resigned', at: Date.now(), term: l.term, leader: rt.serviceId, reason })] },
        ])
        .catch(() => undefined)
      await l.lock.release().catch(() => undefined)
      rt.log.info(`supervisor ${rt.serviceId} stopped leading (term ${l.term}, ${reason})`)
    }
    const elect = async (): Promise<Leadership | null> => {
      let lock: Lock
      try {
        lock = await redlock.acquire([rt.keys.leader()], o.leaseMs, { retryCount: 0 })
      } catch {
        // Someone else leads; a broken info record only costs the leader label.
        const info: Record<string, string> = await rt.redis.hgetall(rt.keys.leaderInfo()).catch(() => ({}))
        metrics.setLeader(info.serviceId ?? '', Number(info.term ?? 0), false)
        return null
      }
      if (this.stopping) {
        await lock.release().catch(() => undefined)
        return null
      }
      let term: number
      try {
        term = Number(await runSupervisorScript(rt.redis, 'takeover', [rt.keys.leader(), rt.keys.leaderTerm(), rt.keys.leaderInfo()], [lock.value, rt.serviceId, infoTtl, rt.keys.systemChannel(), this.sdUrl]))
      } catch (err) {
        await lock.release().catch(() => undefined)
        rt.log.warn(`supervisor ${rt.serviceId} won the lock but could not take over; standing by`, { error: err instanceof Error ? err.message : String(err) })
        throw err
      }
      const fence = new LeaderFence(rt.redis, rt.keys, rt.serviceId, term)
      const duties = new LeaderDuties({ redis: rt.redis, keys: rt.keys, client: this.client as TroupeClient, log: rt.log, metrics }, fence, o)
      if (this.stopping) {
        // Stopped while taking over: the machine has left the election and
        // drops what it returns, so hand the lease back here, not a lease later.
        await resign({ lock, term, fence, duties, since: Date.now() }, 'stopping')
        return null
      }
      metrics.elections.inc()
      metrics.setLeader(rt.serviceId, term, true)
      rt.log.info(`supervisor ${rt.serviceId} leads (term ${term})`)
      return { lock, term, fence, duties, since: Date.now() }
    }
    return {
      elect: () => {
        const run = elect()
        this.electing = run.catch(() => undefined)
        return run
      },
      renew: async (l) => {
        // A lease we cannot extend before it runs out is lost, even if the call is merely slow.
        l.lock = await within(l.lock.extend(o.leaseMs), l.lock.expiration - Date.now(), () => new Error('lease ran out while extending it'))
        await l.fence.write([
          { cmd: 'HSET', key: rt.keys.leaderInfo(), args: ['renewedAt', Date.now()] },
          { cmd: 'PEXPIRE', key: rt.keys.leaderInfo(), args: [infoTtl] },
        ])
      },
      tick: async (l, signal) => {
        const started = process.hrtime.bigint()
        const run = l.duties.tick(signal)
        this.ticking = run.catch(() => undefined)
        try {
          this.lastTick = await run
          metrics.ticks.inc({ outcome: this.lastTick.errors.length === 0 ? 'ok' : 'error' })
        } catch (err) {
          metrics.ticks.inc({ outcome: 'error' })
          if (err instanceof LeaderDeposedError) metrics.deposedWrites.inc()
          throw err
        } finally {
          metrics.tickDuration.observe(Number(process.hrtime.bigint() - started) / 1e9)
        }
      },
      resign,
    }
  }
}

/**
 * Creates the supervisor as a service for `startRuntime({ services })` or
 * `troupe start --supervisor`.
 *
 * @example
 * ```ts
 * const rt = await startRuntime({ agents: [], services: [supervisorService({ tickMs: 1000 })] })
 * ```
 */
export function supervisorService(opts: SupervisorOptions = {}): SupervisorService {
  return new SupervisorService(opts)
}
