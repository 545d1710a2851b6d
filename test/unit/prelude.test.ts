// The Lua loader puts in front of each script only the shared helpers it uses
// (runtime/redis/scripts.ts, preludeFor). Pure string logic; every script runs
// against a real Redis in the integration tests, which is what catches a helper
// left out.
import { readdirSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { preludeFor, scriptFor, type ScriptName } from '../../runtime/redis/scripts.ts'

const LIB = [
  '-- header',
  '',
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

  it('gives a comment to the definition below it, not the one above', () => {
    // Attached to `a`, this comment would pull `b` into every script that uses `a`.
    const lib = ['local function a()', '  return 1', 'end', '-- c is like b()', 'local function c()', '  return 2', 'end', 'local function b()', '  return 3', 'end'].join('\n')
    expect(names(preludeFor(lib, 'return a()'))).toEqual(['a'])
    // Names in a comment pull their definitions in too: harmless.
    expect(names(preludeFor(lib, 'return c()'))).toEqual(['c', 'b'])
    expect(preludeFor(lib, 'return c()').startsWith('-- c is like b()\nlocal function c()')).toBe(true)
  })

  it('carries each definition whole, with the comment above it', () => {
    // The header comment (set off by a blank line) stays out.
    expect(preludeFor(LIB, 'return a(1)')).toBe(['local function a(x)', '  return b(x) + 1', 'end', '-- b doubles', 'local function b(x)', '  return x * 2', 'end'].join('\n'))
  })

  it('refuses a library with a statement at the margin that is not a one-name local', () => {
    expect(() => preludeFor(`${LIB}\nredis.call('PING')`, 'return 1')).toThrow(/one-name local definitions/)
    expect(() => preludeFor(`${LIB}\nlocal x, y = 1, 2`, 'return x')).toThrow(/one-name local definitions/)
    // A second statement on the line would hide its name.
    expect(() => preludeFor(`${LIB}\nlocal x = 1 local y = 2`, 'return y')).toThrow(/one-name local definitions/)
    expect(() => preludeFor(`${LIB}\nlocal function f()\n  return 1\nend local y = 2`, 'return y')).toThrow(/one-name local definitions/)
  })

  it('gives every core script each helper of lib.lua whose name it uses', () => {
    const lib = readFileSync(new URL('../../runtime/redis/scripts/lib.lua', import.meta.url), 'utf8')
    const libNames = names(lib)
    const dir = new URL('../../runtime/redis/scripts/', import.meta.url)
    const all = readdirSync(dir).filter((f) => f.endsWith('.lua') && f !== 'lib.lua').map((f) => f.slice(0, -4) as ScriptName)
    expect(all.length).toBeGreaterThanOrEqual(10)
    for (const s of all) {
      const src = scriptFor(s).source
      const defined = new Set(names(src))
      for (const n of libNames) if (new RegExp(`\\b${n}\\b`).test(src)) expect(defined.has(n), `${s} uses ${n}`).toBe(true)
    }
    // And leaves out what it does not use: release_hint needs two helpers, not the library.
    expect(names(scriptFor('release_hint').source).filter((n) => libNames.includes(n)).length).toBeLessThan(6)
  })
})
