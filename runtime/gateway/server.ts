// Builds the gateway: a Fastify 5 app with the /v1 API, SSE, auth, rate limits,
// problem+json errors, request ids in pino logs, metrics, and the web UI.
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { LogController, type ConnectionError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { nanoid } from 'nanoid'
import { Registry } from 'prom-client'
import { TroupeClient } from '../client.ts'
import type { TroupeConfig } from '../config.ts'
import type { RedisClient } from '../redis/connection.ts'
import { Keys } from '../redis/keys.ts'
import { AuthStore } from './auth-store.ts'
import { registerAuthRoutes } from './auth-routes.ts'
import { createAuthHook } from './authenticate.ts'
import type { GatewayDeps } from './deps.ts'
import { registerEventsRoute } from './events-route.ts'
import { GatewayMetrics } from './metrics.ts'
import { PendingSignOuts } from './pending-sign-outs.ts'
import { connectionProblem, GatewayError, sendProblem } from './problem.ts'
import { RateLimiter } from './rate-limit.ts'
import { RedisGate } from './redis-gate.ts'
import { gatewaySettings, type GatewaySettingsInput } from './settings.ts'
import { SseHub } from './sse-hub.ts'
import { isApiPath, RouteTable } from './routes.ts'
import { registerUi } from './ui.ts'
import { registerWorkflowRoutes } from './workflow-routes.ts'

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /** Command connection (shared with the hosting runtime); the gateway duplicates it once for pub/sub. */
  redis: RedisClient
  cfg: TroupeConfig
  /** Registry for the gateway's series (the runtime's, so one /metrics shows all). */
  registry?: Registry
  settings?: GatewaySettingsInput
  /** Clock for token expiry and rate limits (tests move it instead of sleeping). */
  now?: () => number
}

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/

/** What Node leaves on a socket while a routed request's response exists (not in its typings). */
type HttpSocket = Socket & { _httpMessage?: { headersSent?: boolean } | null }

/**
 * Answers what Node's HTTP parser refuses before Fastify sees a request (bytes
 * that are not HTTP, oversized headers, slowloris timeouts) with the same
 * problem+json as every routed error, so clients and proxies need one error
 * format. The connection is always dropped: the parser cannot resynchronise.
 * Bound to the Fastify instance, like Fastify's own default handler.
 */
function answerClientError(this: FastifyInstance, metrics: GatewayMetrics, err: ConnectionError, socket: HttpSocket): void {
  const requestId = nanoid(12)
  const problem = connectionProblem(err, requestId)
  // A timer can fire on a routed request whose reply has already begun (a slow
  // body); a second status line spliced into that stream would corrupt it.
  const replyStarted = socket._httpMessage?.headersSent === true
  if (problem && socket.writable && !replyStarted) {
    const body = JSON.stringify(problem)
    socket.write(
      `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}\r\n` +
        'Content-Type: application/problem+json\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n' +
        `X-Request-Id: ${requestId}\r\n\r\n${body}`,
    )
    // Debug, like every 4xx (problem.ts): a client sending garbage must not fill the log.
    this.log.debug({ reqId: requestId, code: problem.code, nodeCode: err.code }, problem.detail)
    metrics.httpRequests.inc({ route: 'unparsed', status: String(problem.status) })
  }
  socket.destroy()
}

/**
 * Fastify's request log, at debug. Its two info lines per request (incoming,
 * completed) let any client, with or without a token, write to the log as fast
 * as it sends requests: at the default level that buried everything else. A
 * reply that failed is still an error; 5xx answers log their own error line
 * (problem.ts).
 */
