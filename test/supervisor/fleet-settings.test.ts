// The leader's fleet-settings check: runtimes whose registered TROUPE_PERSISTENCE,
// TROUPE_STREAM_MAXLEN or TROUPE_RETENTION_MS differ from the supervisor's show
// as troupe_cluster_fleet_mismatch{agent} = 1 and one warning naming both sides,
// and go back to 0 once the fleet agrees (a misconfigured process used to show
// up only when it acted: a refused client call, a deadline log line).
import { setup } from 'xstate'
import { afterEach, describe, expect, it } from 'vitest'
import { supervisorService } from '../../agents/supervisor.ts'
import { defineAgent, startRuntime, type Runtime } from '../../runtime/index.ts'
import type { AgentRegistration } from '../../runtime/client.ts'
import type { Logger } from '../../runtime/log.ts'
import { checkFleetSettings } from '../../runtime/supervisor/fleet-settings.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const idle = defineAgent({ name: 'idle', machine: setup({}).createMachine({ on: { t: { actions: () => undefined } } }) })
const other = defineAgent({ name: 'other', machine: setup({}).createMachine({ on: { t: { actions: () => undefined } } }) })

/** A logger that keeps what it is given. */
function recorder(): Logger & { lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = []
  const at = (level: string) => (msg: string) => void lines.push({ level, msg })
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') }
}

async function gauge(rt: Runtime): Promise<Record<string, number>> {
  const text = await rt.metrics.registry.getSingleMetricAsString('troupe_cluster_fleet_mismatch')
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^troupe_cluster_fleet_mismatch\{agent="([^"]+)"\} (\d+)$/gm)) out[m[1] as string] = Number(m[2])
  return out
}

const running: Runtime[] = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()))
})

describe('fleet settings seen by the supervisor', () => {
  it('reports the agents whose runtimes registered other settings, says so once, and clears when they agree', async () => {
    const cfg = testConfig({ persistence: true })
    const log = recorder()
    const sup = await startRuntime({ agents: [], services: [supervisorService({ tickMs: 100, leaseMs: 2000 })], config: cfg, heartbeatMs: 100, metricsPort: 0, logger: log })
    running.push(sup)
    // 'idle' runs with persistence off (no persister; the supervisor expects one), 'other' as the supervisor does.
    const off = await startRuntime({ agents: [idle], config: { ...cfg, persistence: false, retentionMs: 90_000 }, heartbeatMs: 100, metricsPort: false })
    running.push(off)
    running.push(await startRuntime({ agents: [other], config: cfg, heartbeatMs: 100, metricsPort: false }))

    const seen = await eventually(async () => {
      const g = await gauge(sup)
      return g.idle === 1 && g.other === 0 ? g : null
    }, 10_000, 'the mismatch of idle reported')
    expect(seen).toEqual({ idle: 1, other: 0 })
    const warned = log.lines.filter((l) => l.level === 'warn' && l.msg.startsWith('fleet settings differ'))
    expect(warned).toHaveLength(1)
    expect(warned[0]?.msg).toContain('runtimes of idle (TROUPE_PERSISTENCE=off TROUPE_STREAM_MAXLEN=')
    expect(warned[0]?.msg).toContain('TROUPE_RETENTION_MS=90000); this supervisor runs with TROUPE_PERSISTENCE=on')
    expect(warned[0]?.msg).not.toContain('other (')

    // The misconfigured runtime is replaced by one that agrees: back to 0, said once.
    await off.stop()
    running.splice(running.indexOf(off), 1)
    running.push(await startRuntime({ agents: [idle], config: cfg, heartbeatMs: 100, metricsPort: false }))
    await eventually(async () => ((await gauge(sup)).idle === 0 ? true : null), 10_000, 'the mismatch cleared')
    await eventually(() => Promise.resolve(log.lines.some((l) => l.level === 'info' && l.msg.startsWith('fleet settings agree again')) || null), 5000, 'the all-clear logged')
    expect(log.lines.filter((l) => l.msg.startsWith('fleet settings differ'))).toHaveLength(1)
  }, 40_000)
})

describe('checkFleetSettings', () => {
  const mine = { persistence: true, streamMaxLen: 10_000, retentionMs: 1000 }
  const reg = (name: string, extra: Partial<AgentRegistration>): [string, AgentRegistration] => [name, { name, version: 1, actionTypes: [], updatedAt: 0, ...extra }]

  it('leaves out agents nobody hosts and registrations without settings, and compares cap and retention only with persistence off', () => {
    const registry = new Map([
      reg('gone', { persistence: false, streamMaxLen: 1, retentionMs: 1 }),
      reg('old', {}),
      reg('capped', { persistence: true, streamMaxLen: 5, retentionMs: 5 }),
      reg('off', { persistence: false, streamMaxLen: 10_000, retentionMs: 1000 }),
    ])
    const hosted = new Set(['old', 'capped', 'off'])
    expect(checkFleetSettings(registry, hosted, mine).map((c) => [c.agent, c.mismatch])).toEqual([['capped', false], ['off', true]])
    const offMine = { ...mine, persistence: false }
    expect(checkFleetSettings(registry, hosted, offMine).map((c) => [c.agent, c.mismatch])).toEqual([['capped', true], ['off', false]])
  })
})
