// The fleet view of `troupe status` (no workflow id): services from system:health.
import type { TroupeClient } from '../client.ts'
import { EXIT } from './common.ts'

/** One service as listed by the fleet view. */
export interface ServiceRow {
  serviceId: string
  status: 'alive' | 'stopped' | 'dead'
  roles: string
  agents: string
  lastSeen: number
  metricsUrl: string
}

/** Reads `system:services` and each `system:health:<id>`; a missing record means dead. */
export async function readServices(client: TroupeClient): Promise<ServiceRow[]> {
  const ids = await client.redis.zrange(client.keys.services(), '0', '-1', 'WITHSCORES')
  const rows: ServiceRow[] = []
  for (let i = 0; i < ids.length; i += 2) {
    const id = ids[i] as string
    const h = await client.redis.hgetall(client.keys.health(id))
    const lastSeen = Number(h.lastSeen ?? ids[i + 1])
    const every = Number(h.heartbeatMs ?? 2000)
    const status: ServiceRow['status'] = h.status === 'stopped' ? 'stopped' : h.status === 'dead' || !h.status || Date.now() - lastSeen > every * 3 ? 'dead' : 'alive'
    rows.push({ serviceId: id, status, roles: h.roles ?? '', agents: h.agents ?? '', lastSeen, metricsUrl: h.metricsUrl ?? '' })
  }
  return rows
}

/** Prints the fleet (table or JSON), once or every 2 s with `watch`. */
export async function fleetStatus(client: TroupeClient, opts: { json: boolean; watch: boolean }): Promise<number> {
  for (;;) {
    const services = await readServices(client)
    if (opts.json) process.stdout.write(`${JSON.stringify({ services })}\n`)
    else {
      if (opts.watch) process.stdout.write('\x1b[2J\x1b[H')
      const lines = [`services (${services.length}):`]
      if (services.length === 0) lines.push('  none: start one with `troupe start --agents <module>`')
      for (const s of services) {
        lines.push(`  ${s.serviceId.padEnd(32)} ${s.status.padEnd(8)} ${s.roles.padEnd(20)} ${s.agents.padEnd(30)} last seen ${Math.round((Date.now() - s.lastSeen) / 1000)}s ago`)
      }
      process.stdout.write(`${lines.join('\n')}\n`)
    }
    if (!opts.watch) return EXIT.ok
    await new Promise((r) => setTimeout(r, 2000))
  }
}
