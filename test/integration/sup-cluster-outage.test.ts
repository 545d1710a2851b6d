// A Redis Cluster node that restarts is a pause, as a single Redis's restart is:
// a command for its slots waits for it (ioredis's defaults dropped it after about
// 1.6 s of retries), so a send made meanwhile lands and a commit made meanwhile
// is applied, its action run once.
import { createServer, type AddressInfo } from 'node:net'
import { Redis, type Cluster } from 'ioredis'
import { fromPromise, setup } from 'xstate'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defineAgent, startRuntime, TroupeClient, type ActionEvent, type Runtime } from '../../runtime/index.ts'
import { createLogger, type Logger } from '../../runtime/log.ts'
import { CLUSTER_RETRY, createRedis } from '../../runtime/redis/connection.ts'
import { startRedis, redisReachable, type RedisProcess } from '../../scripts/services/redis.ts'
import { startRedisCluster, type RedisCluster } from '../../scripts/services/redis-cluster.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

/** How long a node stays down: well past the 1.6 s the old retry budget lasted, well short of the cluster's 15 s node timeout. */
const OUTAGE_MS = 4000

/** Runs of napper's work, counted in this process: a commit that failed would run it again. */
let runs = 0

const napper = defineAgent({
  name: 'napper',
  machine: setup({
    types: { events: {} as ActionEvent<'nap', { ms: number }> },
    actors: {
      nap: fromPromise(async ({ input }: { input: { ms: number } }) => {
        runs++
        await new Promise((r) => setTimeout(r, input.ms))
      }),
    },
  }).createMachine({
    id: 'napper',
    initial: 'idle',
    states: {
      idle: { on: { nap: 'napping' } },
      napping: { invoke: { src: 'nap', input: ({ event }) => ({ ms: Number(event.payload.ms) }), onDone: 'idle' } },
    },
  }),
})

let cluster: RedisCluster
let rt: Runtime
let client: TroupeClient
const restarted: RedisProcess[] = []

/** The runtime's error lines, printed as usual and kept: a command that gave up shows here. */
const errors: string[] = []
const printed = createLogger('runtime')
const logger: Logger = {
  ...printed,
  error: (msg, fields) => {
    errors.push(msg)
    printed.error(msg, fields)
  },
}

beforeAll(async () => {
  cluster = await startRedisCluster(3)
  // A production lock: the lease is not what this tests.
  const cfg = testConfig({ redisUrl: cluster.url, lockTtlMs: 30_000 })
  rt = await startRuntime({ agents: [counter, napper], config: cfg, metricsPort: false, logger })
  client = TroupeClient.connect(cfg)
}, 60_000)
afterAll(async () => {
  await rt?.stop()
  await client?.close()
  for (const n of restarted) await n.stop()
  await cluster?.stop()
})

/** The port of the node serving `key`. */
async function nodeOf(key: string): Promise<number> {
  const ranges = (await client.redis.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
  const slot = Number(await client.redis.call('CLUSTER', 'KEYSLOT', key))
  return Number(ranges.find(([from, to]) => slot >= from && slot <= to)?.[2][1] ?? -1)
}

/** A workflow id whose keys live on the node at `port`. */
async function workflowOn(port: number, prefix: string): Promise<string> {
  for (let i = 0; ; i++) if ((await nodeOf(client.keys.status(`${prefix}${i}`))) === port) return `${prefix}${i}`
}

/**
 * Shuts the node at `port` down (SHUTDOWN writes its AOF out, so nothing is
 * lost), runs `during` while it is down, and starts it again on its port and
 * data OUTAGE_MS after it went away. The node rejoins with its slots: the rest
 * of the cluster never marked it failed.
 */
async function restartNode(port: number, during: () => Promise<void>): Promise<void> {
  const node = cluster.nodes.find((n) => n.port === port)
  if (!node) throw new Error(`no node on port ${port}`)
  const admin = new Redis(node.url, { maxRetriesPerRequest: 0, retryStrategy: () => null })
  admin.on('error', () => undefined)
  await admin.call('SHUTDOWN').catch(() => undefined)
  admin.disconnect()
  await eventually(async () => !(await redisReachable(node.url)), 10_000, `node ${port} to go down`)
  const downAt = Date.now()
  try {
    await during()
  } finally {
    // Back whatever `during` saw: the next test needs the whole cluster.
    await new Promise((r) => setTimeout(r, Math.max(0, downAt + OUTAGE_MS - Date.now())))
    restarted.push(await startRedis({ port, dir: node.dir, args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '15000'] }))
    // A node that just came back answers CLUSTERDOWN until it has heard from the others.
    await eventually(async () => (await Promise.all(cluster.nodes.map((n) => clusterOk(n.url)))).every(Boolean), 20_000, 'cluster_state:ok on every node')
  }
}

async function clusterOk(url: string): Promise<boolean> {
  const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  c.on('error', () => undefined)
  try {
    await c.connect()
    return String(await c.call('CLUSTER', 'INFO')).includes('cluster_state:ok')
  } finally {
    c.disconnect()
  }
}

