// The server forgets its scripts under live connections (SCRIPT FLUSH, over and
// over) while workflows get racing sends: no action may lose its ready hint. The
// idle poll and the lease are far beyond the test's waits, so a stranded action
// fails the test. Before batches were sent again in order after a NOSCRIPT, an
// enqueue's post-hint could land before the enqueue itself: 3 of these 800
// workflows stranded, in each of two runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { tally } from '../fixtures/chaos-agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'
import { notCompleted, stuckReport, tallyWorkflows } from '../helpers/tally-load.ts'

let server: RedisProcess
let client: TroupeClient
let runtimes: Runtime[] = []
let cfg: ReturnType<typeof testConfig>

beforeAll(async () => {
  // Its own server: flushing the suite's shared one would hit every test running alongside.
  server = await startRedis()
  cfg = testConfig({ redisUrl: server.url, idlePollMs: 120_000, lockTtlMs: 120_000 })
  client = TroupeClient.connect(cfg)
  runtimes = await Promise.all([1, 2].map(() => startRuntime({ agents: [tally], config: cfg, metricsPort: false })))
})
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.stop()))
  await client?.close()
  await server?.stop()
})

describe('scripts flushed under live connections', () => {
  it('strands no action while SCRIPT FLUSH runs every 5 ms', async () => {
    const admin = rawRedis(server.url)
    let flushes = 0
    let flushing = true
    const flusher = (async () => {
      while (flushing) {
        await admin.script('FLUSH')
        flushes++
        await new Promise((r) => setTimeout(r, 5))
      }
    })()
    const TICKS = 10
    let ids: string[] = []
    try {
      ids = await tallyWorkflows(client, 20, 40, TICKS)
    } finally {
      flushing = false
      await flusher
      admin.disconnect()
    }
    expect(flushes).toBeGreaterThan(5)
    await eventually(async () => (await notCompleted(client, ids)).length === 0, 30_000, 'every workflow completed (a stuck one lost its hint)').catch(() => undefined)
    expect(await stuckReport(client, ids)).toEqual([])
    // Each workflow applied its ticks once, in order.
    for (const wf of ids) {
      const snap = JSON.parse((await client.redis.hget(client.keys.actor(wf, 'tally'), 'snapshot')) ?? '{}') as { context?: { seen?: number[] } }
      expect(snap.context?.seen, wf).toEqual(Array.from({ length: TICKS }, (_, i) => i))
    }
  })
})
