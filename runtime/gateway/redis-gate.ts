// While the gateway's Redis connection is down, /v1 answers 503 `unavailable`
// instead of hanging. The runtime's clients queue commands until Redis returns
// (maxRetriesPerRequest: null in redis/connection.ts, which the runtime relies
// on), so without this gate every API request would wait out the whole outage:
// new requests are refused at once, and a request that was already waiting
// when the connection dropped is answered once the outage has lasted `waitMs`.
// A route marked `withoutRedis` (sign-out) is let through during an outage: it
// answers what it can without Redis by itself.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { RedisClient } from '../redis/connection.ts'
import { GatewayError, sendProblem } from './problem.ts'
import { isApiPath } from './routes.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Runs while Redis is away, never waiting on it then (it checks `redis.status` itself). */
    withoutRedis?: boolean
  }
}

// ioredis retries the connection at least every 2 s (redis/connection.ts).
const RETRY_AFTER = { 'retry-after': '2' }

/** The 503 of a request that needs Redis while it is away. */
export function unavailable(): GatewayError {
  return new GatewayError('unavailable', 'the gateway cannot reach Redis right now; retry shortly', RETRY_AFTER)
}

/** The onRequest gate of /v1 on the health of one Redis connection. */
export class RedisGate {
  /** Replies of gated requests not yet answered (SSE streams drop out once hijacked). */
  private readonly pending = new Set<FastifyReply>()
  private timer: NodeJS.Timeout | null = null
  private readonly onClose = (): void => {
    if (this.timer) return
    this.timer = setTimeout(() => this.expire(), this.waitMs)
    this.timer.unref()
  }
  private readonly onReady = (): void => {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  constructor(
    private readonly redis: RedisClient,
    private readonly waitMs: number,
  ) {
    redis.on('close', this.onClose)
    redis.on('ready', this.onReady)
  }

  /** Whether commands run now rather than wait in ioredis's offline queue. */
  get ready(): boolean {
    return this.redis.status === 'ready'
  }

  /** onRequest hook: refuses /v1 requests while Redis is away (but `withoutRedis` routes), and tracks the others. */
  readonly hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    // The UI's static files need no Redis.
    if (!isApiPath(request.url)) return done()
    if (!this.ready) return request.routeOptions.config.withoutRedis ? done() : done(unavailable())
    this.pending.add(reply)
    reply.raw.once('close', () => this.pending.delete(reply))
    done()
  }

  private expire(): void {
    this.timer = null
    if (this.ready) return
    for (const reply of [...this.pending]) {
      this.pending.delete(reply)
      if (reply.sent || reply.raw.headersSent) continue
      // What it asked may still be done once Redis returns (its commands are
      // queued), so a start keeps its place in the daily quota.
      reply.request.quotaTaken = ''
      sendProblem(unavailable(), reply.request, reply)
    }
  }

  /** Stops watching the connection (it outlives a stopped gateway). */
  close(): void {
    this.redis.off('close', this.onClose)
    this.redis.off('ready', this.onReady)
    this.onReady()
    this.pending.clear()
  }
}
