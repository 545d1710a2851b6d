// A gateway whose Redis goes away: /v1 answers 503 `unavailable` at once (the
// runtime's connection queues commands until Redis returns, so without the gate
// requests hang), a request already waiting gets the same 503 once the outage
// lasts TROUPE_GATEWAY_REDIS_WAIT_MS, and everything works again after Redis
// restarts. Runs on a private redis-server that the test kills.
import { rmSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_PENDING_SIGN_OUTS } from '../../runtime/gateway/pending-sign-outs.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { eventually } from '../helpers/redis.ts'
import { call, sleep, startStack, type Reply, type Stack } from './helpers.ts'

// Long enough that "at once" needs no clock: a request the gate did not answer
// at once would wait this long for its 503, and `timed` gives up well before.
const WAIT_MS = 4000
const AT_ONCE_MS = 2000
// Every write reaches the disk before its reply: the tokens survive a kill.
const REDIS_ARGS = ['--appendfsync', 'always']

/** The redis-server running now (a restart replaces it, on the same port and data). */
let redis: RedisProcess
const servers: RedisProcess[] = []
let s: Stack
let token: string

beforeAll(async () => {
  redis = await startRedis({ args: REDIS_ARGS, keepData: true })
  servers.push(redis)
  s = await startStack({ config: { redisUrl: redis.url }, gateway: { http: { redisWaitMs: WAIT_MS } } })
  token = (await s.login('otto')).access_token
})
afterAll(async () => {
  await s?.stop()
  for (const r of servers) await r.stop()
  if (redis) rmSync(redis.dir, { recursive: true, force: true })
})

/** A call that gives up after `ms`: a hanging request fails the test instead of stalling it. */
async function timed(method: string, path: string, opts: { token?: string; cookie?: string; body?: unknown; headers?: Record<string, string> }, ms = 5000): Promise<{ r: Reply | null; took: number }> {
  const t0 = performance.now()
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([call(s, method, path, opts), new Promise<null>((res) => (timer = setTimeout(() => res(null), ms)))])
  clearTimeout(timer)
  return { r, took: performance.now() - t0 }
}

function expectUnavailable(x: { r: Reply | null; took: number }): void {
  expect(x.r, 'the request hung').not.toBeNull()
  const r = x.r as Reply
  expect(r.status, r.text).toBe(503)
  expect((r.json as { code: string }).code).toBe('unavailable')
  expect(r.headers.get('content-type')).toMatch(/problem\+json/)
  expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
}

async function restart(): Promise<void> {
  redis = await startRedis({ port: redis.port, dir: redis.dir, args: REDIS_ARGS, keepData: true })
  servers.push(redis)
  await eventually(async () => (await call(s, 'GET', '/v1/me', { token })).status === 200, 15_000, 'the gateway answers again')
}

