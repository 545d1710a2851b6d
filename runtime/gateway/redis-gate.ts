// While the gateway's Redis connection is down, /v1 answers 503 `unavailable`
// instead of hanging. The runtime's clients queue commands until Redis returns
// (maxRetriesPerRequest: null in redis/connection.ts, which the runtime relies
// on), so without this gate every API request would wait out the whole outage:
// new requests are refused at once, and a request that was already waiting
// when the connection dropped is answered once the outage has lasted `waitMs`.
// A route marked `withoutRedis` (sign-out) is let through during an outage: it
// answers what it can without Redis by itself.
//
// A Redis that stops answering while its connection stays up (a SIGSTOPped
// process, a wedged node or host) closes nothing, so the same gate also
// probes: while requests are waiting, a PING goes out at most once per
// PROBE_EVERY_MS; one unanswered for `waitMs` marks Redis stalled, which the
// gate treats as an outage (waiting requests get their 503, new ones at once)
// until that PING is answered. At most one PING is outstanding, and refused
// requests send nothing, so a stall queues a bounded number of commands.
//
// Not on a Redis Cluster: a PING reaches one node, so one stalled master would
// put every request into 503 (most touch only healthy nodes), and one it
// misses would go unnoticed. There the gate watches the connection only, and
// readiness still PINGs (bounded, one at a time) without marking a stall.
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { isCluster } from '../redis/batch.ts'
import type { RedisClient } from '../redis/connection.ts'
import { GatewayError, sendProblem } from './problem.ts'
import { isApiPath } from './routes.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Runs while Redis is away or stalled, never waiting on it then (it checks `GatewayDeps.redisReady()` itself). */
    withoutRedis?: boolean
  }
}

// ioredis retries the connection at least every 2 s (redis/connection.ts).
const RETRY_AFTER = { 'retry-after': '2' }
/** Least time between two stall probes while requests wait (a PING a second is nothing to Redis). */
export const PROBE_EVERY_MS = 1000

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
    // A new connection's ready check was answered: whatever stalled the old
    // one, Redis answers now, and a PING lost with the old connection must
    // not keep the next probes from going out (nor judge the new one).
    this.connections++
    this.stalled = false
    this.pinging = 0
  }
  /** A PING was not answered within `waitMs` and still is not. */
  private stalled = false
  /** The verdict of the probe deciding now (its PING sent, `waitMs` not over). */
  private probing: Promise<boolean> | null = null
  /** Number of the PING sent and not answered yet (it may outlive its probe's verdict), 0 when none. */
  private pinging = 0
  private pings = 0
  /** Connections made ready so far: a probe judges only the one it was sent on. */
  private connections = 0
  private nextProbe: NodeJS.Timeout | null = null
  private lastAnswer = performance.now()
  private closed = false
  /** Stall detection is off on a Cluster (see the top of this file). */
  private readonly detectStalls: boolean

  constructor(
    private readonly redis: RedisClient,
    private readonly waitMs: number,
    private readonly log?: { warn(msg: string): void; info(msg: string): void },
    /** Called when Redis answers again after a stall (no `ready` event marks that: the connection never dropped). */
    private readonly onAnswerAgain?: () => void,
  ) {
    this.detectStalls = !isCluster(redis)
    redis.on('close', this.onClose)
    redis.on('ready', this.onReady)
  }

  /** Whether commands run now: not waiting in ioredis's offline queue, nor behind a Redis that stopped answering. */
  get ready(): boolean {
    return this.redis.status === 'ready' && !this.stalled
  }

  /**
   * Whether Redis answers a PING within `waitMs` (readiness). Joins a probe
   * already deciding; false at once while the connection is down, Redis
   * stalled, or (on a Cluster, which marks no stall) a PING is still
   * unanswered past `waitMs`, without sending another PING.
   */
  probe(): Promise<boolean> {
    if (!this.ready || this.pinging) return this.probing ?? Promise.resolve(this.ready && !this.pinging)
    const sent = performance.now()
    const id = ++this.pings
    const connection = this.connections
    this.pinging = id
    const verdict = new Promise<boolean>((resolve) => {
      let decided = false
      const decide = (ok: boolean): void => {
        decided = true
        if (this.probing === verdict) this.probing = null
        resolve(ok)
      }
      // The wall clock alone misjudges a gateway whose own event loop was
      // blocked past `waitMs` (a long GC pause, CPU throttling): Node runs the
      // overdue timer before it reads the socket, where the PONG may already
      // wait. The verdict is left to the check phase, which comes after the
      // poll phase that reads every reply received by then.
      const timer = setTimeout(() => {
        setImmediate(() => {
          if (decided) return
          if (this.pinging === id && this.connections === connection) this.stall()
          decide(this.ready && this.pinging !== id)
        }).unref()
      }, this.waitMs)
      timer.unref()
      // An error reply (or a connection ended for good) is an answer too:
      // the connection's own state says the rest.
      const answered = (): void => {
        this.lastAnswer = performance.now()
        if (this.pinging === id) {
          this.pinging = 0
          if (this.stalled) {
            this.stalled = false
            this.log?.info(`Redis answers again, ${Math.round(this.lastAnswer - sent)} ms after the PING that found it stalled`)
            this.onAnswerAgain?.()
          }
        }
        if (!decided) {
          clearTimeout(timer)
          decide(true)
        }
        this.watch()
      }
      this.redis.ping().then(answered, answered)
    })
    this.probing = verdict
    return verdict
  }

  /** Keeps a probe due while requests wait on Redis. */
  private watch(): void {
    if (!this.detectStalls || this.closed || this.nextProbe || this.probing || this.pending.size === 0) return
    const due = Math.max(0, this.lastAnswer + PROBE_EVERY_MS - performance.now())
    this.nextProbe = setTimeout(() => {
      this.nextProbe = null
      if (this.pending.size > 0) void this.probe()
    }, due)
    this.nextProbe.unref()
  }

  private stall(): void {
    // A dropped connection is an outage, the close timer's to answer.
    if (!this.detectStalls || this.stalled || this.closed || this.redis.status !== 'ready') return
    this.stalled = true
    this.log?.warn(`Redis has not answered a PING for ${this.waitMs} ms though its connection is up: answering 503 until it does`)
    this.refusePending()
  }

  /** onRequest hook: refuses /v1 requests while Redis is away or stalled (but `withoutRedis` routes), and tracks the others. */
  readonly hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    // The UI's static files need no Redis.
    if (!isApiPath(request.url)) return done()
    if (!this.ready) return request.routeOptions.config.withoutRedis ? done() : done(unavailable())
    this.pending.add(reply)
    reply.raw.once('close', () => this.pending.delete(reply))
    this.watch()
    done()
  }

  private expire(): void {
    this.timer = null
    if (!this.ready) this.refusePending()
  }

  /** Answers every gated request still waiting with 503. */
  private refusePending(): void {
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
    this.closed = true
    this.redis.off('close', this.onClose)
    this.redis.off('ready', this.onReady)
    this.onReady()
    if (this.nextProbe) clearTimeout(this.nextProbe)
    this.nextProbe = null
    this.pending.clear()
  }
}
