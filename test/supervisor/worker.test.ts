// A worker killed with -9 mid-action: the supervisor marks it dead within the
// configured number of missed heartbeats, and every action it held completes on
// the surviving worker exactly once.
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient, type StreamedEvent } from '../../runtime/index.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'
import { until, spawnSupervisor, spawnWorker, stopAll, SystemEvents, type Child } from './helpers.ts'

const cfg = testConfig({ lockTtlMs: 2000 })
const DEAD_AFTER = 3
// `troupe start` heartbeats every 2 s (the runtime default).
const HEARTBEAT_MS = 2000
let client: TroupeClient
let redis: Redis
let events: SystemEvents
const children: Child[] = []

beforeAll(async () => {
  client = TroupeClient.connect(cfg)
  redis = rawRedis()
  events = await SystemEvents.listen(cfg)
})
afterAll(async () => {
  await stopAll(children)
  await events?.close()
  await client?.close()
  await redis?.quit()
})

const ofType = (l: StreamedEvent[], t: string): StreamedEvent[] => l.filter((e) => e.event.type === t)

describe('a worker dies mid-action', () => {
  it('is marked dead within the configured heartbeats and its actions complete elsewhere exactly once', async () => {
    const sup = await spawnSupervisor(cfg, ['--dead-after', String(DEAD_AFTER)])
    const workers = await Promise.all([spawnWorker(cfg), spawnWorker(cfg)])
    children.push(sup, ...workers)
    const wfs = await Promise.all(Array.from({ length: 6 }, () => client.startWorkflow({ agent: 'napper', type: 'nap', payload: { ms: 8000, end: true } })))
    await eventually(async () => {
      const st = await Promise.all(wfs.map((w) => client.getStatus(w.workflowId)))
      return st.every((s) => s?.agents.napper === 'napping')
    }, 15_000, 'every action in flight')
    // Which worker holds how many, from their heartbeats; the busier one dies.
    const held = await eventually(async () => {
      const active = await Promise.all(workers.map(async (w) => (JSON.parse((await redis.hget(client.keys.health(w.serviceId), 'active')) ?? '{}') as { napper?: number }).napper ?? 0))
      return active[0]! + active[1]! === wfs.length ? active : null
    }, 10_000, 'heartbeats showing the six actors')
    const victim = held[0]! >= held[1]! ? 0 : 1
    const doomed = workers[victim]
    const killedAt = Date.now()
    doomed.signal('SIGKILL')

    const dead = await until(() => events.of('system.service.dead').find((e) => e.serviceId === doomed.serviceId), 20_000, 'the dead event')
    const detectedMs = dead.receivedAt - killedAt
    const sinceHeartbeat = dead.at - Number(dead.lastSeen)
    console.log(`worker marked dead ${detectedMs} ms after kill -9 (${sinceHeartbeat} ms after its last heartbeat; limit ${DEAD_AFTER} x ${HEARTBEAT_MS} ms)`)
    expect(dead.missedHeartbeats).toBeGreaterThanOrEqual(DEAD_AFTER)
    // Not before it missed DEAD_AFTER beats (both times as Redis holds them)...
    expect(sinceHeartbeat).toBeGreaterThan(DEAD_AFTER * HEARTBEAT_MS)
    // ...and found by the leader's health check on the record itself, not after the
    // record expired (5 heartbeats), which would leave only a tombstone. How many
    // ticks after the limit that was depends on scheduling, so it is logged above.
    expect(dead.reason).toBe('missed heartbeats')
    expect(await redis.hget(client.keys.health(doomed.serviceId), 'status')).toBe('dead')
    expect(await redis.pttl(client.keys.health(doomed.serviceId))).toBeGreaterThan(60_000)

    let redelivered = 0
    for (const { workflowId, actionId } of wfs) {
      await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 30_000, `workflow ${workflowId} completed`)
      const ev = await client.readEvents(workflowId, '0', 1000)
      const completed = ofType(ev, 'action.completed').map((e) => (e.event.content as { actionId: string }).actionId)
      expect(completed).toEqual([actionId])
      expect(ofType(ev, 'napped')).toHaveLength(1)
      expect((await client.getStatus(workflowId))?.counts).toMatchObject({ done: 1, dead: 0, queued: 0 })
      redelivered += ofType(ev, 'action.redelivered').length
    }
    // Exactly the actions the dead worker held were delivered a second time.
    expect(redelivered).toBe(held[victim])
    // The fleet view agrees.
    const services = JSON.parse((await redis.hget(client.keys.systemMetrics('services'), 'dead')) ?? '0') as number
    expect(services).toBeGreaterThanOrEqual(1)
  })
})
