// Breaking things on purpose: random kill -9 of runtime processes, cut connections
// and paused writes on a private Redis, then checking that every action was applied
// exactly once and in order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Redis } from 'ioredis'
import { TroupeClient } from '../../runtime/index.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'
import { seededRandom } from '../helpers/rng.ts'

const AGENTS = 'test/fixtures/chaos-agents.ts'
const SEED = Number(process.env.FAULTS_SEED ?? Date.now() % 1_000_000)
// Worst cases, so a slow run fails on the wait that ran out and not on the test's
// timeout (which would leave the chaos loop running): spawnRuntime gives a process
// 30 s to start, checkExactlyOnce waits up to SETTLE_MS, and a minute of margin
// covers the sends and the final reads.
const SPAWN_MS = 30_000
const SETTLE_MS = 90_000
const MARGIN_MS = 60_000
const KILLS = 4
const KILL_EVERY_MS = 600
let redis: RedisProcess
let cfg: ReturnType<typeof testConfig>
let client: TroupeClient
const procs: RuntimeChild[] = []
// A test that timed out goes on running unseen: afterAll waits for what it is
// starting, and whatever comes up after that is killed instead of kept.
let closing = false
const starting = new Set<Promise<unknown>>()

beforeAll(async () => {
  redis = await startRedis({ args: ['--appendfsync', 'always'] })
  cfg = testConfig({ redisUrl: redis.url, lockTtlMs: 1500 })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  closing = true
  await Promise.allSettled([...starting])
  await Promise.all(procs.map((p) => p.stop(5000)))
  await client?.close()
  await redis?.stop()
})

/** Starts a runtime process into `procs`; during teardown it is killed as soon as it is up. */
async function start(): Promise<void> {
  if (closing) throw new Error('the test run is over')
  const spawned = spawnRuntime(cfg, { agents: AGENTS })
  starting.add(spawned)
  try {
    const p = await spawned
    if (closing) {
      p.signal('SIGKILL')
      await p.exited()
      throw new Error('the test run ended while a runtime started')
    }
    procs.push(p)
  } finally {
    starting.delete(spawned)
  }
}

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
  }, SETTLE_MS, `all ${wfs.length * ticks} ticks`)
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

describe(`faults (FAULTS_SEED=${SEED})`, () => {
  it('survives random kill -9 of runtime processes across thousands of actions', { timeout: 3 * SPAWN_MS + KILLS * (KILL_EVERY_MS + SPAWN_MS) + SETTLE_MS + MARGIN_MS }, async ({ signal, onTestFailed }) => {
    onTestFailed(() => console.log(`faults: victims chosen with FAULTS_SEED=${SEED} (rerun with it to replay the same choices)`))
    const random = seededRandom(SEED)
    for (let i = 0; i < 3; i++) await start()
    const WF = 50
    const TICKS = 50
    const wfs: string[] = []
    for (let i = 0; i < WF; i++) wfs.push((await client.startWorkflow({ agent: 'tally', type: 'tick', payload: { i: 0 }, validate: false })).workflowId)
    let kills = 0
    // Set when the test is over, however it ended; the signal covers a timeout, after
    // which the body (and its finally) may never get to run.
    let over = false
    const chaos = (async () => {
      for (let round = 0; round < KILLS; round++) {
        await new Promise((r) => setTimeout(r, KILL_EVERY_MS))
        if (over || signal.aborted) return
        const victim = procs.splice(Math.floor(random() * procs.length), 1)[0]
        victim?.signal('SIGKILL')
        kills++
        await start()
      }
    })()
    // Its failure is reported by the await below; once the test is over, a start
    // that fails because Redis is gone must not surface as an unhandled rejection.
    chaos.catch(() => undefined)
    try {
      await sendTicks(wfs, TICKS)
      await chaos
    } finally {
      over = true
      await chaos.catch(() => undefined)
    }
    const { redelivered } = await checkExactlyOnce(wfs, TICKS)
    expect(kills).toBe(KILLS)
    process.stdout.write(`kill -9 x${kills} (seed ${SEED}): ${WF * TICKS} actions, 0 lost, 0 duplicated, ${redelivered} redelivered\n`)
  })

  // Two starts only if the first test left fewer processes.
  it('rides out cut connections and paused writes', { timeout: 2 * SPAWN_MS + SETTLE_MS + MARGIN_MS }, async () => {
    while (procs.length < 2) await start()
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
      faults.catch(() => undefined)
      try {
        await sendTicks(wfs, TICKS)
        await faults
      } finally {
        // Not disconnected under a fault still to come (two seconds at most).
        await faults.catch(() => undefined)
      }
      await checkExactlyOnce(wfs, TICKS)
    } finally {
      admin.disconnect()
    }
  })
})
