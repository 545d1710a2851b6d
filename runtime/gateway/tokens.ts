// Opaque token strings: `<kind>.<user>.<id>.<secret>`. The kind, user and id are
// not secret: they route a lookup to one hash field in O(1) (`auth:*:{user}`,
// field `<id>`), and let secret scanners recognise leaked tokens by prefix. Only
// SHA-256 of the whole string is ever stored, and it is compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/** What a token is for. */
export type TokenKind = 'credential' | 'access' | 'refresh' | 'session'

const PREFIX: Record<TokenKind, string> = { credential: 'tcr', access: 'tat', refresh: 'trt', session: 'tss' }

/** User ids: safe inside a `{user}` hash tag and as a workflow owner. */
export const USER_RE = /^[A-Za-z0-9_.@-]{1,128}$/

const ID_RE = /^[A-Za-z0-9_-]{16}$/
const SECRET_RE = /^[A-Za-z0-9_-]{43}$/

/** A freshly minted token: the string to hand out once, and what may be stored. */
export interface MintedToken {
  token: string
  id: string
  hash: string
}

/** A random id for token records and refresh families (96 bits, URL-safe). */
export function newTokenId(): string {
  return randomBytes(12).toString('base64url')
}

/** SHA-256 of a token string, hex. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/**
 * Mints a token of `kind` for `user` with 256 random bits.
 * @param id reuse a record id (refresh rotation keeps the family id)
 */
export function mintToken(kind: TokenKind, user: string, id: string = newTokenId()): MintedToken {
  const token = `${PREFIX[kind]}.${user}.${id}.${randomBytes(32).toString('base64url')}`
  return { token, id, hash: hashToken(token) }
}

/** Splits a token of `kind` into its non-secret parts; null when it is not one. */
export function parseToken(token: string, kind: TokenKind): { user: string; id: string } | null {
  if (token.length > 256) return null
  const parts = token.split('.')
  if (parts.length < 4 || parts[0] !== PREFIX[kind]) return null
  const secret = parts[parts.length - 1] ?? ''
  const id = parts[parts.length - 2] ?? ''
  // User ids may contain dots; id and secret never do.
  const user = parts.slice(1, -2).join('.')
  if (!USER_RE.test(user) || !ID_RE.test(id) || !SECRET_RE.test(secret)) return null
  return { user, id }
}

/** The kind of a token string from its prefix, or null. */
export function tokenKind(token: string): TokenKind | null {
  const prefix = token.slice(0, token.indexOf('.'))
  for (const [k, p] of Object.entries(PREFIX) as [TokenKind, string][]) if (p === prefix) return k
  return null
}

/** True when `token` hashes to `storedHex`, compared in constant time. */
export function matchesHash(storedHex: unknown, token: string): boolean {
  if (typeof storedHex !== 'string' || !/^[0-9a-f]{64}$/.test(storedHex)) return false
  return timingSafeEqual(Buffer.from(storedHex, 'hex'), createHash('sha256').update(token).digest())
}
