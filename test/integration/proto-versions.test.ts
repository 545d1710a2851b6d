// Version changes seen from the delivery path: a snapshot that the new machine
// cannot restore is reported as such; actions dead-lettered after an hour of
// hand-backs count as dead; and during a rolling update an old process hands
// back action types only a newer version of its agent handles.
import { describe, expect, it } from 'vitest'
import { assign, setup } from 'xstate'
import { defineAgent, startRuntime, TroupeClient, type Logger, type Runtime } from '../../runtime/index.ts'
import { fleetSettings } from '../../runtime/config.ts'
import { REGISTRATION_HOLD_MS } from '../../runtime/runtime.ts'
import { tally } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

/** A logger that keeps what it is told. */
function recordingLogger(): Logger & { lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = []
  const at = (level: string) => (msg: string): void => {
    lines.push({ level, msg })
  }
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') }
}

/** `door` v1: closed ⇄ b (open); v2 renamed `b` to `c` and its migrate() does not map it. */
function door(version: 1 | 2) {
  const open = version === 1 ? 'b' : 'c'
  return defineAgent({
    name: 'door',
    version,
    maxAttempts: 1,
    ...(version === 2 ? { migrate: (s: unknown) => s } : {}),
    machine: setup({}).createMachine({
      id: 'm',
      initial: 'closed',
      states: { closed: { on: { open } }, [open]: { on: { close: 'closed' } } },
    }),
  })
}

/** The value of one series of a runtime's metrics. */
async function metric(rt: Runtime, name: string, labels: Record<string, string>): Promise<number> {
  const m = (await rt.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name)
  const v = (m?.values as { labels: Record<string, string | number>; value: number }[] | undefined)?.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l))
  return v?.value ?? 0
}

describe('a snapshot the machine cannot restore', () => {
  it('dead-letters with XState\'s reason, as a restore failure, and logs it as an error', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    let rt = await startRuntime({ agents: [door(1)], config: cfg, metricsPort: false })
    const { workflowId } = await client.startWorkflow({ agent: 'door', type: 'open' })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.door === 'b', 10_000, 'door open in v1')
    await rt.stop()

    const log = recordingLogger()
    rt = await startRuntime({ agents: [door(2)], config: cfg, metricsPort: false, logger: log })
    await client.sendAction(workflowId, 'door', 'close')
    const [dead] = await eventually(async () => {
      const d = await client.deadLetters(workflowId)
      return d.length === 1 ? d : null
    }, 10_000, 'the close dead-lettered')
    expect(dead?.error).toBe('cannot restore door: Error: State \'b\' does not exist on \'m\'')
    expect(log.lines.filter((l) => l.level === 'error' && l.msg.includes('cannot restore door'))).toHaveLength(1)
    await rt.stop()
    await client.close()
  })
})

describe('an action handed back for over an hour', () => {
  it('counts as dead in troupe_actions_total, not as a hand-back', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    let rt = await startRuntime({ agents: [tally(2)], config: cfg, metricsPort: false })
    const { workflowId } = await client.startWorkflow({ agent: 'tally', type: 'add', payload: { n: 2 } })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'v2 add')
    await rt.stop()
    // Sent while no process ran, and first handed back an hour and a minute ago.
    const key = client.keys.actions(workflowId)
    const { actionId } = await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
    const st = JSON.parse((await client.redis.hget(key, `${actionId}:st`)) ?? '{}') as Record<string, unknown>
    await client.redis.hset(key, `${actionId}:st`, JSON.stringify({ ...st, handedBackAt: Date.now() - 61 * 60_000 }))

    rt = await startRuntime({ agents: [tally(1)], config: cfg, metricsPort: false })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'dead letter')
    expect((await client.getStatus(workflowId))?.counts.dead).toBe(1)
    await eventually(async () => (await metric(rt, 'troupe_actions_total', { agent: 'tally', outcome: 'dead' })) === 1, 10_000, 'counted dead')
    expect(await metric(rt, 'troupe_version_handbacks_total', { agent: 'tally' })).toBe(0)
    await rt.stop()
    await client.close()
  })
})

