// Creates ioredis clients with the options the runtime relies on: reconnect
// forever with capped backoff, and queue commands while reconnecting so a Redis
// restart looks like a pause, not an error (on a Cluster, a node's restart or
// failover too: see CLUSTER_RETRY).
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { redactUrl } from '../config.ts'
import { TroupeError } from '../errors.ts'

/** A single Redis or a Redis Cluster client. */
export type RedisClient = Redis | Cluster

const base: RedisOptions = {
  maxRetriesPerRequest: null,
  enableReadyCheck: true,
  retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
}

/**
 * How a Cluster client retries a command whose node is away: long enough that a
 * node's restart or failover is a pause, as a single Redis's restart is.
 * ioredis's defaults (16 redirections, retried every 100 ms) dropped every
 * command after about 1.6 s of a node outage: a commit then failed with "Too
 * many Cluster redirections" and its action ran again, an enqueue's hint write
 * failed and stranded the action. A command for a node that is down bounces off
 * a live node (MOVED) and fails to connect, once per retry round, so the rounds
 * are spaced: 300 ms after a lost connection, 500 ms after CLUSTERDOWN (the
 * cluster gave up on a node: an outage past cluster-node-timeout). ioredis takes
 * a fixed delay here, not a backoff; every waiting command shares one timer per
 * kind, so a round costs one slot refresh and one bounce per command. MOVED is
 * still followed at once (the redirection after a completed failover).
 *
 * The budget is finite: 200 redirections, half a minute to a minute of an
 * outage at those delays (one or two per round). Without a limit a cluster that
 * misroutes for good (a node announcing an address that leads to another node,
 * NAT without a natMap) bounced every keyed command between MOVED replies
 * forever, and the CLI or a starting runtime hung without a word; now such a
 * command fails after about half a minute (measured against a fake node),
 * naming the last MOVED.
 */
export const CLUSTER_RETRY = {
  maxRedirections: 200,
  retryDelayOnFailover: 300,
  retryDelayOnClusterDown: 500,
  retryDelayOnTryAgain: 100,
  retryDelayOnMoved: 0,
} as const

/**
 * Connects to `url`. `redis+cluster://[user:password@]host:port[,host:port]` (or
 * `cluster: true`) makes a Cluster client from the seed nodes, with TLS as
 * `rediss+cluster://`; `rediss://` uses TLS.
 */
export function createRedis(url: string, opts: { cluster?: boolean; name?: string } = {}): RedisClient {
  const clusterUrl = /^rediss?\+cluster:\/\//.test(url)
  if (clusterUrl || opts.cluster) {
    const seeds = clusterSeeds(url)
    // No retryStrategy for the nodes: ioredis ignores it there (a node's
    // connection is dropped when lost and opened again by the next command's
    // redirection). The Cluster reconnects by clusterRetryStrategy, forever by
    // default; CLUSTER_RETRY keeps commands waiting meanwhile.
    const { retryStrategy: _perNode, ...nodeOptions } = base
    const redisOptions: RedisOptions = { ...nodeOptions, connectionName: opts.name, ...seeds.auth, ...(seeds.tls ? { tls: {} } : {}) }
    // With TLS, ioredis would check each node's certificate against the address
    // its seed resolved to; managed clusters' certificates name the host.
    const dns = seeds.tls ? { dnsLookup: (address: string, done: (err: Error | null, address: string) => void) => done(null, address) } : {}
    return quiet(new Cluster(seeds.hosts, { redisOptions, scaleReads: 'master', ...CLUSTER_RETRY, ...dns }))
  }
  return quiet(new Redis(url, { ...base, connectionName: opts.name }))
}

/**
 * The seed nodes, credentials and TLS of a Cluster URL. Every seed is read as a
 * URL of its own (the credentials before the first one's host), so a password
 * is never taken for a host or a port; a seed that is not host:port is refused.
 */
export function clusterSeeds(url: string): { hosts: { host: string; port: number }[]; auth: { username?: string; password?: string }; tls: boolean } {
  // The credentials run to the last @ of the authority, as WHATWG URL reads them.
  const m = /^(redis|rediss)(\+cluster)?:\/\/(?:([^/?#]*)@)?([^@/?#]*)\/?$/.exec(url)
  const bad = (why: string): TroupeError => new TroupeError('config', `the Redis Cluster URL ${JSON.stringify(redactUrl(url))} ${why}: use redis+cluster://[user:password@]host:port[,host:port]`)
  if (!m) throw bad('is malformed')
  const auth: { username?: string; password?: string } = {}
  const userinfo = m[3]
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':')
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon))
    if (colon >= 0) auth.password = decodeURIComponent(userinfo.slice(colon + 1))
    if (user) auth.username = user
  }
  const hosts = (m[4] ?? '').split(',').map((hp) => {
    // Host names as resolvers take them (compose's redis_node_1 has an underscore).
    const seed = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+)(?::(\d{1,5}))?$/.exec(hp)
    const port = Number(seed?.[2] ?? 6379)
    if (!seed?.[1] || port < 1 || port > 65535) throw bad(`has a seed ${JSON.stringify(hp)} that is not host:port`)
    return { host: seed[1].replace(/^\[|\]$/g, ''), port }
  })
  return { hosts, auth, tls: m[1] === 'rediss' }
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
    timer = setTimeout(() => reject(new Error(`cannot reach Redis at ${redactUrl(url)} within ${timeoutMs} ms; start Redis there or point REDIS_URL (or --redis) at one`)), timeoutMs)
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