describe('gateway during a Redis outage', () => {
  it('answers 503 unavailable at once while Redis is down, and recovers when it returns', async () => {
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
    redis.kill()
    await eventually(() => Promise.resolve(s.gw.deps.redis.status !== 'ready'), 5000, 'the connection to notice')
    expectUnavailable(await timed('GET', '/v1/me', { token }, AT_ONCE_MS))
    expectUnavailable(await timed('POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } }, AT_ONCE_MS))
    // Public routes read Redis too; the UI's files do not.
    expectUnavailable(await timed('POST', '/v1/auth/token', { body: { credential: 'tcr.otto.AAAAAAAAAAAAAAAA.' + 'A'.repeat(43) } }, AT_ONCE_MS))
    expect((await call(s, 'GET', '/')).status).toBe(200)
    expect(await s.rt.metrics.registry.metrics()).toMatch(/troupe_http_requests_total\{route="\/v1\/me",status="503"\} [1-9]/)
    await restart()
    const started = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
    expect(started.status, started.text).toBe(201)
  })

  it('signs a browser out while Redis is down: the cookie is cleared at once, the session revoked once Redis is back', async () => {
    const cookie = await s.session('otto')
    const other = await s.session('otto')
    expect((await call(s, 'GET', '/v1/me', { cookie })).status).toBe(200)
    redis.kill()
    await eventually(() => Promise.resolve(s.gw.deps.redis.status !== 'ready'), 5000, 'the connection to notice')
    // Another site still may not sign the browser out, Redis or not.
    const csrf = await timed('POST', '/v1/auth/logout', { cookie: other, headers: { origin: 'https://evil.example' } }, AT_ONCE_MS)
    expect(csrf.r?.status, csrf.r?.text).toBe(403)
    expect(csrf.r?.headers.get('set-cookie')).toBeNull()
    const out = await timed('POST', '/v1/auth/logout', { cookie }, AT_ONCE_MS)
    expect(out.r, 'the sign-out hung').not.toBeNull()
    expect(out.r?.status, out.r?.text).toBe(204)
    expect(out.r?.headers.get('set-cookie')).toMatch(/^troupe_session=; .*Max-Age=0/)
    // Nothing presented: nothing to revoke, the cookie cleared all the same.
    expect((await timed('POST', '/v1/auth/logout', {}, AT_ONCE_MS)).r?.status).toBe(204)
    // What only Redis can revoke is not acknowledged with a 204 that revoked nothing.
    expectUnavailable(await timed('POST', '/v1/auth/logout', { token }, AT_ONCE_MS))
    expectUnavailable(await timed('POST', '/v1/auth/logout', { body: { refresh_token: 'trt.otto.x.y' } }, AT_ONCE_MS))
    expectUnavailable(await timed('POST', '/v1/auth/logout', { cookie: other, body: { all: true } }, AT_ONCE_MS))
    await restart()
    // The signed-out session is deleted server-side once Redis is back; the others were not touched.
    await eventually(async () => (await call(s, 'GET', '/v1/me', { cookie })).status === 401, 10_000, 'the session revoked')
    expect((await call(s, 'GET', '/v1/me', { cookie: other })).status).toBe(200)
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
  })

  it('answers a request that was already waiting on Redis once the outage lasts the wait bound', async () => {
    // A stalled Redis keeps the connection up: the request is sent and waits for its reply.
    redis.pause()
    const waiting = timed('GET', '/v1/me', { token }, WAIT_MS + 6000)
    await sleep(200)
    redis.kill()
    const x = await waiting
    expectUnavailable(x)
    expect(x.took).toBeGreaterThanOrEqual(WAIT_MS)
    await restart()
  })

  it('keeps what sign-outs during an outage leave behind bounded, and revokes the sessions presented once Redis is back', async () => {
    const first = await s.session('otto')
    const last = await s.session('otto')
    const kept = await s.session('otto')
    const { redis: client, signOuts } = s.gw.deps
    // ioredis's offline queue is private; its length is what grew without bound.
    const queued = (): number => (client as unknown as { offlineQueue: { length: number } }).offlineQueue.length
    redis.kill()
    await eventually(() => Promise.resolve(client.status !== 'ready'), 5000, 'the connection to notice')
    const logout = async (cookie: string): Promise<void> => {
      const r = await s.gw.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: { cookie } })
      expect(r.statusCode, r.body).toBe(204)
      expect(String(r.headers['set-cookie'])).toMatch(/^troupe_session=; .*Max-Age=0/)
    }
    await logout(first)
    const before = queued()
    // Nothing can be verified now: anything shaped like a session token is accepted,
    // more of them than the cap, and the same one again and again.
    const fake = (i: number): string => `troupe_session=tss.otto.${String(i).padStart(16, 'A')}.${'B'.repeat(43)}`
    for (let i = 0; i < MAX_PENDING_SIGN_OUTS + 500; i++) await logout(fake(i))
    for (let i = 0; i < 500; i++) await logout(fake(7))
    await logout(last)
    // One queued command chain per sign-out used to wait here (and hold its request) until Redis returned.
    expect(queued() - before).toBeLessThan(50)
    expect(signOuts.size).toBe(MAX_PENDING_SIGN_OUTS)
    await restart()
    await eventually(() => Promise.resolve(signOuts.size === 0), 15_000, 'the pending sign-outs to run')
    // The newest sign-out is revoked; the oldest was forgotten over the cap and lasts until it expires (documented).
    await eventually(async () => (await call(s, 'GET', '/v1/me', { cookie: last })).status === 401, 10_000, 'the session revoked')
    expect((await call(s, 'GET', '/v1/me', { cookie: first })).status).toBe(200)
    expect((await call(s, 'GET', '/v1/me', { cookie: kept })).status).toBe(200)
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
  }, 60_000)
})
