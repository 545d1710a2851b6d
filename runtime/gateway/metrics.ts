// The gateway's Prometheus series, registered on the hosting runtime's Registry.
// Labels stay bounded: `route` is the Fastify route pattern (never an id),
// `reason` and `kind` are small fixed sets.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

// HTTP handlers answer in well under a second; SSE streams are not timed here.
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * Why an SSE client was dropped: its socket stayed full (`slow`), it fell too far
 * behind (`overflow`), or its token or session expired or was revoked (`unauthorized`).
 */
export type DropReason = 'slow' | 'overflow' | 'unauthorized'

const byRegistry = new WeakMap<Registry, GatewayMetrics>()

/** Series of one gateway. */
export class GatewayMetrics {
  /** The gateway series on `registry`, registered once (a restarted gateway keeps counting). */
  static for(registry: Registry): GatewayMetrics {
    let m = byRegistry.get(registry)
    if (!m) {
      m = new GatewayMetrics(registry)
      byRegistry.set(registry, m)
    }
    return m
  }

  readonly sseConnections: Gauge
  readonly sseDropped: Counter<'reason'>
  readonly authFailures: Counter<'reason'>
  readonly rateLimited: Counter<'kind'>
  readonly httpRequests: Counter<'route' | 'status'>
  readonly httpDuration: Histogram<'route'>

  private constructor(registry: Registry) {
    const registers = [registry]
    this.sseConnections = new Gauge({ name: 'troupe_sse_connections', help: 'Open SSE streams served by this gateway', registers })
    this.sseDropped = new Counter({ name: 'troupe_sse_dropped_total', help: 'SSE streams ended by the gateway: too slow or too far behind (they resume on reconnect), or their credential expired or was revoked', labelNames: ['reason'], registers })
    this.authFailures = new Counter({ name: 'troupe_auth_failures_total', help: 'Rejected authentications, by reason', labelNames: ['reason'], registers })
    this.rateLimited = new Counter({ name: 'troupe_rate_limited_total', help: 'Requests answered 429, by limit kind (rate, quota, auth, streams)', labelNames: ['kind'], registers })
    this.httpRequests = new Counter({ name: 'troupe_http_requests_total', help: 'HTTP requests answered, by route pattern and status', labelNames: ['route', 'status'], registers })
    this.httpDuration = new Histogram({ name: 'troupe_http_request_duration_seconds', help: 'Time to answer an HTTP request (SSE: time to open the stream)', labelNames: ['route'], buckets: HTTP_BUCKETS, registers })
  }
}
