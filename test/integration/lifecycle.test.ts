// A runtime's stop and its pub/sub reconnects: workers stop picking as soon as
// the stop begins (not after the hosted services have stopped), heartbeats go on
// through the drain, every caller of stop() waits for the one drain, a second
// signal to `troupe start` exits at once, a heartbeat that was waiting on Redis
// when the drain ended writes nothing over the final 'stopped', and an abort published while the
// subscription was down still stops the action it was for.
import { afterEach, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type HostedService, type Runtime } from '../../runtime/index.ts'
import { startRedis } from '../../scripts/services/redis.ts'
import { counter, slow } from '../fixtures/agents.ts'
import { spawnRuntime } from '../helpers/processes.ts'
import { Redis } from 'ioredis'
import { Keys } from '../../runtime/redis/keys.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const opened: { stop(): Promise<unknown> }[] = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.stop()
})

function client(): TroupeClient {
  const c = TroupeClient.connect(cfg)
  opened.push({ stop: () => c.close() })
  return c
}

/** A hosted service whose stop takes `ms`, as a persister flushing or a supervisor handing its lease back does. */
const slowToStop = (ms: number): HostedService => ({
  role: 'slow-to-stop',
  start: () => Promise.resolve(),
  stop: () => new Promise((r) => setTimeout(r, ms)),
})

describe('runtime stop', () => {
  it('stops picking at once, heartbeats through the drain, and gives every caller the same stop', async () => {
    const c = client()
    const rt = await startRuntime({ agents: [slow, counter], services: [slowToStop(1500)], config: cfg, metricsPort: false, heartbeatMs: 100, drainTimeoutMs: 20_000 })
    const { workflowId: busy } = await c.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 1500, i: 1 } })
    await eventually(() => Promise.resolve(rt.activeCounts().slow === 1), 10_000, 'the slow action running')

    const stopping = rt.stop()
    expect(rt.stop()).toBe(stopping)
    // Sent after the stop began: a draining worker must leave it for another process.
    const { workflowId: late } = await c.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 10, i: 2 } })
    const health = c.keys.health(rt.serviceId)
    const first = Number(await c.redis.hget(health, 'lastSeen'))
    // Three heartbeat periods without a beat is how the supervisor marks a process dead.
    const later = await eventually(async () => {
      const seen = Number(await c.redis.hget(health, 'lastSeen'))
      return seen > first ? seen : null
    }, 1000, 'a heartbeat during the drain')
    expect(later).toBeGreaterThan(first)
    expect(await c.redis.hget(health, 'status')).toBe('alive')
    await stopping

    expect((await c.getStatus(busy))?.counts.done).toBe(1)
    const lateStatus = await c.getStatus(late)
    expect(lateStatus?.counts.done).toBe(0)
    expect(lateStatus?.counts.queued).toBe(1)
    expect(await c.redis.hget(health, 'status')).toBe('stopped')
  })

  it('exits at once on a second signal during the drain', async () => {
    const c = client()
    const p = await spawnRuntime(cfg, { args: ['--drain-timeout', '10m'] })
    opened.push({ stop: () => p.stop(2000) })
    const { workflowId } = await c.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 600_000, i: 1 } })
    await eventually(async () => (await c.readEvents(workflowId, '0', 100)).some((e) => e.event.type === 'agent.transition'), 10_000, 'the long action running')
    p.signal('SIGTERM')
    const firstAt = Date.now()
    await eventually(() => Promise.resolve(p.output().includes('another signal after a second exits at once')), 10_000, 'the drain begun')
    // A copy right behind the first (npx forwards the terminal's Ctrl-C, which
    // the process group got too) is the same stop, not a reason to give up.
    p.signal('SIGTERM')
    await eventually(() => Promise.resolve(p.output().includes('SIGTERM again at once: the same stop')), 10_000, 'the copy taken as the same stop')
    expect(p.child.exitCode).toBeNull()
    await new Promise((r) => setTimeout(r, Math.max(0, firstAt + 1200 - Date.now())))
    p.signal('SIGTERM')
    expect(await p.exited()).toBe(130)
    expect(p.output()).toMatch(/SIGTERM again: exiting without finishing the drain/)
  })
  it('writes no alive beat over the final stopped one when a beat waited on Redis through the stop', async () => {
    // A private server, blocked on purpose below.
    const redis = await startRedis()
    opened.push(redis)
    const own = testConfig({ redisUrl: redis.url })
    const admin = new Redis(redis.url)
    opened.push({ stop: () => admin.quit() })
    // A service and no agents: nothing in the stop waits on Redis before the final
    // write, which is then on the wire right behind the beat's clock reading.
    const rt = await startRuntime({ agents: [], services: [slowToStop(0)], config: own, metricsPort: false, heartbeatMs: 60_000 })
    // The start's beat read Redis's clock; every 15th beat reads it again.
    for (let i = 1; i < 15; i++) await rt.heartbeat('alive')
    const blocked = admin.eval("local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - s > 500000 return 1", 0)
    await new Promise((r) => setTimeout(r, 100))
    // Its TIME waits behind the script; the stop's 'stopped' write goes out behind that.
    const beat = rt.heartbeat('alive')
    await rt.stop()
    await beat
    await blocked
    const health = new Keys(own.namespace).health(rt.serviceId)
    expect(await admin.hget(health, 'status')).toBe('stopped')
    expect(await admin.pttl(health)).toBeGreaterThan(60_000)
  })
})

describe('pub/sub reconnect', () => {
  it('aborts an action whose workflow was cancelled while the subscription was down', async () => {
    // A Redis of its own: the test cuts every subscriber connection on it.
    const redis = await startRedis()
    opened.push(redis)
    const own = testConfig({ redisUrl: redis.url })
    const c = TroupeClient.connect(own)
    opened.push({ stop: () => c.close() })
    const rt: Runtime = await startRuntime({ agents: [slow, counter], config: own, metricsPort: false })
    opened.push(rt)
    const { workflowId } = await c.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 600_000, i: 1 } })
    await eventually(() => Promise.resolve(rt.activeCounts().slow === 1), 10_000, 'the long action running')
    // The cancel's abort is published before the subscriber is back (ioredis
    // waits at least 50 ms before it reconnects).
    await c.redis.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await c.cancelWorkflow(workflowId, 'test')
    // Without the check after the reconnect it ran on for its ten minutes.
    await eventually(() => Promise.resolve(rt.activeCounts().slow === 0), 10_000, 'the action aborted')
    expect((await c.getStatus(workflowId))?.status).toBe('cancelled')
  })
})
