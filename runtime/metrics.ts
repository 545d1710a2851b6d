// One prom-client Registry per process, `troupe_` prefix, base units, no workflow
// or user ids in labels (docs/metrics.md describes each series).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

// Actions last from microseconds (no-op) to many minutes (LLM calls).
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]

/** The runtime's metrics, registered on their own Registry. */
export class RuntimeMetrics {
  readonly registry = new Registry()
  readonly actions = new Counter({ name: 'troupe_actions_total', help: 'Actions finished, by agent and outcome (completed, retried, dead, cancelled)', labelNames: ['agent', 'outcome'], registers: [this.registry] })
  readonly actionDuration = new Histogram({ name: 'troupe_action_duration_seconds', help: 'Time to run one action: from its delivery until its machine settles (the commit is not included)', labelNames: ['agent'], buckets: DURATION_BUCKETS, registers: [this.registry] })
  readonly queueWait = new Histogram({ name: 'troupe_queue_wait_seconds', help: 'Time from an action being due to its delivery', labelNames: ['agent'], buckets: DURATION_BUCKETS, registers: [this.registry] })
  readonly activations = new Counter({ name: 'troupe_activations_total', help: 'Actor activations (lock taken, snapshot restored)', labelNames: ['agent'], registers: [this.registry] })
  readonly lockContention = new Counter({ name: 'troupe_lock_contention_total', help: 'Picks that found the actor lock held by another process', labelNames: ['agent'], registers: [this.registry] })
  readonly fenceRejections = new Counter({ name: 'troupe_fence_rejections_total', help: 'Commits rejected because a newer activation owns the actor (zombie writes prevented)', labelNames: ['agent'], registers: [this.registry] })
  readonly wakeUps = new Counter({ name: 'troupe_wakeups_total', help: 'Idle workers woken by their agent\'s wake-up marker (one per hinted batch of work, not one per process)', labelNames: ['agent'], registers: [this.registry] })
  readonly handOffs = new Counter({ name: 'troupe_handoffs_total', help: 'Actors sent work by a commit in this process and taken by its own next pick (a free local slot), without a hint write or a wake-up to other processes', labelNames: ['agent'], registers: [this.registry] })
  readonly versionHandBacks = new Counter({ name: 'troupe_version_handbacks_total', help: 'Actions handed back because a newer version of their agent wrote the actor\'s snapshot, or alone handles the action\'s type (a rolling update under way)', labelNames: ['agent'], registers: [this.registry] })
  readonly redeliveries = new Counter({ name: 'troupe_redeliveries_total', help: 'Actions redelivered after an activation died with them in flight', labelNames: ['agent'], registers: [this.registry] })
  readonly transitions = new Counter({ name: 'troupe_transitions_total', help: 'State transitions of agent machines', labelNames: ['agent'], registers: [this.registry] })
  readonly activeActors = new Gauge({ name: 'troupe_active_actors', help: 'Actors activated in this process now', labelNames: ['agent'], registers: [this.registry] })
  readonly eventsPublished = new Counter({ name: 'troupe_events_published_total', help: 'Workflow events appended and published by this process (excluding script-made ones)', labelNames: ['agent'], registers: [this.registry] })
  readonly protocolErrors = new Counter({ name: 'troupe_protocol_errors_total', help: 'Unexpected errors in the claim protocol (Redis down, OOM, bad data), by step', labelNames: ['step'], registers: [this.registry] })
  readonly buildInfo = new Gauge({ name: 'troupe_build_info', help: 'Always 1; labels carry the version and Node version', labelNames: ['version', 'node'], registers: [this.registry] })

  constructor(opts: { defaults?: boolean; version?: string } = {}) {
    if (opts.defaults !== false) collectDefaultMetrics({ register: this.registry })
    this.buildInfo.set({ version: opts.version ?? '0.0.0', node: process.version }, 1)
  }
}
