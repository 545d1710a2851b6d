// The README's first example is the code of test/fixtures/readme-agent.ts, which
// the typecheck compiles under `strict`: an example that stops compiling fails
// the typecheck, and one edited in only one place fails here.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'

describe('the README example', () => {
  it('is the code the typecheck compiles', async () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Agents in code'))
    const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
    const fixture = readFileSync(new URL('../fixtures/readme-agent.ts', import.meta.url), 'utf8').split('\n').filter((l) => !l.startsWith('//') && !l.startsWith('/* eslint')).join('\n')
    expect(block).toBeDefined()
    expect(fixture).toBe(block)
    // And it loads: a defined agent, from the package's own entry.
    const { planner } = await import('../fixtures/readme-agent.ts')
    expect(planner.name).toBe('planner')
  })
})
