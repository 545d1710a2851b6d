// While Redis is unreachable a runtime keeps one heartbeat and one registry
// refresh waiting, not one per tick: ioredis queues every command until it
// reconnects, and a 100 ms heartbeat piled up 200 writes in 20 s (offline queue
// 253), all replayed in one burst on reconnect.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, type Runtime } from '../../runtime/index.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, rawRedis, redisUrl, testConfig } from '../helpers/redis.ts'

/**
 * A TCP proxy in front of Redis that can drop every connection and refuse new
 * ones for a while (Redis unreachable, as a restart or a network cut makes it),
 * and counts what the clients send through it.
 */
interface Link {
  readonly url: string
  cut(): void
  restore(): void
  /** Times `needle` was sent to Redis since the last restore. */
  sent(needle: string): number
  close(): Promise<void>
}

async function startLink(target: string): Promise<Link> {
  const up = new URL(target)
  const sockets = new Set<Socket>()
  let down = false
  let since = ''
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy()
      return
    }
    const upstream = connect(Number(up.port || 6379), up.hostname)
    sockets.add(client).add(upstream)
    const drop = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('data', (d: Buffer) => {
      since += d.toString('latin1')
      upstream.write(d)
    })
    upstream.on('data', (d: Buffer) => client.write(d))
    client.on('close', drop).on('error', drop)
    upstream.on('close', drop).on('error', drop)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const addr = server.address()
  if (!addr || typeof addr !== 'object') throw new Error('no address')
  return {
    url: `redis://127.0.0.1:${addr.port}`,
    cut() {
      down = true
      for (const s of sockets) s.destroy()
      sockets.clear()
    },
    restore() {
      since = ''
      down = false
    },
    sent(needle) {
      return since.split(needle).length - 1
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
}

let link: Link
let rt: Runtime
const direct = rawRedis()

beforeAll(async () => {
  link = await startLink(redisUrl())
  rt = await startRuntime({ agents: [counter], config: testConfig({ redisUrl: link.url }), heartbeatMs: 100, metricsPort: false })
})
afterAll(async () => {
  link.restore()
  await rt.stop()
  await link.close()
  direct.disconnect()
})

async function lastSeen(): Promise<number> {
  return Number(await direct.hget(rt.keys.health(rt.serviceId), 'lastSeen'))
}

describe('a runtime while Redis is unreachable', () => {
  it('keeps one heartbeat and one registry refresh waiting, and beats again once Redis is back', async () => {
    const before = await eventually(lastSeen, 5000, 'a first heartbeat')
    link.cut()
    // Thirty heartbeat ticks, and a registry refresh asked for fifty times (as
    // control messages and unknown send targets ask for one), all while cut.
    const refresh = (rt as unknown as { refreshRegistry(): Promise<void> }).refreshRegistry.bind(rt)
    const refreshes = Array.from({ length: 50 }, () => refresh())
    await new Promise((r) => setTimeout(r, 3000))
    link.restore()
    // Everything queued went out on the reconnect, ahead of any later beat.
    const back = await eventually(async () => ((await lastSeen()) > before ? lastSeen() : null), 20_000, 'a heartbeat after the cut')
    // Each beat names its health record twice (HSET, PEXPIRE): the one waiting,
    // and a regular one or two before the read above saw it.
    expect(link.sent(rt.keys.health(rt.serviceId)) / 2).toBeLessThanOrEqual(3)
    await Promise.all(refreshes)
    // Each registry refresh names system:agents three times (HSET, PEXPIRE, and
    // the read): the one in flight, the one queued behind it, perhaps the 10 s timer's.
    expect(link.sent(rt.keys.agents()) / 3).toBeLessThanOrEqual(3)
    // And heartbeats go on.
    await eventually(async () => (await lastSeen()) > back, 5000, 'the next heartbeat')
  }, 40_000)
})
