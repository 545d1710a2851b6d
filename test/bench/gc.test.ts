// `npm run bench:gc` must not rot: run it with small counts and check that every
// variant ran, its child's GC trace was read, and the numbers are finite. Never a
// time, a ratio or a promotion figure: those depend on the machine.
import { afterAll, describe, expect, it } from 'vitest'
import { killStragglers, runNode } from '../helpers/processes.ts'
import { redisUrl } from '../helpers/redis.ts'

afterAll(killStragglers)

describe('npm run bench:gc', () => {
  it('reports every variant with its allocation, promotion and scavenges', { timeout: 180_000 }, async () => {
    const { code, out, err } = await runNode(['--import', 'tsx', 'bench/gc.ts', '--cold', '400', '--flow', '60'], { REDIS_URL: redisUrl() })
    expect(code, err).toBe(0)
    const rows = out.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| variant'))
    expect(rows.map((r) => r.split('|')[1]?.trim().replace(/ \(per .*\)$/, ''))).toEqual([
      'Troupe, cold actions, GC tuning on',
      'Troupe, cold actions, GC tuning off',
      'BullMQ, no-op jobs',
      'Troupe, flow workflows, GC tuning on',
      'Troupe, flow workflows, GC tuning off',
    ])
    for (const row of rows) {
      const [perSec, cpu, alloc, promoted, pause, count] = row.split('|').slice(2, 8).map((c) => Number(c.trim().replace(/,/g, '')))
      for (const v of [perSec, cpu, alloc, count]) expect(v, row).toBeGreaterThan(0)
      for (const v of [promoted, pause]) expect(v, row).toBeGreaterThanOrEqual(0)
    }
  })
})
