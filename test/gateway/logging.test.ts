// What the gateway writes to its log at the default level (one line per
// request and per client error let anyone fill it), and which address it logs
// for a client behind the one trusted proxy (trusting every hop took the
// client's own X-Forwarded-For entry). Gateways built with createGateway, no
// runtime, so that nothing else writes to stderr meanwhile.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest'
import type { TroupeConfig } from '../../runtime/config.ts'
import { closeRedis, createRedis, type RedisClient } from '../../runtime/redis/connection.ts'
import { createGateway, type Gateway } from '../../runtime/gateway/server.ts'
import type { GatewaySettingsInput } from '../../runtime/gateway/settings.ts'
import { redisUrl, testConfig } from '../helpers/redis.ts'

interface LogLine {
  level: number
  reqId?: string
  msg?: string
  req?: { remoteAddress?: string }
  [k: string]: unknown
}

let redis: RedisClient
let cfg: TroupeConfig
const gateways: Gateway[] = []
let stderr: MockInstance<typeof process.stderr.write> | null = null
let written: string[] = []

beforeAll(async () => {
  redis = createRedis(redisUrl())
  await redis.ping()
  cfg = testConfig()
})
afterEach(() => {
  stderr?.mockRestore()
  stderr = null
})
afterAll(async () => {
  for (const gw of gateways) await gw.close()
  await redis.del(`${cfg.namespace}auth:token:{broken}`)
  await closeRedis(redis)
})

async function gateway(settings: GatewaySettingsInput): Promise<Gateway> {
  const gw = await createGateway({ redis, cfg, settings })
  gateways.push(gw)
  return gw
}

/** Captures what is written to stderr (where the gateway's pino logger writes) from now on. */
function capture(): void {
  written = []
  stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk))
    return true
  })
}

function lines(): LogLine[] {
  return written
    .join('')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine
      } catch {
        // Not pino's: counted as a line at info, so that it is seen.
        return { level: 30, msg: l }
      }
    })
}

describe('gateway logging', () => {
  it('logs nothing at info for requests refused with a 4xx; a 500 logs an error line with the request id its answer names', async () => {
    const gw = await gateway({ logLevel: 'info' })
    capture()
    for (let i = 0; i < 100; i++) {
      const r = await gw.app.inject({ method: 'GET', url: '/v1/me' })
      expect(r.statusCode).toBe(401)
    }
    const r404 = await gw.app.inject({ method: 'GET', url: '/nothing-here' })
    expect(r404.statusCode).toBe(404)
    const loud = lines().filter((l) => l.level >= 30)
    expect(loud, JSON.stringify(loud.slice(0, 3))).toEqual([])

    // A hash where the token hash should be: verifying any token of that user fails in Redis.
    await redis.set(`${cfg.namespace}auth:token:{broken}`, 'not a hash')
    const r = await gw.app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: `Bearer tat.broken.${'A'.repeat(16)}.${'B'.repeat(43)}` } })
    expect(r.statusCode, r.body).toBe(500)
    const requestId = (JSON.parse(r.body) as { requestId: string }).requestId
    expect(r.headers['x-request-id']).toBe(requestId)
    const errors = lines().filter((l) => l.level >= 50)
    expect(errors.map((l) => l.reqId)).toEqual([requestId])
  })

  it('logs each request and its 4xx at debug, when asked for', async () => {
    const gw = await gateway({ logLevel: 'debug' })
    capture()
    const r = await gw.app.inject({ method: 'GET', url: '/v1/me', headers: { 'x-request-id': 'probe-1' } })
    expect(r.statusCode).toBe(401)
    const mine = lines().filter((l) => l.reqId === 'probe-1')
    expect(mine.map((l) => l.msg)).toEqual(['incoming request', expect.stringMatching(/authentication required/), 'request completed'])
    expect(mine.every((l) => l.level === 20)).toBe(true)
  })
})

describe('gateway behind a trusted proxy', () => {
  it('takes the client address from the entry the proxy appended to X-Forwarded-For, not the leftmost one the client wrote', async () => {
    const gw = await gateway({ logLevel: 'debug', trustProxy: true })
    capture()
    const r = await gw.app.inject({
      method: 'GET',
      url: '/v1/me',
      remoteAddress: '10.0.0.5',
      headers: { 'x-request-id': 'via-proxy', 'x-forwarded-for': '198.51.100.66, 203.0.113.7' },
    })
    expect(r.statusCode).toBe(401)
    const incoming = lines().find((l) => l.reqId === 'via-proxy' && l.msg === 'incoming request')
    expect(incoming?.req?.remoteAddress).toBe('203.0.113.7')
  })
})
