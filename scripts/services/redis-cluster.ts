// A local Redis Cluster (3 primaries, no replicas) on loopback, for tests that prove
// every per-workflow script stays in one slot.
import { spawnSync } from 'node:child_process'
import { Redis } from 'ioredis'
import { hasCommand, MissingPrerequisiteError, waitFor } from './util.ts'
import { startRedis, type RedisProcess } from './redis.ts'

/** A running local cluster. */
export interface RedisCluster {
  /** `redis+cluster://h:p,h:p,h:p`, understood by runtime/redis/connection.ts. */
  readonly url: string
  readonly nodes: RedisProcess[]
  stop(): Promise<void>
}

/** Starts `primaries` cluster-enabled redis-servers and joins them into one cluster. */
export async function startRedisCluster(primaries = 3): Promise<RedisCluster> {
  if (!hasCommand('redis-cli')) throw new MissingPrerequisiteError('redis-cli is not on PATH.', 'apt-get install -y redis-tools')
  const nodes: RedisProcess[] = []
  try {
    for (let i = 0; i < primaries; i++) {
      nodes.push(await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '15000'] }))
    }
    const addrs = nodes.map((n) => `127.0.0.1:${n.port}`)
    const r = spawnSync('redis-cli', ['--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${r.stdout}\n${r.stderr}`)
    await waitFor(async () => {
      for (const n of nodes) {
        const c = new Redis(n.url, { lazyConnect: true, maxRetriesPerRequest: 0 })
        try {
          await c.connect()
          const info = (await c.call('CLUSTER', 'INFO')) as string
          if (!info.includes('cluster_state:ok')) return false
        } finally {
          c.disconnect()
        }
      }
      return true
    }, 20_000, 'cluster_state:ok on every node')
    return {
      url: `redis+cluster://${addrs.join(',')}`,
      nodes,
      async stop() {
        for (const n of nodes) await n.stop()
      },
    }
  } catch (err) {
    for (const n of nodes) await n.stop()
    throw err
  }
}
