// A credential rotation or revocation against sign-ins and refresh families in
// flight: a sign-in checked a moment before the rotation landed must not issue
// anything, and a family (or token, or session) signed in with a credential that
// is not the user's current one any more must not be usable, however it came to
// outlive the rotation. Families from before credential ids were recorded keep
// working and are bound on their first refresh.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AuthStore, TokenPair } from '../../runtime/gateway/auth-store.ts'
import { call, openSse, startStack, type Stack } from './helpers.ts'

let s: Stack
let store: AuthStore
let original: AuthStore['checkCredential']

beforeAll(async () => {
  // Heartbeats often: each one re-checks an open stream's session.
  s = await startStack({ gateway: { sse: { heartbeatMs: 100 } } })
  store = s.gw.deps.store
  original = store.checkCredential.bind(store)
})
afterAll(async () => {
  await s?.stop()
})
afterEach(() => {
  store.checkCredential = original
})

/**
 * The seam between a sign-in's two steps: the credential check passes, then
 * `between` runs (a rotation or revocation landing), then the route issues.
 */
function landBetweenCheckAndIssue(between: (user: string) => Promise<unknown>): void {
  store.checkCredential = async (credential) => {
    const user = await original(credential)
    await between(user)
    return user
  }
}

/** The raw record of `field` in one of a user's auth hashes. */
async function record(key: string, field: string): Promise<string> {
  const raw = await s.redis.hget(key, field)
  if (raw === null) throw new Error(`no ${field} in ${key}`)
  return raw
}

const famId = (refreshToken: string): string => refreshToken.split('.').at(-2) ?? ''
const tokenId = (token: string): string => token.split('.').at(-2) ?? ''
const credentialId = async (user: string): Promise<string | null> => s.redis.hget(s.gw.deps.keys.authCredential(user), 'id')

async function me(opts: { token?: string; cookie?: string }): Promise<number> {
  return (await call(s, 'GET', '/v1/me', opts)).status
}

