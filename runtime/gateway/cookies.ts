// The one cookie the gateway uses: the browser session. EventSource cannot send an
// Authorization header, so browsers authenticate with this HttpOnly, SameSite=Strict
// cookie instead (scripts cannot read it; other sites cannot make the browser send it).
//
// Over HTTPS its name carries the `__Host-` prefix: browsers then accept it only
// with Secure, Path=/ and no Domain, so a page on a sibling subdomain cannot plant
// a session of its own choosing for this host (session fixation, a login CSRF
// around the origin check of POST /v1/auth/session). Over plain HTTP a prefixed
// cookie cannot be set at all; there a sibling can still plant one, and the
// refusal of a Cookie header that carries the name twice is what stops it.
import type { FastifyRequest } from 'fastify'
import { AuthError } from './auth-store.ts'

/** Name of the session cookie when it is not `Secure` (plain HTTP). */
export const SESSION_COOKIE = 'troupe_session'
/** Name of the session cookie when it is `Secure`: the `__Host-` prefix pins it to this host. */
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`

/** The session cookie's name for a request whose cookie is (or is not) `Secure`. */
export function sessionCookieName(secure: boolean): string {
  return secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE
}

/** Whether the session cookie of `request` is `Secure`: `auto` when the request came over HTTPS. */
export function cookieIsSecure(request: FastifyRequest, setting: boolean | 'auto'): boolean {
  return setting === 'auto' ? request.protocol === 'https' : setting
}

/** Every value of cookie `name` in a `Cookie` header, in header order (undecodable ones as ''). */
export function readCookies(header: string | undefined, name: string): string[] {
  if (!header) return []
  const out: string[] = []
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue
    const value = part.slice(eq + 1).trim()
    try {
      out.push(decodeURIComponent(value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value))
    } catch {
      out.push('')
    }
  }
  return out
}

/**
 * The session token in a `Cookie` header, under the name in use (see
 * {@link sessionCookieName}); undefined when absent. Throws a 401 when the
 * name comes more than once: one of them was set by someone else (a sibling
 * subdomain's `Domain=` cookie, sent first for its longer path), and picking
 * either could act in an account the user never signed into.
 */
export function readSessionCookie(header: string | undefined, secure: boolean): string | undefined {
  const name = sessionCookieName(secure)
  const values = readCookies(header, name)
  if (values.length > 1) {
    throw new AuthError('malformed', 'unauthorized', `the request carries ${values.length} ${name} cookies: another site of the domain may have set one; clear this site's cookies and sign in again`)
  }
  return values[0] === '' ? undefined : values[0]
}

function cookie(name: string, token: string, maxAgeMs: number, secure: boolean): string {
  const parts = [`${name}=${encodeURIComponent(token)}`, 'Path=/', 'HttpOnly', 'SameSite=Strict', `Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`]
  if (secure) parts.push('Secure')
  return parts.join('; ')
}

/** A `Set-Cookie` value for the session, named for `secure`; `maxAgeMs` 0 deletes it. */
export function sessionCookie(token: string, maxAgeMs: number, secure: boolean): string {
  return cookie(sessionCookieName(secure), token, maxAgeMs, secure)
}

/**
 * The `Set-Cookie` values that delete the session cookie under both names, the
 * one in use first: a gateway whose TLS or `cookieSecure` changed (or that ran
 * a version before the prefix) may have set the other. Deleting the prefixed
 * name needs `Secure`, which a browser ignores over plain HTTP, where no
 * prefixed cookie can exist anyway.
 */
export function clearedSessionCookies(secure: boolean): string[] {
  const plain = cookie(SESSION_COOKIE, '', 0, secure)
  const prefixed = cookie(SECURE_SESSION_COOKIE, '', 0, true)
  return secure ? [prefixed, plain] : [plain, prefixed]
}
