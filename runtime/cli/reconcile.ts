// `troupe reconcile [wf...]`: compares workflows in Redis with Neo4j now and
// backfills what is missing (the persister also does it periodically).
import { Registry } from 'prom-client'
import { TroupeClient } from '../client.ts'
import { createLogger } from '../log.ts'
import { ensureSchema } from '../persister/graph.ts'
import { PersisterMetrics } from '../persister/metrics.ts'
import { describeError } from '../persister/neo4j.ts'
import { resolvePersisterOptions } from '../persister/options.ts'
import { Reconciler, type ReconcileReport } from '../persister/reconcile.ts'
import { assertWorkflowId } from '../redis/keys.ts'
import { waitReachable } from '../redis/connection.ts'
import { configFlags, EXIT, parse, parseDuration, type Command } from './common.ts'
import { NEO4J_FIX, neo4jFromFlags } from './history.ts'
import { NEO4J_FLAGS, persisterFlags } from './persister.ts'

const usage = `usage: troupe reconcile [<workflowId>...] [--json] [--retention <dur>]

Compares each named workflow (default: every workflow in Redis) with Neo4j: its
last stream id, its number of events and its status. Missing events are written
from workflow:events:{wf}; finished workflows found complete get their retention
TTL. Safe to run any time, next to running persisters (every write is a MERGE).
  --json                   the report as JSON
  --retention <dur>        TTL for finished, fully persisted workflows (default 7d, TROUPE_RETENTION_MS)
  --neo4j-uri <uri>        default NEO4J_URI or bolt://127.0.0.1:7687
  --neo4j-user, --neo4j-password, --neo4j-database   default NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE
  --redis <url>            Redis URL (default REDIS_URL or redis://127.0.0.1:6379)
  --namespace <prefix:>    key prefix (default TROUPE_NAMESPACE or none)`

function summary(r: ReconcileReport): string {
  const lines = [
    `checked ${r.checked} workflow${r.checked === 1 ? '' : 's'}: ${r.backfilledEvents} events backfilled in ${r.backfilledWorkflows}, ${r.statusFixed} statuses updated, ${r.expired} finished workflows given their retention TTL${r.failed ? `, ${r.failed} refused by Neo4j (see below)` : ''}`,
  ]
  for (const c of r.workflows) {
    if (c.outcome === 'ok' && !c.expired && r.workflows.length > 20) continue
    lines.push(`  ${c.wf}: ${c.outcome}${c.backfilled ? ` (${c.backfilled} events)` : ''}; Redis ${c.redisEvents} events up to ${c.redisLastId ?? '-'}, Neo4j ${c.neo4jEvents} up to ${c.neo4jLastId ?? '-'}${c.expired ? '; retention TTL set' : ''}${c.error ? `; ${c.error}` : ''}`)
  }
  return lines.join('\n')
}

/** The `reconcile` command. */
export const command: Command = {
  summary: 'compare workflows in Redis with Neo4j and backfill missing events',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...NEO4J_FLAGS, retention: { type: 'string' } })
    for (const wf of positionals) assertWorkflowId(wf)
    const v = values as Record<string, string | boolean | undefined>
    const opts = resolvePersisterOptions({ ...persisterFlags(v), ...(typeof v.retention === 'string' ? { retentionMs: parseDuration(v.retention) } : {}) })
    // The driver first: it refuses a bad URI at once, and a Redis connection
    // already open kept the process alive after the error was printed.
    const { driver, uri } = neo4jFromFlags(v)
    let client: TroupeClient
    try {
      client = TroupeClient.connect(configFlags(v))
    } catch (err) {
      await driver.close()
      throw err
    }
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      try {
        await ensureSchema(driver, opts.database)
      } catch (err) {
        process.stderr.write(`error: cannot reach Neo4j at ${uri}: ${describeError(err)}\n  ${NEO4J_FIX}\n`)
        return EXIT.unavailable
      }
      const reconciler = new Reconciler({ redis: client.redis, keys: client.keys, driver, metrics: new PersisterMetrics(new Registry()), log: createLogger('reconcile'), opts })
      const report = positionals.length > 0 ? await reconciler.workflows(positionals) : await reconciler.all()
      process.stdout.write(v.json ? `${JSON.stringify(report)}\n` : `${summary(report)}\n`)
      return EXIT.ok
    } finally {
      await driver.close()
      await client.close()
    }
  },
}
