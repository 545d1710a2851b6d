// Breaking things on purpose: random kill -9 of runtime processes, cut connections
// and paused writes on a private Redis, then checking that every action was applied
// exactly once and in order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Redis } from 'ioredis'
import { TroupeClient } from '../../runtime/index.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'

const AGENTS = 'test/fixtures/chaos-agents.ts'
let redis: RedisProcess
let cfg: ReturnType<typeof testConfig>
let client: TroupeClient
const procs: RuntimeChild[] = []

beforeAll(async () => {
  redis = await startRedis({ args: ['--appendfsync', 'always'] })
  cfg = testConfig({ redisUrl: redis.url, lockTtlMs: 1500 })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop(5000)))
  await client?.close()
  await redis?.stop()
})

async function sendTicks(wfs: string[], ticks: number): Promise<void> {
  await Promise.all(
    wfs.map(async (wf) => {
      for (let i = 1; i < ticks; i++) await client.sendAction(wf, 'tally', 'tick', { i }, { validate: false })
    }),
  )
}

async function checkExactlyOnce(wfs: string[], ticks: number): Promise<{ redelivered: number }> {
  await eventually(async () => {
    const sts = await Promise.all(wfs.map((wf) => client.getStatus(wf)))
    return sts.every((s) => s?.counts.done === ticks)
  }, 90_000, `all ${wfs.length * ticks} ticks`)
  const want = Array.from({ length: ticks }, (_, i) => i)
  let redelivered = 0
  for (const wf of wfs) {
    const snap = JSON.parse((await client.redis.hget(client.keys.actor(wf, 'tally'), 'snapshot')) ?? '{}') as { context: { seen: number[] } }
    expect(snap.context.seen, `exactly once, in order, in ${wf}`).toEqual(want)
    expect((await client.getStatus(wf))?.counts).toMatchObject({ done: ticks, dead: 0, queued: 0 })
    redelivered += (await client.readEvents(wf, '0', 100_000)).filter((e) => e.event.type === 'action.redelivered').length
  }
  return { redelivered }
}

describe('faults', () => {
  it('survives random kill -9 of runtime processes across thousands of actions', async () => {
    for (let i = 0; i < 3; i++) procs.push(await spawnRuntime(cfg, { agents: AGENTS }))
    const WF = 50
    const TICKS = 50
    const wfs: string[] = []
    for (let i = 0; i < WF; i++) wfs.push((await client.startWorkflow({ agent: 'tally', type: 'tick', payload: { i: 0 }, validate: false })).workflowId)
    let kills = 0
    const chaos = (async () => {
      for (let round = 0; round < 4; round++) {
        await new Promise((r) => setTimeout(r, 600))
        const victim = procs.splice(Math.floor(Math.random() * procs.length), 1)[0]
        victim?.signal('SIGKILL')
        kills++
        procs.push(await spawnRuntime(cfg, { agents: AGENTS }))
      }
    })()
    await sendTicks(wfs, TICKS)
    await chaos
    const { redelivered } = await checkExactlyOnce(wfs, TICKS)
    expect(kills).toBe(4)
    process.stdout.write(`kill -9 x${kills}: ${WF * TICKS} actions, 0 lost, 0 duplicated, ${redelivered} redelivered\n`)
  })

  it('rides out cut connections and paused writes', async () => {
    while (procs.length < 2) procs.push(await spawnRuntime(cfg, { agents: AGENTS }))
    const admin = new Redis(redis.url)
    try {
      const WF = 20
      const TICKS = 40
      const wfs: string[] = []
      for (let i = 0; i < WF; i++) wfs.push((await client.startWorkflow({ agent: 'tally', type: 'tick', payload: { i: 0 }, validate: false })).workflowId)
      const faults = (async () => {
        await new Promise((r) => setTimeout(r, 200))
        await admin.call('CLIENT', 'KILL', 'TYPE', 'normal')
        await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
        await new Promise((r) => setTimeout(r, 300))
        await admin.call('CLIENT', 'PAUSE', '1000', 'WRITE')
        await new Promise((r) => setTimeout(r, 1200))
        await admin.call('CLIENT', 'KILL', 'TYPE', 'normal')
      })()
      await sendTicks(wfs, TICKS)
      await faults
      await checkExactlyOnce(wfs, TICKS)
    } finally {
      admin.disconnect()
    }
  })
})
