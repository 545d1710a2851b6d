// `troupe persister`: a process that runs only the persister (the same service
// `troupe start --persister` hosts next to agents); `troupe persister status`
// prints the queue's backlog, parked entries and consumers.
import { Registry } from 'prom-client'
import type { PersisterOptions } from '../persister/options.ts'
import { PersisterMetrics } from '../persister/metrics.ts'
import { GROUP, PersistenceQueue } from '../persister/queue.ts'
import { TroupeClient } from '../client.ts'
import { waitReachable } from '../redis/connection.ts'
import { configFlags, EXIT, parse, serveAlone, parseDuration, UsageError, type Command } from './common.ts'

const usage = `usage: troupe persister [status] [options]

Runs the persister until SIGTERM/SIGINT: drains persistence:queue into Neo4j in
batches, acks after commit, takes over entries of dead persisters, backs off while
Neo4j or Redis is down, reconciles Redis with Neo4j and expires finished, fully
persisted workflows. Run several for throughput and failover (consumer group
'persister'). 'troupe persister status' prints the backlog and exits.

options:
  --neo4j-uri <uri>         Neo4j (default NEO4J_URI or bolt://127.0.0.1:7687)
  --neo4j-user <name>       default NEO4J_USER or neo4j
  --neo4j-password <pw>     default NEO4J_PASSWORD (prefer the variable: flags show in ps)
  --neo4j-database <name>   default NEO4J_DATABASE or the server's default
  --batch <n>               most entries read at once (default 2000; adapts below it)
  --claim-idle <dur>        take over entries unacked this long (default 30s, TROUPE_PERSISTER_CLAIM_IDLE_MS)
  --reconcile-every <dur>   reconciliation step interval (default 30s, TROUPE_RECONCILE_MS; 0 = off)
  --retention <dur>         TTL of finished, fully persisted workflows (default 7d, TROUPE_RETENTION_MS)
  --heartbeat <dur>         this process's heartbeat interval (default 2s)
  --metrics-port <port>     port of /metrics, /healthz, /readyz (default TROUPE_METRICS_PORT or a free one)
  --allow-eviction          start even if Redis maxmemory-policy may evict keys
  --redis <url>             Redis URL (default REDIS_URL or redis://127.0.0.1:6379)
  --namespace <prefix:>     key prefix (default TROUPE_NAMESPACE or none)
  --json                    (status) machine-readable output`

/** The Neo4j flags shared by `persister`, `history`, `reconcile` and `start --persister`. */
export const NEO4J_FLAGS = {
  'neo4j-uri': { type: 'string' },
  'neo4j-user': { type: 'string' },
  'neo4j-password': { type: 'string' },
  'neo4j-database': { type: 'string' },
} as const

/**
 * Persister options from flags: the Neo4j ones unprefixed, the persister's own
 * with `prefix` (`persister-` under `troupe start`).
 */
export function persisterFlags(v: Record<string, string | boolean | undefined>, prefix = ''): PersisterOptions {
  const str = (name: string): string | undefined => {
    const x = v[name]
    return typeof x === 'string' ? x : undefined
  }
  const o: PersisterOptions = {}
  const uri = str('neo4j-uri')
  if (uri) o.neo4jUri = uri
  const user = str('neo4j-user')
  if (user) o.neo4jUser = user
  const password = str('neo4j-password')
  if (password !== undefined) o.neo4jPassword = password
  const db = str('neo4j-database')
  if (db) o.database = db
  const batch = str(`${prefix}batch`)
  if (batch !== undefined) {
    const n = Number(batch)
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${prefix}batch must be a positive integer`)
    o.maxBatch = n
    o.minBatch = Math.min(50, n)
  }
  const claim = str(`${prefix}claim-idle`)
  if (claim) o.claimIdleMs = parseDuration(claim)
  const reconcile = str(`${prefix}reconcile-every`)
  if (reconcile) o.reconcileMs = parseDuration(reconcile)
  const retention = str(`${prefix}retention`)
  if (retention) o.retentionMs = parseDuration(retention)
  return o
}

async function status(client: TroupeClient, json: boolean): Promise<number> {
  const queue = new PersistenceQueue(client.redis, client.redis, client.keys, '', 1)
  const metrics = new PersisterMetrics(new Registry())
  metrics.setProbe(await queue.probe())
  let pending = 0
  try {
    const summary = await client.redis.xpending(queue.key, GROUP)
    pending = Number(summary[0] ?? 0)
  } catch {
    // No group yet: no persister ever ran.
  }
  const consumers = await queue.consumers()
  const parkedCount = Number(await client.redis.xlen(queue.parkedKey))
  const recent = (await client.redis.xrevrange(queue.parkedKey, '+', '-', 'COUNT', 5)) as [string, string[]][]
  const parked = recent.map(([id, f]) => {
    const o: Record<string, string> = { id }
    for (let i = 0; i + 1 < f.length; i += 2) o[f[i] as string] = f[i + 1] as string
    return o
  })
  const view = { backlog: metrics.backlogCount(), pending, lagMs: Math.round(metrics.lagMs()), parked: parkedCount, recentParked: parked, consumers }
  if (json) {
    process.stdout.write(`${JSON.stringify(view)}\n`)
    return EXIT.ok
  }
  const lines = [
    `persistence:queue: ${view.backlog} entries waiting (${pending} being written), oldest ${(view.lagMs / 1000).toFixed(1)} s old`,
    `consumers: ${consumers.length ? consumers.map((c) => `${c.name} (${c.pending} pending, idle ${(c.idleMs / 1000).toFixed(1)} s)`).join(', ') : 'none (no persister has run)'}`,
    `parked: ${parkedCount}${parkedCount ? ' (persistence:parked; most recent first)' : ''}`,
    ...parked.map((p) => `  ${p.id} entry ${p.entry ?? '?'}: ${p.reason ?? '?'} — ${p.detail ?? ''}`),
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  return EXIT.ok
}

/** The `persister` command. */
export const command: Command = {
  summary: 'run the persister (persistence:queue → Neo4j); `persister status` shows its backlog',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      ...NEO4J_FLAGS,
      batch: { type: 'string' },
      'claim-idle': { type: 'string' },
      'reconcile-every': { type: 'string' },
      retention: { type: 'string' },
      heartbeat: { type: 'string' },
      'metrics-port': { type: 'string' },
      'allow-eviction': { type: 'boolean' },
    })
    const v = values as Record<string, string | boolean | undefined>
    const [sub, ...extra] = positionals
    if (extra.length > 0 || (sub !== undefined && sub !== 'status')) throw new UsageError(`unexpected argument ${extra[0] ?? sub}`)
    if (sub === 'status') {
      const client = TroupeClient.connect(configFlags(v))
      try {
        await waitReachable(client.redis, client.cfg.redisUrl)
        return await status(client, v.json === true)
      } finally {
        await client.close()
      }
    }
    const { persisterService } = await import('../../agents/persister.ts')
    const service = persisterService(persisterFlags(v))
    return await serveAlone(service, v)
  },
}
