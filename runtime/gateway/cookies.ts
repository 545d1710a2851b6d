// The one cookie the gateway uses: the browser session. EventSource cannot send an
// Authorization header, so browsers authenticate with this HttpOnly, SameSite=Strict
// cookie instead (scripts cannot read it; other sites cannot make the browser send it).

/** Name of the session cookie. */
export const SESSION_COOKIE = 'troupe_session'

/** Reads one cookie from a `Cookie` header; undefined when absent. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue
    const value = part.slice(eq + 1).trim()
    try {
      return decodeURIComponent(value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value)
    } catch {
      return undefined
    }
  }
  return undefined
}

/** A `Set-Cookie` value for the session; `maxAgeMs` 0 deletes it. */
export function sessionCookie(token: string, maxAgeMs: number, secure: boolean): string {
  const parts = [`${SESSION_COOKIE}=${encodeURIComponent(token)}`, 'Path=/', 'HttpOnly', 'SameSite=Strict', `Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`]
  if (secure) parts.push('Secure')
  return parts.join('; ')
}
