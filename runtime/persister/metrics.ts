// The persister's Prometheus series on the process registry (docs/persister.md).
// Lag and backlog are computed at scrape time from the last probe, so they keep
// growing while Redis or Neo4j is down instead of freezing at their last value.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** Kinds of error counted in `troupe_persister_errors_total{kind}` (a closed set: no unbounded labels). */
export type PersisterErrorKind = 'neo4j' | 'redis' | 'data' | 'reconcile' | 'retention'

/** Why an entry was parked (`troupe_persister_parked_total{reason}`). */
export type ParkReason = 'missing_fields' | 'bad_workflow_id' | 'bad_range' | 'empty_range' | 'too_many_deliveries' | 'unwritable'

/** What the last probe of `persistence:queue` saw. */
export interface QueueProbe {
  /** Entries in the stream (every one of them is unacked: acked entries are deleted). */
  length: number
  /** Server time (ms) of the oldest entry still in the stream, or null when empty. */
  oldestMs: number | null
  /** Server time minus local time at the probe, to age entries on the server's clock. */
  clockOffsetMs: number
}

/** The persister's metrics; several services in one process share the series. */
export class PersisterMetrics {
  readonly batchSize: Histogram
  readonly writeSeconds: Histogram
  readonly events: Counter
  readonly lag: Gauge
  readonly backlog: Gauge
  readonly parked: Counter<'reason'>
  readonly errors: Counter<'kind'>
  readonly backfilled: Counter
  readonly expired: Counter
  private probe: QueueProbe | null = null

  constructor(registry: Registry) {
    const existing = <T>(name: string): T | undefined => registry.getSingleMetric(name) as T | undefined
    this.batchSize = existing<Histogram>('troupe_persister_batch_size') ?? new Histogram({
      name: 'troupe_persister_batch_size', help: 'Events written per Neo4j transaction',
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000], registers: [registry],
    })
    this.writeSeconds = existing<Histogram>('troupe_persister_write_seconds') ?? new Histogram({
      name: 'troupe_persister_write_seconds', help: 'Time to write one batch: Redis reads, the Neo4j transaction and the ack',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
    })
    this.events = existing<Counter>('troupe_persister_events_total') ?? new Counter({ name: 'troupe_persister_events_total', help: 'Events written to Neo4j (a redelivered event counts again)', registers: [registry] })
    this.lag = existing<Gauge>('troupe_persister_lag_seconds') ?? new Gauge({
      name: 'troupe_persister_lag_seconds', help: 'Age of the oldest unacknowledged entry of persistence:queue (0 when empty)', registers: [registry],
      collect: () => {
        this.lag.set(this.lagMs() / 1000)
      },
    })
    this.backlog = existing<Gauge>('troupe_persister_backlog') ?? new Gauge({
      name: 'troupe_persister_backlog', help: 'Entries of persistence:queue not yet acknowledged', registers: [registry],
      collect: () => {
        this.backlog.set(this.probe?.length ?? 0)
      },
    })
    this.parked = existing<Counter<'reason'>>('troupe_persister_parked_total') ?? new Counter({ name: 'troupe_persister_parked_total', help: 'Persistence entries moved to persistence:parked, by reason', labelNames: ['reason'], registers: [registry] })
    this.errors = existing<Counter<'kind'>>('troupe_persister_errors_total') ?? new Counter({ name: 'troupe_persister_errors_total', help: 'Persister errors, by kind (neo4j, redis, data, reconcile, retention)', labelNames: ['kind'], registers: [registry] })
    this.backfilled = existing<Counter>('troupe_persister_backfilled_events_total') ?? new Counter({ name: 'troupe_persister_backfilled_events_total', help: 'Events written by reconciliation (they had no pointer, or theirs was lost)', registers: [registry] })
    this.expired = existing<Counter>('troupe_persister_expired_workflows_total') ?? new Counter({ name: 'troupe_persister_expired_workflows_total', help: 'Finished workflows whose Redis keys got their retention TTL after being fully persisted', registers: [registry] })
  }

  /** Records a probe of the queue. */
  setProbe(p: QueueProbe): void {
    this.probe = p
  }

  /** Age of the oldest unacked entry on the server's clock, in ms (0 when none). */
  lagMs(): number {
    const p = this.probe
    if (!p || p.oldestMs === null) return 0
    return Math.max(0, Date.now() + p.clockOffsetMs - p.oldestMs)
  }

  /** Entries waiting, as of the last probe. */
  backlogCount(): number {
    return this.probe?.length ?? 0
  }
}
