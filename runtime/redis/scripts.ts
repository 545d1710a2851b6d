// The one loader for the Lua scripts in ./scripts: each file is prepended with
// lib.lua, run by EVALSHA, and re-sent with EVAL when the server answers NOSCRIPT
// (a restarted Redis, a new cluster node).
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from './connection.ts'

/** Names of the scripts in runtime/redis/scripts (without `.lua`). */
export type ScriptName = 'enqueue' | 'pick' | 'pick_activate' | 'activate' | 'commit' | 'settle' | 'release_hint' | 'extend_hint' | 'emit' | 'cancel'

interface Script {
  readonly source: string
  readonly sha: string
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT')
}

/**
 * A folder of Lua scripts, loaded on first use. Every script gets a `#!lua`
 * shebang, which makes Redis 7 judge a writing script as a whole before it runs:
 * when the server is out of memory it is refused up front instead of failing at
 * its first write and keeping the writes before it. `prelude` (shared helpers) is
 * put in front of each script.
 */
export class LuaScripts<N extends string> {
  private readonly cache = new Map<N, Script>()

  constructor(
    private readonly dir: URL,
    private readonly prelude = '',
  ) {}

  /** Source and SHA-1 of a script. */
  get(name: N): Script {
    let s = this.cache.get(name)
    if (!s) {
      const body = readFileSync(new URL(`${name}.lua`, this.dir), 'utf8')
      const source = `#!lua\n${this.prelude}\n${body}`
      s = { source, sha: createHash('sha1').update(source).digest('hex') }
      this.cache.set(name, s)
    }
    return s
  }

  /** EVALSHA, then EVAL when the server answers NOSCRIPT (a restarted Redis, a new cluster node). Errors are raw. */
  async run(client: RedisClient, name: N, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const s = this.get(name)
    try {
      return await client.evalsha(s.sha, keys.length, ...keys, ...args)
    } catch (err) {
      if (!isNoScript(err)) throw err
      return await client.eval(s.source, keys.length, ...keys, ...args)
    }
  }
}

const lib = readFileSync(new URL('./scripts/lib.lua', import.meta.url), 'utf8')
const core = new LuaScripts<ScriptName>(new URL('./scripts/', import.meta.url), lib)

function script(name: ScriptName): Script {
  return core.get(name)
}

/** Runs a script; script errors come back as TroupeError (see errors.ts). */
export async function runScript(client: RedisClient, name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
  try {
    return await core.run(client, name, keys, args)
  } catch (err) {
    throw fromRedisError(err)
  }
}

/** Source (as loaded) and SHA-1 of a script. */
export function scriptFor(name: ScriptName): { readonly source: string; readonly sha: string } {
  return script(name)
}

/** The EVALSHA arguments of a script call, for a batch (its sender handles NOSCRIPT: see execOps). */
export function evalshaArgs(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): (string | number)[] {
  return [script(name).sha, keys.length, ...keys, ...args]
}

/** Loads every script on the server (once per connection is plenty; cheap to repeat). */
export async function loadScripts(client: RedisClient): Promise<void> {
  const names: ScriptName[] = ['enqueue', 'pick', 'pick_activate', 'activate', 'commit', 'settle', 'release_hint', 'extend_hint', 'emit', 'cancel']
  for (const n of names) {
    const s = script(n)
    if ('nodes' in client) {
      await Promise.all(client.nodes('master').map((node) => node.script('LOAD', s.source)))
    } else {
      await client.script('LOAD', s.source)
    }
  }
}
