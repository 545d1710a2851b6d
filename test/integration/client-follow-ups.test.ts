// A start, a send or a cancel whose script took effect answers as it did, even
// when a write that follows it fails: a caller who retried after an error
// queued the work twice (reviewer's repro on a Cluster: "sendAction threw ...
// Too many Cluster redirections", yet the action ran, and ran again after the
// retry). The follow-up writes are made to fail here by giving their keys the
// wrong type, so that each command answers WRONGTYPE.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Logger } from '../../runtime/index.ts'
import { createRedis } from '../../runtime/redis/connection.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

/** A logger that keeps the warnings. */
function capture(): Logger & { warnings: string[] } {
  const warnings: string[] = []
  const none = (): void => undefined
  return { warnings, error: none, info: none, debug: none, warn: (msg, fields) => void warnings.push(`${msg} ${JSON.stringify(fields ?? {})}`) }
}

const cfg = testConfig()
const log = capture()
let c: TroupeClient
beforeAll(() => {
  c = new TroupeClient(createRedis(cfg.redisUrl), cfg, { ownsRedis: true, log })
})
afterAll(async () => {
  await c.close()
})

describe('follow-up writes after a script that took', () => {
  it('answers a start and a send whose persistence pointer fails with their ids, and the actions run once', async () => {
    const pointers = c.keys.persistence()
    await c.redis.set(pointers, 'not a stream')
    let workflowId: string
    try {
      // Validation off: no runtime runs yet, so the actions wait for the one below.
      ;({ workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, owner: 'alice', validate: false }))
      const { actionId } = await c.sendAction(workflowId, 'counter', 'ping', { i: 2 }, { validate: false })
      expect(actionId).toBeTruthy()
      // The writes beside the pointer still went in.
      expect(await c.redis.zscore(c.keys.byOwner('alice'), workflowId)).not.toBeNull()
      expect(log.warnings.some((w) => w.includes('persistence pointers') && w.includes('WRONGTYPE'))).toBe(true)
    } finally {
      await c.redis.del(pointers)
    }
    const rt = await startRuntime({ agents: [counter], config: cfg, metricsPort: false })
    try {
      await eventually(async () => (await c.getStatus(workflowId))?.counts.done === 2, 20_000, 'both actions done')
      const st = await c.getStatus(workflowId)
      expect(st?.counts).toMatchObject({ actions: 2, done: 2, queued: 0, dead: 0 })
      expect((await c.readEvents(workflowId)).filter((e) => e.event.type === 'action.completed')).toHaveLength(2)
    } finally {
      await rt.stop()
    }
  })

  it('answers a start whose deadline entry fails, with the workflow started and its deadline recorded', async () => {
    const deadlines = c.keys.deadlines()
    await c.redis.set(deadlines, 'not a zset')
    try {
      const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', deadlineMs: 60_000, validate: false })
      // The supervisor's sweep restores the entry from the status hash's deadline.
      expect(Number((await c.redis.hget(c.keys.status(workflowId), 'deadline')) ?? 0)).toBeGreaterThan(0)
      expect(log.warnings.some((w) => w.includes('follow-up writes') && w.includes(deadlines))).toBe(true)
    } finally {
      await c.redis.del(deadlines)
    }
  })

  it('writes a post-hint that failed once the key takes it again, within the retries', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', validate: false })
    const ready = c.keys.ready('counter')
    await c.redis.del(ready)
    await c.redis.set(ready, 'not a zset')
    const sending = c.sendAction(workflowId, 'counter', 'ping', { i: 3 }, { validate: false, actionId: 'hinted' })
    try {
      // The action is queued: the pre-hint and the post-hint beside it failed.
      await eventually(async () => (await c.redis.hexists(c.keys.actions(workflowId), 'hinted')) === 1, 5000, 'the action queued')
    } finally {
      await c.redis.del(ready)
    }
    expect(await sending).toEqual({ actionId: 'hinted' })
    // Without the retry nothing would hint it on a Cluster (no sweep there).
    expect(await c.redis.zscore(ready, workflowId)).not.toBeNull()
  })

  it('answers a cancel whose persistence pointer fails, and still sends the abort', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', validate: false })
    const sub = rawRedis()
    const aborts: string[] = []
    await sub.subscribe(c.keys.control())
    sub.on('message', (_ch: string, msg: string) => aborts.push(msg))
    const pointers = c.keys.persistence()
    await c.redis.set(pointers, 'not a stream')
    try {
      expect((await c.cancelWorkflow(workflowId)).dropped).toBe(1)
      expect((await c.getStatus(workflowId))?.status).toBe('cancelled')
      await eventually(() => Promise.resolve(aborts.some((m) => m.includes(workflowId))), 5000, 'the abort')
      expect(log.warnings.some((w) => w.includes(`cancel of ${workflowId}`) && w.includes('WRONGTYPE'))).toBe(true)
    } finally {
      await c.redis.del(pointers)
      sub.disconnect()
    }
  })
})
