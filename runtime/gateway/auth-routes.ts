// /v1/auth: exchange a credential for tokens (API clients) or a cookie session
// (browsers), rotate refresh tokens, sign out. Token responses are never cached.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { AuthError, BAD_CREDENTIAL, type AuthContext } from './auth-store.ts'
import { caller, checkOrigin, presentedToken } from './authenticate.ts'
import { clearedSessionCookies, cookieIsSecure, sessionCookie } from './cookies.ts'
import type { GatewayDeps } from './deps.ts'
import { GatewayError } from './problem.ts'
import { unavailable } from './redis-gate.ts'
import { credentialBody, logoutBody, noQuery, refreshBody } from './schemas.ts'

const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' }
// Auth bodies are a token or two: no reason to read a megabyte.
const SMALL = 8 * 1024

/** Registers the /v1/auth routes. */
export function registerAuthRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  const { store, limiter, metrics, signOuts } = deps
  const { cookieSecure } = deps.settings.auth

  // Failed exchanges are metered per user so that guessing is slow even though
  // credentials carry 256 random bits; unknown users get no limiter state at all.
  // `issue` stores what the sign-in hands out, bound to the credential: it
  // checks the credential again as it writes (a rotation may have landed since).
  async function exchange<T>(credential: string, issue: (user: string) => Promise<T>): Promise<T> {
    try {
      const user = store.credentialUser(credential)
      if (!user) throw new AuthError('malformed', 'invalid_credentials', 'not a Troupe credential (expected tcr.<user>.<id>.<secret>, as printed by troupe auth issue)')
      const d = await limiter.check(user, 'auth')
      if (!d.known) throw new AuthError('bad_credential', 'invalid_credentials', BAD_CREDENTIAL)
      if (!d.allowed) {
        metrics.rateLimited.inc({ kind: 'auth' })
        throw new GatewayError('rate_limited', `too many sign-in attempts; retry in ${d.headers['retry-after'] ?? '60'} s`, d.headers)
      }
      return await issue(await store.checkCredential(credential))
    } catch (err) {
      if (err instanceof AuthError) metrics.authFailures.inc({ reason: err.reason })
      throw err
    }
  }

  app.post<{ Body: { credential: string } }>('/v1/auth/token', { schema: { body: credentialBody, querystring: noQuery }, config: { public: true }, bodyLimit: SMALL }, async (request, reply) => {
    const pair = await exchange(request.body.credential, (user) => store.issueTokens(user, request.body.credential))
    return reply.headers(NO_STORE).send(pair)
  })

  // A refresh is an API request of the token's user and draws from their request
  // bucket, like any other. Metered only once the token proved current: on a
  // user name alone, anyone could drain that user's bucket (and the credential
  // brake would do the same to refreshes that the docs promise keep working).
  async function admitRefresh(user: string, reply: FastifyReply): Promise<void> {
    const d = await limiter.check(user, 'req')
    if (!d.known) throw new AuthError('unknown', 'unauthorized', 'user has no credential any more (revoked)')
    void reply.headers(d.headers)
    if (!d.allowed) {
      metrics.rateLimited.inc({ kind: 'rate' })
      throw new GatewayError('rate_limited', `too many requests; retry in ${d.headers['retry-after'] ?? '1'} s`, d.headers)
    }
  }

  app.post<{ Body: { refresh_token: string } }>('/v1/auth/refresh', { schema: { body: refreshBody, querystring: noQuery }, config: { public: true }, bodyLimit: SMALL }, async (request, reply) => {
    try {
      const pair = await store.refresh(request.body.refresh_token, (user) => admitRefresh(user, reply))
      return reply.headers(NO_STORE).send(pair)
    } catch (err) {
      if (err instanceof AuthError) metrics.authFailures.inc({ reason: err.reason })
      throw err
    }
  })

  app.post<{ Body: { credential: string } }>('/v1/auth/session', { schema: { body: credentialBody, querystring: noQuery }, config: { public: true }, bodyLimit: SMALL }, async (request, reply) => {
    // Another site must not sign the browser into an account of its choosing.
    checkOrigin(request)
    const { user, s } = await exchange(request.body.credential, async (user) => ({ user, s: await store.issueSession(user, request.body.credential) }))
    return reply
      .headers(NO_STORE)
      .header('set-cookie', sessionCookie(s.token, deps.settings.auth.sessionTtlMs, cookieIsSecure(request, cookieSecure)))
      .send({ user, expiresAt: s.expiresAt })
  })

  app.post<{ Body: { refresh_token?: string; all?: boolean } | null }>('/v1/auth/logout', { schema: { body: logoutBody, querystring: noQuery }, config: { public: true, withoutRedis: true }, bodyLimit: SMALL }, async (request, reply: FastifyReply) => {
    const body = request.body ?? {}
    const cleared = clearedSessionCookies(cookieIsSecure(request, cookieSecure))
    // The Redis gate lets sign-out through while Redis is away: a browser must
    // be able to drop its cookie then too (else a reload signs it back in).
    if (!deps.redisReady()) return logoutWithoutRedis(request, reply, body, cleared)
    // Sign-out must work with an expired token too: it only ever removes. A
    // repeated session cookie (one planted by a sibling site) revokes nothing,
    // since either could be the other's, and both names are cleared.
    let ctx: AuthContext | null = null
    try {
      const p = presentedToken(request, cookieSecure)
      if (p) ctx = await store.verify(p.token, p.via, { allowExpired: true })
    } catch {
      ctx = null
    }
    // Another page of the same site must not sign the browser out.
    if (ctx?.via === 'cookie') checkOrigin(request)
    await store.logout(ctx, { refreshToken: body.refresh_token, all: body.all === true })
    return reply.header('set-cookie', cleared).code(204).send()
  })

  // Without Redis nothing can be verified or revoked now. A cookie session's
  // sign-out still clears the cookie at once (after the origin check, which
  // then applies to any presented cookie) and revokes the session server-side
  // when Redis is back, best-effort: it waits in `signOuts` (bounded: anyone
  // can send made-up session tokens now), lost if this gateway stops first or
  // when more sign-outs than its cap came after it (the session then lasts
  // until it expires). What an API client asks (a bearer token's family, a
  // refresh family, `all`) is not answered with a 204 that did not happen: 503.
  function logoutWithoutRedis(request: FastifyRequest, reply: FastifyReply, body: { refresh_token?: string; all?: boolean }, cleared: string[]): FastifyReply {
    let presented: ReturnType<typeof presentedToken> = null
    try {
      presented = presentedToken(request, cookieSecure)
    } catch {
      presented = null
    }
    if (presented?.via === 'bearer' || body.refresh_token !== undefined || body.all === true) throw unavailable()
    if (presented) {
      checkOrigin(request)
      signOuts.add(presented.token)
    }
    return reply.header('set-cookie', cleared).code(204).send()
  }

  app.get('/v1/me', { schema: { querystring: noQuery } }, async (request) => {
    const a = caller(request)
    return { user: a.user, via: a.via, expiresAt: a.expiresAt, limits: await store.limits(a.user) }
  })
}
