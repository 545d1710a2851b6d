// A gateway whose Redis stops answering while its connection stays up (the
// process SIGSTOPped, a node wedged): nothing tells the connection, so the
// outage gate of redis-outage.test.ts never closes. A request waiting on it is
// answered 503 `unavailable` after a bounded wait, later ones at once (so they
// do not pile up behind the stalled connection), readiness says not ready, and
// everything works again once Redis answers. Runs on a private redis-server
// that the test stops and continues. The probe on its own: a reply that came
// while the gateway's event loop was blocked is no stall, and a Cluster marks
// none (its PING reaches one node).
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisGate } from '../../runtime/gateway/redis-gate.ts'
import { closeRedis, createRedis } from '../../runtime/redis/connection.ts'
import { startRedis, type RedisProcess } from '../../scripts/services/redis.ts'
import { eventually } from '../helpers/redis.ts'
import { call, startStack, type Reply, type Stack } from './helpers.ts'

const WAIT_MS = 1000
// Bounds that only a hang exceeds: the first request is answered within about
// WAIT_MS plus one probe interval, the ones after it at once.
const FIRST_GIVE_UP_MS = 8000
const AT_ONCE_MS = 2000

let redis: RedisProcess
let s: Stack
let token: string

beforeAll(async () => {
  redis = await startRedis()
  s = await startStack({ config: { redisUrl: redis.url }, gateway: { http: { redisWaitMs: WAIT_MS } } })
  token = (await s.login('stella')).access_token
})
afterAll(async () => {
  // A stopped process would not act on the SIGTERM of stop().
  redis?.resume()
  await s?.stop()
  await redis?.stop()
  if (redis) rmSync(redis.dir, { recursive: true, force: true })
})

/** Resolves to `p`'s value, or to `null` once `ms` have passed: a hang fails the test instead of stalling it. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([p, new Promise<null>((res) => (timer = setTimeout(() => res(null), ms)))])
  clearTimeout(timer)
  return r
}

function expectUnavailable(r: Reply | null, what: string): void {
  expect(r, `${what}: the request hung`).not.toBeNull()
  const reply = r as Reply
  expect(reply.status, `${what}: ${reply.text}`).toBe(503)
  expect((reply.json as { code: string }).code).toBe('unavailable')
  expect(reply.headers.get('content-type')).toMatch(/problem\+json/)
  expect(Number(reply.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
}

describe('gateway with a stalled Redis', () => {
  it('answers 503 after a bounded wait, then at once, reports not ready, and recovers when Redis answers again', async () => {
    expect((await call(s, 'GET', '/v1/me', { token })).status).toBe(200)
    expect(await within(s.service.ready?.() ?? Promise.resolve(false), AT_ONCE_MS)).toBe(true)
    const cookie = await s.session('stella')
    redis.pause()
    try {
      // Waits on Redis until the stall is noticed, then 503.
      expectUnavailable(await within(call(s, 'GET', '/v1/me', { token }), FIRST_GIVE_UP_MS), 'first request')
      // The connection itself saw nothing: this is not the outage gate at work.
      expect(s.gw.deps.redis.status).toBe('ready')
      // Noticed now: every request is refused at once, touching nothing.
      const burst = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          within(i % 2 ? call(s, 'GET', '/v1/workflows', { token }) : call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } }), AT_ONCE_MS)),
      )
      burst.forEach((r, i) => expectUnavailable(r, `request ${i} after the stall was noticed`))
      expect(await within(s.service.ready?.() ?? Promise.resolve(true), AT_ONCE_MS), 'readiness while stalled').toBe(false)
      // Sign-out still clears the browser's cookie at once, as during an outage.
      const out = await within(call(s, 'POST', '/v1/auth/logout', { cookie }), AT_ONCE_MS)
      expect(out?.status, 'sign-out while stalled').toBe(204)
      expect(out?.headers.get('set-cookie')).toMatch(/^troupe_session=; .*Max-Age=0/)
    } finally {
      redis.resume()
    }
    await eventually(async () => (await call(s, 'GET', '/v1/me', { token })).status === 200, 15_000, 'the gateway answers again')
    // The session signed out during the stall is revoked once Redis answers
    // (no reconnect marks that moment: the connection never dropped).
    await eventually(async () => (await call(s, 'GET', '/v1/me', { cookie })).status === 401, 15_000, 'the session signed out while stalled to be revoked')
    expect(await within(s.service.ready?.() ?? Promise.resolve(false), AT_ONCE_MS)).toBe(true)
    const started = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
    expect(started.status, started.text).toBe(201)
  })
})

/** A log that keeps what the gate says. */
function recorder(): { warn(msg: string): void; info(msg: string): void; warned: string[] } {
  const warned: string[] = []
  return { warned, warn: (msg) => warned.push(msg), info: () => undefined }
}

