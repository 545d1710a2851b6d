// `troupe status` without an id, run as the real CLI: an empty fleet, a healthy
// fleet with a leader, a fleet with a dead service, and corrupted records that
// are reported and skipped (by the CLI and by the supervisor, which keeps going).
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { supervisorService } from '../../agents/supervisor.ts'
import { startRuntime, type Runtime } from '../../runtime/index.ts'
import type { FleetView } from '../../runtime/cli/fleet.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { napper } from '../fixtures/supervisor-agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'
import { spawnSupervisor, stopAll, type Child } from './helpers.ts'

const run = promisify(execFile)
const cfg = testConfig()
const keys = new Keys(cfg.namespace)
const env = { ...process.env, REDIS_URL: cfg.redisUrl, TROUPE_NAMESPACE: cfg.namespace, NO_COLOR: '1' }
let redis: Redis
let rt: Runtime | null = null
const children: Child[] = []

async function status(...args: string[]): Promise<string> {
  // A hung call is killed and fails as itself (a process start takes seconds on a loaded machine).
  const { stdout } = await run(process.execPath, ['bin/troupe.mjs', 'status', ...args], { env, timeout: 30_000, killSignal: 'SIGKILL' })
  return stdout
}
async function statusJson(): Promise<FleetView> {
  return JSON.parse(await status('--json')) as FleetView
}

beforeAll(() => {
  redis = rawRedis()
})
afterAll(async () => {
  await stopAll(children)
  await rt?.stop()
  await redis?.quit()
})

