// Loader for the gateway's own Lua scripts (./scripts/*.lua, each with a
// KEYS/ARGV/returns header): EVALSHA first, EVAL when the server answers NOSCRIPT
// (a restarted Redis, a new cluster node), through the one loader of
// runtime/redis/scripts.ts; kept apart because these touch `auth:*{user}` keys.
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from '../redis/connection.ts'
import { LuaScripts } from '../redis/scripts.ts'

/** Names of the scripts in runtime/gateway/scripts (without `.lua`). */
export type GatewayScriptName = 'rate_limit' | 'refresh_rotate' | 'refresh_revoke' | 'quota_refund' | 'sign_in'

const scripts = new LuaScripts<GatewayScriptName>(new URL('./scripts/', import.meta.url))

/** Runs one of the gateway's scripts; an OOM comes back as `TroupeError('redis_oom')`. */
export async function runGatewayScript(redis: RedisClient, name: GatewayScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  try {
    return await scripts.run(redis, name, keys, args)
  } catch (err) {
    throw fromRedisError(err)
  }
}
