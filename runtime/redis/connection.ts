// Creates ioredis clients with the options the runtime relies on: reconnect
// forever with capped backoff, and queue commands while reconnecting so a Redis
// restart looks like a pause, not an error.
import { Cluster, Redis, type RedisOptions } from 'ioredis'

/** A single Redis or a Redis Cluster client. */
export type RedisClient = Redis | Cluster

const base: RedisOptions = {
  maxRetriesPerRequest: null,
  enableReadyCheck: true,
  retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
}

/**
 * Connects to `url`. `redis+cluster://host:port[,host:port]` (or `cluster: true`)
 * makes a Cluster client from the seed nodes; `rediss://` uses TLS.
 */
export function createRedis(url: string, opts: { cluster?: boolean; name?: string } = {}): RedisClient {
  const clusterUrl = url.startsWith('redis+cluster://')
  if (clusterUrl || opts.cluster) {
    const hosts = url.replace(/^redis(\+cluster)?s?:\/\//, '').split(',').map((hp) => {
      const [host, port] = hp.split(':')
      return { host: host ?? '127.0.0.1', port: Number(port ?? 6379) }
    })
    return quiet(new Cluster(hosts, { redisOptions: { ...base, connectionName: opts.name }, scaleReads: 'master' }))
  }
  return quiet(new Redis(url, { ...base, connectionName: opts.name }))
}

// Connection errors are retried forever and every command reports its own failure
// through its promise, so the 'error' events only add noise (ioredis prints them
// when nobody listens). Callers that care add their own listener.
function quiet<T extends RedisClient>(client: T): T {
  client.on('error', () => undefined)
  return client
}

/**
 * Waits until `redis` answers PING, or throws an error naming the URL and the fix.
 * Commands queue while disconnected, so without this a CLI would hang silently.
 */
export async function waitReachable(redis: RedisClient, url: string, timeoutMs = 5000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`cannot reach Redis at ${url} within ${timeoutMs} ms; start Redis there or point REDIS_URL (or --redis) at one`)), timeoutMs)
  })
  try {
    await Promise.race([redis.ping(), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Closes a client: a polite QUIT when connected (bounded to 2 s), else an
 * immediate disconnect. QUIT on a dead connection would wait forever, since
 * commands queue while reconnecting.
 */
export async function closeRedis(redis: RedisClient): Promise<void> {
  if (redis.status === 'ready') {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => (timer = setTimeout(r, 2000)))])
    clearTimeout(timer)
  }
  redis.disconnect()
}

/** A second connection with the same settings (for blocking commands, which hold a connection). */
export function duplicateClient(redis: RedisClient): RedisClient {
  return redis instanceof Cluster ? redis.duplicate() : redis.duplicate()
}
