// The core workflow, a crash and live following against a local 3-primary Redis
// Cluster: every per-workflow script stays in one {wf} slot.
import { Redis, type Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { researchTeam } from '../../examples/research-team/agents.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'
import { Subscriber } from '../../runtime/subscriber.ts'
import { spawnRuntime } from '../helpers/processes.ts'
import { listAll, startNamed, startStack } from '../gateway/helpers.ts'
import { cleanGraph, graphCounts, neo4jEnv, openDriver } from '../persister/helpers.ts'

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
  it('tells followers to replay now and then, since ioredis moves a Cluster subscription silently', async () => {
    const sub = new Subscriber(client.redis, { clusterResyncMs: 100 })
    const plain = rawRedis()
    const single = new Subscriber(plain, { clusterResyncMs: 100 })
    let n = 0
    let m = 0
    sub.onResync(() => n++)
    single.onResync(() => m++)
    try {
      await eventually(() => Promise.resolve(n >= 3), 5000, 'periodic resyncs')
      expect(m).toBe(0) // a single Redis reconnects on the same connection and says so ('ready')
    } finally {
      sub.close()
      single.close()
      plain.disconnect()
    }
  })

  it('runs research workflows to completion and follows one live', async () => {
    const wfs = await Promise.all(Array.from({ length: 6 }, (_, i) => client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: `c${i}` } })))
    const first = wfs[0]?.workflowId as string
    const seen: string[] = []
    for await (const e of client.follow(first, { untilEnd: true })) seen.push(e.event.type)
    expect(seen.at(-1)).toBe('workflow.completed')
    expect(seen.filter((t) => t === 'token').length).toBeGreaterThan(10)
    for (const { workflowId } of wfs) {
      await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 30_000, `workflow ${workflowId}`).catch(async (err: unknown) => {
        throw new Error(`${String(err)}; status: ${JSON.stringify(await client.getStatus(workflowId))}`)
      })
    }
    // the workflow's keys really are spread over the cluster's slots by {wf}
    const slots = new Set(await Promise.all(wfs.map(({ workflowId }) => client.redis.call('CLUSTER', 'KEYSLOT', client.keys.status(workflowId)))))
    expect(slots.size).toBeGreaterThan(1)
  })

  it('keeps the ready hint when the workflow node runs the enqueue after the hint node was woken', async () => {
    // The enqueue's script runs on the workflow's node, its hint and wake-up on the
    // agent's: nothing orders two nodes (a fresh client connects to each node
    // lazily, a node may stall). The woken worker used to pick, find nothing, and
    // delete the hint before the action landed, which stranded the workflow.
    const own = testConfig({ redisUrl: cluster.url, idlePollMs: 60_000, lockTtlMs: 60_000 })
    const rt2 = await startRuntime({ agents: [counter], config: own, metricsPort: false })
    const admin = TroupeClient.connect(own)
    const ready = admin.keys.ready('counter')
    try {
      const nodeOf = await slotOwners(admin)
      const wakePort = await nodeOf(admin.keys.wake('counter'))
      const wakeNode = cluster.nodes.find((n) => n.port === wakePort)
      if (!wakeNode) throw new Error('no node for the wake-up marker')
      const busy = new Set([await nodeOf(ready), wakePort])
      let raced = 0
      for (let round = 0; round < 4; round++) {
        let wf = ''
        let port = -1
        for (let i = 0; port < 0 || busy.has(port); i++) {
          wf = `stall${round}x${i}`
          port = await nodeOf(admin.keys.status(wf))
        }
        const node = cluster.nodes.find((n) => n.port === port)
        if (!node) throw new Error(`no node for ${wf}`)
        // The worker is idle, blocked on the wake-up marker as its node sees it:
        // only a wake-up moves it (the idle poll is a minute away).
        await eventually(() => blockedOnWake(rt2, wakeNode), 10_000, `the worker blocked on its wake-up marker (round ${round})`)
        const fresh = TroupeClient.connect(own)
        try {
          // The fresh client knows the slots and the hint's node; the workflow's
          // node it has yet to connect to. (A slot refresh asked of the stalled
          // node would hold everything up for a second, stall included.)
          await fresh.redis.exists(ready)
          node.pause()
          // Not validated: the registry's key may live on the stalled node, and a
          // start waiting on it writes nothing, so the race would not be set up.
          const started = fresh.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', validate: false })
          // Mid-enqueue: its first write (the pre-hint, on a live node) landed,
          // its script waits on the stalled node.
          await eventually(async () => (await admin.redis.zscore(ready, wf)) !== null, 3000, `the pre-hint of ${wf}`)
          // A wake-up sent before the script's reply (the bug) has the worker pick
          // and send its activate to the stalled node ahead of the enqueue: wait for
          // that activation. Sent after the reply (as it should be), nothing moves
          // while the node is stalled, so this gives up after a moment. The whole
          // stall stays far below the cluster's node timeout (15 s: see
          // scripts/services/redis-cluster.ts), past which the other nodes would
          // mark this one failed and the cluster would refuse every command.
          if (await eventually(() => Promise.resolve(rt2.workers.get('counter')?.active.has(wf)), 500, 'an activation').then(() => true, () => false)) raced++
          node.resume()
          await started
        } finally {
          node.resume()
          await fresh.close()
        }
        await eventually(async () => (await admin.readEvents(wf, '0', 100)).some((e) => e.event.type === 'action.completed'), 5000, `the ping of ${wf} (round ${round}) to run: a lost hint strands it`)
      }
      console.log(`stalled enqueues: ${raced} of 4 had a worker activate ahead of the script`)
    } finally {
      for (const n of cluster.nodes) n.resume()
      await rt2.stop()
      await admin.close()
    }
    // Four rounds of at most 10 + 3 + 0.5 + 5 s of waits, and the runtime's start and stop.
  }, 120_000)

  it('persists every event of workflows spread over the nodes to Neo4j', async () => {
    // The persister reads many workflows' streams and states per batch, each in its
    // own slot: one pipeline on a single Redis, one command per node on a Cluster.
    const env = neo4jEnv()
    const own = testConfig({ redisUrl: cluster.url })
    const c3 = TroupeClient.connect(own)
    const rt3 = await startRuntime({ agents: [counter], config: own, metricsPort: false })
    const driver = openDriver(env)
    const prefix = `cl${Date.now().toString(36)}`
    const ids = Array.from({ length: 12 }, (_, i) => `${prefix}w${i}`)
    const child = await spawnRuntime(own, { command: ['persister', '--reconcile-every', '0', '--heartbeat', '500ms'], env: { NEO4J_URI: env.uri, NEO4J_USER: env.user, NEO4J_PASSWORD: env.password } })
    try {
      for (const wf of ids) {
        await c3.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 1 } })
        await c3.sendAction(wf, 'counter', 'finish', null)
      }
      const want = new Map<string, number>()
      await eventually(async () => {
        for (const wf of ids) if ((await c3.getStatus(wf))?.status !== 'completed') return false
        return true
      }, 20_000, 'every workflow completed')
      for (const wf of ids) want.set(wf, Number(await c3.redis.xlen(c3.keys.events(wf))))
      const slots = new Set(await Promise.all(ids.map((wf) => c3.redis.call('CLUSTER', 'KEYSLOT', c3.keys.events(wf)))))
      expect(slots.size).toBeGreaterThan(1)
      await eventually(async () => {
        const got = await graphCounts(driver, ids)
        return ids.every((wf) => got.get(wf)?.events === want.get(wf))
      }, 30_000, 'every event in Neo4j').catch((err: unknown) => {
        throw new Error(`${String(err)}; persister output:\n${child.output().slice(-2000)}`)
      })
      for (const [wf, c] of await graphCounts(driver, ids)) expect(c, wf).toMatchObject({ distinct: want.get(wf), maxHas: 1 })
    } finally {
      await child.stop(5000)
      await rt3.stop()
      await c3.close()
      await cleanGraph(driver, prefix)
      await driver.close()
    }
  })

  it('lists a user\'s workflows through the gateway, pages included', async () => {
    const s = await startStack({ config: { redisUrl: cluster.url } })
    try {
      const { access_token: accessToken } = await s.login('dana')
      const started = await startNamed(s, accessToken, 'dana', 7)
      const { ids: seen } = await listAll(s, accessToken, 3)
      expect(seen.sort()).toEqual(started.sort())
    } finally {
      await s.rt.stop()
      await s.redis.quit()
    }
  })

  it('expires every agent\'s keys of a finished workflow without a persister', async () => {
    // The completing commit names the other agents' keys itself (same {wf} slot,
    // not passed as KEYS): a Cluster node must accept that.
    const own = testConfig({ redisUrl: cluster.url, persistence: false, retentionMs: 600_000 })
    const c4 = TroupeClient.connect(own)
    const rt4 = await startRuntime({ agents: [counter, echo], config: own, metricsPort: false })
    try {
      const { workflowId: wf } = await c4.startWorkflow({ agent: 'counter', type: 'relay', payload: { text: 'hi' } })
      await eventually(async () => (await c4.getStatus(wf))?.agents.echo === 'idle', 10_000, 'echo ran')
      await c4.sendAction(wf, 'counter', 'finish')
      await eventually(async () => (await c4.getStatus(wf))?.status === 'completed', 10_000, 'completed')
      for (const k of [c4.keys.actor(wf, 'echo'), c4.keys.actor(wf, 'counter'), c4.keys.status(wf)]) {
        expect(await c4.redis.pttl(k), k).toBeGreaterThan(0)
      }
      // Cancel finds the agents and their mailboxes itself too.
      const { workflowId: wf2 } = await c4.startWorkflow({ agent: 'counter', type: 'relay', payload: { text: 'hi' } })
      await eventually(async () => (await c4.getStatus(wf2))?.agents.echo === 'idle', 10_000, 'echo ran')
      await c4.sendAction(wf2, 'echo', 'echo', { text: 'later' }, { delayMs: 3_600_000, validate: false })
      expect((await c4.cancelWorkflow(wf2)).dropped).toBe(1)
      expect(await c4.redis.exists(c4.keys.mailbox(wf2, 'echo'))).toBe(0)
      for (const k of [c4.keys.actor(wf2, 'echo'), c4.keys.actor(wf2, 'counter'), c4.keys.status(wf2)]) {
        expect(await c4.redis.pttl(k), k).toBeGreaterThan(0)
      }
    } finally {
      await rt4.stop()
      await c4.close()
    }
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

/**
 * True when `node` holds the connection of `rt`'s counter worker blocked in
 * BZPOPMIN (CLIENT LIST there, matched by the client's port on the worker's own
 * blocking connection, which the runtime keeps private).
 */
async function blockedOnWake(rt: Runtime, node: { url: string; port: number }): Promise<boolean> {
  const blocker = (rt.workers.get('counter') as unknown as { blocker: Cluster | null } | undefined)?.blocker
  const port = blocker?.nodes('master').find((n) => n.options.port === node.port)?.stream?.localPort
  if (port === undefined) return false
  const conn = new Redis(node.url, { maxRetriesPerRequest: 0 })
  try {
    const list = String(await conn.call('CLIENT', 'LIST'))
    return list.split('\n').some((l) => l.includes(`addr=127.0.0.1:${port} `) && / flags=\S*b/.test(l) && / cmd=bzpopmin /.test(l))
  } finally {
    conn.disconnect()
  }
}

/** Maps a key to the port of the primary that owns its slot. */
async function slotOwners(c: TroupeClient): Promise<(key: string) => Promise<number>> {
  const ranges = (await c.redis.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
  return async (key: string) => {
    const slot = Number(await c.redis.call('CLUSTER', 'KEYSLOT', key))
    const r = ranges.find(([from, to]) => slot >= from && slot <= to)
    return Number(r?.[2][1] ?? -1)
  }
}
