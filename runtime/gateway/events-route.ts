// GET /v1/workflows/:id/events: the workflow's events as Server-Sent Events,
// resumable exactly after `Last-Event-ID` (or `?after=` for a first connection).
import type { FastifyInstance } from 'fastify'
import { TroupeError } from '../errors.ts'
import { isLastStreamId, isStreamId } from '../events.ts'
import { TERMINAL_STATUSES, type WorkflowStatusValue } from '../types.ts'
import { caller } from './authenticate.ts'
import type { GatewayDeps } from './deps.ts'
import { GatewayError } from './problem.ts'
import { eventsQuery, workflowParams } from './schemas.ts'
import { SseStream } from './sse-stream.ts'

/** Registers the SSE route. */
export function registerEventsRoute(app: FastifyInstance, deps: GatewayDeps): void {
  const { redis, keys, hub, metrics, client, settings, store } = deps
  /** Open streams per user in this process. */
  const open = new Map<string, number>()
  const streamsOf = (user: string): number => open.get(user) ?? 0

  app.get<{ Params: { id: string }; Querystring: { after?: string } }>(
    '/v1/workflows/:id/events',
    // No automatic HEAD twin: a HEAD request must not open a stream.
    { schema: { params: workflowParams, querystring: eventsQuery }, config: { sse: true }, exposeHeadRoute: false },
    async (request, reply) => {
      const auth = caller(request)
      const { user } = auth
      const wf = request.params.id
      // The browser's reconnect carries the URL it first used; its header is newer.
      const header = request.headers['last-event-id']
      const after = (typeof header === 'string' && header !== '' ? header : request.query.after) ?? '0'
      if (!isStreamId(after)) throw new GatewayError('validation', 'Last-Event-ID must be a stream id like 1700000000000-0')
      if (isLastStreamId(after)) throw new GatewayError('validation', 'Last-Event-ID is the largest possible stream id: no event can follow it')
      const [owner, status] = await redis.hmget(keys.status(wf), 'owner', 'status')
      if (owner !== user) throw new TroupeError('workflow_not_found', `no workflow ${wf}`)
      // Streams are long-lived sockets that cost one rate-limit token each: a cap
      // per user and gateway process keeps one user from holding them by the thousand.
      if (streamsOf(user) >= settings.sse.maxStreamsPerUser) {
        metrics.rateLimited.inc({ kind: 'streams' })
        throw new GatewayError('too_many_streams', `${settings.sse.maxStreamsPerUser} event streams are open for ${user} on this gateway (TROUPE_SSE_MAX_STREAMS_PER_USER); close one first`, { 'retry-after': String(Math.ceil(settings.sse.retryMs / 1000)) })
      }
      // The slot is taken at once, before the next await: concurrent opens that
      // all passed the check above would otherwise all take one. Every way out
      // below that opens no stream gives it back.
      open.set(user, streamsOf(user) + 1)
      let slotHeld = true
      const giveBack = (): void => {
        if (!slotHeld) return
        slotHeld = false
        const n = streamsOf(user) - 1
        if (n > 0) open.set(user, n)
        else open.delete(user)
      }
      const res = reply.raw
      let stream: SseStream
      let opened = false
      try {
        if (status && TERMINAL_STATUSES.has(status as WorkflowStatusValue)) {
          // Nothing more will ever come: 204 tells EventSource to stop reconnecting.
          const start = after === '0' || after === '0-0' ? '-' : `(${after}`
          const rest = await redis.xrange(keys.events(wf), start, '+', 'COUNT', 1)
          if (rest.length === 0) return reply.code(204).send()
        }
        // Already answered (503 while Redis was away, see redis-gate.ts).
        if (reply.sent) return

        reply.hijack()
        res.writeHead(200, {
          ...(reply.getHeaders() as Record<string, string>),
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache, no-transform',
          // Written here, past the onSend hook that gives every other /v1 answer it.
          'x-content-type-options': 'nosniff',
          connection: 'keep-alive',
          // Reverse proxies (nginx) must not buffer the stream.
          'x-accel-buffering': 'no',
          'x-request-id': String(request.id),
        })
        res.socket?.setNoDelay(true)
        metrics.httpRequests.inc({ route: '/v1/workflows/:id/events', status: '200' })
        metrics.httpDuration.observe({ route: '/v1/workflows/:id/events' }, reply.elapsedTime / 1000)
        metrics.sseConnections.inc()
        stream = new SseStream(wf, res, after, {
          redis,
          keys,
          settings: settings.sse,
          status: () => client.getStatus(wf),
          // Checked at every heartbeat: a stream ends once its token or session
          // expires or is revoked (sign-out, troupe auth revoke), and the client's
          // reconnect shows whether it may go on.
          authorized: () => store.stillValid(auth),
          onDrop: (reason) => {
            metrics.sseDropped.inc({ reason })
            request.log.info({ wf, reason, last: stream.last }, 'SSE client dropped')
          },
          onClose: () => {
            metrics.sseConnections.dec()
            giveBack()
            hub.detach(wf, stream)
          },
        })
        opened = true
      } finally {
        if (!opened) giveBack()
      }
      // The client may have left before the stream listened for it (its 'close'
      // came during the reads above): it would hold a slot until the workflow ended.
      if (request.raw.destroyed || request.raw.socket.destroyed || res.destroyed) stream.close(true)
      try {
        await hub.attach(wf, stream)
        // The client may have left while we subscribed, or the gateway began
        // stopping: the stream is closed, and its close ran before attach.
        if (stream.state === 'closed') hub.detach(wf, stream)
        else await stream.start()
      } catch (err) {
        request.log.error({ err, wf }, 'SSE stream failed')
        stream.close(true)
      }
      return reply
    },
  )
}