class RequestsAtDebug extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request')
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }

  // A client that went away mid-answer (an SSE client leaving, say) is not news.
  override streamError(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    if ((error as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') reply.log.debug({ res: reply }, 'stream closed prematurely')
    else super.streamError(error, request, reply)
  }
}

/** A built gateway; `listen()` serves it, `close()` ends streams and stops it. */
export class Gateway {
  /** `http://host:port` once listening. */
  url = ''

  constructor(
    readonly app: FastifyInstance,
    readonly deps: GatewayDeps,
    private readonly gate: RedisGate,
  ) {}

  /** Listens on the configured host and port (0 picks a free one); returns the base URL. */
  async listen(): Promise<string> {
    const { host, port } = this.deps.settings
    await this.app.listen({ host, port })
    const addr = this.app.server.address()
    const p = addr && typeof addr === 'object' ? addr.port : port
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${p}`
    return this.url
  }

  /** Whether Redis answers within the gateway's Redis wait bound (readiness); false at once while it is known to be away or stalled. */
  redisAnswers(): Promise<boolean> {
    return this.gate.probe()
  }

  /** Ends every SSE stream (clients reconnect elsewhere), then closes the server. */
  async close(): Promise<void> {
    this.deps.hub.close()
    try {
      await this.app.close()
    } finally {
      this.gate.close()
      this.deps.signOuts.close()
    }
    await this.deps.client.close()
  }
}

/**
 * Builds the gateway without listening (tests may use `app.inject`).
 *
 * @example
 * ```ts
 * const gw = await createGateway({ redis, cfg: loadConfig(), settings: { port: 8080 } })
 * console.log(`gateway at ${await gw.listen()}`)
 * ```
 */
export async function createGateway(opts: GatewayOptions): Promise<Gateway> {
  const settings = gatewaySettings(opts.settings)
  const now = opts.now ?? Date.now
  const keys = new Keys(opts.cfg.namespace)
  const client = new TroupeClient(opts.redis, opts.cfg)
  const metrics = GatewayMetrics.for(opts.registry ?? new Registry())
  const store = new AuthStore(opts.redis, keys, settings.auth, now)

  const app = Fastify({
    logger: { level: settings.logLevel, stream: process.stderr },
    logController: new RequestsAtDebug(),
    requestIdHeader: false,
    // Honour a caller's request id (proxies, the UI) when it is tame, else mint one.
    genReqId: (req) => {
      const h = req.headers['x-request-id']
      return typeof h === 'string' && REQUEST_ID_RE.test(h) ? h : nanoid(12)
    },
    // Payload limit plus room for the envelope (agent, type, ...).
    bodyLimit: opts.cfg.maxPayloadBytes + 64 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    // Node's defaults (headers within 60 s, the connection check every 30 s) and
    // Fastify's (no request limit) let slowloris clients hold sockets for minutes.
    requestTimeout: settings.http.requestTimeoutMs,
    http: {
      headersTimeout: settings.http.headersTimeoutMs,
      requestTimeout: settings.http.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(settings.http.headersTimeoutMs / 4))),
    },
    clientErrorHandler(this: FastifyInstance, err: ConnectionError, socket: Socket) {
      answerClientError.call(this, metrics, err, socket)
    },
    // One hop, not `true`: trusting every hop made request.ip the leftmost
    // X-Forwarded-For entry, which the client writes. The proxy in front (the
    // peer, hop 0) is trusted; what it appends names the client. Fastify reads
    // a bare number as "trust nobody", so hops are counted here.
    trustProxy: settings.trustProxy ? (_address: string, hop: number) => hop < 1 : false,
  })
  // First hook: while Redis is away or stalled, the auth hook's own reads
  // would wait for it. Sign-outs made meanwhile are revoked once it answers.
  const gate = new RedisGate(opts.redis, settings.http.redisWaitMs, app.log, () => void deps.signOuts.drain())
  const deps: GatewayDeps = {
    redis: opts.redis,
    keys,
    client,
    store,
    limiter: new RateLimiter(opts.redis, keys, settings.limits, now),
    metrics,
    hub: new SseHub(client.subscriber(), keys, settings.sse.heartbeatMs),
    signOuts: new PendingSignOuts(opts.redis, store, app.log),
    settings,
    now,
    redisReady: () => gate.ready,
  }
  // Only JSON bodies: a text/plain body is a client mistake, answered with 415.
  app.removeContentTypeParser('text/plain')
  app.decorateRequest('auth', null)
  app.decorateRequest('quotaTaken', '')

  app.addHook('onRequest', gate.hook)
  app.addHook('onRequest', createAuthHook(deps))
  app.addHook('onSend', async (request, reply, payload) => {
    void reply.header('x-request-id', String(request.id))
    // API answers are one caller's data: no cache (browser, proxy) may keep or
    // replay them, and no browser may read them as anything but their type. A
    // route's own Cache-Control stays (token answers add Pragma). SSE streams
    // are written past this hook and set their own.
    if (isApiPath(request.url)) {
      if (!reply.hasHeader('cache-control')) void reply.header('cache-control', 'no-store')
      void reply.header('x-content-type-options', 'nosniff')
    }
    return payload
  })
  app.addHook('onResponse', async (request, reply) => {
    const cfg = request.routeOptions.config
    // SSE streams record themselves when they open (their "response" lasts minutes).
    if (cfg.sse && reply.statusCode === 200) return
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.httpRequests.inc({ route, status: String(reply.statusCode) })
    metrics.httpDuration.observe({ route }, reply.elapsedTime / 1000)
    if (request.quotaTaken && request.auth && reply.statusCode >= 400) {
      await deps.limiter.refundStart(request.auth.user, request.quotaTaken).catch((err: unknown) => request.log.warn({ err }, 'quota refund failed'))
    }
  })
  app.setErrorHandler((err, request, reply) => sendProblem(err, request, reply))
  const routes = new RouteTable()
  app.addHook('onRoute', (r) => routes.add(r.method, r.url, r.exposeHeadRoute !== false))
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? ''
    // A known path asked with the wrong method is a 405 naming the methods it takes (RFC 9110 §15.5.6).
    const allow = routes.methodsFor(path)
    const err = allow.length > 0
      ? new GatewayError('method_not_allowed', `${request.method} is not allowed on ${path}; use ${allow.join(', ')}`, { allow: allow.join(', ') })
      : new GatewayError('not_found', `no route for ${request.method} ${path}`)
    return sendProblem(err, request, reply)
  })

  registerAuthRoutes(app, deps)
  registerWorkflowRoutes(app, deps)
  registerEventsRoute(app, deps)
  registerUi(app)
  try {
    await app.ready()
  } catch (err) {
    gate.close()
    deps.signOuts.close()
    throw err
  }
  return new Gateway(app, deps, gate)
}
