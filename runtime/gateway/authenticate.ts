// The request gate of /v1: who is calling (bearer access token, or the browser's
// session cookie), whether a cookie-authenticated write really comes from our own
// page, and whether the user is within their rate limit and daily quota. It runs
// in onRequest, before the body is read, so rejected requests cost little.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { AuthError, type AuthContext, type AuthStore } from './auth-store.ts'
import { cookieIsSecure, readSessionCookie } from './cookies.ts'
import type { GatewayMetrics } from './metrics.ts'
import { GatewayError } from './problem.ts'
import type { RateLimiter } from './rate-limit.ts'
import { isApiPath } from './routes.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller of a /v1 route (null on public routes). */
    auth: AuthContext | null
    /** The UTC day a workflow start was counted on against the daily quota ('' when none; refunded on failure). */
    quotaTaken: string
  }
  interface FastifyContextConfig {
    /** No authentication (auth endpoints, the UI's static files). */
    public?: boolean
    /** Counts against the daily quota of started workflows. */
    start?: boolean
    /** A streaming route: its metrics are recorded when the stream opens. */
    sse?: boolean
  }
}

/**
 * The caller's token and how it came (bearer first: API clients may also hold a
 * cookie). The session cookie is read under the name `cookieSecure` gives it
 * for this request (see cookies.ts); a repeated one is refused (401).
 */
export function presentedToken(request: FastifyRequest, cookieSecure: boolean | 'auto'): { token: string; via: 'bearer' | 'cookie' } | null {
  const h = request.headers.authorization
  if (h) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
    if (!m?.[1]) throw new AuthError('malformed', 'unauthorized', 'Authorization header must be "Bearer <access token>"')
    return { token: m[1], via: 'bearer' }
  }
  const c = readSessionCookie(request.headers.cookie, cookieIsSecure(request, cookieSecure))
  return c ? { token: c, via: 'cookie' } : null
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

// SameSite=Strict already keeps other sites' requests cookie-less in current
// browsers; this second check refuses cookie-authenticated writes whose Origin is
// another site, for older browsers and same-site subdomains.
/** Refuses unsafe cookie-session requests coming from another site (403 forbidden_origin). */
export function checkOrigin(request: FastifyRequest): void {
  if (SAFE_METHODS.has(request.method)) return
  if (request.headers['sec-fetch-site'] === 'cross-site') throw new GatewayError('forbidden_origin', 'cross-site request refused for cookie sessions')
  const origin = request.headers.origin
  if (!origin) return
  // An opaque origin (sandboxed frame, data: URL) is never our own page.
  if (origin === 'null') throw new GatewayError('forbidden_origin', 'requests from an opaque origin may not use this site\'s session cookie')
  let from: URL
  try {
    from = new URL(origin)
  } catch {
    throw new GatewayError('forbidden_origin', 'unparseable Origin header')
  }
  // request.host is the Host header, or X-Forwarded-Host behind a trusted proxy
  // (TROUPE_GATEWAY_TRUST_PROXY): a proxy that rewrites Host to its upstream
  // made every cookie-session write look cross-site.
  if (from.host === '' || from.host !== originHost(from.protocol, request.host)) throw new GatewayError('forbidden_origin', `requests from ${origin} may not use this site's session cookie`)
}

// Bytes that would make the URL parser read part of a Host as userinfo, path,
// query or fragment: `evil@good` must not pass as `good`.
const NOT_HOST = /[\s/?#@\\]/

/**
 * The Host (or X-Forwarded-Host) as the URL parser writes an origin's host:
 * lowercased, without the scheme's default port. Compared raw, `Host:
 * LOCALHOST:8080` or `X-Forwarded-Host: gw.example:443` looked cross-site. ''
 * when it is not a host at all.
 */
export function originHost(protocol: string, host: string): string {
  if (host === '' || NOT_HOST.test(host)) return ''
  try {
    return new URL(`${protocol}//${host}`).host
  } catch {
    return ''
  }
}

/** Builds the onRequest hook that authenticates and rate-limits every non-public /v1 route. */
export function createAuthHook(deps: { store: AuthStore; limiter: RateLimiter; metrics: GatewayMetrics; settings: { auth: { cookieSecure: boolean | 'auto' } } }) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    request.auth = null
    request.quotaTaken = ''
    const cfg = request.routeOptions.config
    // Every route is private unless marked public. The matched route decides, not
    // the raw URL: the router decodes %-escapes first, so /%76%31/agents is
    // /v1/agents. A path no route matches answers 401 under /v1, however it is
    // spelt (a 404 or 405 would tell a caller without a token which paths
    // exist), 404 elsewhere.
    const route = request.routeOptions.url
    if (cfg.public || (route === undefined && !isApiPath(request.url))) return
    let ctx: AuthContext
    try {
      const presented = presentedToken(request, deps.settings.auth.cookieSecure)
      if (!presented) throw new AuthError('missing', 'unauthorized', 'authentication required: send "Authorization: Bearer <access token>" or sign in for a session cookie')
      ctx = await deps.store.verify(presented.token, presented.via)
    } catch (err) {
      if (err instanceof AuthError) deps.metrics.authFailures.inc({ reason: err.reason })
      throw err
    }
    if (ctx.via === 'cookie') checkOrigin(request)
    const start = cfg.start === true
    // The limiter's script also checks that the credential the token or
    // session was signed in with is still the user's: no extra round trip.
    const d = await deps.limiter.check(ctx.user, 'req', { start, ...(ctx.credential !== undefined ? { credential: ctx.credential } : {}) })
    if (!d.known) {
      deps.metrics.authFailures.inc({ reason: 'unknown' })
      throw new AuthError('unknown', 'unauthorized', 'user has no credential any more, or a new one since this sign-in (revoked or rotated): sign in again')
    }
    void reply.headers(d.headers)
    if (!d.allowed) {
      const kind = d.deniedBy === 'quota' ? 'quota' : 'rate'
      deps.metrics.rateLimited.inc({ kind })
      throw kind === 'quota'
        ? new GatewayError('quota_exceeded', 'daily quota of started workflows reached; it resets at midnight UTC', d.headers)
        : new GatewayError('rate_limited', `too many requests; retry in ${d.headers['retry-after'] ?? '1'} s`, d.headers)
    }
    request.auth = ctx
    request.quotaTaken = start ? d.day : ''
  }
}

/** The authenticated caller; only for routes behind the hook. */
export function caller(request: FastifyRequest): AuthContext {
  if (!request.auth) throw new AuthError('missing', 'unauthorized', 'authentication required')
  return request.auth
}
