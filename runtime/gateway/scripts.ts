// Loader for the gateway's own Lua scripts (./scripts/*.lua, each with a
// KEYS/ARGV/returns header): EVALSHA first, EVAL when the server answers NOSCRIPT
// (a restarted Redis, a new cluster node). Same pattern as runtime/redis/scripts.ts,
// kept separate because these scripts touch `auth:*{user}` keys, not workflows.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from '../redis/connection.ts'

/** Names of the scripts in runtime/gateway/scripts (without `.lua`). */
export type GatewayScriptName = 'rate_limit' | 'refresh_rotate' | 'refresh_revoke'

const cache = new Map<GatewayScriptName, { source: string; sha: string }>()

function script(name: GatewayScriptName): { source: string; sha: string } {
  let s = cache.get(name)
  if (!s) {
    const source = readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8')
    s = { source, sha: createHash('sha1').update(source).digest('hex') }
    cache.set(name, s)
  }
  return s
}

/** Runs one of the gateway's scripts; an OOM comes back as `TroupeError('redis_oom')`. */
export async function runGatewayScript(redis: RedisClient, name: GatewayScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  const s = script(name)
  try {
    try {
      return await redis.evalsha(s.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err
      return await redis.eval(s.source, keys.length, ...keys, ...args)
    }
  } catch (err) {
    throw fromRedisError(err)
  }
}
