// The Lua loader puts in front of each script only the shared helpers it uses
// (runtime/redis/scripts.ts, preludeFor). Pure string logic; every script runs
// against a real Redis in the integration tests, which is what catches a helper
// left out.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { preludeFor, scriptFor, type ScriptName } from '../../runtime/redis/scripts.ts'

const LIB = [
  '-- header',
  'local function a(x)',
  '  return b(x) + 1',
  'end',
  '',
  '-- b doubles',
  'local function b(x)',
  '  return x * 2',
  'end',
  'local T = { done = true }',
  'local function unused()',
  '  return T',
  'end',
].join('\n')

const names = (src: string): string[] => [...src.matchAll(/^local (?:function )?([A-Za-z_]\w*)/gm)].map((m) => m[1] ?? '')

describe('preludeFor', () => {
  it('keeps what the body names and what that names, in the library\'s order', () => {
    expect(names(preludeFor(LIB, 'return a(1)'))).toEqual(['a', 'b'])
    expect(names(preludeFor(LIB, 'if T[s] then return b(2) end'))).toEqual(['b', 'T'])
    // `unused` pulls T in through its body.
    expect(names(preludeFor(LIB, 'return unused()'))).toEqual(['T', 'unused'])
  })

  it('matches whole names only', () => {
    expect(preludeFor(LIB, 'local ab, ba = 1, 2 return ab')).toBe('')
  })

  it('carries each definition whole, with the comment below it', () => {
    expect(preludeFor(LIB, 'return a(1)')).toBe(['local function a(x)', '  return b(x) + 1', 'end', '', '-- b doubles', 'local function b(x)', '  return x * 2', 'end'].join('\n'))
  })

  it('refuses a library with a statement at the margin that is not a one-name local', () => {
    expect(() => preludeFor(`${LIB}\nredis.call('PING')`, 'return 1')).toThrow(/one-name local definitions/)
    expect(() => preludeFor(`${LIB}\nlocal x, y = 1, 2`, 'return x')).toThrow(/one-name local definitions/)
  })

  it('gives every core script each helper of lib.lua whose name it uses', () => {
    const lib = readFileSync(new URL('../../runtime/redis/scripts/lib.lua', import.meta.url), 'utf8')
    const libNames = names(lib)
    const all: ScriptName[] = ['enqueue', 'pick', 'pick_activate', 'activate', 'commit', 'settle', 'release_hint', 'extend_hint', 'emit', 'cancel']
    for (const s of all) {
      const src = scriptFor(s).source
      const defined = new Set(names(src))
      for (const n of libNames) if (new RegExp(`\\b${n}\\b`).test(src)) expect(defined.has(n), `${s} uses ${n}`).toBe(true)
    }
    // And leaves out what it does not use: release_hint needs two helpers, not the library.
    expect(names(scriptFor('release_hint').source).filter((n) => libNames.includes(n)).length).toBeLessThan(6)
  })
})
