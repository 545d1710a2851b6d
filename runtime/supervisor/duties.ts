// One leader tick: every duty in turn, each writing only through the term's
// fence. A duty that fails is logged and counted and the others still run; a
// LeaderDeposedError ends the tick at once (someone else leads now).
import type { TroupeClient } from '../client.ts'
import { fleetSettings } from '../config.ts'
import type { Logger } from '../log.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { deadlineDuty, type DeadlineOutcome } from './deadlines.ts'
import { checkFleetSettings, describeMismatch, type FleetCheck } from './fleet-settings.ts'
import { LeaderDeposedError, type LeaderFence, type SystemEvent } from './fence.ts'
import { healthDuty, readFleet, type FleetSnapshot, type HealthPass } from './health.ts'
import type { SupervisorMetrics } from './metrics.ts'
import { knownAgents, readQueues, serverNow, type AgentQueue } from './queues.ts'
import { forgettable, readRegistry, REGISTRATION_FORGET_MS, withQueuedWork, type RegistryEntry } from './registry.ts'
import { buildRollup, readPersistence, readRollup, rollupWrites, sweepFromRollup, type PersistenceBacklog, type Rollup } from './rollups.ts'
import { StuckTracker, type StuckActor } from './stuck.ts'
import { WorkflowSweep, type ForgetFigures } from './sweep.ts'

/** Tunables of the leader's duties (see docs/supervisor.md). */
export interface DutyOptions {
  deadAfterMissed: number
  keepDeadMs: number
  stuckAfterMs: number
  failingActivations: number
  deadlineBatch: number
  deadlineLeaseMs: number
  rollupTtlMs: number
  sweepBudget: number
  sweepMaxMs: number
  sweepWindowMs: number
  repairGraceMs: number
  maxActorsPerAgent: number
  forgetAfterMs: number
  forgetEveryMs: number
  forgetPage: number
  forgetCalls: number
}

/** What one tick did (for logs and tests). */
export interface TickReport {
  health: HealthPass | null
  deadlines: DeadlineOutcome[]
  stuck: StuckActor[]
  sweptAt: number | null
  /** The pass forgetting finished actions' records that this tick completed, if any. */
  forgot: ForgetFigures | null
  rollup: Rollup | null
  /** The fleet-settings check of the agents live services host (null when it could not run). */
  fleetSettings: FleetCheck[] | null
  /** Agents whose registration was removed from `system:agents` (see registry.ts). */
  forgottenAgents: string[]
  errors: string[]
}

/** What the duties need from their host. */
export interface DutyDeps {
  redis: RedisClient
  keys: Keys
  client: TroupeClient
  log: Logger
  metrics: SupervisorMetrics
}

/** The duties of one leadership term; a new term starts with fresh memory. */
export class LeaderDuties {
  private readonly stuck: StuckTracker
  private readonly sweep: WorkflowSweep
  private readonly reportedProblems = new Set<string>()
  /** The previous term's sweep figures were looked for (see tick). */
  private seeded = false
  /** The fleet-settings mismatch last logged ('' = none): logged when it changes, not every tick. */
  private loggedMismatch = ''

  constructor(
    private readonly deps: DutyDeps,
    private readonly fence: LeaderFence,
    private readonly opts: DutyOptions,
  ) {
    this.stuck = new StuckTracker({ stuckAfterMs: opts.stuckAfterMs, failingActivations: opts.failingActivations })
    this.sweep = new WorkflowSweep(deps.redis, deps.keys, {
      windowMs: opts.sweepWindowMs,
      graceMs: opts.repairGraceMs,
      forgetAfterMs: opts.forgetAfterMs,
      forgetEveryMs: opts.forgetEveryMs,
      forgetPage: opts.forgetPage,
      forgetCalls: opts.forgetCalls,
      onRepair: (actors) => {
        deps.metrics.repairs.inc(actors.length)
        deps.log.warn(`re-hinted ${actors.length} actors whose due work had no ready hint: ${actors.slice(0, 5).map((a) => `${a.agent} in ${a.wf}`).join(', ')}${actors.length > 5 ? ', ...' : ''}`)
      },
    })
  }

  private async guard<T>(name: string, errors: string[], fn: () => Promise<T>): Promise<T | null> {
    try {
      return await fn()
    } catch (err) {
      if (err instanceof LeaderDeposedError) throw err
      const msg = err instanceof Error ? err.message : String(err)
      errors.push(`${name}: ${msg}`)
      this.deps.log.warn(`supervisor ${name} failed; continuing`, { error: msg })
      return null
    }
  }

