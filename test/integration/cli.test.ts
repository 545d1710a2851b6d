// The CLI as a user runs it: exit codes, JSON output, clear errors for bad input.
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, type Runtime } from '../../runtime/index.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let rt: Runtime

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
})
afterAll(async () => {
  await rt?.stop()
})

function troupe(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], { env: { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    child.on('exit', (code) => resolve({ code, out, err }))
  })
}

describe('cli', () => {
  it('runs and follows a workflow to completion, then reports status as JSON', async () => {
    const run = await troupe('run', 'counter', 'ping', '--payload', '{"i":1}', '--json')
    expect(run.code).toBe(0)
    const { workflowId } = JSON.parse(run.out) as { workflowId: string }
    expect(await troupe('send', workflowId, 'counter', 'finish')).toMatchObject({ code: 0 })
    const tail = await troupe('tail', workflowId)
    expect(tail.code).toBe(0)
    expect(tail.out).toMatch(/workflow.completed/)
    const st = await troupe('status', workflowId, '--json')
    expect(JSON.parse(st.out)).toMatchObject({ workflowId, status: 'completed', agents: { counter: 'done' }, result: { n: 1 } })
  })

  it('exits 1 when a followed workflow fails', async () => {
    const r = await troupe('run', 'counter', 'bad', '--follow')
    expect(r.code).toBe(1)
    expect(r.out).toMatch(/workflow.failed/)
    expect(r.err).toMatch(/: failed/)
  })

  it('gives specific errors and exit codes for bad input', async () => {
    const cases: [string[], number, RegExp][] = [
      [['run', 'ghost', 'ping'], 3, /unknown agent 'ghost'/],
      [['run', 'counter', 'zap'], 3, /does not handle action 'zap'/],
      [['run', 'counter', 'ping', '--payload', '{nope'], 3, /not valid JSON/],
      [['run', 'counter', 'ping', '--id', 'a:b'], 3, /invalid workflow id/],
      [['send', 'nosuchworkflow', 'counter', 'ping'], 3, /no workflow nosuchworkflow/],
      [['status', 'nosuchworkflow'], 3, /no workflow/],
      [['run', 'counter'], 2, /expected exactly <agent> <type>/],
      [['run', 'counter', 'ping', '--bogus'], 2, /Unknown option '--bogus'/],
      [['frobnicate'], 2, /unknown command 'frobnicate'/],
      [['start'], 2, /nothing to host/],
      [['start', '--agents', 'nope.ts'], 3, /agents module not found/],
    ]
    for (const [args, code, msg] of cases) {
      const r = await troupe(...args)
      expect(r.code, args.join(' ')).toBe(code)
      expect(r.err, args.join(' ')).toMatch(msg)
    }
  })

  it('prints help for every command', async () => {
    for (const cmd of ['start', 'run', 'send', 'cancel', 'status', 'tail']) {
      const r = await troupe(cmd, '--help')
      expect(r.code).toBe(0)
      expect(r.out).toMatch(/^usage: troupe/)
    }
  })

  it('exits 0 when Ctrl-C stops following a workflow that goes on', async () => {
    const run = await troupe('run', 'counter', 'ping', '--payload', '{"i":1}', '--json')
    const { workflowId } = JSON.parse(run.out) as { workflowId: string }
    const child = spawn(process.execPath, ['bin/troupe.mjs', 'tail', workflowId, '--json'], { env: { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const exited = new Promise((r) => child.on('exit', r))
    // Following: the replay has printed the first event (a process start takes seconds on a loaded machine).
    await eventually(() => Promise.resolve(out.includes('"workflow.started"')), 45_000, 'the replay printed')
    child.kill('SIGINT')
    expect(await exited, err).toBe(0)
  }, 60_000)

  it('fails clearly when Redis is unreachable', async () => {
    // `auth` once hung here for good: its QUIT queued behind the unanswered PING.
    for (const args of [['run', 'counter', 'ping'], ['auth', 'issue', '--user', 'alice']]) {
      const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], { env: { ...process.env, REDIS_URL: 'redis://127.0.0.1:1' }, stdio: ['ignore', 'pipe', 'pipe'] })
      let err = ''
      child.stderr.on('data', (d: Buffer) => (err += d.toString()))
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
      const code = await new Promise((r) => child.on('exit', r))
      clearTimeout(killer)
      expect(code, `troupe ${args.join(' ')}: ${err}`).toBe(4)
      expect(err).toMatch(/cannot reach Redis at redis:\/\/127.0.0.1:1/)
    }
  }, 60_000)
})
