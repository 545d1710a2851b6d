// Prometheus HTTP service discovery (`http_sd_configs`): a JSON list of target
// groups, one per live process with a metrics address, built from `system:health`.
// Every supervisor serves it, not only the leader: the list is read from Redis on
// request, so Prometheus can keep scraping targets while an election is under way.
import { createServer, type Server } from 'node:http'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { advertisedHost } from '../runtime.ts'
import { readFleet, type FleetSnapshot } from './health.ts'
import { serverNow } from './queues.ts'

/** One `http_sd_configs` target group. */
export interface SdTargetGroup {
  targets: string[]
  labels: Record<string, string>
}

/**
 * Target groups of the live services of `fleet` that publish a metrics URL.
 * Labels: `service_id`, `roles`, `agents`, `host`, plus `__metrics_path__` and
 * `__scheme__` taken from the URL.
 */
export function sdTargets(fleet: FleetSnapshot): SdTargetGroup[] {
  const out: SdTargetGroup[] = []
  for (const s of fleet.services) {
    if (s.status !== 'alive' || !s.metricsUrl) continue
    let url: URL
    try {
      url = new URL(s.metricsUrl)
    } catch {
      continue
    }
    out.push({
      targets: [url.host],
      labels: {
        __metrics_path__: url.pathname || '/metrics',
        __scheme__: url.protocol.replace(':', ''),
        service_id: s.serviceId,
        roles: s.roles.join(','),
        agents: s.agents.join(','),
        host: s.host,
      },
    })
  }
  return out.sort((a, b) => (a.labels.service_id ?? '').localeCompare(b.labels.service_id ?? ''))
}

/** Serves `GET /sd` (and `/`) with the current target groups. */
export class SdServer {
  private server: Server | null = null
  private cache: { at: number; body: string } | null = null
  /** `http://host:port/sd` once listening. */
  url = ''

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly opts: { deadAfterMissed: number; cacheMs?: number },
  ) {}

  private async body(): Promise<string> {
    const now = Date.now()
    if (this.cache && now - this.cache.at < (this.opts.cacheMs ?? 1000)) return this.cache.body
    const fleet = await readFleet(this.redis, this.keys, { deadAfterMissed: this.opts.deadAfterMissed, now: await serverNow(this.redis) })
    const body = JSON.stringify(sdTargets(fleet))
    this.cache = { at: now, body }
    return body
  }

  async start(port: number, host = '127.0.0.1'): Promise<void> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' || (path !== '/sd' && path !== '/')) {
        res.writeHead(404).end()
        return
      }
      this.body().then(
        (b) => res.writeHead(200, { 'content-type': 'application/json' }).end(b),
        (err: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(err instanceof Error ? err.message : 'unavailable'),
      )
    })
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject)
      this.server?.listen(port, host, () => resolve())
    })
    const addr = this.server.address()
    // The address others can use, as for metricsUrl: 0.0.0.0 names no host.
    if (addr && typeof addr === 'object') this.url = `http://${advertisedHost(host)}:${addr.port}/sd`
  }

  async stop(): Promise<void> {
    const s = this.server
    this.server = null
    if (!s) return
    // Prometheus keeps its connection open between refreshes; do not wait for it.
    s.closeAllConnections()
    await new Promise<void>((r) => s.close(() => r()))
  }
}
