// The CLI's handling of what users type and what events carry: secrets kept out
// of messages, ports and URLs checked, event text made safe for a terminal,
// agents modules read as they are written. No Redis needed.
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { redactUrl } from '../../runtime/config.ts'
import { checkRedisUrl, joinDashValues, portFlag } from '../../runtime/cli/common.ts'
import { isWorkflowId, newId } from '../../runtime/redis/keys.ts'
import { loadAgents, loadFailure } from '../../runtime/cli/load-agents.ts'
import { EventRenderer, printable } from '../../runtime/cli/render.ts'
import type { StreamedEvent } from '../../runtime/types.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

describe('joinDashValues', () => {
  const options = { action: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const
  it('joins a value starting with a dash to its option, and leaves options, positionals and what follows -- alone', () => {
    expect(joinDashValues(['wf', '--action', '-Xb3', '--action', 'ok'], options)).toEqual(['wf', '--action=-Xb3', '--action', 'ok'])
    expect(joinDashValues(['--action', '--json'], options)).toEqual(['--action', '--json'])
    expect(joinDashValues(['--action', '-h'], options)).toEqual(['--action', '-h'])
    expect(joinDashValues(['--json', '-Xb3'], options)).toEqual(['--json', '-Xb3'])
    expect(joinDashValues(['--', '--action', '-Xb3'], options)).toEqual(['--', '--action', '-Xb3'])
  })
})

describe('newId', () => {
  it('never starts with a dash, which a command line reads as an option (one nanoid in 64 did)', () => {
    const ids = Array.from({ length: 20_000 }, () => newId())
    expect(ids.filter((id) => id.startsWith('-'))).toEqual([])
    expect(ids.every((id) => id.length === 21 && isWorkflowId(id))).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
  })
})

describe('redactUrl', () => {
  it('masks the password up to the last @, whatever characters it holds', () => {
    expect(redactUrl('redis+cluster://alice:pa/ss@127.0.0.1:1')).toBe('redis+cluster://alice:***@127.0.0.1:1')
    expect(redactUrl('redis://alice:pa#ss@127.0.0.1:1')).toBe('redis://alice:***@127.0.0.1:1')
    expect(redactUrl('redis://alice:pa?ss@h:6379/0')).toBe('redis://alice:***@h:6379/0')
    expect(redactUrl('redis://:p@s/s?#@h')).toBe('redis://:***@h')
    expect(redactUrl('rediss://s3cr3t@h')).toBe('rediss://***@h')
    // A "user name" that cannot be one (it holds a / ? #) is masked too.
    expect(redactUrl('redis://a/b:c@h')).toBe('redis://***@h')
    // Nothing else is touched.
    expect(redactUrl('redis://h:6379/0')).toBe('redis://h:6379/0')
    expect(redactUrl('redis+cluster://h1:7000,h2:7001')).toBe('redis+cluster://h1:7000,h2:7001')
  })

  it('leaves an @ in a query parameter alone, and host, port and db readable', () => {
    expect(redactUrl('redis://h:6379/0?name=a@b')).toBe('redis://h:6379/0?name=a@b')
    expect(redactUrl('redis://alice:s3cr3t@h:6379/0?name=a@b')).toBe('redis://alice:***@h:6379/0?name=a@b')
    expect(checkRedisUrl('redis://h:6379/0?name=a@b')).toBeUndefined()
  })

  it('masks a URL given without a scheme', () => {
    expect(redactUrl('alice:s3cr3t@h:6379')).toBe('alice:***@h:6379')
    expect(redactUrl('s3cr3t@h:6379')).toBe('***@h:6379')
  })

  it('masks password= in the query, even with an @ in it', () => {
    expect(redactUrl('redis://127.0.0.1:1/?password=s3cr3t')).toBe('redis://127.0.0.1:1/?password=***')
    expect(redactUrl('redis://h/?db=1&Password=s3cr3t&family=6')).toBe('redis://h/?db=1&Password=***&family=6')
    const both = redactUrl('redis://h/?password=s3@cr3t')
    expect(both).not.toMatch(/s3|cr3t/)
    expect(redactUrl('redis://alice:x?password=y@h')).not.toMatch(/x|y/)
  })
})

describe('checkRedisUrl', () => {
  it('refuses a password with an unencoded / ? # %, naming the fix and never the password', () => {
    for (const url of ['redis://alice:qq/zz@127.0.0.1:1', 'redis://alice:qq#zz@h', 'redis://:qq?zz@h', 'redis+cluster://alice:qq/zz@h:1', 'redis://alice:12/zz@h', 'redis://alice:qq%zz@h']) {
      let msg = ''
      try {
        checkRedisUrl(url)
      } catch (err) {
        msg = (err as Error).message
      }
      expect(msg, url).toMatch(/percent-encode special characters in the password/)
      expect(msg, url).toContain('***')
      expect(msg, url).not.toMatch(/qq|zz/)
    }
  })

  it('accepts encoded passwords and ordinary URLs', () => {
    for (const url of ['redis://alice:pa%2Fss@h:6379/0', 'redis://u:p@ss@h', 'redis://h', 'rediss://default:x@h:6380', 'redis+cluster://a:b@h1:1,h2:2', undefined]) {
      expect(() => checkRedisUrl(url), String(url)).not.toThrow()
    }
  })
})

describe('portFlag', () => {
  it('refuses a blank, which Number() reads as 0 ("any free port")', () => {
    for (const text of ['', ' ', '\t', '0x50', '1e3', '+80', '80.0', '123456']) expect(() => portFlag(text, '--port'), JSON.stringify(text)).toThrow(/--port must be a port number/)
    expect(portFlag('0', '--port')).toBe(0)
    expect(portFlag('65535', '--port')).toBe(65535)
    expect(portFlag(undefined, '--port')).toBeUndefined()
  })
})

describe('event text on a terminal', () => {
  it('escapes control characters other than tab and newline', () => {
    expect(printable('a\x1b[2Jb\x9b31mc\x07d\x7fe\rf\tg\nh\x00')).toBe('a\\x1b[2Jb\\x9b31mc\\x07d\\x7fe\\x0df\tg\nh\\x00')
    expect(printable('plain text, ünïcode ✓')).toBe('plain text, ünïcode ✓')
  })

  it('prints events without a raw control character', () => {
    let out = ''
    const sink = { write: (s: string) => ((out += s), true) } as unknown as NodeJS.WritableStream
    const r = new EventRenderer(sink)
    const ev = (type: string, content: unknown, agent = 'writer'): StreamedEvent => ({ streamId: '1-0', event: { id: 'e1', workflowId: 'wf1', type, content, metadata: { agent, at: 0 } } })
    r.write(ev('token', 'hi\x1b]0;pwned\x07'))
    r.write(ev('token', '\x9b2J'))
    r.write(ev('action.failed', { actionId: 'a1', error: 'bad\x1b[31m news' }))
    r.write(ev('action.requeued', { actionId: 'a2', agent: 'writer', previous: { error: 'down\x1b[2J' } }))
    r.write(ev('custom\x1b[1m', { text: '\x9bx\x7f' }, 'ag\x1bent'))
    r.end()
    expect(out).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
    expect(out).toContain('hi\\x1b]0;pwned\\x07\\x9b2J')
    expect(out).toContain('bad\\x1b[31m news')
    expect(out).toContain('a2 → writer, dead before: down\\x1b[2J')
  })
})

/** A directory with `files`, where `node_modules` resolves as in the repository. */
function moduleDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-agents-'))
  dirs.push(dir)
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

const fixtures = JSON.stringify(join(root, 'test/fixtures/agents.ts'))

describe('loadAgents', () => {
  it('finds the agents in a plain-object default export', async () => {
    const dir = moduleDir({ 'agents.ts': `import { counter, echo } from ${fixtures}\nexport default { counter, echo }\n` })
    expect((await loadAgents(join(dir, 'agents.ts'))).map((a) => a.name).sort()).toEqual(['counter', 'echo'])
  })

  it('counts one definition exported several ways once', async () => {
    const dir = moduleDir({ 'agents.ts': `import { counter, echo } from ${fixtures}\nexport { counter }\nexport const all = [counter]\nexport default { counter, echo }\n` })
    expect((await loadAgents(join(dir, 'agents.ts'))).map((a) => a.name).sort()).toEqual(['counter', 'echo'])
  })

  it('refuses two different agents with the same name', async () => {
    const dir = moduleDir({ 'agents.ts': `import { counter } from ${fixtures}\nexport { counter }\nexport const other = { ...counter }\n` })
    await expect(loadAgents(join(dir, 'agents.ts'))).rejects.toThrow(/exports two different agents named 'counter' \(counter and other\)/)
  })

  it('says where a module threw', async () => {
    const dir = moduleDir({ 'boom.ts': `const x: number = 1\n\nthrow new Error('boom ' + x)\n` })
    await expect(loadAgents(join(dir, 'boom.ts'))).rejects.toThrow(new RegExp(`boom 1 \\(at ${join(dir, 'boom.ts').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:\\d+\\)`))
  })

  it('names the fix when Node refuses an ES module in a CommonJS package', () => {
    const dir = moduleDir({ 'package.json': '{"type":"commonjs"}' })
    const path = join(dir, 'agents.ts')
    const err = Object.assign(new Error(`Cannot require() ES Module ${path} in a cycle.`), { code: 'ERR_REQUIRE_CYCLE_MODULE' })
    const msg = loadFailure(path, err)
    expect(msg).toContain(`cannot load agents module ${path}: Cannot require() ES Module`)
    expect(msg).toContain(`add "type": "module" to ${join(dir, 'package.json')}, or name the file .mts`)
    expect(loadFailure(path, new Error('other'))).not.toMatch(/hint/)
  })
})
