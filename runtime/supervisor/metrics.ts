// The supervisor's series on its process's Registry. Cluster-level gauges
// (`troupe_cluster_*`) are set only by the leader and cleared by a standby, so
// summing them over instances never double-counts.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { FleetCheck } from './fleet-settings.ts'
import type { Rollup } from './rollups.ts'

/** Supervisor metrics, registered on a runtime's Registry. */
export class SupervisorMetrics {
  readonly isLeader: Gauge
  readonly leader: Gauge
  readonly term: Gauge
  readonly elections: Counter
  readonly stepDowns: Counter
  readonly ticks: Counter
  readonly tickDuration: Histogram
  readonly markedDead: Counter
  readonly deadlinesFired: Counter
  readonly stuckReports: Counter
  readonly stuckActors: Gauge
  readonly repairs: Counter
  readonly badRecords: Counter
  readonly deposedWrites: Counter
  readonly clusterServices: Gauge
  readonly clusterQueued: Gauge
  readonly clusterDue: Gauge
  readonly clusterOldestDue: Gauge
  readonly clusterActive: Gauge
  readonly clusterDeadLetters: Gauge
  readonly clusterActionsPerMinute: Gauge
  readonly clusterPersistence: Gauge
  readonly clusterFleetMismatch: Gauge
  private leaderLabel = ''

  constructor(registry: Registry) {
    const r = [registry]
    this.isLeader = new Gauge({ name: 'troupe_supervisor_is_leader', help: '1 while this process is the supervisor leader', registers: r })
    this.leader = new Gauge({ name: 'troupe_supervisor_leader', help: 'Always 1; the label names the current supervisor leader as this process last saw it', labelNames: ['service'], registers: r })
    this.term = new Gauge({ name: 'troupe_supervisor_term', help: 'Fenced leader term this process last saw (grows on every takeover)', registers: r })
    this.elections = new Counter({ name: 'troupe_supervisor_elections_total', help: 'Times this process took over as leader', registers: r })
    this.stepDowns = new Counter({ name: 'troupe_supervisor_step_downs_total', help: 'Times this process stopped leading, by reason (lease_lost, deposed, stopping)', labelNames: ['reason'], registers: r })
    this.ticks = new Counter({ name: 'troupe_supervisor_ticks_total', help: 'Leader ticks, by outcome (ok, error)', labelNames: ['outcome'], registers: r })
    this.tickDuration = new Histogram({ name: 'troupe_supervisor_tick_duration_seconds', help: 'Time one leader tick takes', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: r })
    this.markedDead = new Counter({ name: 'troupe_supervisor_services_marked_dead_total', help: 'Services this leader marked dead after missed heartbeats', registers: r })
    this.deadlinesFired = new Counter({ name: 'troupe_supervisor_deadlines_fired_total', help: 'Workflows failed with reason deadline by this leader', registers: r })
    this.stuckReports = new Counter({ name: 'troupe_supervisor_stuck_reports_total', help: 'Actors reported stuck, by agent and reason (unpicked, failing)', labelNames: ['agent', 'reason'], registers: r })
    this.stuckActors = new Gauge({ name: 'troupe_supervisor_stuck_actors', help: 'Actors stuck now, by agent and reason (leader only)', labelNames: ['agent', 'reason'], registers: r })
    this.repairs = new Counter({ name: 'troupe_supervisor_repairs_total', help: 'Ready hints re-added for work nobody would have looked at', registers: r })
    this.badRecords = new Counter({ name: 'troupe_supervisor_bad_records_total', help: 'Unusable system:health records or system:services ids seen, by kind (corrupt, bad-id, unknown)', labelNames: ['kind'], registers: r })
    this.deposedWrites = new Counter({ name: 'troupe_supervisor_deposed_writes_total', help: 'Writes refused because another leader took over (a paused leader was fenced off)', registers: r })
    this.clusterServices = new Gauge({ name: 'troupe_cluster_services', help: 'Services by status (alive, stopped, dead; unusable = records skipped), from the leader', labelNames: ['status'], registers: r })
    this.clusterQueued = new Gauge({ name: 'troupe_cluster_queue_depth', help: 'Actions waiting in mailboxes, by agent, from the leader', labelNames: ['agent'], registers: r })
    this.clusterDue = new Gauge({ name: 'troupe_cluster_due_actions', help: 'Actions due now and not yet delivered, by agent, from the leader', labelNames: ['agent'], registers: r })
    this.clusterOldestDue = new Gauge({ name: 'troupe_cluster_oldest_due_action_seconds', help: 'Age of the oldest due action, by agent, from the leader', labelNames: ['agent'], registers: r })
    this.clusterActive = new Gauge({ name: 'troupe_cluster_active_actors', help: 'Actors active in live processes, by agent, from the leader', labelNames: ['agent'], registers: r })
    this.clusterDeadLetters = new Gauge({ name: 'troupe_cluster_dead_letters', help: 'Dead-lettered actions still stored, by agent, from the leader\'s last sweep', labelNames: ['agent'], registers: r })
    this.clusterActionsPerMinute = new Gauge({ name: 'troupe_cluster_actions_per_minute', help: 'Actions completed or failed in the minute before the last sweep, by agent and outcome', labelNames: ['agent', 'outcome'], registers: r })
    this.clusterPersistence = new Gauge({ name: 'troupe_cluster_persistence_backlog', help: 'persistence:queue entries, by kind (length, pending, lag)', labelNames: ['kind'], registers: r })
    this.clusterFleetMismatch = new Gauge({ name: 'troupe_cluster_fleet_mismatch', help: '1 when the runtimes hosting the agent registered TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN or TROUPE_RETENTION_MS other than the leader supervisor\'s, 0 when they agree; by agent, from the leader', labelNames: ['agent'], registers: r })
  }