describe('troupe status (fleet)', () => {
  it('explains an empty fleet', async () => {
    const v = await statusJson()
    expect(v).toMatchObject({ services: [], leader: null, agents: {}, deadLetters: null, problems: [] })
    const text = await status()
    expect(text).toContain('leader: none (start a supervisor')
    expect(text).toContain('services: 0 (0 alive, 0 stopped, 0 dead)')
    expect(text).toContain('none: start one with `troupe start --agents <module>`')
  })

  it('shows a healthy fleet, a dead service, and skips corrupted records', async () => {
    rt = await startRuntime({ agents: [napper], services: [supervisorService({ tickMs: 200, leaseMs: 2000, sdPort: false })], config: cfg, heartbeatMs: 200, metricsPort: 0 })
    const standby = await spawnSupervisor(cfg)
    children.push(standby)
    const self = rt.serviceId
    await eventually(async () => (await redis.hget(keys.leaderInfo(), 'serviceId')) === self, 10_000, 'this runtime to lead')
    await eventually(async () => (await redis.exists(keys.systemMetrics('summary'))) === 1, 10_000, 'a rollup')

    const healthy = await statusJson()
    expect(healthy.leader).toMatchObject({ serviceId: self, leaseHeld: true })
    expect(healthy.services.map((s) => [s.serviceId, s.status]).sort()).toEqual([[self, 'alive'], [standby.serviceId, 'alive']].sort())
    expect(healthy.services.find((s) => s.serviceId === self)).toMatchObject({ roles: 'worker,supervisor', agents: 'napper', supervisor: 'leader' })
    expect(healthy.agents.napper).toMatchObject({ queued: 0, due: 0, active: 0, deadLetters: 0 })
    expect(healthy.problems).toEqual([])
    const text = await status()
    expect(text).toContain(`leader: ${self} (term `)
    expect(text).toContain('services: 2 (2 alive, 0 stopped, 0 dead)')
    expect(text).toMatch(new RegExp(`^  ${self}\\s+alive\\s+worker,supervisor\\s+napper\\s+\\S+ ago\\s+leader$`, 'm'))
    expect(text).toMatch(/^ {2}AGENT\s+QUEUED\s+DUE\s+OLDEST DUE\s+ACTIVE\s+DEAD LETTERS/m)
    expect(text).toMatch(/^ {2}napper\s+0\s+0\s+-\s+0\s+0\s/m)
    expect(text).toContain('persistence backlog: ')

    standby.signal('SIGKILL')
    await eventually(async () => (await redis.hget(keys.health(standby.serviceId), 'status')) === 'dead', 10_000, 'the killed standby marked dead')
    const withDead = await statusJson()
    expect(withDead.services.find((s) => s.serviceId === standby.serviceId)).toMatchObject({ status: 'dead', note: 'marked dead by the supervisor' })
    expect(await status()).toMatch(new RegExp(`^  ${standby.serviceId}\\s+dead\\s+supervisor\\s+-\\s+\\S+ ago\\s+marked dead by the supervisor$`, 'm'))

    // Hostile records: a string where a hash belongs, a hash with garbage, an id
    // that is not one, and an id without a record nobody has heard of for hours.
    const now = Date.now()
    await redis.set(keys.health('wrong-type'), 'not a hash')
    await redis.hset(keys.health('garbage'), { status: 'alive', lastSeen: 'yesterday', active: '{' })
    await redis.zadd(keys.services(), now, 'wrong-type', now, 'garbage', now, 'bad id {x}', now - 3 * 3_600_000, 'long-gone')
    const before = Number(await redis.hget(keys.systemMetrics('summary'), 'at'))
    // The supervisor reports each once, keeps working, and drops the unknown id from the index.
    await eventually(async () => (await redis.zscore(keys.services(), 'long-gone')) === null, 5000, 'the unknown id dropped')
    await eventually(async () => Number(await redis.hget(keys.systemMetrics('summary'), 'at')) > before + 500, 5000, 'rollups to continue')
    await eventually(async () => (await redis.hget(keys.systemMetrics('services'), 'unusable')) === '3', 5000, 'three records counted as unusable')
    const metric = await rt.metrics.registry.getSingleMetricAsString('troupe_supervisor_bad_records_total')
    expect(metric).toContain('troupe_supervisor_bad_records_total{kind="corrupt"} 2')
    expect(metric).toContain('troupe_supervisor_bad_records_total{kind="bad-id"} 1')
    expect(metric).toContain('troupe_supervisor_bad_records_total{kind="unknown"} 1')
    expect(await redis.get(keys.health('wrong-type'))).toBe('not a hash')
    const broken = await statusJson()
    expect(broken.problems.map((p) => [p.serviceId, p.kind]).sort()).toEqual([['bad id {x}', 'bad-id'], ['garbage', 'corrupt'], ['wrong-type', 'corrupt']])
    expect(broken.services.map((s) => s.serviceId).sort()).toEqual([self, standby.serviceId].sort())
    const brokenText = await status()
    expect(brokenText).toContain('problems (3 records skipped):')
    expect(brokenText).toContain('corrupted health record of "garbage": lastSeen is "yesterday", not a timestamp')
    expect(brokenText).toContain('unknown id "bad id {x}": not a service id (written by hand?)')

    // --watch redraws until interrupted.
    const watch = spawn(process.execPath, ['bin/troupe.mjs', 'status', '--watch'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => watch.once('exit', (code, sig) => r([code, sig])))
    const running = (): boolean => watch.exitCode === null && watch.signalCode === null
    let out = ''
    watch.stdout.on('data', (d: Buffer) => (out += d.toString()))
    try {
      await eventually(() => Promise.resolve(out.split('leader: ').length > 2), 10_000, 'two refreshes')
      watch.kill('SIGINT')
      await eventually(() => Promise.resolve(!running()), 10_000, 'Ctrl-C to stop the watch')
    } finally {
      // Not left redrawing after a failure above.
      if (running()) watch.kill('SIGKILL')
      await exited
    }
    // Stopped by its own handler (exit 0, connections closed), not killed by the signal.
    expect(await exited).toEqual([0, null])
    expect(out).toContain('refreshing every 2s; Ctrl-C to stop')
    // A supervisor start (30 s at most) and 65 s of waits, plus the CLI calls.
  }, 150_000)
})
