// A commit that ends a workflow drops every agent's mailbox, and with them the
// other agents' ready hints: a hint left for a delayed action (a watchdog's
// timeout) would wait for its due time, up to ten years, and then bring an
// activation that finds the workflow over.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { completeWorkflow, defineAgent, sendToAgent, startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const DAY_MS = 24 * 3600_000

/** Arms the watchdog a day ahead, then finishes the workflow when told. */
const boss = defineAgent({
  name: 'boss',
  machine: setup({}).createMachine({
    on: {
      arm: { actions: sendToAgent('watchdog', 'timeout', {}, { delayMs: DAY_MS }) },
      finish: { actions: completeWorkflow({ ok: true }) },
    },
  }),
})

const watchdog = defineAgent({
  name: 'watchdog',
  machine: setup({}).createMachine({ initial: 'watching', states: { watching: { on: { timeout: 'fired' } }, fired: {} } }),
})

/** Five workflows arm their watchdog a day ahead, then finish: no watchdog hint is left. */
async function endWithArmedWatchdogs(c: TroupeClient): Promise<string[]> {
  const wfs: string[] = []
  for (let i = 0; i < 5; i++) wfs.push((await c.startWorkflow({ agent: 'boss', type: 'arm' })).workflowId)
  // The watchdog's hint waits for its timeout, a day away (its first activation found nothing due yet).
  for (const wf of wfs) {
    await eventually(async () => Number(await c.redis.zscore(c.keys.ready('watchdog'), wf)) > Date.now() + DAY_MS / 2, 10_000, 'the watchdog hint at its timeout')
  }
  for (const wf of wfs) await c.sendAction(wf, 'boss', 'finish')
  for (const wf of wfs) await eventually(async () => (await c.getStatus(wf))?.status === 'completed', 10_000, 'completed')
  expect(await c.redis.zcard(c.keys.mailbox(wfs[0] ?? '', 'watchdog'))).toBe(0)
  return wfs
}

describe('a commit that ends the workflow', () => {
  const cfg = testConfig()
  let rt: Runtime
  let c: TroupeClient
  beforeAll(async () => {
    rt = await startRuntime({ agents: [boss, watchdog], config: cfg, metricsPort: false })
    c = TroupeClient.connect(cfg)
  })
  afterAll(async () => {
    await c.close()
    await rt.stop()
  })

  it('removes the other agents\' ready hints, the one of a far-delayed action too', async () => {
    const wfs = await endWithArmedWatchdogs(c)
    // The ending commit's own pipeline took them out (settle.lua): no wait for a follow-up.
    for (const wf of wfs) expect(await c.redis.zscore(c.keys.ready('watchdog'), wf)).toBeNull()
    for (const wf of wfs) expect(await c.redis.zscore(c.keys.ready('boss'), wf)).toBeNull()
  })
})

describe('a commit that ends the workflow, on a Redis Cluster', () => {
  let cluster: RedisCluster
  let rt: Runtime
  let c: TroupeClient
  beforeAll(async () => {
    cluster = await startRedisCluster(3)
    const cfg = testConfig({ redisUrl: cluster.url })
    rt = await startRuntime({ agents: [boss, watchdog], config: cfg, metricsPort: false })
    c = TroupeClient.connect(cfg)
  }, 60_000)
  afterAll(async () => {
    await c?.close()
    await rt?.stop()
    await cluster?.stop()
  })

  it('has the activation remove the other agents\' hints (they are in other slots)', async () => {
    const wfs = await endWithArmedWatchdogs(c)
    for (const wf of wfs) await eventually(async () => (await c.redis.zscore(c.keys.ready('watchdog'), wf)) === null, 10_000, 'the watchdog hint removed')
    for (const wf of wfs) await eventually(async () => (await c.redis.zscore(c.keys.ready('boss'), wf)) === null, 10_000, 'the boss hint released')
  })
})
