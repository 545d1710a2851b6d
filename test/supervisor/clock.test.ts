// Liveness is judged by Redis's clock: a runtime stamps its heartbeats with it
// (an offset learnt from TIME), so a host whose clock runs minutes ahead is
// neither marked dead by a supervisor nor kept alive past its death.
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { startRuntime } from '../../runtime/index.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { readFleet } from '../../runtime/supervisor/health.ts'
import { serverNow } from '../../runtime/supervisor/queues.ts'
import { counter } from '../fixtures/agents.ts'
import { rawRedis, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const keys = new Keys(cfg.namespace)
let redis: Redis

beforeAll(() => {
  redis = rawRedis()
})
afterAll(async () => {
  await redis?.quit()
})

describe('heartbeats', () => {
  it('are stamped with Redis\'s clock, so a host ten minutes ahead is judged alive', async () => {
    // Only Date is faked: this process's clock runs ten minutes ahead, timers run as usual.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 10 * 60_000 })
    try {
      const rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false, heartbeatMs: 200 })
      try {
        const lastSeen = Number(await redis.hget(keys.health(rt.serviceId), 'lastSeen'))
        const now = await serverNow(redis)
        expect(Math.abs(lastSeen - now)).toBeLessThan(5000)
        expect(Math.abs((Number(await redis.zscore(keys.services(), rt.serviceId))) - now)).toBeLessThan(5000)
        const fleet = await readFleet(redis, keys, { now })
        expect(fleet.services.find((s) => s.serviceId === rt.serviceId)?.status).toBe('alive')
      } finally {
        await rt.stop()
      }
    } finally {
      vi.useRealTimers()
    }
  })
})
