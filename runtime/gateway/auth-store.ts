// Credentials, access tokens, refresh-token families and cookie sessions in Redis
// (DESIGN §3, §6). Only SHA-256 hashes are stored; every key has a TTL; all keys
// of one user share the `{user}` hash tag, so the rotation script runs on one slot.
//
//   auth:credential:{user}  HASH  id, h, createdAt, expiresAt, and limit overrides (rate, burst, daily)
//   auth:token:{user}       HASH  token id → { h, kind: access|session, fam?, cid?, exp, iat }
//   auth:refresh:{user}     HASH  family id → { h (current), gen, used (older hashes), at (its access token id), cid?, exp, iat }
//
// `cid` is the id of the credential a record was signed in with: a record whose
// credential is not the user's current one any more is refused (records written
// before `cid` existed have none; see refresh() and verify()).
import { TroupeError } from '../errors.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { GatewayError } from './problem.ts'
import { runGatewayScript } from './scripts.ts'
import type { AuthSettings } from './settings.ts'
import { hashToken, matchesHash, mintToken, parseToken, tokenKind, USER_RE, type TokenKind } from './tokens.ts'

/** Who made a request, and with what. */
export interface AuthContext {
  user: string
  via: 'bearer' | 'cookie'
  tokenId: string
  /** Refresh family of a bearer token (logout revokes the whole family). */
  family?: string
  /**
   * Id of the credential the token or session was signed in with; absent on
   * records written before it was recorded (not checked then).
   */
  credential?: string
  expiresAt: number
}

/** What `POST /v1/auth/token` and `/v1/auth/refresh` answer (RFC 6749 field names). */
export interface TokenPair {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
  refresh_expires_in: number
  user: string
}

/** Per-user overrides of the default limits (see LimitSettings). */
export interface UserLimits {
  rate?: number
  burst?: number
  daily?: number
}

interface TokenRecord {
  h: string
  kind: 'access' | 'session'
  fam?: string
  cid?: string
  exp: number
  iat: number
}

interface FamilyRecord {
  h: string
  gen: number
  used: string[]
  at: string
  cid?: string
  exp: number
  iat: number
}

/** How many superseded refresh hashes a family remembers for reuse detection. */
const USED_KEPT = 20
/** Token hashes per user above which expired records are swept on the next issue. */
const PRUNE_ABOVE = 32
/**
 * Live refresh families one user may hold (one per sign-in that was never
 * signed out). A new sign-in beyond it revokes the oldest: a script that signs
 * in every hour and never signs out must not grow the hash without end.
 */
export const MAX_FAMILIES = 64

/** Why an authentication failed, for `troupe_auth_failures_total{reason}`. */
export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'expired' | 'bad_credential' | 'refresh_reused' | 'rate_limited'

/** An authentication failure: a 401 problem that also carries its metric reason. */
export class AuthError extends GatewayError {
  constructor(
    readonly reason: AuthFailure,
    code: 'unauthorized' | 'invalid_credentials' | 'token_expired' | 'refresh_reused',
    message: string,
  ) {
    super(code, message)
  }
}

/** The message of every 401 `invalid_credentials` for a credential that is not (or no longer) the user's. */
export const BAD_CREDENTIAL = 'credential not recognised (revoked, rotated or mistyped)'

function fail(reason: AuthFailure, code: 'unauthorized' | 'invalid_credentials' | 'token_expired' | 'refresh_reused', message: string): AuthError {
  return new AuthError(reason, code, message)
}

function parseJson<T>(raw: string | null | undefined): T | null {
  if (!raw) return null
  try {
    return JSON.parse(raw) as T
  } catch {
    return null
  }
}

