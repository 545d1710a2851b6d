// The benchmark harness must not rot: run it in quick mode, as `npm run bench --
// --quick` would, and check that every scenario ran and produced numbers. Never a
// time or a ratio: those depend on the machine and on what else runs next to it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { BenchResults } from '../../bench/lib/report.ts'
import { killStragglers, runNode } from '../helpers/processes.ts'
import { redisUrl } from '../helpers/redis.ts'

const dir = mkdtempSync(join(tmpdir(), 'troupe-bench-test-'))

afterAll(() => {
  killStragglers()
  rmSync(dir, { recursive: true, force: true })
})

async function runQuick(out: string): Promise<{ code: number | null; output: string }> {
  const r = await runNode(['--import', 'tsx', 'bench/index.ts', '--quick', '--out', out], { REDIS_URL: redisUrl() })
  return { code: r.code, output: `${r.out}${r.err}` }
}

function positive(v: number | undefined, what: string): void {
  expect(Number.isFinite(v), `${what} is ${String(v)}`).toBe(true)
  expect(v, what).toBeGreaterThan(0)
}

describe('npm run bench -- --quick', () => {
  it('runs every scenario and reports finite positive numbers', { timeout: 300_000 }, async () => {
    const out = join(dir, 'quick.json')
    const { code, output } = await runQuick(out)
    expect(code, output).toBe(0)
    const r = JSON.parse(readFileSync(out, 'utf8')) as BenchResults

    expect(r.mode).toBe('quick')
    expect(r.machine.cores).toBeGreaterThan(0)
    expect(r.machine.redis).not.toBe('?')
    expect(r.machine.loadStart).toHaveLength(3)
    expect(r.machine.loadEnd).toHaveLength(3)

    const ids = r.variants.map((v) => v.id)
    for (const id of ['noop.spread.1p', 'noop.spread.4p', 'noop.busy', 'noop.cold', 'noop.paced.1p', 'flow.burst', 'flow.paced']) expect(ids).toContain(id)
    expect(new Set(r.variants.map((v) => v.scenario))).toEqual(new Set([1, 2]))
    for (const v of r.variants) {
      expect(v.systems.map((s) => s.system)).toContain('troupe')
      expect(v.systems.length).toBeGreaterThanOrEqual(2)
      if (v.scenario === 2) expect(v.systems.map((s) => s.system).sort()).toEqual(['bullmq', 'naive', 'troupe'])
      for (const s of v.systems) {
        const what = `${v.id} ${s.label}`
        expect(s.runs.length, what).toBe(r.sizes.rounds)
        for (const m of s.runs) {
          positive(m.throughput, `${what} throughput`)
          positive(m.perUnit.redisCpuUs, `${what} Redis CPU`)
          positive(m.perUnit.roundTrips, `${what} round trips`)
          positive(m.perUnit.commands, `${what} commands`)
          positive(m.nodeCpuUs, `${what} worker CPU`)
          if (v.kind === 'latency' || v.scenario === 2) {
            positive(m.latency?.p50, `${what} p50`)
            positive(m.latency?.p99, `${what} p99`)
          }
          if (v.scenario === 2) positive(m.memory?.bytesPerWorkflow, `${what} memory`)
        }
      }
    }

    // Section 3: the ceiling; section 4: memory of idle workflows.
    positive(r.ceiling?.pingRps, 'ceiling requests/s')
    positive(r.ceiling?.pipelinedRps, 'ceiling pipelined requests/s')
    positive(r.ceiling?.evalRps, 'ceiling scripts/s')
    expect(r.idle?.workflows).toBe(r.sizes.idle)
    positive(r.idle?.redisBytesPerWorkflow, 'Redis bytes per waiting workflow')
    positive(r.idle?.rssAfterMiB, 'runtime RSS')
    expect(Number.isFinite(r.idle?.heapBytesPerWorkflow)).toBe(true)
    expect(r.idle?.activeActors).toBeGreaterThanOrEqual(0)

    // Section 5: the persister's and the gateway's benchmarks ran (npm test brings Neo4j up).
    for (const [name, s] of [['persister', r.persister], ['sse', r.sse]] as const) {
      expect(s.ran, `${name} benchmark did not run: ${s.reason}`).toBe(true)
      expect(Object.keys(s.numbers).length, name).toBeGreaterThan(0)
    }

    expect(r.targets.length).toBeGreaterThan(0)
    expect(output).toContain('### Targets')
  })
})
