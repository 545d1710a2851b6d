// Rate limits (GCRA) and the daily start quota: 429 with Retry-After,
// RateLimit-Policy and RateLimit; recovery after the window; per-user overrides;
// sign-in attempts braked; and a bounded request loop on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { TokenPair } from '../../runtime/gateway/auth-store.ts'
import { call, startStack, type Reply, type Stack } from './helpers.ts'

let s: Stack
const RATE = 5
const BURST = 10
const DAILY = 3

beforeAll(async () => {
  s = await startStack({ gateway: { limits: { ratePerSec: RATE, burst: BURST, dailyStarts: DAILY, authPerMin: 4 } } })
  // Time moves only when a test says so: a slow CI machine must not refill buckets mid-test.
  s.freeze()
})
afterAll(async () => {
  await s?.stop()
})

function rateState(r: Reply, policy: string): { r: number; t: number } | null {
  const m = new RegExp(`"${policy}";r=(\\d+);t=(\\d+)`).exec(r.headers.get('ratelimit') ?? '')
  return m ? { r: Number(m[1]), t: Number(m[2]) } : null
}

describe('gateway rate limits', () => {
  it('allows a burst, then answers 429 with Retry-After and RateLimit headers, then recovers', async () => {
    const { access_token: token } = await s.login('rita')
    const ok: Reply[] = []
    for (let i = 0; i < BURST; i++) ok.push(await call(s, 'GET', '/v1/me', { token }))
    expect(ok.map((r) => r.status)).toEqual(Array(BURST).fill(200))
    expect(ok[0]?.headers.get('ratelimit-policy')).toBe(`"burst";q=${BURST};w=${BURST / RATE}, "daily";q=${DAILY};w=86400`)
    expect(rateState(ok[0] as Reply, 'burst')?.r).toBe(BURST - 1)
    expect(rateState(ok[BURST - 1] as Reply, 'burst')?.r).toBe(0)

    const limited = await call(s, 'GET', '/v1/me', { token })
    expect(limited.status).toBe(429)
    expect(limited.headers.get('content-type')).toMatch(/problem\+json/)
    expect((limited.json as { code: string }).code).toBe('rate_limited')
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(limited.headers.get('ratelimit-policy')).toContain(`"burst";q=${BURST}`)
    expect(rateState(limited, 'burst')?.r).toBe(0)
    // Hammering a 429 does not push recovery further out.
    for (let i = 0; i < 5; i++) expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(429)

    s.advance(1000 / RATE + 5) // one emission interval later: exactly one more request
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(429)
    s.advance((BURST * 1000) / RATE) // a full window: the whole burst again
    const back = await call(s, 'GET', '/v1/me', { token })
    expect(back.status).toBe(200)
    expect(rateState(back, 'burst')?.r).toBe(BURST - 1)
    expect(await s.rt.metrics.registry.metrics()).toMatch(/troupe_rate_limited_total\{kind="rate"\} [1-9]/)
  })

  it('enforces the daily quota of started workflows, refunding failed starts', async () => {
    const { access_token: token } = await s.login('quinn')
    const bad = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'ghost', type: 'ping' } })
    expect(bad.status).toBe(422) // a failed start is given back
    let last: Reply | null = null
    for (let i = 0; i < DAILY; i++) {
      const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
      expect(r.status, r.text).toBe(201)
      expect(rateState(r, 'daily')?.r).toBe(DAILY - 1 - i)
      last = r
    }
    const over = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
    expect(over.status).toBe(429)
    // Refused, so it took no slot of the burst either (the clock is frozen).
    expect(rateState(over, 'burst')?.r).toBe(rateState(last as Reply, 'burst')?.r)
    expect((over.json as { code: string }).code).toBe('quota_exceeded')
    const retry = Number(over.headers.get('retry-after'))
    expect(retry).toBeGreaterThan(0)
    expect(retry).toBeLessThanOrEqual(86400)
    expect(rateState(over, 'daily')).toEqual({ r: 0, t: expect.any(Number) as number })
    // Other requests still pass; the quota only counts starts.
    expect((await call(s, 'GET', '/v1/workflows', { token })).status).toBe(200)
    expect(await s.rt.metrics.registry.metrics()).toMatch(/troupe_rate_limited_total\{kind="quota"\} [1-9]/)
    // The next UTC day starts afresh.
    s.advance(retry * 1000 + 1000)
    const fresh = (await s.login('quinn')).access_token // the old one expired meanwhile
    expect((await call(s, 'POST', '/v1/workflows', { token: fresh, body: { agent: 'counter', type: 'ping' } })).status).toBe(201)
  })

  it('gives a start back on the day it was counted only', async () => {
    const { access_token: token } = await s.login('rolf')
    const start = async (): Promise<number | undefined> => {
      const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
      expect(r.status, r.text).toBe(201)
      return rateState(r, 'daily')?.r
    }
    expect(await start()).toBe(DAILY - 1)
    const now = s.gw.deps.now()
    const today = new Date(now - (now % 86_400_000)).toISOString().slice(0, 10)
    // A refund that lands after midnight for a start counted the day before: nothing to give back today.
    await s.gw.deps.limiter.refundStart('rolf', '1999-12-31')
    expect(await start()).toBe(DAILY - 2)
    await s.gw.deps.limiter.refundStart('rolf', today)
    expect(await start()).toBe(DAILY - 2)
  })

  it('takes a burst below one as one request at a time, and refuses to store it', async () => {
    const { access_token: token } = await s.login('pace')
    await expect(s.gw.deps.store.setLimits('pace', { burst: 0 })).rejects.toMatchObject({ code: 'config' })
    // Stored anyway (by hand, or by an older version): strict pacing, not a lockout.
    await s.redis.hset(s.gw.deps.keys.authCredential('pace'), 'burst', '0')
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(429)
    s.advance(1000 / RATE + 5)
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
  })

  it('applies per-user overrides from the credential hash', async () => {
    const { access_token: token } = await s.login('vip')
    await s.gw.deps.store.setLimits('vip', { burst: 30, daily: 0 })
    const statuses: number[] = []
    for (let i = 0; i < 30; i++) statuses.push((await call(s, 'GET', '/v1/me', { token })).status)
    expect(statuses.every((x) => x === 200)).toBe(true)
    const r = await call(s, 'GET', '/v1/me', { token })
    expect(r.status).toBe(429)
    expect(r.headers.get('ratelimit-policy')).toBe(`"burst";q=30;w=${30 / RATE}`)
  })

  it('brakes credential guessing per user', async () => {
    const credential = await s.issue('sam')
    const wrong = credential.slice(0, -4) + 'AAAA'
    const codes: number[] = []
    for (let i = 0; i < 5; i++) codes.push((await call(s, 'POST', '/v1/auth/token', { body: { credential: wrong } })).status)
    expect(codes.slice(0, 4)).toEqual([401, 401, 401, 401])
    expect(codes[4]).toBe(429)
    // Unknown users leave no limiter state behind.
    await call(s, 'POST', '/v1/auth/token', { body: { credential: 'tcr.nobody-here.AAAAAAAAAAAAAAAA.' + 'A'.repeat(43) } })
    expect(await s.redis.exists(s.gw.deps.keys.authRate('nobody-here'))).toBe(0)
  })

  it("meters refreshes on the user's request bucket; a refused one rotates nothing", async () => {
    let t = await s.login('rex')
    for (let i = 0; i < BURST; i++) {
      const r = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
      expect(r.status, r.text).toBe(200)
      t = r.json as TokenPair
    }
    const limited = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
    expect(limited.status).toBe(429)
    expect((limited.json as { code: string }).code).toBe('rate_limited')
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(rateState(limited, 'burst')?.r).toBe(0)
    s.advance(1000 / RATE + 5)
    // The refused refresh changed nothing: the access token it would have replaced still works...
    expect((await call(s, 'GET', '/v1/me', { token: t.access_token })).status).toBe(200)
    s.advance(1000 / RATE + 5)
    // ...and the refresh token is still its family's current one (not superseded, so no reuse alarm).
    const again = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
    expect(again.status, again.text).toBe(200)

    // Refresh tokens that do not verify take nothing from the bucket: a user name is no key to it.
    const { access_token: other } = await s.login('rhea')
    const forged = `trt.rhea.${'A'.repeat(16)}.${'A'.repeat(43)}`
    for (let i = 0; i < BURST + 2; i++) expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: forged } })).status).toBe(401)
    expect(rateState(await call(s, 'GET', '/v1/me', { token: other }), 'burst')?.r).toBe(BURST - 1)
  })

  it('survives a bounded loop of concurrent requests on loopback', async () => {
    expect(new URL(s.url).hostname).toBe('127.0.0.1')
    s.freeze(false) // this one measures real time
    const { access_token: token } = await s.login('loop')
    await s.gw.deps.store.setLimits('loop', { rate: 200, burst: 100 })
    const total = 400
    const counts = new Map<number, number>()
    const t0 = performance.now()
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < total) {
        next++
        const r = await call(s, 'GET', '/v1/workflows?limit=5', { token })
        counts.set(r.status, (counts.get(r.status) ?? 0) + 1)
      }
    }))
    const secs = (performance.now() - t0) / 1000
    const ok = counts.get(200) ?? 0
    const limited = counts.get(429) ?? 0
    expect(ok + limited).toBe(total)
    expect(ok).toBeGreaterThanOrEqual(100)
    // With 200/s sustained and a burst of 100, the limiter admits at most burst + rate * elapsed.
    expect(ok).toBeLessThanOrEqual(100 + Math.ceil(200 * secs) + 1)
    console.info(`loopback loop: ${total} requests in ${secs.toFixed(2)} s (${Math.round(total / secs)} req/s), ${ok} ok, ${limited} limited`)
  })
})