/** Issues, verifies, rotates and revokes credentials and tokens. */
export class AuthStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly settings: AuthSettings,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Creates a user's credential (admin: `troupe auth issue`); prints once, stored as a hash.
   * Rotating replaces it and revokes every token and session of the user.
   */
  async issueCredential(user: string, opts: { rotate?: boolean; ttlMs?: number } = {}): Promise<{ credential: string; expiresAt: number }> {
    if (!USER_RE.test(user)) throw new TroupeError('bad_id', `invalid user ${JSON.stringify(user)}: use 1-128 characters from A-Z a-z 0-9 _ . @ -`)
    const key = this.keys.authCredential(user)
    const ttl = opts.ttlMs ?? 365 * 24 * 3600_000
    if (!Number.isFinite(ttl) || ttl <= 0) throw new TroupeError('config', 'credential TTL must be positive')
    if (!opts.rotate && (await this.redis.exists(key)) === 1) {
      throw new TroupeError('config', `user ${user} already has a credential; pass --rotate to replace it (this signs out all of ${user}'s sessions)`)
    }
    const c = mintToken('credential', user)
    const now = this.now()
    await this.redis
      .multi()
      .hset(key, { id: c.id, h: c.hash, createdAt: String(now), expiresAt: String(now + ttl) })
      .pexpire(key, ttl)
      .del(this.keys.authToken(user), this.keys.authRefresh(user))
      .exec()
    return { credential: c.token, expiresAt: now + ttl }
  }

  /** Deletes a user's credential, tokens, sessions and limiter state. */
  async revokeUser(user: string): Promise<boolean> {
    const n = await this.redis.del(this.keys.authCredential(user), this.keys.authToken(user), this.keys.authRefresh(user), this.keys.authRate(user))
    return n > 0
  }

  /** Sets (or with `null`, clears) a user's limit overrides. */
  async setLimits(user: string, limits: UserLimits | null): Promise<void> {
    const key = this.keys.authCredential(user)
    if ((await this.redis.exists(key)) === 0) throw new TroupeError('config', `no credential for user ${user}: issue one first (troupe auth issue --user ${user})`)
    if (limits === null) {
      await this.redis.hdel(key, 'rate', 'burst', 'daily')
      return
    }
    const fields: Record<string, string> = {}
    for (const [k, v] of Object.entries(limits)) {
      if (v === undefined) continue
      if (!Number.isFinite(v) || v < 0) throw new TroupeError('config', `limit ${k} must be a non-negative number`)
      // 0 disables the rate or the quota; a burst below 1 would refuse every request.
      if (k === 'burst' && v < 1) throw new TroupeError('config', 'limit burst must be at least 1 (one request at a time at the rate); to lift the rate limit set rate 0')
      fields[k] = String(v)
    }
    if (Object.keys(fields).length) await this.redis.hset(key, fields)
  }

  /** The user's current limit overrides. */
  async limits(user: string): Promise<UserLimits> {
    const [rate, burst, daily] = await this.redis.hmget(this.keys.authCredential(user), 'rate', 'burst', 'daily')
    const out: UserLimits = {}
    if (rate) out.rate = Number(rate)
    if (burst) out.burst = Number(burst)
    if (daily) out.daily = Number(daily)
    return out
  }

  /** The user a credential string names (not yet verified), or null when malformed. */
  credentialUser(credential: string): string | null {
    return parseToken(credential, 'credential')?.user ?? null
  }

  /** Verifies a credential; returns its user or throws `invalid_credentials`. */
  async checkCredential(credential: string): Promise<string> {
    const parsed = parseToken(credential, 'credential')
    if (!parsed) throw fail('malformed', 'invalid_credentials', 'not a Troupe credential (expected tcr.<user>.<id>.<secret>, as printed by troupe auth issue)')
    const [id, h, exp] = await this.redis.hmget(this.keys.authCredential(parsed.user), 'id', 'h', 'expiresAt')
    // Compare the hash even when the id differs, so both paths take the same time.
    const ok = matchesHash(h ?? '0'.repeat(64), credential) && id === parsed.id
    if (!ok) throw fail('bad_credential', 'invalid_credentials', BAD_CREDENTIAL)
    if (exp && Number(exp) <= this.now()) throw fail('expired', 'token_expired', 'credential expired: ask an admin for a new one (troupe auth issue --rotate)')
    return parsed.user
  }

  /**
   * The credential a sign-in binds its records to, and what sign_in.lua must
   * find stored for it: the presented credential's id and hash, or, without
   * one (callers that vouch for the user themselves: tests, tools), the id of
   * the user's current credential.
   */
  private async binding(user: string, credential: string | undefined): Promise<{ id: string; hash: string }> {
    if (credential !== undefined) {
      const parsed = parseToken(credential, 'credential')
      if (parsed?.user === user) return { id: parsed.id, hash: hashToken(credential) }
    } else {
      const id = await this.redis.hget(this.keys.authCredential(user), 'id')
      if (id) return { id, hash: '' }
    }
    throw fail('bad_credential', 'invalid_credentials', BAD_CREDENTIAL)
  }

  /**
   * Stores a sign-in's token (and refresh family) in one script that first
   * checks the credential is still `bound`: the check a moment before
   * (checkCredential) and this write are two round trips, and a rotation or
   * revocation landing between them must win. Refused, it is the 401 of a bad
   * credential: by now it is one.
   */
  private async storeSignIn(user: string, bound: { id: string; hash: string }, token: { id: string; rec: TokenRecord }, family?: { id: string; rec: FamilyRecord }): Promise<void> {
    const tokenTtl = Math.max(this.settings.accessTtlMs, this.settings.sessionTtlMs)
    const r = (await runGatewayScript(this.redis, 'sign_in', [this.keys.authCredential(user), this.keys.authToken(user), this.keys.authRefresh(user)], [
      bound.id, bound.hash, token.id, JSON.stringify(token.rec), tokenTtl, family?.id ?? '', family ? JSON.stringify(family.rec) : '', this.settings.refreshTtlMs,
    ])) as number[]
    if (Number(r[0]) !== 1) throw fail('bad_credential', 'invalid_credentials', BAD_CREDENTIAL)
    if (Number(r[1] ?? 0) > PRUNE_ABOVE) await this.prune(user)
    if (Number(r[2] ?? 0) > MAX_FAMILIES) await this.pruneFamilies(user)
  }

  /** Removes expired token records of a user (the key TTL covers the newest only). */
  async prune(user: string): Promise<number> {
    const key = this.keys.authToken(user)
    const all = await this.redis.hgetall(key)
    const now = this.now()
    const dead = Object.entries(all).filter(([, v]) => (parseJson<TokenRecord>(v)?.exp ?? 0) <= now).map(([k]) => k)
    if (dead.length) await this.redis.hdel(key, ...dead)
    return dead.length
  }

  /**
   * Issues an access token and a new refresh-token family for `user`, bound to
   * `credential` (just verified by checkCredential): stored only if it is still
   * the user's current credential, else 401 `invalid_credentials`. Without one,
   * bound to whatever credential the user has now.
   */
  async issueTokens(user: string, credential?: string): Promise<TokenPair> {
    const bound = await this.binding(user, credential)
    const now = this.now()
    const refresh = mintToken('refresh', user)
    const access = mintToken('access', user)
    const fam: FamilyRecord = { h: refresh.hash, gen: 1, used: [], at: access.id, cid: bound.id, exp: now + this.settings.refreshTtlMs, iat: now }
    const rec: TokenRecord = { h: access.hash, kind: 'access', fam: refresh.id, cid: bound.id, exp: now + this.settings.accessTtlMs, iat: now }
    await this.storeSignIn(user, bound, { id: access.id, rec }, { id: refresh.id, rec: fam })
    return this.pair(user, access.token, refresh.token)
  }

  /**
   * Removes expired refresh families of a user and revokes, beyond
   * {@link MAX_FAMILIES}, the live ones refreshed least recently (a refresh
   * moves `exp` forward; `iat` stays the family's first sign-in, so a device in
   * daily use would go first by it).
   */
  async pruneFamilies(user: string): Promise<number> {
    const all = await this.redis.hgetall(this.keys.authRefresh(user))
    const now = this.now()
    const live: { id: string; exp: number }[] = []
    const dead: string[] = []
    for (const [id, v] of Object.entries(all)) {
      const fam = parseJson<FamilyRecord>(v)
      if (!fam || fam.exp <= now) dead.push(id)
      else live.push({ id, exp: fam.exp })
    }
    if (dead.length) await this.redis.hdel(this.keys.authRefresh(user), ...dead)
    live.sort((a, b) => a.exp - b.exp)
    const over = live.slice(0, Math.max(0, live.length - MAX_FAMILIES))
    for (const f of over) await this.revokeFamily(user, f.id)
    return dead.length + over.length
  }

  private pair(user: string, access: string, refresh: string): TokenPair {
    return {
      access_token: access,
      token_type: 'Bearer',
      expires_in: Math.floor(this.settings.accessTtlMs / 1000),
      refresh_token: refresh,
      refresh_expires_in: Math.floor(this.settings.refreshTtlMs / 1000),
      user,
    }
  }

  /**
   * Starts a browser session (the token goes into an HttpOnly cookie), bound to
   * `credential` as {@link issueTokens} binds its tokens.
   */
  async issueSession(user: string, credential?: string): Promise<{ token: string; expiresAt: number }> {
    const bound = await this.binding(user, credential)
    const now = this.now()
    const s = mintToken('session', user)
    const rec: TokenRecord = { h: s.hash, kind: 'session', cid: bound.id, exp: now + this.settings.sessionTtlMs, iat: now }
    await this.storeSignIn(user, bound, { id: s.id, rec })
    return { token: s.token, expiresAt: rec.exp }
  }

  /**
   * Verifies a bearer access token or a session cookie token. `allowExpired`
   * (sign-out) accepts one that has expired: ending its family or session is
   * still its holder's right. Expired records stay until pruned, so that a
   * client told "expired" can still sign out with the token it holds.
   */
  async verify(token: string, via: 'bearer' | 'cookie', opts: { allowExpired?: boolean } = {}): Promise<AuthContext> {
    const kind: TokenKind = via === 'cookie' ? 'session' : 'access'
    const parsed = parseToken(token, kind)
    if (!parsed) {
      const other = tokenKind(token)
      const hint = other === 'refresh' ? ': that is a refresh token, exchange it at POST /v1/auth/refresh' : other === 'credential' ? ': exchange the credential at POST /v1/auth/token first' : ''
      throw fail('malformed', 'unauthorized', `not a valid ${kind} token${hint}`)
    }
    const raw = await this.redis.hget(this.keys.authToken(parsed.user), parsed.id)
    const rec = parseJson<TokenRecord>(raw)
    if (!rec || rec.kind !== kind || !matchesHash(rec.h, token)) throw fail('unknown', 'unauthorized', `${kind} token not recognised (revoked, or signed out)`)
    if (rec.exp <= this.now() && !opts.allowExpired) {
      throw fail('expired', 'token_expired', via === 'cookie' ? 'session expired: sign in again' : 'access token expired: refresh it at POST /v1/auth/refresh')
    }
    return { user: parsed.user, via, tokenId: parsed.id, expiresAt: rec.exp, ...(rec.fam ? { family: rec.fam } : {}), ...(rec.cid ? { credential: rec.cid } : {}) }
  }

  /**
   * Whether a token verified earlier is still good: its record is still there
   * (not signed out, revoked or rotated away), it has not expired, and its
   * user's credential still exists (not revoked, and its TTL has not run out:
   * every request is refused then, see rate_limit.lua) and is the one it was
   * signed in with. For long-lived requests (SSE streams) that verified once,
   * when they opened. Both keys share the `{user}` slot, so one MULTI reads
   * them together.
   */
  async stillValid(ctx: AuthContext): Promise<boolean> {
    if (ctx.expiresAt <= this.now()) return false
    const res = await this.redis.multi().hget(this.keys.authToken(ctx.user), ctx.tokenId).hget(this.keys.authCredential(ctx.user), 'id').exec()
    const err = res?.find(([e]) => e)?.[0]
    if (err) throw err
    const rec = parseJson<TokenRecord>(res?.[0]?.[1] as string | null | undefined)
    const current = res?.[1]?.[1] as string | null | undefined
    return rec !== null && rec.exp > this.now() && typeof current === 'string' && (rec.cid === undefined || rec.cid === current)
  }

  /**
   * Rotates a refresh token: returns a new access token and the family's next
   * refresh token. Presenting a superseded refresh token (or racing a rotation)
   * revokes the whole family (RFC 9700 §4.14.2). `admit` runs once the token
   * is known to be its family's current one, before anything changes: it may
   * refuse (throw), e.g. on a rate limit, and the token stays good.
   *
   * A family signed in with a credential that is not the user's current one
   * any more (it outlived a rotation) is revoked instead. One written before
   * families recorded their credential is bound, by this refresh, to the
   * credential the user has now.
   */
  async refresh(refreshToken: string, admit?: (user: string) => Promise<void>): Promise<TokenPair> {
    const parsed = parseToken(refreshToken, 'refresh')
    if (!parsed) throw fail('malformed', 'unauthorized', 'not a refresh token')
    const { user, id: famId } = parsed
    const refreshKey = this.keys.authRefresh(user)
    // One slot, so one round trip reads both; refresh_rotate.lua checks the
    // credential again when it writes.
    const read = await this.redis.multi().hget(refreshKey, famId).hget(this.keys.authCredential(user), 'id').exec()
    const readErr = read?.find(([e]) => e)?.[0]
    if (readErr) throw readErr
    const fam = parseJson<FamilyRecord>(read?.[0]?.[1] as string | null | undefined)
    const current = read?.[1]?.[1] as string | null | undefined
    if (!fam) throw fail('unknown', 'unauthorized', 'refresh token not recognised (revoked, or its family was revoked)')
    if (!matchesHash(fam.h, refreshToken)) {
      if (fam.used.some((h) => matchesHash(h, refreshToken))) {
        await this.revokeFamily(user, famId)
        throw fail('refresh_reused', 'refresh_reused', 'refresh token was already used: every token of its family is revoked, sign in again')
      }
      throw fail('unknown', 'unauthorized', 'refresh token not recognised')
    }
    if (fam.exp <= this.now()) {
      await this.revokeFamily(user, famId)
      throw fail('expired', 'token_expired', 'refresh token expired: sign in again')
    }
    // Checked before `admit`, so a stale family draws nothing from the bucket.
    const cid = fam.cid ?? current
    if (typeof cid !== 'string' || cid !== current) throw await this.credentialGone(user, famId)
    if (admit) await admit(user)
    const now = this.now()
    const next = mintToken('refresh', user, famId)
    const access = mintToken('access', user)
    const nextFam: FamilyRecord = { h: next.hash, gen: fam.gen + 1, used: [fam.h, ...fam.used].slice(0, USED_KEPT), at: access.id, cid, exp: now + this.settings.refreshTtlMs, iat: fam.iat }
    const rec: TokenRecord = { h: access.hash, kind: 'access', fam: famId, cid, exp: now + this.settings.accessTtlMs, iat: now }
    const tokenTtl = Math.max(this.settings.accessTtlMs, this.settings.sessionTtlMs)
    const r = Number(await runGatewayScript(this.redis, 'refresh_rotate', [refreshKey, this.keys.authToken(user), this.keys.authCredential(user)], [
      famId, fam.h, JSON.stringify(nextFam), access.id, JSON.stringify(rec), this.settings.refreshTtlMs, tokenTtl, cid,
    ]))
    if (r === -2) throw await this.credentialGone(user, famId)
    if (r === 0) {
      await this.revokeFamily(user, famId)
      throw fail('refresh_reused', 'refresh_reused', 'refresh token was used twice at once: its family is revoked, sign in again')
    }
    if (r !== 1) throw fail('unknown', 'unauthorized', 'refresh token family was revoked')
    return this.pair(user, access.token, next.token)
  }

  /** Revokes a family whose credential is gone or replaced; the error to throw. */
  private async credentialGone(user: string, famId: string): Promise<AuthError> {
    await this.revokeFamily(user, famId)
    return fail('unknown', 'unauthorized', 'the credential this refresh token was signed in with was rotated or revoked: sign in again')
  }

  /** Revokes one refresh family and its current access token. */
  async revokeFamily(user: string, famId: string): Promise<boolean> {
    return Number(await runGatewayScript(this.redis, 'refresh_revoke', [this.keys.authRefresh(user), this.keys.authToken(user)], [famId])) === 1
  }

  /**
   * Signs out: the presented session or access token (with its refresh family),
   * a refresh token given in the body, or with `all` every token of the user.
   */
  async logout(ctx: AuthContext | null, opts: { refreshToken?: string; all?: boolean } = {}): Promise<void> {
    if (opts.refreshToken) {
      const parsed = parseToken(opts.refreshToken, 'refresh')
      if (parsed) {
        const fam = parseJson<FamilyRecord>(await this.redis.hget(this.keys.authRefresh(parsed.user), parsed.id))
        // Only the holder of the family's current token may end it.
        if (fam && matchesHash(fam.h, opts.refreshToken)) await this.revokeFamily(parsed.user, parsed.id)
      }
    }
    if (!ctx) return
    // An expired token ends its own family or session only: one found in an
    // old log must not sign its user out everywhere.
    if (opts.all && ctx.expiresAt > this.now()) {
      await this.redis.del(this.keys.authToken(ctx.user), this.keys.authRefresh(ctx.user))
      return
    }
    if (ctx.family) await this.revokeFamily(ctx.user, ctx.family)
    await this.redis.hdel(this.keys.authToken(ctx.user), ctx.tokenId)
  }
}
