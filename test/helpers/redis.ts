// Test helpers: every test file gets its own random namespace on the shared Redis.
import { nanoid } from 'nanoid'
import { Redis } from 'ioredis'
import { loadConfig, type TroupeConfig } from '../../runtime/config.ts'

/** The Redis the suite runs against (started by scripts/with-services.ts). */
export function redisUrl(): string {
  const url = process.env.REDIS_URL
  if (!url) throw new Error('REDIS_URL is not set: run the suite with `npm test`, which starts Redis (and Neo4j) first')
  return url
}

/** A config with a fresh namespace, persistence on unless overridden, short locks for fast recovery. */
export function testConfig(overrides: Partial<TroupeConfig> = {}): TroupeConfig {
  return loadConfig({ redisUrl: redisUrl(), namespace: `t${nanoid(8).replace(/[^A-Za-z0-9]/g, 'x')}:`, lockTtlMs: 3000, ...overrides })
}

/** A plain ioredis client for assertions. */
export function rawRedis(url = redisUrl()): Redis {
  return new Redis(url, { maxRetriesPerRequest: null })
}

/** Polls until `fn` returns a truthy value (or throws after `timeoutMs`). */
export async function eventually<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