describe('the stall probe', () => {
  it('does not take a PONG left unread behind the gateway\'s own blocked event loop for a stall', async () => {
    // This file's own Redis, not the suite's shared one: nothing else keeps it
    // busy, so its PONG is back well within the blocked second.
    const conn = createRedis(redis.url)
    const log = recorder()
    const gate = new RedisGate(conn, 20, log)
    try {
      await conn.ping()
      // From the check phase, so the loop goes on to its timers (the probe's
      // overdue one) before it polls the socket, where the PONG waits.
      const verdict = await new Promise<boolean>((resolve) => setImmediate(() => {
        const v = gate.probe()
        const until = performance.now() + 1000
        while (performance.now() < until) {
          // The gateway's own loop is blocked (a GC pause, CPU throttling); Redis answers meanwhile.
        }
        resolve(v)
      }))
      expect(verdict).toBe(true)
      expect(log.warned).toEqual([])
      expect(gate.ready).toBe(true)
    } finally {
      gate.close()
      await closeRedis(conn)
    }
  })

  describe('on a Redis Cluster', () => {
    let node: RedisProcess
    beforeAll(async () => {
      // A one-node Cluster; announced by address, which ioredis needs to follow its slot map.
      node = await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-announce-ip', '127.0.0.1'] })
      execFileSync('redis-cli', ['-p', String(node.port), 'cluster', 'addslotsrange', '0', '16383'])
    })
    afterAll(async () => {
      node?.resume()
      await node?.stop()
      if (node) rmSync(node.dir, { recursive: true, force: true })
    })

    it('marks no stall (one node\'s PING would judge them all) and keeps readiness bounded with one PING at a time', async () => {
      const cluster = createRedis(`redis+cluster://127.0.0.1:${node.port}`)
      const log = recorder()
      const gate = new RedisGate(cluster, 200, log)
      try {
        await eventually(async () => (await cluster.set('{gate}probe', '1').catch(() => null)) === 'OK', 15_000, 'the one-node cluster to serve')
        expect(await gate.probe()).toBe(true)
        const sent: string[] = []
        const send = cluster.sendCommand.bind(cluster)
        cluster.sendCommand = ((cmd: { name: string }, ...rest: unknown[]) => {
          sent.push(cmd.name)
          return (send as (...a: unknown[]) => unknown)(cmd, ...rest)
        }) as typeof cluster.sendCommand
        node.pause()
        try {
          expect(await within(gate.probe(), AT_ONCE_MS), 'readiness while the node is stopped').toBe(false)
          // Its PING is still unanswered: the next probe answers at once and sends none.
          expect(await within(gate.probe(), 50)).toBe(false)
          expect(sent.filter((c) => c === 'ping')).toHaveLength(1)
          expect(gate.ready, 'requests are still let through').toBe(true)
          expect(log.warned).toEqual([])
        } finally {
          node.resume()
          cluster.sendCommand = send
        }
        await eventually(() => gate.probe(), 10_000, 'readiness once the node answers')
        expect(gate.ready).toBe(true)
      } finally {
        gate.close()
        await closeRedis(cluster)
      }
    })
  })
})
