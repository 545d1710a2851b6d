// Browser sign-outs answered while Redis was away (POST /v1/auth/logout clears
// the cookie at once then), whose sessions are revoked server-side once the
// connection is ready again. Held here, bounded, rather than as one queued
// command chain per request: nothing is verified during an outage, so anyone
// could send sign-outs with made-up session tokens, and each one used to wait
// in ioredis's unbounded offline queue, holding its request, until Redis came
// back and the whole backlog ran at once.
import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from '../redis/connection.ts'
import { AuthError, type AuthStore } from './auth-store.ts'
import { parseToken } from './tokens.ts'

/** Sign-outs remembered during one outage at most; beyond it the oldest are forgotten. */
export const MAX_PENDING_SIGN_OUTS = 10_000
/** Revocations in flight at once while catching up. */
const BATCH = 64

/** Session sign-outs waiting for Redis; revoked on the connection's `ready`. */
export class PendingSignOuts {
  /** Session tokens in arrival order (a Set: the same token twice is one entry). */
  private readonly tokens = new Set<string>()
  /** Forgotten over the cap since the last catch-up (those sessions last until they expire). */
  private dropped = 0
  private draining = false
  private readonly onReady = (): void => {
    void this.drain()
  }

  constructor(
    private readonly redis: RedisClient,
    private readonly store: AuthStore,
    private readonly log: FastifyBaseLogger,
    private readonly max = MAX_PENDING_SIGN_OUTS,
  ) {
    redis.on('ready', this.onReady)
  }

  /** Sign-outs waiting now. */
  get size(): number {
    return this.tokens.size
  }

  /**
   * Remembers the sign-out of a session token, to revoke it when Redis is
   * ready; a string that is not a session token has nothing to revoke. Over
   * the cap the oldest is forgotten: its session then lasts until it expires.
   */
  add(token: string): void {
    if (!parseToken(token, 'session') || this.tokens.has(token)) return
    if (this.tokens.size >= this.max) {
      const oldest = this.tokens.values().next()
      if (!oldest.done) this.tokens.delete(oldest.value)
      // Once per outage: a flood of sign-outs must not become a flood of log lines.
      if (this.dropped++ === 0) this.log.warn({ max: this.max }, 'too many sign-outs during the Redis outage: the oldest are forgotten, their sessions last until they expire')
    }
    this.tokens.add(token)
  }

  /** Revokes what waits, a batch at a time, while Redis stays ready. */
  async drain(): Promise<void> {
    if (this.draining) return
    this.draining = true
    let revoked = 0
    let failed = 0
    try {
      while (this.tokens.size > 0 && this.redis.status === 'ready') {
        const batch: string[] = []
        for (const t of this.tokens) {
          batch.push(t)
          if (batch.length >= BATCH) break
        }
        for (const t of batch) this.tokens.delete(t)
        const results = await Promise.all(batch.map((t) => this.revoke(t)))
        for (const r of results) {
          if (r === 'revoked') revoked++
          else if (r === 'failed') failed++
        }
      }
    } finally {
      this.draining = false
    }
    if (revoked > 0 || failed > 0 || this.dropped > 0) {
      const level = failed > 0 || this.dropped > 0 ? 'warn' : 'info'
      this.log[level]({ revoked, failed, forgotten: this.dropped }, 'sessions signed out during the Redis outage revoked')
    }
    if (this.tokens.size === 0) this.dropped = 0
  }

  private async revoke(token: string): Promise<'revoked' | 'none' | 'failed'> {
    try {
      await this.store.logout(await this.store.verify(token, 'cookie', { allowExpired: true }))
      return 'revoked'
    } catch (err) {
      // Not a session (any more): nothing to revoke.
      if (err instanceof AuthError) return 'none'
      this.log.warn({ err }, 'a session signed out during the Redis outage could not be revoked')
      return 'failed'
    }
  }

  /** Stops watching the connection; what still waits is lost (those sessions last until they expire). */
  close(): void {
    this.redis.off('ready', this.onReady)
    if (this.tokens.size > 0) this.log.warn({ pending: this.tokens.size }, 'the gateway stopped before Redis came back: sessions signed out during the outage stay valid until they expire')
    this.tokens.clear()
  }
}