describe('a cluster node restarting', () => {
  it('gives the Cluster client a retry budget that outlasts a restart', () => {
    const c = createRedis(cluster.url) as Cluster
    try {
      expect(c.options).toMatchObject(CLUSTER_RETRY)
      expect(c.options.redisOptions).toMatchObject({ maxRetriesPerRequest: null })
    } finally {
      c.disconnect()
    }
  })

  it('holds a send made while the node is down until it is back: the action lands and runs once', async () => {
    // The node of the agent's ready hint and of the workflow both: the enqueue's
    // script and its hint write wait for it.
    const port = await nodeOf(client.keys.ready('counter'))
    const wf = await workflowOn(port, `sendout${Date.now().toString(36)}x`)
    await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 0 } })
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 10_000, 'the first ping')
    let sent: Promise<unknown> = Promise.resolve()
    let failure: unknown = null
    await restartNode(port, async () => {
      sent = client.sendAction(wf, 'counter', 'ping', { i: 1 }).catch((err: unknown) => (failure = err))
      // Past the old budget, while the node is still down.
      await new Promise((r) => setTimeout(r, OUTAGE_MS / 2))
      expect(failure).toBeNull()
    })
    await sent
    expect(failure).toBeNull()
    await eventually(async () => (await client.getStatus(wf))?.counts.done === 2, 20_000, 'the ping sent during the outage to run')
    const snap = JSON.parse((await client.redis.hget(client.keys.actor(wf, 'counter'), 'snapshot')) ?? '{}') as { context: { n: number } }
    expect(snap.context.n).toBe(2)
  }, 60_000)

  it('holds a commit made while the node is down until it is back: the action runs once', async () => {
    const port = await nodeOf(client.keys.ready('napper'))
    const wf = await workflowOn(port, `commitout${Date.now().toString(36)}x`)
    runs = 0
    await client.startWorkflow({ workflowId: wf, agent: 'napper', type: 'nap', payload: { ms: 1000 } })
    await eventually(() => Promise.resolve(rt.workers.get('napper')?.active.has(wf)), 10_000, 'the nap to start')
    const before = errors.length
    // The nap ends, and its activation commits, while the node is down.
    await restartNode(port, () => Promise.resolve())
    // A commit that gave up fails the activation (logged), and the action runs
    // again once its 30 s lock has run out: the failure is what to look for.
    const failed = (): string[] => errors.slice(before).filter((m) => m.includes('napper'))
    await eventually(async () => failed().length > 0 || (await client.getStatus(wf))?.counts.done === 1, 20_000, 'the nap to be committed')
    expect(failed()).toEqual([])
    await eventually(() => Promise.resolve(rt.workers.get('napper')?.active.size === 0), 10_000, 'the worker to go idle')
    expect(runs).toBe(1)
    const events = await client.readEvents(wf, '0', 100)
    expect(events.filter((e) => e.event.type === 'action.completed')).toHaveLength(1)
    expect(events.filter((e) => e.event.type === 'action.failed')).toHaveLength(0)
  }, 60_000)
})

describe('a cluster that misroutes for good', () => {
  it('fails a keyed command with the last redirection instead of bouncing it forever', async () => {
    // A fake node: its slot map names itself, and every keyed command is MOVED
    // to an address that leads back to it (a node announcing the wrong address).
    const server = createServer((sock) => {
      let buf = ''
      sock.on('data', (d: Buffer) => {
        buf += d.toString('latin1')
        for (;;) {
          const args = parseRequest(buf)
          if (!args) return
          buf = buf.slice(args.length)
          const [cmd = '', sub = ''] = args.words.map((w) => w.toLowerCase())
          if (cmd === 'cluster' && sub === 'slots') sock.write(`*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:${port}\r\n$4\r\nfake\r\n`)
          else if (cmd === 'cluster' && sub === 'info') sock.write('$18\r\ncluster_state:ok\r\n\r\n')
          else if (cmd === 'ping') sock.write('+PONG\r\n')
          else if (cmd === 'client' || cmd === 'readonly' || cmd === 'select') sock.write('+OK\r\n')
          else if (cmd === 'hello') sock.write("-ERR unknown command 'hello'\r\n")
          else if (cmd === 'info') sock.write('$0\r\n\r\n')
          else sock.write(`-MOVED 1234 127.0.0.2:${port}\r\n`)
        }
      })
      sock.on('error', () => undefined)
    })
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r))
    const port = (server.address() as AddressInfo).port
    const c = createRedis(`redis+cluster://127.0.0.1:${port}`) as Cluster
    try {
      // It used to stay pending for good (the CLI hung with no output); the
      // budget runs out after about half a minute of bounces.
      await expect(c.get('k')).rejects.toThrow(/Too many Cluster redirections.*MOVED 1234/)
    } finally {
      c.disconnect()
      await new Promise((r) => server.close(r))
    }
  }, 120_000)
})

/** One RESP request at the start of `buf` (an array of bulk strings), or null when it is not all there. */
function parseRequest(buf: string): { words: string[]; length: number } | null {
  let at = 0
  const line = (): string | null => {
    const eol = buf.indexOf('\r\n', at)
    if (eol < 0) return null
    const l = buf.slice(at, eol)
    at = eol + 2
    return l
  }
  const head = line()
  if (head === null || !head.startsWith('*')) return null
  const words: string[] = []
  for (let i = 0; i < Number(head.slice(1)); i++) {
    const len = line()
    if (len === null) return null
    const n = Number(len.slice(1))
    if (buf.length < at + n + 2) return null
    words.push(buf.slice(at, at + n))
    at += n + 2
  }
  return { words, length: at }
}