  private reportProblems(fleet: FleetSnapshot): void {
    for (const p of fleet.problems) {
      const key = `${p.kind}\u0000${p.serviceId}`
      if (this.reportedProblems.has(key)) continue
      this.reportedProblems.add(key)
      this.deps.metrics.badRecords.inc({ kind: p.kind })
      this.deps.log.warn(`skipping ${p.kind === 'corrupt' ? 'corrupted health record of' : 'unknown id'} ${JSON.stringify(p.serviceId)} in system:services: ${p.detail}`)
    }
  }

  /** Compares the settings the runtimes of `hosted` agents registered with ours; see fleet-settings.ts. */
  private async checkFleet(hosted: ReadonlySet<string>, errors: string[]): Promise<FleetCheck[] | null> {
    const { client, log, metrics } = this.deps
    const mine = fleetSettings(client.cfg)
    const checks = await this.guard('fleet settings', errors, async () => checkFleetSettings(await client.agents(), hosted, mine))
    if (!checks) return null
    metrics.setFleetChecks(checks)
    const msg = describeMismatch(checks, mine) ?? ''
    if (msg !== this.loggedMismatch) {
      if (msg) log.warn(msg)
      else log.info('fleet settings agree again: every live runtime registered this supervisor\'s TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN and TROUPE_RETENTION_MS')
      this.loggedMismatch = msg
    }
    return checks
  }

  /**
   * Removes the registrations of agents no live service hosts, last written more
   * than REGISTRATION_FORGET_MS ago, with no hinted actors (see registry.ts).
   */
  private async forgetAgents(registry: readonly RegistryEntry[], hosted: ReadonlySet<string>, now: number): Promise<string[]> {
    const old = forgettable(registry, hosted, new Set(), now)
    if (old.length === 0) return []
    const queued = await withQueuedWork(this.deps.redis, this.deps.keys, old)
    const gone = await this.fence.forgetAgents(forgettable(old, hosted, queued, now))
    if (gone.length > 0) {
      this.deps.log.info(`removed the registrations of ${gone.join(', ')} from system:agents: not rewritten for ${Math.round(REGISTRATION_FORGET_MS / 60_000)} minutes or more (or never dated), no live service hosts them and none of their actors is hinted`)
    }
    return gone
  }

  /** Says what a completed pass forgetting finished actions' records did, when it did anything. */
  private logForgotten(f: ForgetFigures): void {
    const secs = Math.round((f.finishedAt - f.startedAt) / 1000)
    if (f.removed > 0) {
      this.deps.log.info(`forgot the records of ${f.removed} finished actions in ${f.removedFrom} of ${f.workflows} live workflows (done over ${this.opts.forgetAfterMs >= 60_000 ? `${Math.round(this.opts.forgetAfterMs / 60_000)} minutes` : `${Math.round(this.opts.forgetAfterMs / 1000)} s`} ago, their completion no longer in the stream; pass of ${secs} s)`)
    }
    if (f.failed > 0) this.deps.log.warn(`forgetting finished actions' records skipped ${f.failed} workflows, left for the next pass; last error: ${f.lastError ?? '?'}`)
  }

