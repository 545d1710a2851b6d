// The CLI with what users actually type and have: agents modules in CommonJS
// packages, Ctrl-C under npx, flag mistakes with Redis down, passwords in URLs,
// event text with terminal escapes.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Keys, startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { spawnRuntime } from '../helpers/processes.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
const cfg = testConfig()
const keys = new Keys(cfg.namespace)
const env = { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace }
const down = { ...env, REDIS_URL: 'redis://127.0.0.1:1' }
// A call that hangs is killed after this long, so it fails as itself.
const CLI_TIMEOUT_MS = 30_000
let rt: Runtime
let client: TroupeClient
const live = new Set<ChildProcess>()
const dirs: string[] = []

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterEach(() => {
  for (const c of live) c.kill('SIGKILL')
})
afterAll(async () => {
  await client?.close()
  await rt?.stop()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  const redis = rawRedis()
  let cursor = '0'
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${cfg.namespace}*`, 'COUNT', 1000)
    if (found.length) await redis.del(...found)
    cursor = next
  } while (cursor !== '0')
  await redis.quit()
})

interface Cli {
  child: ChildProcess
  io: { out: string; err: string }
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

function launch(args: string[], e: NodeJS.ProcessEnv = env): Cli {
  const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], { cwd: root, env: e, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  const io = { out: '', err: '' }
  child.stdout?.on('data', (d: Buffer) => (io.out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (io.err += d.toString()))
  const killer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(killer)
      live.delete(child)
      resolve({ code, signal })
    })
  })
  return { child, io, exited }
}

async function troupe(args: string[], e: NodeJS.ProcessEnv = env): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  const t0 = Date.now()
  const { io, exited } = launch(args, e)
  const { code } = await exited
  return { code, out: io.out, err: io.err, ms: Date.now() - t0 }
}

/** A directory with `files`, whose `node_modules` is the repository's (as after `npm install troupe`). */
function moduleDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-cli-'))
  dirs.push(dir)
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

describe('agents modules', () => {
  it('hosts a TypeScript agents module from a package that says "type": "commonjs"', async () => {
    const dir = moduleDir({
      // What `npm init -y` writes now.
      'package.json': JSON.stringify({ name: 'my-agents', version: '1.0.0', type: 'commonjs' }),
      'agents.ts': [
        "import { setup } from 'xstate'",
        `import { completeWorkflow, defineAgent } from ${JSON.stringify(join(root, 'runtime/index.ts'))}`,
        "export const cjsAgent = defineAgent({ name: 'cjsagent', machine: setup({}).createMachine({ on: { go: { actions: completeWorkflow(({ event }: { event: { payload: unknown } }) => ({ got: event.payload })) } } }) })",
        '',
      ].join('\n'),
    })
    const child = await spawnRuntime(cfg, { agents: join(dir, 'agents.ts') })
    try {
      const { workflowId } = await client.startWorkflow({ agent: 'cjsagent', type: 'go', payload: { n: 1 } })
      const st = await eventually(async () => {
        const s = await client.getStatus(workflowId)
        return s?.status === 'completed' ? s : null
      }, 20_000, 'the workflow to complete')
      expect(st.result).toEqual({ got: { n: 1 } })
    } finally {
      await child.stop()
    }
  }, 90_000)

  it('names the fix for what a CommonJS package still cannot do (top-level await)', async () => {
    const dir = moduleDir({ 'package.json': '{}', 'agents.ts': "await Promise.resolve()\nexport const a = 1\n" })
    const r = await troupe(['start', '--agents', join(dir, 'agents.ts')])
    expect(r.code).toBe(3)
    expect(r.err).toContain(`add "type": "module" to ${join(dir, 'package.json')}, or name the file .mts`)
  })

  it('says which line of the module threw', async () => {
    const dir = moduleDir({ 'package.json': '{"type":"module"}', 'agents.ts': "const n: number = 2\n\nthrow new Error(`broken ${n}`)\n" })
    const r = await troupe(['start', '--agents', join(dir, 'agents.ts')])
    expect(r.code).toBe(3)
    expect(r.err).toContain(`cannot load agents module ${join(dir, 'agents.ts')}: broken 2 (at ${join(dir, 'agents.ts')}:3:`)
  })
})

describe('Ctrl-C delivered twice, as under npx', () => {
  /** Sends SIGINT, and the forwarded copy just after it. */
  async function doubleInterrupt(cli: Cli): Promise<void> {
    cli.child.kill('SIGINT')
    await new Promise((r) => setTimeout(r, 5))
    cli.child.kill('SIGINT')
  }

  it('stops tail, run --follow and status --watch with exit 0', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    const cases: [string[], (io: { out: string; err: string }) => boolean][] = [
      [['tail', workflowId], (io) => io.out.includes('workflow.started')],
      [['run', 'counter', 'ping', '--follow'], (io) => io.out.includes('workflow.started')],
      [['status', '--watch'], (io) => io.out.includes('Ctrl-C to stop')],
    ]
    for (const [args, ready] of cases) {
      const cli = launch(args)
      await eventually(() => Promise.resolve(ready(cli.io) || cli.child.exitCode !== null), 45_000, `troupe ${args.join(' ')} to be following`)
      await doubleInterrupt(cli)
      expect(await cli.exited, `troupe ${args.join(' ')}: ${cli.io.err}`).toEqual({ code: 0, signal: null })
    }
  }, 150_000)
})

describe('mistakes are usage errors before any connection', () => {
  it('refuses bad flags at once (exit 2) with Redis unreachable', async () => {
    const cases: [string[], RegExp][] = [
      [['run', 'counter', 'ping', '--deadline', 'soon'], /invalid duration "soon"/],
      [['run', 'counter', 'ping', '--deadline', '0'], /--deadline must be more than 0/],
      [['send', 'wf1', 'counter', 'ping', '--delay', '5x'], /invalid duration "5x"/],
      [['auth', 'issue', '--user', 'alice', '--ttl', 'forever'], /invalid duration "forever"/],
      [['auth', 'issue', '--user', 'alice', '--ttl', '100000000d'], /--ttl must be more than 0 and at most 3650d/],
      [['auth', 'frobnicate', '--user', 'alice'], /unknown subcommand frobnicate/],
      [['auth', 'limits', '--user', 'alice', '--rate', ''], /--rate must be a non-negative decimal number/],
      [['gateway', '--port', ''], /--port must be a port number \(0-65535\), got ""/],
      [['gateway', '--metrics-port', ' '], /--metrics-port must be a port number/],
    ]
    const results = await Promise.all(cases.map(([args]) => troupe(args, down)))
    cases.forEach(([args, msg], i) => {
      const r = results[i]
      expect(r?.code, `troupe ${args.join(' ')}: ${r?.err}`).toBe(2)
      expect(r?.err).toMatch(msg)
      expect(r?.err).not.toMatch(/cannot reach Redis/)
    })
    const blankEnv = await troupe(['gateway'], { ...down, TROUPE_METRICS_PORT: '' })
    expect(blankEnv.code, blankEnv.err).toBe(2)
    expect(blankEnv.err).toMatch(/TROUPE_METRICS_PORT must be a port number/)
  }, 90_000)

  it('takes only plain decimal limits, and --clear alone', async () => {
    expect((await troupe(['auth', 'issue', '--user', 'alice'])).code).toBe(0)
    for (const bad of [['--rate', ''], ['--daily', ''], ['--rate', '0x10'], ['--rate', '1e2'], ['--daily', '1.5'], ['--burst', ' 2'], ['--clear', '--rate', '2']]) {
      const r = await troupe(['auth', 'limits', '--user', 'alice', ...bad])
      expect(r.code, `${bad.join(' ')}: ${r.err}`).toBe(2)
    }
    // Nothing was set by any of them.
    expect(JSON.parse((await troupe(['auth', 'limits', '--user', 'alice'])).out)).toEqual({ user: 'alice', overrides: {} })
    const ok = await troupe(['auth', 'limits', '--user', 'alice', '--rate', '2.5', '--daily', '10'])
    expect(ok.code, ok.err).toBe(0)
    expect(JSON.parse(ok.out)).toMatchObject({ user: 'alice', overrides: { rate: 2.5, daily: 10 } })
  }, 90_000)

  it('refuses a credential TTL past ten years before issuing it', async () => {
    const r = await troupe(['auth', 'issue', '--user', 'bob', '--ttl', '100000000d'])
    expect(r.code, r.err).toBe(2)
    expect(r.out).toBe('')
    const redis = rawRedis()
    try {
      expect(await redis.exists(keys.authCredential('bob'))).toBe(0)
    } finally {
      await redis.quit()
    }
  })

  it('says that options go after the command; bare troupe prints its help to stderr', async () => {
    const r = await troupe(['--redis', cfg.redisUrl, 'run', 'counter', 'ping'])
    expect(r.code).toBe(2)
    expect(r.err).toContain(`options go after the command, as in: troupe run counter ping --redis ${cfg.redisUrl}`)
    // The line echoed back keeps secrets out of the terminal and CI logs.
    const secret = await troupe(['--neo4j-password', 'hunter2', 'persister', '--neo4j-user=neo', '--neo4j-password=hunter3', '--redis', 'u:pw9@h:6379'])
    expect(secret.code).toBe(2)
    expect(secret.err).toContain('options go after the command, as in: troupe persister')
    expect(secret.err).not.toMatch(/hunter2|hunter3|pw9/)
    const bare = await troupe([])
    expect(bare.code).toBe(2)
    expect(bare.out).toBe('')
    expect(bare.err).toMatch(/^usage: troupe <command> \[options\]/)
    const help = await troupe(['--help'])
    expect(help.code).toBe(0)
    expect(help.out).toMatch(/options, --redis and --namespace too, go after the command/)
  })
})

describe('passwords', () => {
  it('never prints a password, and says to percent-encode one a URL cannot hold', async () => {
    const cases: [string, RegExp][] = [
      ['redis://127.0.0.1:1/?password=s3cr3t', /cannot reach Redis at redis:\/\/127.0.0.1:1\/\?password=\*\*\*/],
      ['redis+cluster://alice:s3/cr3t@127.0.0.1:1', /percent-encode special characters in the password/],
      ['alice:s3cr3t@h:6379', /the Redis URL "alice:\*\*\*@h:6379"/],
      ['redis://alice:s3#cr3t@127.0.0.1:1', /cannot parse the Redis URL "redis:\/\/alice:\*\*\*@127.0.0.1:1".*percent-encode/],
      ['redis://alice:s3?cr3t@127.0.0.1:1', /percent-encode special characters in the password/],
    ]
    const results = await Promise.all(cases.map(([url]) => troupe(['status', 'wf1'], { ...env, REDIS_URL: url })))
    cases.forEach(([url, msg], i) => {
      const r = results[i]
      expect(r?.err, url).toMatch(msg)
      expect(`${r?.out}${r?.err}`, url).not.toMatch(/s3|cr3t/)
      expect(r?.code, url).not.toBe(0)
    })
  }, 60_000)
})

describe('event text', () => {
  it('reaches the terminal with its control characters escaped', async () => {
    const text = 'a\x1b[2Jb\x9b31mc\x07'
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'relay', payload: { text } })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.queued === 0, 20_000, 'the relay to be done')
    const { io, child, exited } = launch(['tail', workflowId])
    await eventually(() => Promise.resolve(io.out.includes('echoed') || child.exitCode !== null), 45_000, 'the echo to be printed')
    child.kill('SIGINT')
    await exited
    expect(io.out).toContain('a\\x1b[2Jb\\x9b31mc\\x07')
    expect(io.out).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
  }, 90_000)

  it('reaches the terminal escaped in the fleet table too (health records are written by any process)', async () => {
    const id = `rogue-${Date.now().toString(36)}`
    const health = keys.health(id)
    const seen = Number((await client.redis.time())[0]) * 1000
    await client.redis.hset(health, { serviceId: id, roles: 'worker', agents: 'x\x1b[2Jy', pid: '1', host: 'h\x1b]0;pwned\x07', version: '0', startedAt: String(seen), lastSeen: String(seen), status: 'alive', active: '{}', heartbeatMs: '60000' })
    await client.redis.pexpire(health, 60_000)
    await client.redis.zadd(keys.services(), seen, id)
    const { code, out } = await troupe(['status'])
    await client.redis.del(health)
    await client.redis.zrem(keys.services(), id)
    expect(code).toBe(0)
    expect(out).toContain('x\\x1b[2Jy')
    expect(out).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
  })
})
