// The SSE benchmark must not rot: run it in quick mode and check that every number
// it reports is finite and positive. Never a time: those depend on the machine.
import { describe, expect, it } from 'vitest'
import { benchSse } from '../../bench/sse.ts'
import { redisUrl } from '../helpers/redis.ts'

describe('bench/sse.ts quick', () => {
  it('reports finite positive latencies and requests/s', { timeout: 180_000 }, async () => {
    const r = await benchSse({ redisUrl: redisUrl(), quick: true, log: () => undefined })
    for (const k of ['rawP50Ms', 'rawP99Ms', 'sse20P50Ms', 'sse20P99Ms', 'sse100P50Ms', 'sse100P99Ms', 'statusRps', 'cores']) {
      const v = r[k]
      expect(typeof v === 'number' && Number.isFinite(v) && v > 0, `${k} = ${String(v)}`).toBe(true)
    }
    expect(r.sse20DeliveredPct).toBeGreaterThan(0)
    expect(typeof r.note === 'string' && r.note.length > 0).toBe(true)
  })
})
