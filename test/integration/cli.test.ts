// The CLI as a user runs it: exit codes, JSON output, clear errors for bad input.
import { spawn, type ChildProcess } from 'node:child_process'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, type Runtime } from '../../runtime/index.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let rt: Runtime
// A CLI call that hangs is killed after this long (a process start alone takes
// seconds on a loaded machine), so it fails as itself rather than as the test's timeout.
const CLI_TIMEOUT_MS = 30_000
const cliEnv = { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace }
// Children still running when a test ends (it failed or timed out while one ran).
const live = new Set<ChildProcess>()

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
})
afterEach(async () => {
  await Promise.all([...live].map(async (c) => {
    const gone = new Promise((r) => c.once('exit', r))
    c.kill('SIGKILL')
    await gone
  }))
})
afterAll(async () => {
  await rt?.stop()
})

/** Starts the CLI; whatever it prints accumulates in `io`, and `exited` resolves with its exit code. */
function launch(args: string[], env: NodeJS.ProcessEnv = cliEnv): { child: ChildProcess; io: { out: string; err: string }; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  const io = { out: '', err: '' }
  child.stdout?.on('data', (d: Buffer) => (io.out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (io.err += d.toString()))
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('exit', (code) => {
      live.delete(child)
      resolve(code)
    })
    child.once('error', (err) => {
      live.delete(child)
      reject(err)
    })
  })
  return { child, io, exited }
}

/** Runs the CLI to its exit, killing it (and failing) after CLI_TIMEOUT_MS. */
async function runCli(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string }> {
  const { child, io, exited } = launch(args, env)
  let hung = false
  const killer = setTimeout(() => {
    hung = true
    child.kill('SIGKILL')
  }, CLI_TIMEOUT_MS)
  try {
    const code = await exited
    if (hung) throw new Error(`troupe ${args.join(' ')} did not exit within ${CLI_TIMEOUT_MS / 1000} s:\n${io.out}${io.err}`)
    return { code, out: io.out, err: io.err }
  } finally {
    clearTimeout(killer)
  }
}

function troupe(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return runCli(args)
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
      [['start', 'agents.ts', '--supervisor'], 2, /unexpected argument agents.ts \(did you mean --agents agents.ts\?\)/],
      [['start', '--supervisor', '--supervisor-dead-after', '9'], 2, /--supervisor-dead-after must be an integer from 1 to 4/],
      [['start', '--supervisor', '--supervisor-sd-port', '99999'], 2, /--supervisor-sd-port must be a port number/],
      [['gateway', '--port', '99999'], 2, /--port must be a port number/],
      [['history', 'bad id'], 3, /invalid workflow id "bad id"/],
      [['status', 'nosuchworkflow', '--watch'], 2, /--watch shows the fleet/],
      [['status', '--redis', 'localhost:6379'], 3, /the Redis URL "localhost:6379" \(REDIS_URL or --redis\) must start with redis:\/\//],
      [['status', '--namespace', 'bad ns'], 3, /the namespace "bad ns" \(TROUPE_NAMESPACE or --namespace\)/],
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
    const { child, io, exited } = launch(['tail', workflowId, '--json'])
    // Following: the replay has printed the first event (a process start takes seconds on a loaded machine).
    // It failed twice here under load with nothing to go on: say what tail did.
    await eventually(() => Promise.resolve(io.out.includes('"workflow.started"')), 45_000, 'the replay printed').catch((e: unknown) => {
      throw new Error(`${String(e)}; run: ${JSON.stringify(run)}; tail printed ${JSON.stringify(io.out.slice(0, 500))}, stderr ${JSON.stringify(io.err)}, exit ${child.exitCode ?? child.signalCode ?? 'none yet'}`)
    })
    child.kill('SIGINT')
    expect(await exited, io.err).toBe(0)
  }, 90_000)

  it('exits at once, with the setting named, when the driver refuses the Neo4j URI', async () => {
    // `troupe reconcile` opened its Redis connection before making the driver, and
    // that connection kept the process alive after the error was printed (the
    // runner's kill timer ends a process that hangs: no exit code 3 then).
    const r = await troupe('reconcile', '--neo4j-uri', 'bolt://')
    expect(r.code, r.err).toBe(3)
    expect(r.err).toMatch(/the Neo4j URI "bolt:\/\/" \(NEO4J_URI or --neo4j-uri\) is not usable: Illegal host/)
  })

  it('fails clearly when Redis is unreachable', async () => {
    // `auth` once hung here for good: its QUIT queued behind the unanswered PING.
    for (const args of [['run', 'counter', 'ping'], ['auth', 'issue', '--user', 'alice']]) {
      const { code, err } = await runCli(args, { ...process.env, REDIS_URL: 'redis://127.0.0.1:1' })
      expect(code, `troupe ${args.join(' ')}: ${err}`).toBe(4)
      expect(err).toMatch(/cannot reach Redis at redis:\/\/127.0.0.1:1/)
    }
  }, 90_000)
})
