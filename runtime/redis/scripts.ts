// The one loader for the Lua scripts in ./scripts: each file is prepended with
// the lib.lua helpers it uses, run by EVALSHA, and re-sent with EVAL when the server answers NOSCRIPT
// (a restarted Redis, a new cluster node).
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from './connection.ts'

/** Names of the scripts in runtime/redis/scripts (without `.lua`). */
export type ScriptName = 'enqueue' | 'pick' | 'pick_activate' | 'activate' | 'commit' | 'settle' | 'release_hint' | 'extend_hint' | 'emit' | 'cancel' | 'register' | 'requeue'

interface Script {
  readonly source: string
  readonly sha: string
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT')
}

/** A top-level definition of a prelude (`local function name` or `local NAME =`) and the lines up to the next one. */
interface Definition {
  readonly name: string
  readonly text: string
}

const DEFINITION = /^local (?:function )?([A-Za-z_][A-Za-z0-9_]*)/

/**
 * Splits a prelude into its definitions, each with the comments above it. Only
 * one-name `local` definitions, their bodies (indented, closed by a bare `end`
 * at the margin), comments and blank lines may stand at the margin: anything
 * else would ride along with a definition whose name it does not carry, so it
 * is refused at load.
 */
function definitions(prelude: string): Definition[] {
  const out: { name: string; lines: string[] }[] = []
  // Margin comments: they belong to the definition right below them.
  let pending: string[] = []
  for (const line of prelude.split('\n')) {
    const m = DEFINITION.exec(line)
    if (m?.[1] && !/^local [A-Za-z0-9_]+\s*,/.test(line) && !/\blocal\s/.test(line.slice(6))) {
      out.push({ name: m[1], lines: [...pending, line] })
      pending = []
    } else if (/^\s*$/.test(line)) {
      // A comment block set off by a blank line documents the file, not a definition.
      pending = []
    } else if (line.startsWith('--')) {
      pending.push(line)
    } else if (/^[ \t]/.test(line) || /^end\s*(?:--.*)?$/.test(line)) {
      // Lines before the first definition are the file's header: dropped.
      out.at(-1)?.lines.push(...pending, line)
      pending = []
    } else {
      throw new Error(`a Lua prelude may hold only one-name local definitions at the margin, not: ${line}`)
    }
  }
  return out.map((d) => ({ name: d.name, text: d.lines.join('\n') }))
}

/**
 * The part of `prelude` a script needs: the definitions its body names, and
 * those they name, in their original order. A script runs its whole source on
 * every call, so each helper it carries costs a closure per call: with the
 * full library in front an EVALSHA of `return 1` took 4.6 µs of Redis CPU
 * against 2.8 µs bare (settle.lua's own helpers: 3.0 µs, commit.lua's: 4.1 µs;
 * docs/benchmarks.md). A name
 * that only appears in a comment or a string pulls its definition in too, which
 * is harmless; a definition is never left out while its name appears.
 */
export function preludeFor(prelude: string, body: string): string {
  const defs = definitions(prelude)
  const uses = (text: string, name: string): boolean => new RegExp(`\\b${name}\\b`).test(text)
  const needed = new Set<string>()
  let scan = [body]
  while (scan.length > 0) {
    const next: string[] = []
    for (const d of defs) {
      if (needed.has(d.name) || !scan.some((t) => uses(t, d.name))) continue
      needed.add(d.name)
      next.push(d.text)
    }
    scan = next
  }
  return defs.filter((d) => needed.has(d.name)).map((d) => d.text).join('\n')
}

/**
 * A folder of Lua scripts, loaded on first use. Every script gets a `#!lua`
 * shebang, which makes Redis 7 judge a writing script as a whole before it runs:
 * when the server is out of memory it is refused up front instead of failing at
 * its first write and keeping the writes before it. The definitions of `prelude`
 * (shared helpers) that a script uses are put in front of it (preludeFor).
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
      const source = `#!lua\n${preludeFor(this.prelude, body)}\n${body}`
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
  const names: ScriptName[] = ['enqueue', 'pick', 'pick_activate', 'activate', 'commit', 'settle', 'release_hint', 'extend_hint', 'emit', 'cancel', 'register', 'requeue']
  for (const n of names) {
    const s = script(n)
    if ('nodes' in client) {
      await Promise.all(client.nodes('master').map((node) => node.script('LOAD', s.source)))
    } else {
      await client.script('LOAD', s.source)
    }
  }
}
