// The core workflow, a crash and live following against a local 3-primary Redis
// Cluster: every per-workflow script stays in one {wf} slot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { researchTeam } from '../../examples/research-team/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { spawnRuntime } from '../helpers/processes.ts'

let cluster: RedisCluster
let rt: Runtime
let client: TroupeClient
let cfg: ReturnType<typeof testConfig>

beforeAll(async () => {
  process.env.TROUPE_FAKE_MODEL_DELAY_MS = '0'
  cluster = await startRedisCluster(3)
  cfg = testConfig({ redisUrl: cluster.url, lockTtlMs: 2000 })
  rt = await startRuntime({ agents: researchTeam, config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
}, 60_000)
afterAll(async () => {
  await rt?.stop()
  await client?.close()
  await cluster?.stop()
})

describe('redis cluster', () => {
  it('runs research workflows to completion and follows one live', async () => {
    const wfs = await Promise.all(Array.from({ length: 6 }, (_, i) => client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: `c${i}` } })))
    const first = wfs[0]?.workflowId as string
    const seen: string[] = []
    for await (const e of client.follow(first, { untilEnd: true })) seen.push(e.event.type)
    expect(seen.at(-1)).toBe('workflow.completed')
    expect(seen.filter((t) => t === 'token').length).toBeGreaterThan(10)
    for (const { workflowId } of wfs) {
      await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 30_000, `workflow ${workflowId}`)
    }
    // the workflow's keys really are spread over the cluster's slots by {wf}
    const slots = new Set(await Promise.all(wfs.map(({ workflowId }) => client.redis.call('CLUSTER', 'KEYSLOT', client.keys.status(workflowId)))))
    expect(slots.size).toBeGreaterThan(1)
  })

  it('redelivers after kill -9 of a process on the cluster', async () => {
    const child = await spawnRuntime(cfg, { args: ['--only', 'slow,counter'] })
    const { workflowId } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 1500, i: 'c' }, validate: false })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 15_000, 'working on the child')
    child.signal('SIGKILL')
    await child.exited()
    const other = await spawnRuntime(cfg, { args: ['--only', 'slow,counter'] })
    try {
      await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 20_000, 'redelivered and completed')
      const ev = await client.readEvents(workflowId, '0', 1000)
      expect(ev.filter((e) => e.event.type === 'action.redelivered')).toHaveLength(1)
    } finally {
      await other.stop(5000)
    }
  })
})
