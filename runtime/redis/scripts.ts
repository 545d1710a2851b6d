// The one loader for the Lua scripts in ./scripts: each file is prepended with
// lib.lua, run by EVALSHA, and re-sent with EVAL when the server answers NOSCRIPT
// (a restarted Redis, a new cluster node).
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ChainableCommander } from 'ioredis'
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from './connection.ts'

/** Names of the scripts in runtime/redis/scripts (without `.lua`). */
export type ScriptName = 'enqueue' | 'pick' | 'activate' | 'commit' | 'release_hint' | 'emit' | 'cancel'

interface Script {
  readonly source: string
  readonly sha: string
}

const lib = readFileSync(new URL('./scripts/lib.lua', import.meta.url), 'utf8')
const cache = new Map<ScriptName, Script>()

function script(name: ScriptName): Script {
  let s = cache.get(name)
  if (!s) {
    // The shebang makes Redis 7 judge the whole script before it runs: when the
    // server is out of memory a writing script is refused up front instead of
    // failing at its first write and leaving the earlier ones behind.
    const source = `#!lua\n${lib}\n${readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8')}`
    s = { source, sha: createHash('sha1').update(source).digest('hex') }
    cache.set(name, s)
  }
  return s
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT')
}

/** Runs a script; script errors come back as TroupeError (see errors.ts). */
export async function runScript(client: RedisClient, name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  const s = script(name)
  try {
    try {
      return await client.evalsha(s.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!isNoScript(err)) throw err
      return await client.eval(s.source, keys.length, ...keys, ...args)
    }
  } catch (err) {
    throw fromRedisError(err)
  }
}

/** Queues a script on a pipeline; pair with {@link execScripts} to handle NOSCRIPT. */
export function pipeScript(pipe: ChainableCommander, name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): void {
  pipe.evalsha(script(name).sha, keys.length, ...keys, ...args)
}

/** Loads every script on the server (once per connection is plenty; cheap to repeat). */
export async function loadScripts(client: RedisClient): Promise<void> {
  const names: ScriptName[] = ['enqueue', 'pick', 'activate', 'commit', 'release_hint', 'emit', 'cancel']
  for (const n of names) {
    const s = script(n)
    if ('nodes' in client) {
      await Promise.all(client.nodes('master').map((node) => node.script('LOAD', s.source)))
    } else {
      await client.script('LOAD', s.source)
    }
  }
}
