// `troupe supervisor`: a process that runs only the leader-elected supervisor
// (the same service `troupe start --supervisor` hosts next to agents).
import type { SupervisorOptions } from '../supervisor/options.ts'
import { parse, portFlag, serveAlone, parseDuration, UsageError, type Command } from './common.ts'

const usage = `usage: troupe supervisor [options]

Runs the supervisor until SIGTERM/SIGINT. Run several for failover: one leads
(Redlock lease on system:leader), the others stand by and take over within a lease.
The leader marks dead services, reports stuck actors, enforces deadlines, writes
system:metrics:* rollups; every supervisor serves Prometheus HTTP service discovery.

options:
  --lease <dur>          leader lease (default 10s, TROUPE_SUPERVISOR_LEASE_MS)
  --tick <dur>           interval between leader ticks (default 2s, TROUPE_SUPERVISOR_TICK_MS)
  --dead-after <n>       heartbeats a service may miss before it is marked dead (default 3, at most 4)
  --stuck-after <dur>    how long work may wait before its actor is reported stuck (default 60s)
  --heartbeat <dur>      this process's own heartbeat interval (default 2s)
  --sd-port <port>       port of the HTTP service discovery endpoint /sd (default TROUPE_SD_PORT or a free one)
  --no-sd                do not serve service discovery
  --metrics-port <port>  port of /metrics, /healthz, /readyz (default TROUPE_METRICS_PORT or a free one)
  --allow-eviction       start even if Redis maxmemory-policy may evict keys
  --redis <url>          Redis URL (default REDIS_URL or redis://127.0.0.1:6379)
  --namespace <prefix:>  key prefix (default TROUPE_NAMESPACE or none)`

/** Supervisor options from the flags shared by `troupe supervisor` and `troupe start --supervisor`. */
export function supervisorFlags(v: Record<string, string | boolean | undefined>, prefix = ''): SupervisorOptions {
  const str = (name: string): string | undefined => {
    const x = v[`${prefix}${name}`]
    return typeof x === 'string' ? x : undefined
  }
  const o: SupervisorOptions = {}
  const lease = str('lease')
  if (lease !== undefined) o.leaseMs = parseDuration(lease)
  const tick = str('tick')
  if (tick !== undefined) o.tickMs = parseDuration(tick)
  const stuck = str('stuck-after')
  if (stuck !== undefined) o.stuckAfterMs = parseDuration(stuck)
  const dead = str('dead-after')
  if (dead) {
    const n = Number(dead)
    if (!Number.isInteger(n) || n < 1 || n > 4) throw new UsageError(`--${prefix}dead-after must be an integer from 1 to 4`)
    o.deadAfterMissed = n
  }
  const sd = portFlag(str('sd-port'), `--${prefix}sd-port`)
  if (sd !== undefined) o.sdPort = sd
  if (v[`${prefix}no-sd`] === true) o.sdPort = false
  return o
}

/** The `supervisor` command. */
export const command: Command = {
  summary: 'run the leader-elected supervisor (health, deadlines, rollups, service discovery)',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      lease: { type: 'string' },
      tick: { type: 'string' },
      'dead-after': { type: 'string' },
      'stuck-after': { type: 'string' },
      heartbeat: { type: 'string' },
      'sd-port': { type: 'string' },
      'no-sd': { type: 'boolean' },
      'metrics-port': { type: 'string' },
      'allow-eviction': { type: 'boolean' },
    })
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`)
    const v = values as Record<string, string | boolean | undefined>
    const { supervisorService } = await import('../../agents/supervisor.ts')
    const service = supervisorService(supervisorFlags(v))
    return await serveAlone(service, v)
  },
}
