// Event streams opened concurrently: the per-user stream cap holds exactly when
// many opens race past the check at once, and a stream that was opening as the
// gateway began to stop is ended, so the stop completes.
import { connect, type Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { emitEvents } from '../../runtime/claims.ts'
import { encodeEvent } from '../../runtime/events.ts'
import type { GatewayServiceOptions } from '../../runtime/gateway/service.ts'
import { startRedis } from '../../scripts/services/redis.ts'
import { eventually } from '../helpers/redis.ts'
import { call, openSse, sleep, startStack, type Stack } from './helpers.ts'

/** A stream that stays open for as long as the test: nobody is dropped for being slow. */
const PATIENT: GatewayServiceOptions = {
  sse: { slowClientMs: 60_000, maxQueueBytes: 64 * 1024 * 1024 },
  limits: { ratePerSec: 10_000, burst: 10_000 },
}

async function withStack(opts: GatewayServiceOptions, fn: (s: Stack, token: string) => Promise<void>, redisUrl?: string): Promise<void> {
  const s = await startStack({ gateway: { ...PATIENT, ...opts, sse: { ...PATIENT.sse, ...opts.sse } }, ...(redisUrl ? { config: { redisUrl } } : {}) })
  try {
    await fn(s, (await s.login('stu')).access_token)
  } finally {
    await s.stop()
  }
}

async function startWorkflow(s: Stack, token: string): Promise<string> {
  const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
  expect(r.status, r.text).toBe(201)
  return (r.json as { workflowId: string }).workflowId
}

/** Appends `n` events of 32 KiB: far more than the socket buffers of a client that reads nothing hold. */
async function emitBig(s: Stack, wf: string, n: number): Promise<void> {
  const big = 'x'.repeat(32 * 1024)
  for (let b = 0; b < n / 10; b++) {
    await emitEvents(s.gw.deps.client.ctx, wf, Array.from({ length: 10 }, (_, i) => encodeEvent({ workflowId: wf, type: 'blob', content: { b, i, big } })))
  }
}

/**
 * A raw HTTP client that asks for `path`, reads the response head, and then
 * never reads again: the server's writes fill the socket and stay there.
 */
function openStuck(s: Stack, path: string, token: string): Promise<{ status: number; socket: Socket }> {
  const u = new URL(s.url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname)
    let head = ''
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head)
      if (!m || !head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      socket.pause()
      resolve({ status: Number(m[1]), socket })
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${token}\r\nAccept: text/event-stream\r\n\r\n`)
  })
}

/** Stops the gateway; resolves with how long that took, or null when it had not finished after `boundMs`. */
async function timedStop(s: Stack, boundMs: number): Promise<number | null> {
  const t0 = performance.now()
  let timer: NodeJS.Timeout | undefined
  const outcome = await Promise.race([
    s.service.stop().then(() => performance.now() - t0),
    new Promise<null>((r) => (timer = setTimeout(() => r(null), boundMs))),
  ])
  clearTimeout(timer)
  return outcome
}

describe('gateway SSE under concurrent opens', () => {
  it('holds the per-user stream cap exactly under concurrent opens, and counts each refusal', async () => {
    const CAP = 4
    const OPENS = 24
    // A private Redis that the test can stall: the opens then queue up behind it
    // and their reads all come back at once, as after any hiccup of Redis.
    const redis = await startRedis()
    try {
      await withStack({ sse: { maxStreamsPerUser: CAP } }, async (s, token) => {
        // An ended workflow with a long history: each open reads Redis once more
        // after the cap check, and its replay then blocks on the unread socket.
        const wf = await startWorkflow(s, token)
        await emitBig(s, wf, 400)
        await call(s, 'POST', `/v1/workflows/${wf}/actions`, { token, body: { agent: 'counter', type: 'finish' } })
        await eventually(async () => ((await call(s, 'GET', `/v1/workflows/${wf}`, { token })).json as { status: string }).status === 'completed', 15_000, 'workflow completed')
        redis.pause()
        const pending = Array.from({ length: OPENS }, () => openStuck(s, `/v1/workflows/${wf}/events?after=0`, token))
        await sleep(300)
        redis.resume()
        const opened = await Promise.all(pending)
        try {
          const statuses = opened.map((o) => o.status)
          expect(statuses.filter((x) => x === 200).length, statuses.join(' ')).toBe(CAP)
          expect(statuses.filter((x) => x === 429).length, statuses.join(' ')).toBe(OPENS - CAP)
          expect(await s.rt.metrics.registry.metrics()).toMatch(new RegExp(`troupe_rate_limited_total\\{kind="streams"\\} ${OPENS - CAP}\\n`))
        } finally {
          for (const o of opened) o.socket.destroy()
        }
      }, redis.url)
    } finally {
      redis.resume()
      await redis.stop()
    }
  })

  it('ends a stream that was opening when the gateway began to stop', async () => {
    await withStack({}, async (s, token) => {
      const wf = await startWorkflow(s, token)
      // The first step of a stop; the request below reaches the hub after it.
      s.gw.deps.hub.close()
      const late = openSse(s, `/v1/workflows/${wf}/events`, { authorization: `Bearer ${token}` })
      try {
        expect(await late.status).toBe(200)
        let timer: NodeJS.Timeout | undefined
        const ended = await Promise.race([late.closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 3000)))])
        clearTimeout(timer)
        expect(ended, 'the late stream was left open').toBe(true)
        expect(await timedStop(s, 10_000), 'gateway still stopping after 10 s').not.toBeNull()
      } finally {
        late.close()
      }
    })
  })
})