  /** Runs every duty once. */
  async tick(signal?: AbortSignal): Promise<TickReport> {
    const { redis, keys, log, metrics } = this.deps
    const fence = this.fence
    const o = this.opts
    const errors: string[] = []
    const report: TickReport = { health: null, deadlines: [], stuck: [], sweptAt: null, forgot: null, rollup: null, fleetSettings: null, forgottenAgents: [], errors }

    if (!this.seeded && !this.sweep.last) {
      // A new term reports the previous leader's last sweep until its own first
      // one completes (looked for again next tick if the read failed).
      const failed = errors.length
      const prev = await this.guard('previous rollup', errors, () => readRollup(redis, keys))
      if (errors.length === failed) this.seeded = true
      const figures = prev ? sweepFromRollup(prev) : null
      if (figures && !this.sweep.last) this.sweep.last = figures
    }

    // Judged by Redis's clock, which heartbeats are stamped with: a supervisor
    // host whose clock runs ahead would mark every service dead each tick.
    const fleet = await this.guard('health scan', errors, async () => readFleet(redis, keys, { deadAfterMissed: o.deadAfterMissed, now: await serverNow(redis) }))
    if (fleet) {
      this.reportProblems(fleet)
      report.health = await this.guard('health', errors, () => healthDuty(fence, fleet, o))
      for (const id of report.health?.markedDead ?? []) {
        metrics.markedDead.inc()
        log.warn(`service ${id} is dead (missed ${o.deadAfterMissed}+ heartbeats); its actors are picked up again as their leases run out`)
      }
    }
    if (signal?.aborted) return report

    report.deadlines = (await this.guard('deadlines', errors, () => deadlineDuty(fence, this.deps.client, { batch: o.deadlineBatch, leaseMs: o.deadlineLeaseMs }, log, signal))) ?? []
    for (const d of report.deadlines.filter((x) => x.result === 'fired')) {
      metrics.deadlinesFired.inc()
      log.info(`workflow ${d.wf} failed: deadline passed (${d.dropped} queued actions dropped)`)
    }
    if (signal?.aborted) return report

    // The sweep goes first: the queue figures below must cover every agent named
    // by the sweep this tick's rollup reports (an agent nobody hosts is known only
    // from the workflows the sweep read).
    const sweepUntil = Date.now() + o.sweepMaxMs
    if (await this.guard('sweep', errors, () => this.sweep.step(o.sweepBudget, fence, signal, o.sweepMaxMs))) report.sweptAt = this.sweep.last?.startedAt ?? null
    if (signal?.aborted) return report
    // A duty of its own, so that its failure leaves the sweep's figures be;
    // within what the sweep left of its time (past it, one round trip).
    report.forgot = await this.guard('forgetting finished actions', errors, () => this.sweep.forget(fence, signal, Math.max(0, sweepUntil - Date.now())))
    if (report.forgot) this.logForgotten(report.forgot)
    if (signal?.aborted) return report

    const clock = await this.guard('clock', errors, () => serverNow(redis))
    const now = clock ?? Date.now()
    const hosted = new Set((fleet?.services ?? []).filter((s) => s.status === 'alive').flatMap((s) => s.agents))
    const named = [...(fleet?.services ?? []).flatMap((s) => s.agents), ...(this.sweep.last?.agents ?? [])]
    const registry = await this.guard('registry', errors, () => readRegistry(redis, keys))
    const agents = await this.guard('agents', errors, () => knownAgents(redis, keys, named, { now, registry: registry ?? undefined }))
    if (fleet) report.fleetSettings = await this.checkFleet(hosted, errors)
    // Only with the fleet and Redis's clock read: without them every agent would
    // look unhosted, or every registration as old as the local clock made it.
    if (fleet && registry && clock !== null) report.forgottenAgents = (await this.guard('registry pruning', errors, () => this.forgetAgents(registry, hosted, clock))) ?? []
    const queues = (await this.guard('queues', errors, () => readQueues(redis, keys, agents ?? [], now, o.maxActorsPerAgent))) ?? new Map<string, AgentQueue>()
    report.stuck = this.stuck.observe(queues.values(), hosted, now)
    if (report.stuck.length > 0) {
      await this.guard('stuck', errors, () =>
        fence.write(report.stuck.map((s) => {
          const { wf, ...rest } = s
          const ev: SystemEvent = { type: 'system.actor.stuck', at: Date.now(), term: fence.term, leader: fence.serviceId, workflowId: wf, ...rest }
          return { cmd: 'PUBLISH' as const, args: [keys.systemChannel(), JSON.stringify(ev)] }
        })),
      )
      for (const s of report.stuck) {
        metrics.stuckReports.inc({ agent: s.agent, reason: s.reason })
        log.warn(`actor ${s.agent} in ${s.wf} is stuck (${s.reason}${s.noWorker ? ', no live worker hosts this agent' : ''}): waiting ${Math.round(s.waitingMs / 1000)} s`)
      }
    }
    if (signal?.aborted) return report

    const persistence: PersistenceBacklog = (await this.guard('persistence', errors, () => readPersistence(redis, keys))) ?? { length: 0, pending: 0, lag: 0, group: false }
    if (fleet) {
      const rollup = buildRollup({ at: now, term: fence.term, leader: fence.serviceId, fleet, queues, stuck: this.stuck.counts(), sweep: this.sweep.last, persistence })
      await this.guard('rollups', errors, () => fence.write(rollupWrites(keys, rollup, o.rollupTtlMs)))
      report.rollup = rollup
      metrics.setCluster(rollup)
      for (const [agent, c] of this.stuck.counts()) for (const [reason, n] of Object.entries(c)) metrics.stuckActors.set({ agent, reason }, n)
    }
    return report
  }
}
