// Many processes, many workflows, random enqueue timing: nothing stranded, nothing
// acked twice, each actor's actions in order. The seed is printed on failure.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'
import { seededRandom } from '../helpers/rng.ts'

const SEED = Number(process.env.STRESS_SEED ?? Date.now() % 1_000_000)
const WORKFLOWS = 40
const PINGS = 25
// The wait for every action to finish; the test's timeout adds room for the sends
// before it and the per-workflow reads after it, so a slow run fails on this wait.
const SETTLE_MS = 60_000

const rng = seededRandom

const cfg = testConfig({ lockTtlMs: 2000 })
let client: TroupeClient
const procs: RuntimeChild[] = []

beforeAll(async () => {
  client = TroupeClient.connect(cfg)
  for (let i = 0; i < 3; i++) procs.push(await spawnRuntime(cfg, { args: ['--only', 'counter', '--concurrency', '4'] }))
})
afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop(5000)))
  await client.close()
})

describe(`stress (STRESS_SEED=${SEED})`, () => {
  it('delivers every action exactly once and in order per actor', async () => {
    const random = rng(SEED)
    const delays = Array.from({ length: WORKFLOWS }, () => Array.from({ length: PINGS }, () => (random() < 0.7 ? 0 : Math.floor(random() * 15))))
    const wfs: string[] = []
    for (let w = 0; w < WORKFLOWS; w++) wfs.push((await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 0 } })).workflowId)
    await Promise.all(
      wfs.map(async (wf, w) => {
        for (let i = 1; i < PINGS; i++) {
          const d = delays[w]?.[i] ?? 0
          if (d) await new Promise((r) => setTimeout(r, d))
          await client.sendAction(wf, 'counter', 'ping', { i }, { validate: false })
        }
      }),
    )
    await eventually(async () => {
      const sts = await Promise.all(wfs.map((wf) => client.getStatus(wf)))
      return sts.every((s) => s?.counts.done === PINGS && s.counts.queued === 0)
    }, SETTLE_MS, `all ${WORKFLOWS * PINGS} actions (seed ${SEED})`)
    const expected = Array.from({ length: PINGS }, (_, i) => JSON.stringify(i))
    for (const wf of wfs) {
      const snap = JSON.parse((await client.redis.hget(client.keys.actor(wf, 'counter'), 'snapshot')) ?? '{}') as { context: { n: number; seen: string[] } }
      expect(snap.context.seen, `order in ${wf} (seed ${SEED})`).toEqual(expected)
      expect(snap.context.n).toBe(PINGS)
      expect(await client.deadLetters(wf)).toEqual([])
      const done = (await client.readEvents(wf, '0', 10_000)).filter((e) => e.event.type === 'action.completed')
      expect(done).toHaveLength(PINGS)
    }
    // nothing left hinted or leased for finished actors beyond a harmless due hint
    const leftovers = await client.redis.zrange(client.keys.ready('counter'), '0', '-1')
    for (const wf of leftovers) expect(await client.redis.zcard(client.keys.mailbox(wf, 'counter'))).toBe(0)
  }, SETTLE_MS + 30_000)
})
