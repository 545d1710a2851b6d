// `troupe auth`: admin commands that talk to Redis directly: issue or rotate a
// user's credential, revoke a user, set per-user limits.
import { loadConfig } from '../config.ts'
import { AuthStore, type UserLimits } from '../gateway/auth-store.ts'
import { gatewaySettings } from '../gateway/settings.ts'
import { USER_RE } from '../gateway/tokens.ts'
import { closeRedis, createRedis, waitReachable } from '../redis/connection.ts'
import { Keys } from '../redis/keys.ts'
import { MAX_DELAY_MS } from '../types.ts'
import { configFlags, EXIT, parse, parseDuration, UsageError, type Command } from './common.ts'

const usage = `usage: troupe auth <issue|revoke|limits> --user <name> [options]

  issue  --user alice [--rotate] [--ttl 365d]   (--ttl at most 3650d)
         prints a new credential for alice (only its SHA-256 is stored; it is shown once).
         --rotate replaces an existing one and signs out all of alice's sessions.
  revoke --user alice
         deletes alice's credential, tokens, sessions and limiter state.
  limits --user alice [--rate 20] [--burst 60] [--daily 1000] [--clear]
         overrides the default limits for alice (requests/s, burst, workflows started per UTC day;
         --rate 0 or --daily 0 disables that limit; --burst is at least 1;
         plain decimal numbers, --daily a whole one); --clear drops them all
         (given alone); without values prints the current overrides.

Users exchange the credential at POST /v1/auth/token (API) or sign in with it in the web UI.`

const SUBCOMMANDS = ['issue', 'revoke', 'limits']

/**
 * A limit flag: plain decimal digits only. Number() reads '' as 0, which
 * means "no limit" here, and takes 0x10 or 1e2 as numbers nobody meant.
 */
function num(v: string | undefined, name: string, whole = false): number | undefined {
  if (v === undefined) return undefined
  if (!(whole ? /^\d+$/ : /^\d+(\.\d+)?$/).test(v)) throw new UsageError(`--${name} must be a non-negative ${whole ? 'whole number' : 'decimal number'} (digits${whole ? '' : ', optionally with a fraction like 2.5'}), got ${JSON.stringify(v)}`)
  return Number(v)
}

/** The limit overrides given on the command line (empty without any). */
function limitFlags(values: { rate?: string; burst?: string; daily?: string }): UserLimits {
  const limits: UserLimits = {}
  const rate = num(values.rate, 'rate')
  const burst = num(values.burst, 'burst')
  if (burst !== undefined && burst < 1) throw new UsageError('--burst must be at least 1 (one request at a time at the rate); to lift the rate limit use --rate 0')
  const daily = num(values.daily, 'daily', true)
  if (rate !== undefined) limits.rate = rate
  if (burst !== undefined) limits.burst = burst
  if (daily !== undefined) limits.daily = daily
  return limits
}

/** --ttl in ms: positive and at most ten years (a longer one has no valid date to print, and was stored before that failed). */
function ttlFlag(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const ms = parseDuration(text)
  if (!(ms > 0 && ms <= MAX_DELAY_MS)) throw new UsageError(`--ttl must be more than 0 and at most 3650d (ten years), got ${JSON.stringify(text)}`)
  return ms
}

/** The `auth` command. */
export const command: Command = {
  summary: 'issue or revoke user credentials, set per-user limits',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      user: { type: 'string' },
      rotate: { type: 'boolean' },
      ttl: { type: 'string' },
      rate: { type: 'string' },
      burst: { type: 'string' },
      daily: { type: 'string' },
      clear: { type: 'boolean' },
    })
    const [sub, ...extra] = positionals
    if (!sub || extra.length) throw new UsageError('expected exactly one of: issue, revoke, limits')
    // Everything is checked before connecting: a mistake should not wait for,
    // or be hidden behind, an unreachable Redis.
    if (!SUBCOMMANDS.includes(sub)) throw new UsageError(`unknown subcommand ${sub}: use issue, revoke or limits`)
    const user = values.user
    if (!user) throw new UsageError('--user is required')
    if (!USER_RE.test(user)) throw new UsageError('--user must be 1-128 characters from A-Z a-z 0-9 _ . @ -')
    const ttlMs = ttlFlag(values.ttl)
    const limits = limitFlags(values)
    if (values.clear === true && Object.keys(limits).length) throw new UsageError('--clear drops every override: give it alone, or give only the values to set')
    const cfg = loadConfig(configFlags(values))
    const redis = createRedis(cfg.redisUrl, { name: 'troupe-auth' })
    const store = new AuthStore(redis, new Keys(cfg.namespace), gatewaySettings().auth)
    try {
      await waitReachable(redis, cfg.redisUrl)
      switch (sub) {
        case 'issue': {
          const { credential, expiresAt } = await store.issueCredential(user, { rotate: values.rotate === true, ...(ttlMs !== undefined ? { ttlMs } : {}) })
          if (values.json) {
            process.stdout.write(`${JSON.stringify({ user, credential, expiresAt })}\n`)
          } else {
            process.stdout.write(`${credential}\n`)
            process.stderr.write(`credential for ${user}, valid until ${new Date(expiresAt).toISOString()}; it is not stored and cannot be shown again.\n`)
          }
          return EXIT.ok
        }
        case 'revoke': {
          const found = await store.revokeUser(user)
          process.stderr.write(found ? `revoked ${user}: credential, tokens and sessions deleted\n` : `nothing to revoke for ${user}\n`)
          return found ? EXIT.ok : EXIT.input
        }
        case 'limits': {
          if (values.clear) await store.setLimits(user, null)
          else if (Object.keys(limits).length) await store.setLimits(user, limits)
          process.stdout.write(`${JSON.stringify({ user, overrides: await store.limits(user) })}\n`)
          return EXIT.ok
        }
        default:
          throw new UsageError(`unknown subcommand ${sub}: use issue, revoke or limits`)
      }
    } finally {
      await closeRedis(redis)
    }
  },
}