/** `svc` v1 takes `go`; v2 (with a migrate that keeps the state) adds `extra`, which it counts once working. */
function svc(version: 1 | 2) {
  type Ev = { type: 'go' } | { type: 'extra' }
  return defineAgent({
    name: 'svc',
    version,
    maxAttempts: 1,
    ...(version === 2 ? { migrate: (s: unknown) => s } : {}),
    machine: setup({ types: { context: {} as { extras: number }, events: {} as Ev } }).createMachine({
      context: { extras: 0 },
      initial: 'idle',
      states: {
        idle: { on: { go: 'working' } },
        working: version === 1 ? {} : { on: { extra: { actions: assign({ extras: ({ context }) => context.extras + 1 }) } } },
      },
    }),
  })
}

describe('a rolling update that adds an action type', () => {
  it('has old processes hand the new type back for the new version instead of dead-lettering it', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    // v2 first: v1's registration, written after it, must leave v2's standing
    // (register.lua), so clients accept `extra` and v1 knows a newer version runs.
    const v2 = await startRuntime({ agents: [svc(2)], config: cfg, metricsPort: false })
    const v1 = await startRuntime({ agents: [svc(1)], config: cfg, metricsPort: false })
    expect((await client.agents()).get('svc')).toMatchObject({ version: 2, actionTypes: svc(2).actionTypes })
    try {
      const wfs: string[] = []
      for (let i = 0; i < 10; i++) wfs.push((await client.startWorkflow({ agent: 'svc', type: 'go' })).workflowId)
      for (const wf of wfs) await eventually(async () => (await client.getStatus(wf))?.counts.done === 1, 10_000, 'go done')
      for (const wf of wfs) await client.sendAction(wf, 'svc', 'extra')
      for (const wf of wfs) await eventually(async () => (await client.getStatus(wf))?.counts.done === 2 || (await client.getStatus(wf))?.counts.dead === 1, 30_000, 'extra settled')
      for (const wf of wfs) expect(await client.deadLetters(wf)).toEqual([])
      // Every one ran on version 2, which alone counts them.
      for (const wf of wfs) {
        const [snap, version] = await client.redis.hmget(client.keys.actor(wf, 'svc'), 'snapshot', 'version')
        expect({ extras: (JSON.parse(snap ?? '{}') as { context: { extras: number } }).context.extras, version }).toEqual({ extras: 1, version: '2' })
      }
    } finally {
      await v1.stop()
      await v2.stop()
      await client.close()
    }
  }, 60_000)

  it('still dead-letters at once a type no version handles', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    const rt = await startRuntime({ agents: [svc(1)], config: cfg, metricsPort: false })
    const { workflowId } = await client.startWorkflow({ agent: 'svc', type: 'go' })
    await client.sendAction(workflowId, 'svc', 'extra', undefined, { validate: false })
    const [dead] = await eventually(async () => {
      const d = await client.deadLetters(workflowId)
      return d.length === 1 ? d : null
    }, 10_000, 'dead letter')
    expect(dead?.error).toMatch(/does not accept action 'extra'/)
    await rt.stop()
    await client.close()
  })

  it('lets an older version register again once the newer one stops refreshing (a rollback)', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    const [secs] = await client.redis.time()
    const now = Number(secs) * 1000
    const v2 = (updatedAt: number) => JSON.stringify({ version: 2, actionTypes: ['go', 'extra'], actionPatterns: [], ...fleetSettings(cfg), updatedAt })
    // Refreshed 20 s ago (inside the hold): a v1 runtime leaves it.
    await client.redis.hset(client.keys.agents(), 'svc', v2(now - REGISTRATION_HOLD_MS + 10_000))
    let rt = await startRuntime({ agents: [svc(1)], config: cfg, metricsPort: false })
    expect(JSON.parse((await client.redis.hget(client.keys.agents(), 'svc')) ?? '{}')).toMatchObject({ version: 2 })
    await rt.stop()
    // Not refreshed for longer than the hold: v2's processes are gone, v1 writes its own.
    await client.redis.hset(client.keys.agents(), 'svc', v2(now - REGISTRATION_HOLD_MS - 1000))
    rt = await startRuntime({ agents: [svc(1)], config: cfg, metricsPort: false })
    expect(JSON.parse((await client.redis.hget(client.keys.agents(), 'svc')) ?? '{}')).toMatchObject({ version: 1, actionTypes: ['go'] })
    await rt.stop()
    await client.close()
  })
})
