// Tokens and sessions: expiry, refresh rotation, reuse revoking the family
// (RFC 9700), logout, cookie sessions (including for SSE), cross-origin refusal,
// credential rotation, hashes-only storage, and the admin CLI.
import { request as httpRequest } from 'node:http'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { main } from '../../runtime/cli/main.ts'
import { MAX_FAMILIES, type TokenPair } from '../../runtime/gateway/auth-store.ts'
import { hashToken } from '../../runtime/gateway/tokens.ts'
import { call, openSse, startStack, type Stack } from './helpers.ts'

let s: Stack
const ACCESS_TTL = 60_000
const SESSION_TTL = 3_600_000

beforeAll(async () => {
  // Heartbeats often: each one checks that an open stream's credential is still good.
  s = await startStack({ gateway: { auth: { accessTtlMs: ACCESS_TTL, refreshTtlMs: 24 * 3600_000, sessionTtlMs: SESSION_TTL }, sse: { heartbeatMs: 100 } } })
})
afterAll(async () => {
  await s?.stop()
})

async function me(opts: { token?: string; cookie?: string }): Promise<number> {
  return (await call(s, 'GET', '/v1/me', opts)).status
}

describe('gateway auth', () => {
  it('exchanges a credential for tokens stored only as hashes', async () => {
    const credential = await s.issue('dora')
    const r = await call(s, 'POST', '/v1/auth/token', { body: { credential } })
    expect(r.status).toBe(200)
    expect(r.headers.get('cache-control')).toBe('no-store')
    const t = r.json as TokenPair
    expect(t.token_type).toBe('Bearer')
    expect(t.access_token).toMatch(/^tat\.dora\./)
    expect(t.refresh_token).toMatch(/^trt\.dora\./)
    expect(await me({ token: t.access_token })).toBe(200)
    // Nothing secret in Redis: no plaintext, only SHA-256 hex digests.
    const keys = s.gw.deps.keys
    const dump = JSON.stringify([
      await s.redis.hgetall(keys.authToken('dora')),
      await s.redis.hgetall(keys.authRefresh('dora')),
      await s.redis.hgetall(keys.authCredential('dora')),
    ])
    for (const secret of [credential, t.access_token, t.refresh_token]) {
      expect(dump).not.toContain(secret)
      expect(dump).not.toContain(secret.split('.').at(-1))
    }
    expect(dump).toContain(hashToken(t.access_token))
    for (const k of [keys.authToken('dora'), keys.authRefresh('dora'), keys.authCredential('dora'), keys.authRate('dora')]) {
      expect(await s.redis.pttl(k), k).toBeGreaterThan(0)
    }
  })

  it('rejects bad credentials and counts the failures', async () => {
    const credential = await s.issue('eve')
    const forged = credential.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'))
    const bad = await call(s, 'POST', '/v1/auth/token', { body: { credential: forged } })
    expect(bad.status).toBe(401)
    expect((bad.json as { code: string }).code).toBe('invalid_credentials')
    expect((await call(s, 'POST', '/v1/auth/token', { body: { credential: 'tcr.nobody.AAAAAAAAAAAAAAAA.' + 'A'.repeat(43) } })).status).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/token', { body: { credential: 'hello' } })).status).toBe(401)
    expect(await me({ token: 'tat.eve.AAAAAAAAAAAAAAAA.' + 'A'.repeat(43) })).toBe(401)
    expect(await me({ token: credential })).toBe(401)
    const text = await s.rt.metrics.registry.metrics()
    expect(text).toMatch(/troupe_auth_failures_total\{reason="bad_credential"\} [1-9]/)
    expect(text).toMatch(/troupe_auth_failures_total\{reason="malformed"\} [1-9]/)
  })

  it('expires access tokens, and refreshing rotates both tokens', async () => {
    const t = await s.login('finn')
    expect(await me({ token: t.access_token })).toBe(200)
    s.advance(ACCESS_TTL + 1000)
    const expired = await call(s, 'GET', '/v1/me', { token: t.access_token })
    expect(expired.status).toBe(401)
    expect((expired.json as { code: string }).code).toBe('token_expired')

    const r = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
    expect(r.status, r.text).toBe(200)
    const t2 = r.json as TokenPair
    expect(t2.refresh_token).not.toBe(t.refresh_token)
    expect(t2.refresh_token.split('.')[2]).toBe(t.refresh_token.split('.')[2]) // same family id
    expect(await me({ token: t2.access_token })).toBe(200)

    const r3 = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t2.refresh_token } })
    expect(r3.status).toBe(200)
    const t3 = r3.json as TokenPair
    // Rotation retires the previous access token of the family at once.
    expect(await me({ token: t2.access_token })).toBe(401)
    expect(await me({ token: t3.access_token })).toBe(200)
  })

  it('rejects an expired refresh token (revoking its family) and an expired credential', async () => {
    const credential = await s.issue('ned')
    const t = (await call(s, 'POST', '/v1/auth/token', { body: { credential } })).json as TokenPair
    const day = 24 * 3600_000 + 1000
    const year = 366 * 24 * 3600_000
    s.advance(day)
    try {
      const late = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
      expect(late.status).toBe(401)
      expect((late.json as { code: string }).code).toBe('token_expired')
      // Expiry revoked the family: the same token is not even recognised any more.
      expect(((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })).json as { code: string }).code).toBe('unauthorized')
      // The credential itself still signs in until its own lifetime (a year) ends.
      expect((await call(s, 'POST', '/v1/auth/token', { body: { credential } })).status).toBe(200)
      s.advance(year)
      const stale = await call(s, 'POST', '/v1/auth/token', { body: { credential } })
      expect(stale.status).toBe(401)
      expect((stale.json as { code: string }).code).toBe('token_expired')
    } finally {
      // Credentials issued later by the CLI carry real time: give the clock back.
      s.advance(-day - year)
    }
  })

  it('revokes the whole family when an old refresh token is reused', async () => {
    const t1 = await s.login('gus')
    const other = await s.login('gus') // a second, independent family
    const t2 = (await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t1.refresh_token } })).json as TokenPair
    expect(await me({ token: t2.access_token })).toBe(200)

    const reuse = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t1.refresh_token } })
    expect(reuse.status).toBe(401)
    expect((reuse.json as { code: string }).code).toBe('refresh_reused')
    // The attacker's (or victim's) newer tokens of that family are dead too...
    expect(await me({ token: t2.access_token })).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t2.refresh_token } })).status).toBe(401)
    // ...while the user's other sessions live on.
    expect(await me({ token: other.access_token })).toBe(200)
    expect(await s.rt.metrics.registry.metrics()).toMatch(/troupe_auth_failures_total\{reason="refresh_reused"\} [1-9]/)
  })

  it('lets exactly one of two concurrent refreshes with the same token win', async () => {
    const t = await s.login('hal')
    const [a, b] = await Promise.all([
      call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } }),
      call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } }),
    ])
    expect([a.status, b.status].sort()).toEqual([200, 401])
    // The loser's detection revoked the family, so even the winner must sign in again.
    const winner = (a.status === 200 ? a.json : b.json) as TokenPair
    expect(await me({ token: winner.access_token })).toBe(401)
  })

  it('logs out: access token, refresh family, or everything', async () => {
    const t = await s.login('ivy')
    const out = await call(s, 'POST', '/v1/auth/logout', { token: t.access_token })
    expect(out.status).toBe(204)
    expect(await me({ token: t.access_token })).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })).status).toBe(401)

    const t2 = await s.login('ivy')
    expect((await call(s, 'POST', '/v1/auth/logout', { body: { refresh_token: t2.refresh_token } })).status).toBe(204)
    expect(await me({ token: t2.access_token })).toBe(401)

    const a = await s.login('ivy')
    const b = await s.login('ivy')
    const cookie = await s.session('ivy')
    expect((await call(s, 'POST', '/v1/auth/logout', { token: a.access_token, body: { all: true } })).status).toBe(204)
    expect(await me({ token: b.access_token })).toBe(401)
    expect(await me({ cookie })).toBe(401)
  })

  it('signing out with an expired access token still revokes its refresh family', async () => {
    const t = await s.login('ursa')
    s.advance(ACCESS_TTL + 1000)
    expect(await me({ token: t.access_token })).toBe(401) // told it expired
    expect((await call(s, 'POST', '/v1/auth/logout', { token: t.access_token })).status).toBe(204)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })).status).toBe(401)

    // With `all`, an expired token (found in an old log, say) ends its own family only.
    const a = await s.login('ursa')
    const b = await s.login('ursa')
    s.advance(ACCESS_TTL + 1000)
    expect((await call(s, 'POST', '/v1/auth/logout', { token: a.access_token, body: { all: true } })).status).toBe(204)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: a.refresh_token } })).status).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: b.refresh_token } })).status).toBe(200)
  })

  it('keeps a bounded number of refresh families per user, revoking those refreshed least recently', async () => {
    const { store } = s.gw.deps
    // A refresh counts against its user's limits, which only a user with a credential has.
    await s.issue('vera')
    const first = await store.issueTokens('vera')
    const second = await store.issueTokens('vera')
    const rest: TokenPair[] = []
    const issue = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        s.advance(10)
        rest.push(await store.issueTokens('vera'))
      }
    }
    await issue(MAX_FAMILIES - 2)
    // The first sign-in is the device in daily use: refreshed now, it is kept.
    s.advance(10)
    const refreshed = await store.refresh(first.refresh_token)
    await issue(5)
    expect(await s.redis.hlen(s.gw.deps.keys.authRefresh('vera'))).toBeLessThanOrEqual(MAX_FAMILIES + 1)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: second.refresh_token } })).status).toBe(401)
    expect(await me({ token: second.access_token })).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: refreshed.refresh_token } })).status).toBe(200)
    const newest = rest[rest.length - 1] as TokenPair
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: newest.refresh_token } })).status).toBe(200)
  })

  it('runs browser sessions on an HttpOnly SameSite=Strict cookie, SSE included', async () => {
    const credential = await s.issue('jo')
    const r = await call(s, 'POST', '/v1/auth/session', { body: { credential } })
    expect(r.status).toBe(200)
    const set = r.headers.get('set-cookie') ?? ''
    expect(set).toMatch(/^troupe_session=tss\.jo\./)
    expect(set).toMatch(/HttpOnly/)
    expect(set).toMatch(/SameSite=Strict/)
    expect(set).toMatch(/Path=\//)
    expect(set).toMatch(new RegExp(`Max-Age=${SESSION_TTL / 1000}`))
    const cookie = set.split(';')[0] ?? ''

    const start = await call(s, 'POST', '/v1/workflows', { cookie, body: { agent: 'counter', type: 'ping' }, headers: { origin: s.url } })
    expect(start.status, start.text).toBe(201)
    const wf = (start.json as { workflowId: string }).workflowId
    const sse = openSse(s, `/v1/workflows/${wf}/events`, { cookie })
    expect(await sse.status).toBe(200)
    await sse.until((m) => m.some((x) => x.data.includes('workflow.started')))
    sse.close()

    // A session cookie never authorises another site's write.
    const csrf = await call(s, 'POST', '/v1/workflows', { cookie, body: { agent: 'counter', type: 'ping' }, headers: { origin: 'https://evil.example' } })
    expect(csrf.status).toBe(403)
    expect((csrf.json as { code: string }).code).toBe('forbidden_origin')
    expect((await call(s, 'POST', '/v1/workflows', { cookie, body: { agent: 'counter', type: 'ping' }, headers: { 'sec-fetch-site': 'cross-site' } })).status).toBe(403)
    // Nor may another site sign the browser in (login CSRF), or out.
    expect((await call(s, 'POST', '/v1/auth/session', { body: { credential }, headers: { origin: 'https://evil.example' } })).status).toBe(403)
    expect((await call(s, 'POST', '/v1/auth/logout', { cookie, headers: { origin: 'https://sibling.example' } })).status).toBe(403)
    expect(await me({ cookie })).toBe(200)
    // An opaque origin (a sandboxed frame) is not our page either.
    expect((await call(s, 'POST', '/v1/workflows', { cookie, body: { agent: 'counter', type: 'ping' }, headers: { origin: 'null' } })).status).toBe(403)

    const out = await call(s, 'POST', '/v1/auth/logout', { cookie })
    expect(out.status).toBe(204)
    expect(out.headers.get('set-cookie')).toMatch(/^troupe_session=; .*Max-Age=0/)
    // Server-side revocation: the old cookie value is worthless even if a client keeps it.
    expect(await me({ cookie })).toBe(401)
    const refused = openSse(s, `/v1/workflows/${wf}/events`, { cookie })
    expect(await refused.status).toBe(401)
    refused.close()
  })

  it('ends sessions when they expire', async () => {
    const cookie = await s.session('kim')
    expect(await me({ cookie })).toBe(200)
    s.advance(SESSION_TTL + 1000)
    expect(await me({ cookie })).toBe(401)
  })

  it('rotating a credential signs the user out everywhere', async () => {
    const t = await s.login('lee')
    const cookie = await s.session('lee')
    const fresh = await s.issue('lee') // rotate: true
    expect(await me({ token: t.access_token })).toBe(401)
    expect(await me({ cookie })).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/token', { body: { credential: fresh } })).status).toBe(200)
  })

  it('checks the Origin of a cookie-session write against the forwarded host only behind a trusted proxy', async () => {
    // A proxy such as nginx sends its upstream address as Host and the public one as X-Forwarded-Host.
    const forwarded = { origin: 'https://troupe.example', 'x-forwarded-host': 'troupe.example', 'x-forwarded-proto': 'https' }
    const body = { agent: 'counter', type: 'ping' }
    // Not trusted: the forwarded header is anyone's to send, so the write is cross-site.
    expect((await call(s, 'POST', '/v1/workflows', { cookie: await s.session('pat'), body, headers: forwarded })).status).toBe(403)
    // 'on', as the other on/off settings take it (it used to mean off here, silently).
    process.env.TROUPE_GATEWAY_TRUST_PROXY = 'on'
    let p: Stack
    try {
      p = await startStack()
    } finally {
      delete process.env.TROUPE_GATEWAY_TRUST_PROXY
    }
    try {
      // Over HTTPS, as the proxy says, the cookie is Secure and so carries the __Host- prefix.
      const signIn = await call(p, 'POST', '/v1/auth/session', { body: { credential: await p.issue('pat') }, headers: forwarded })
      const set = signIn.headers.get('set-cookie') ?? ''
      expect(set, signIn.text).toMatch(/^__Host-troupe_session=tss\.pat\..*; Path=\/;.*; Secure$/)
      const cookie = set.split(';')[0] ?? ''
      const r = await call(p, 'POST', '/v1/workflows', { cookie, body, headers: forwarded })
      expect(r.status, r.text).toBe(201)
      // Another site is still another site.
      expect((await call(p, 'POST', '/v1/workflows', { cookie, body, headers: { ...forwarded, origin: 'https://evil.example' } })).status).toBe(403)
      // Proxies may name the scheme's default port, or write the host in capitals.
      for (const host of ['troupe.example:443', 'Troupe.Example']) {
        const r2 = await call(p, 'POST', '/v1/workflows', { cookie, body, headers: { ...forwarded, 'x-forwarded-host': host } })
        expect(r2.status, `${host}: ${r2.text}`).toBe(201)
      }
      expect((await call(p, 'POST', '/v1/workflows', { cookie, body, headers: { ...forwarded, 'x-forwarded-host': 'troupe.example:8443' } })).status).toBe(403)
    } finally {
      await p.stop()
    }
  })

  it('compares the Origin with the Host as the URL parser writes it: any case, default port or none', async () => {
    const cookie = await s.session('cas')
    const port = new URL(s.url).port
    const body = { agent: 'counter', type: 'ping' }
    // fetch may not set Host; node:http may.
    const post = (headers: Record<string, string>): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = httpRequest(`${s.url}/v1/workflows`, { method: 'POST', headers: { cookie, 'content-type': 'application/json', ...headers } }, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        })
        req.on('error', reject)
        req.end(JSON.stringify(body))
      })
    expect(await post({ host: `LOCALHOST:${port}`, origin: `http://localhost:${port}` })).toBe(201)
    expect(await post({ host: `LocalHost:${port}`, origin: `http://LOCALHOST:${port}` })).toBe(201)
    // The default port of the origin's scheme, written or not, is the same origin.
    expect(await post({ host: 'Gw.Example:80', origin: 'http://gw.example' })).toBe(201)
    // Still refused: another port, another host, a Host that is not one.
    expect(await post({ host: `localhost:${port}`, origin: 'http://localhost' })).toBe(403)
    expect(await post({ host: `LOCALHOST:${port}`, origin: `http://evil.example:${port}` })).toBe(403)
    expect(await post({ host: `evil.example@localhost:${port}`, origin: `http://localhost:${port}` })).toBe(403)
    expect(await post({ host: 'gw.example', origin: 'file://' })).toBe(403)
  })

  it('refuses a request carrying the session cookie twice: one was planted by a sibling site (login CSRF)', async () => {
    // A page on evil.example.com can set `troupe_session=…; Domain=example.com; Path=/v1`,
    // which the browser sends first (longer path): the victim would act in the attacker's account.
    const victim = await s.session('vic')
    const attacker = await s.session('mal')
    const both = `${attacker}; ${victim}`
    const r = await call(s, 'GET', '/v1/me', { cookie: both })
    expect(r.status, r.text).toBe(401)
    expect((r.json as { code: string }).code).toBe('unauthorized')
    expect((await call(s, 'POST', '/v1/workflows', { cookie: `${victim}; ${victim}`, body: { agent: 'counter', type: 'ping' } })).status).toBe(401)
    const sse = openSse(s, '/v1/workflows/none/events', { cookie: both })
    expect(await sse.status).toBe(401)
    sse.close()
    // Sign-out clears the cookie but revokes neither: either could be the other's.
    const out = await call(s, 'POST', '/v1/auth/logout', { cookie: both })
    expect(out.status).toBe(204)
    expect(out.headers.get('set-cookie')).toMatch(/^troupe_session=; .*Max-Age=0/)
    expect(await me({ cookie: victim })).toBe(200)
    expect(await me({ cookie: attacker })).toBe(200)
    // A bearer token still wins over any cookies (API clients may hold one too).
    const t = await s.login('vic')
    expect(await me({ token: t.access_token, cookie: both })).toBe(200)
  })

  it('names a Secure session cookie __Host-troupe_session and reads only that name then; sign-out clears both names', async () => {
    const p = await startStack({ gateway: { auth: { cookieSecure: true } } })
    try {
      const credential = await p.issue('hal')
      const r = await call(p, 'POST', '/v1/auth/session', { body: { credential } })
      const set = r.headers.get('set-cookie') ?? ''
      // The prefix makes a browser refuse it with a Domain or another Path: no sibling site can set it.
      expect(set).toMatch(/^__Host-troupe_session=tss\.hal\.[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/)
      const cookie = set.split(';')[0] ?? ''
      const value = cookie.slice(cookie.indexOf('=') + 1)
      const status = async (c: string): Promise<number> => (await call(p, 'GET', '/v1/me', { cookie: c })).status
      expect(await status(cookie)).toBe(200)
      // The unprefixed name, which a sibling can set, is not read at all.
      expect(await status(`troupe_session=${value}`)).toBe(401)
      const planted = (await call(p, 'POST', '/v1/auth/session', { body: { credential: await p.issue('mol') } })).headers.get('set-cookie') ?? ''
      const plantedValue = planted.slice(planted.indexOf('=') + 1, planted.indexOf(';'))
      const me2 = await call(p, 'GET', '/v1/me', { cookie: `troupe_session=${plantedValue}; ${cookie}` })
      expect(me2.status, me2.text).toBe(200)
      expect((me2.json as { user: string }).user).toBe('hal')
      // Twice under the prefixed name: refused too.
      expect(await status(`__Host-troupe_session=${plantedValue}; ${cookie}`)).toBe(401)
      const out = await call(p, 'POST', '/v1/auth/logout', { cookie })
      expect(out.status).toBe(204)
      const cleared = out.headers.getSetCookie()
      expect(cleared).toHaveLength(2)
      expect(cleared[0]).toMatch(/^__Host-troupe_session=; Path=\/; .*Max-Age=0; Secure$/)
      expect(cleared[1]).toMatch(/^troupe_session=; Path=\/; .*Max-Age=0; Secure$/)
      expect(await status(cookie)).toBe(401)
    } finally {
      await p.stop()
    }
  })

  it('ends an open event stream once its user\'s credential expires', async () => {
    const t = await s.login('ida')
    const started = await call(s, 'POST', '/v1/workflows', { token: t.access_token, body: { agent: 'counter', type: 'ping' } })
    expect(started.status, started.text).toBe(201)
    const c = openSse(s, `/v1/workflows/${(started.json as { workflowId: string }).workflowId}/events`, { authorization: `Bearer ${t.access_token}` })
    expect(await c.status).toBe(200)
    await c.until((m) => m.some((x) => x.data.includes('workflow.started')))
    // The credential's TTL runs out (as issued with a short one): every request is refused from then on.
    await s.redis.pexpire(s.gw.deps.keys.authCredential('ida'), 50)
    let timer: NodeJS.Timeout | undefined
    const closed = await Promise.race([c.closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000)))])
    clearTimeout(timer)
    c.close()
    expect(closed, 'the stream outlived its credential').toBe(true)
    expect(c.messages.some((m) => m.event === 'end'), 'the workflow ended instead').toBe(false)
    expect(await me({ token: t.access_token })).toBe(401)
  })

  it('troupe auth issue prints a working credential; revoke removes the user', async () => {
    const out: string[] = []
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      out.push(String(chunk))
      return true
    })
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    const flags = ['--user', 'max', '--redis', s.cfg.redisUrl, '--namespace', s.cfg.namespace]
    let code: number
    let again: number
    try {
      code = await main(['auth', 'issue', ...flags])
      again = await main(['auth', 'issue', ...flags])
    } finally {
      stdout.mockRestore()
    }
    expect(code).toBe(0)
    expect(again).toBe(3) // exists: needs --rotate
    const credential = (out[0] ?? '').trim()
    expect(credential).toMatch(/^tcr\.max\./)
    const t = await call(s, 'POST', '/v1/auth/token', { body: { credential } })
    expect(t.status).toBe(200)
    let revoked: number
    try {
      revoked = await main(['auth', 'revoke', ...flags])
    } finally {
      stderr.mockRestore()
    }
    expect(revoked).toBe(0)
    expect(await me({ token: (t.json as TokenPair).access_token })).toBe(401)
    expect((await call(s, 'POST', '/v1/auth/token', { body: { credential } })).status).toBe(401)
  })

  // Last: it moves the gateway's clock past every session's end.
  it('ends an open event stream once its token or session is signed out or expires; the reconnect is refused', async () => {
    const unauthorized = async (): Promise<number> =>
      (await s.rt.metrics.registry.getSingleMetric('troupe_sse_dropped_total')?.get())?.values.find((v) => v.labels.reason === 'unauthorized')?.value ?? 0
    const before = await unauthorized()
    const t = await s.login('uma')
    const started = await call(s, 'POST', '/v1/workflows', { token: t.access_token, body: { agent: 'counter', type: 'ping' } })
    expect(started.status, started.text).toBe(201)
    const path = `/v1/workflows/${(started.json as { workflowId: string }).workflowId}/events`
    const follow = async (headers: Record<string, string>): Promise<ReturnType<typeof openSse>> => {
      const c = openSse(s, path, headers)
      expect(await c.status).toBe(200)
      await c.until((m) => m.some((x) => x.data.includes('workflow.started')))
      return c
    }
    const ended = async (c: ReturnType<typeof openSse>, what: string): Promise<void> => {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([c.closed, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`stream still open after ${what}`)), 10_000)))])
      clearTimeout(timer)
    }
    const refused = async (headers: Record<string, string>): Promise<void> => {
      const c = openSse(s, path, headers)
      expect(await c.status).toBe(401)
      c.close()
    }

    const bearer = { authorization: `Bearer ${t.access_token}` }
    const a = await follow(bearer)
    expect((await call(s, 'POST', '/v1/auth/logout', { token: t.access_token })).status).toBe(204)
    await ended(a, 'sign-out')
    await refused(bearer)

    const cookie = { cookie: await s.session('uma') }
    const b = await follow(cookie)
    s.advance(SESSION_TTL + 1000)
    await ended(b, 'the session expired')
    await refused(cookie)
    expect(await unauthorized()).toBe(before + 2)
  })
})