  /** Records who leads (as seen by this process) and whether it is us. */
  setLeader(serviceId: string, term: number, self: boolean): void {
    if (serviceId !== this.leaderLabel) {
      this.leader.reset()
      if (serviceId) this.leader.set({ service: serviceId }, 1)
      this.leaderLabel = serviceId
    }
    if (term > 0) this.term.set(term)
    this.isLeader.set(self ? 1 : 0)
  }

  /** Publishes a rollup as cluster gauges (leader) or clears them (`null`, standby). */
  setCluster(r: Rollup | null): void {
    for (const g of [this.clusterServices, this.clusterQueued, this.clusterDue, this.clusterOldestDue, this.clusterActive, this.clusterDeadLetters, this.clusterActionsPerMinute, this.clusterPersistence, this.stuckActors]) g.reset()
    if (!r) {
      this.clusterFleetMismatch.reset()
      return
    }
    for (const [status, n] of Object.entries(r.services)) this.clusterServices.set({ status }, n)
    for (const [agent, f] of Object.entries(r.agents)) {
      this.clusterQueued.set({ agent }, f.queued)
      this.clusterDue.set({ agent }, f.due)
      this.clusterOldestDue.set({ agent }, f.oldestDueMs / 1000)
      this.clusterActive.set({ agent }, f.active)
      this.clusterDeadLetters.set({ agent }, f.deadLetters)
      this.clusterActionsPerMinute.set({ agent, outcome: 'completed' }, f.completedPerMin)
      this.clusterActionsPerMinute.set({ agent, outcome: 'failed' }, f.failedPerMin)
    }
    this.clusterPersistence.set({ kind: 'length' }, r.persistence.length)
    this.clusterPersistence.set({ kind: 'pending' }, r.persistence.pending)
    this.clusterPersistence.set({ kind: 'lag' }, r.persistence.lag)
  }

  /** Publishes the leader's fleet-settings check (see fleet-settings.ts); cleared with the cluster gauges. */
  setFleetChecks(checks: FleetCheck[]): void {
    this.clusterFleetMismatch.reset()
    for (const c of checks) this.clusterFleetMismatch.set({ agent: c.agent }, c.mismatch ? 1 : 0)
  }
}
