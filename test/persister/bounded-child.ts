// Run by read.test.ts in a child process with a small heap: writes one
// workflow's events to Neo4j the way a batch does (`batch <wf> <from> <to>`) or
// the way reconciliation backfills them (`backfill <wf>`), and prints what it
// did as JSON. A reader that holds all of a batch in memory dies of the heap
// limit here; one that keeps to maxBytesPerRead does not.
import { Registry } from 'prom-client'
import { TroupeClient } from '../../runtime/client.ts'
import { createLogger } from '../../runtime/log.ts'
import { BatchWriter } from '../../runtime/persister/batch.ts'
import { ensureSchema } from '../../runtime/persister/graph.ts'
import { PersisterMetrics } from '../../runtime/persister/metrics.ts'
import { createNeo4jDriver } from '../../runtime/persister/neo4j.ts'
import { resolvePersisterOptions } from '../../runtime/persister/options.ts'
import { PersistenceQueue } from '../../runtime/persister/queue.ts'
import { Reconciler } from '../../runtime/persister/reconcile.ts'

const [mode, wf = '', from = '-', to = '+'] = process.argv.slice(2)
// Events of 256 KB go two to a transaction, and a read holds about 2 MB of them.
const opts = resolvePersisterOptions({ maxBytesPerTx: 512 * 1024, reconcileMs: 0 })
const client = TroupeClient.connect()
const driver = createNeo4jDriver(opts)
const deps = { redis: client.redis, keys: client.keys, driver, metrics: new PersisterMetrics(new Registry()), log: createLogger('bounded-child'), opts }
try {
  // As a persister does before writing: without the constraints, two transactions
  // writing one workflow at once each create its node.
  await ensureSchema(driver, opts.database)
  if (mode === 'batch') {
    const queue = new PersistenceQueue(client.redis, client.redis, client.keys, 'bounded-child', 100)
    await queue.ensureGroup()
    const r = await new BatchWriter({ ...deps, queue }).write([{ id: '1-1', fields: ['wf', wf, 'from', from, 'to', to] }])
    process.stdout.write(`${JSON.stringify({ events: r.events, parked: r.parked, reads: r.reads, maxReadBytes: r.maxReadBytes })}\n`)
  } else if (mode === 'backfill') {
    const r = await new Reconciler(deps).workflows([wf])
    process.stdout.write(`${JSON.stringify({ events: r.backfilledEvents, outcome: r.workflows[0]?.outcome })}\n`)
  } else {
    throw new Error(`unknown mode ${String(mode)}`)
  }
} finally {
  await driver.close()
  await client.close()
}
