// `troupe auth`: admin commands that talk to Redis directly: issue or rotate a
// user's credential, revoke a user, set per-user limits.
import { loadConfig } from '../config.ts'
import { AuthStore, type UserLimits } from '../gateway/auth-store.ts'
import { gatewaySettings } from '../gateway/settings.ts'
import { USER_RE } from '../gateway/tokens.ts'
import { closeRedis, createRedis, waitReachable } from '../redis/connection.ts'
import { Keys } from '../redis/keys.ts'
import { configFlags, EXIT, parse, parseDuration, UsageError, type Command } from './common.ts'

const usage = `usage: troupe auth <issue|revoke|limits> --user <name> [options]

  issue  --user alice [--rotate] [--ttl 365d]
         prints a new credential for alice (only its SHA-256 is stored; it is shown once).
         --rotate replaces an existing one and signs out all of alice's sessions.
  revoke --user alice
         deletes alice's credential, tokens, sessions and limiter state.
  limits --user alice [--rate 20] [--burst 60] [--daily 1000] [--clear]
         overrides the default limits for alice (requests/s, burst, workflows started per UTC day;
         --rate 0 or --daily 0 disables that limit; --burst is at least 1);
         without values prints the current overrides.

Users exchange the credential at POST /v1/auth/token (API) or sign in with it in the web UI.`

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a non-negative number`)
  return n
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
    const user = values.user
    if (!user) throw new UsageError('--user is required')
    if (!USER_RE.test(user)) throw new UsageError('--user must be 1-128 characters from A-Z a-z 0-9 _ . @ -')
    const cfg = loadConfig(configFlags(values))
    const redis = createRedis(cfg.redisUrl, { name: 'troupe-auth' })
    const store = new AuthStore(redis, new Keys(cfg.namespace), gatewaySettings().auth)
    try {
      await waitReachable(redis, cfg.redisUrl)
      switch (sub) {
        case 'issue': {
          const { credential, expiresAt } = await store.issueCredential(user, { rotate: values.rotate === true, ...(values.ttl ? { ttlMs: parseDuration(values.ttl) } : {}) })
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
          const limits: UserLimits = {}
          const rate = num(values.rate, 'rate')
          const burst = num(values.burst, 'burst')
          if (burst !== undefined && burst < 1) throw new UsageError('--burst must be at least 1 (one request at a time at the rate); to lift the rate limit use --rate 0')
          const daily = num(values.daily, 'daily')
          if (rate !== undefined) limits.rate = rate
          if (burst !== undefined) limits.burst = burst
          if (daily !== undefined) limits.daily = daily
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