describe('credential rotation against sign-ins and refresh families', () => {
  it('fails a token sign-in whose credential is rotated between its check and its issue, writing nothing', async () => {
    const credential = await s.issue('rhea')
    const keys = s.gw.deps.keys
    landBetweenCheckAndIssue((user) => store.issueCredential(user, { rotate: true }))
    const r = await call(s, 'POST', '/v1/auth/token', { body: { credential } })
    expect(r.status, r.text).toBe(401)
    expect((r.json as { code: string }).code).toBe('invalid_credentials')
    // The rotation emptied both hashes; the late sign-in must not refill them.
    expect(await s.redis.hlen(keys.authRefresh('rhea'))).toBe(0)
    expect(await s.redis.hlen(keys.authToken('rhea'))).toBe(0)
    expect(await s.rt.metrics.registry.metrics()).toMatch(/troupe_auth_failures_total\{reason="bad_credential"\} [1-9]/)
  })

  it('fails a session sign-in whose credential is rotated, or revoked, between its check and its issue', async () => {
    const keys = s.gw.deps.keys
    const rotated = await s.issue('sami')
    landBetweenCheckAndIssue((user) => store.issueCredential(user, { rotate: true }))
    const r = await call(s, 'POST', '/v1/auth/session', { body: { credential: rotated } })
    expect(r.status, r.text).toBe(401)
    expect((r.json as { code: string }).code).toBe('invalid_credentials')
    expect(r.headers.get('set-cookie')).toBeNull()
    expect(await s.redis.hlen(keys.authToken('sami'))).toBe(0)

    const revoked = await s.issue('tova')
    landBetweenCheckAndIssue((user) => store.revokeUser(user))
    for (const path of ['/v1/auth/session', '/v1/auth/token']) {
      const rr = await call(s, 'POST', path, { body: { credential: revoked } })
      expect(rr.status, `${path}: ${rr.text}`).toBe(401)
      expect((rr.json as { code: string }).code).toBe('invalid_credentials')
    }
    // A revoked user keeps no auth state at all.
    expect(await s.redis.exists(keys.authToken('tova'), keys.authRefresh('tova'))).toBe(0)
  })

  it('refuses and revokes a refresh family, and refuses its access token, once its credential was rotated', async () => {
    const keys = s.gw.deps.keys
    const t = await s.login('ugo')
    const fam = await record(keys.authRefresh('ugo'), famId(t.refresh_token))
    const at = await record(keys.authToken('ugo'), tokenId(t.access_token))
    await s.issue('ugo') // rotate
    // The family and its access token outlived the rotation: written after it,
    // as the second step of a sign-in on a gateway that checked the old
    // credential first (one not upgraded yet, during a rollout) writes them.
    await s.redis.hset(keys.authRefresh('ugo'), famId(t.refresh_token), fam)
    await s.redis.hset(keys.authToken('ugo'), tokenId(t.access_token), at)
    // Soft: the refresh below is the other half of the limit, checked either way.
    expect.soft(await me({ token: t.access_token })).toBe(401)
    const r = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
    expect(r.status, r.text).toBe(401)
    expect((r.json as { code: string }).code).toBe('unauthorized')
    expect(await s.redis.hexists(keys.authRefresh('ugo'), famId(t.refresh_token))).toBe(0)
    // The user's new sign-ins are untouched.
    const fresh = await s.login('ugo')
    expect(await me({ token: fresh.access_token })).toBe(200)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: fresh.refresh_token } })).status).toBe(200)
  })

  it('refuses a session, and ends its open event stream, once its credential was rotated', async () => {
    const keys = s.gw.deps.keys
    const cookie = await s.session('vita')
    const sessionId = tokenId(cookie.slice(cookie.indexOf('=') + 1))
    const started = await call(s, 'POST', '/v1/workflows', { cookie, body: { agent: 'counter', type: 'ping' } })
    expect(started.status, started.text).toBe(201)
    const c = openSse(s, `/v1/workflows/${(started.json as { workflowId: string }).workflowId}/events`, { cookie })
    expect(await c.status).toBe(200)
    await c.until((m) => m.some((x) => x.data.includes('workflow.started')))
    const rec = await record(keys.authToken('vita'), sessionId)
    await s.issue('vita') // rotate
    await s.redis.hset(keys.authToken('vita'), sessionId, rec)
    expect.soft(await me({ cookie })).toBe(401)
    let timer: NodeJS.Timeout | undefined
    const closed = await Promise.race([c.closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000)))])
    clearTimeout(timer)
    c.close()
    expect(closed, 'the stream outlived the rotation').toBe(true)
  })

  it('keeps families, tokens and sessions from before credential ids were recorded, binding a family on its first refresh', async () => {
    const keys = s.gw.deps.keys
    const t = await s.login('wren')
    const cookie = await s.session('wren')
    const sessionId = tokenId(cookie.slice(cookie.indexOf('=') + 1))
    // As an earlier version wrote them: no `cid`.
    const strip = async (key: string, field: string): Promise<void> => {
      const { cid: _cid, ...rest } = JSON.parse(await record(key, field)) as Record<string, unknown>
      await s.redis.hset(key, field, JSON.stringify(rest))
    }
    await strip(keys.authRefresh('wren'), famId(t.refresh_token))
    await strip(keys.authToken('wren'), tokenId(t.access_token))
    await strip(keys.authToken('wren'), sessionId)
    expect(await me({ token: t.access_token })).toBe(200)
    expect(await me({ cookie })).toBe(200)

    const r = await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: t.refresh_token } })
    expect(r.status, r.text).toBe(200)
    const next = r.json as TokenPair
    const current = await credentialId('wren')
    expect(current).not.toBeNull()
    const fam = JSON.parse(await record(keys.authRefresh('wren'), famId(next.refresh_token))) as { cid?: string }
    expect(fam.cid).toBe(current)
    expect(await me({ token: next.access_token })).toBe(200)

    // Bound now: it does not outlive a rotation either.
    const bound = await record(keys.authRefresh('wren'), famId(next.refresh_token))
    await s.issue('wren')
    await s.redis.hset(keys.authRefresh('wren'), famId(next.refresh_token), bound)
    expect((await call(s, 'POST', '/v1/auth/refresh', { body: { refresh_token: next.refresh_token } })).status).toBe(401)
  })
})
