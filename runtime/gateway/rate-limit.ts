// Per-user rate limits (GCRA) and the daily quota of started workflows, decided by
// scripts/rate_limit.lua in one round trip, and rendered as the IETF httpapi
// RateLimit-Policy / RateLimit header fields plus Retry-After on a 429.
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { runGatewayScript } from './scripts.ts'
import type { LimitSettings } from './settings.ts'

/** Which bucket a request draws from: API requests, or credential exchanges. */
export type Bucket = 'req' | 'auth'

/** The limiter's verdict. */
export interface RateDecision {
  /** False when the user has no credential any more (revoked), or not the one `credential` named (rotated). */
  known: boolean
  allowed: boolean
  deniedBy: '' | 'rate' | 'quota'
  /** Milliseconds until a retry can succeed (0 when allowed). */
  retryAfterMs: number
  /** The UTC day (YYYY-MM-DD) the daily quota was counted on: what a refund names. */
  day: string
  /** Headers to add to the response, allowed or not. */
  headers: Record<string, string>
}

const DAY_MS = 24 * 3600_000

function secs(ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000))
}

/** Checks and records requests against `auth:rate:{user}`. */
export class RateLimiter {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly limits: LimitSettings,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Counts one request of `user` in `bucket`; `start` also counts one started
   * workflow against the daily quota. With `credential` (the id the caller's
   * token or session was signed in with) the request is refused as unknown
   * when the user's credential is another one now.
   */
  async check(user: string, bucket: Bucket, opts: { start?: boolean; credential?: string } = {}): Promise<RateDecision> {
    const now = this.now()
    const dayStart = now - (now % DAY_MS)
    const day = new Date(dayStart).toISOString().slice(0, 10)
    const auth = bucket === 'auth'
    const rate = auth ? this.limits.authPerMin / 60 : this.limits.ratePerSec
    const burst = auth ? this.limits.authPerMin : this.limits.burst
    const r = (await runGatewayScript(this.redis, 'rate_limit', [this.keys.authRate(user), this.keys.authCredential(user)], [
      now, bucket, rate, burst, opts.start ? 1 : 0, auth ? 0 : this.limits.dailyStarts, day, dayStart + DAY_MS - now, auth ? '0' : '1', opts.credential ?? '',
    ])) as (number | string)[]
    if (Number(r[0]) === -1) return { known: false, allowed: false, deniedBy: '', retryAfterMs: 0, day, headers: {} }
    const [allowed, deniedBy, burstN, remaining, resetMs, retryMs, daily, quotaLeft, ratePerSec] = r
    const policies: string[] = []
    const states: string[] = []
    const perSec = Number(ratePerSec)
    if (perSec > 0) {
      const name = auth ? 'auth' : 'burst'
      policies.push(`"${name}";q=${Number(burstN)};w=${secs((Number(burstN) / perSec) * 1000)}`)
      states.push(`"${name}";r=${Number(remaining)};t=${secs(Number(resetMs))}`)
    }
    if (Number(daily) > 0) {
      policies.push(`"daily";q=${Number(daily)};w=86400`)
      states.push(`"daily";r=${Number(quotaLeft)};t=${secs(dayStart + DAY_MS - now)}`)
    }
    const headers: Record<string, string> = {}
    if (policies.length) {
      headers['ratelimit-policy'] = policies.join(', ')
      headers.ratelimit = states.join(', ')
    }
    const ok = Number(allowed) === 1
    if (!ok) headers['retry-after'] = String(Math.max(1, secs(Number(retryMs))))
    return { known: true, allowed: ok, deniedBy: String(deniedBy) as RateDecision['deniedBy'], retryAfterMs: Number(retryMs), day, headers }
  }

  /** Gives back a quota unit counted on `day` (see RateDecision.day) when the start it was taken for failed. */
  async refundStart(user: string, day: string): Promise<void> {
    await runGatewayScript(this.redis, 'quota_refund', [this.keys.authRate(user)], [day])
  }
}
