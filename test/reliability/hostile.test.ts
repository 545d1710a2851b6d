// Hostile input everywhere the core reads: payloads, hand-written records in
// mailboxes and streams, junk on pub/sub channels. Clear errors, no crash, and the
// runtime keeps serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let rt: Runtime
let client: TroupeClient

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

async function stillServes(): Promise<void> {
  const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
  await client.sendAction(workflowId, 'counter', 'finish')
  await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 10_000, 'a normal workflow')
}

describe('hostile input', () => {
  it('payloads: deep nesting, huge strings, prototype keys, odd unicode', async () => {
    let deep: unknown = 'bottom'
    for (let i = 0; i < 100_000; i++) deep = [deep]
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', payload: deep })).rejects.toMatchObject({ code: 'bad_payload' })
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', payload: 'x'.repeat(2 * 1024 * 1024) })).rejects.toMatchObject({ code: 'payload_too_large' })
    const nasty = JSON.parse('{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":2}},"i":"\\u0000\\ud800 \\u202e }{ \' \\" ` ]]"}') as unknown
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: nasty })
    await client.sendAction(workflowId, 'counter', 'ping', { i: 'é😀'.repeat(10_000) })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 10_000, 'both delivered')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    const snap = JSON.parse((await client.redis.hget(client.keys.actor(workflowId, 'counter'), 'snapshot')) ?? '{}') as { context: { seen: string[] } }
    expect(snap.context.seen[1]).toBe(JSON.stringify('é😀'.repeat(10_000)))
  })

  it('hand-written records: deep JSON, binary garbage, wrong shapes', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'first ping')
    const k = client.keys
    const r = client.redis
    const st = (seq: number): string => JSON.stringify({ status: 'queued', attempt: 0, seq, availableAt: 0 })
    const bad: [string, string | Buffer][] = [
      ['deep', '['.repeat(200_000) + ']'.repeat(200_000)],
      ['binary', Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28])],
      ['array', '[1,2,3]'],
      ['notype', '{"id":"notype"}'],
    ]
    let seq = 100
    for (const [id, rec] of bad) {
      await r.hset(k.actions(workflowId), id, rec, `${id}:st`, st(seq))
      await r.zadd(k.mailbox(workflowId, 'counter'), 0, `${String(seq++).padStart(12, '0')}:${id}`)
    }
    await r.hset(k.actions(workflowId), 'badstate:st', '{{{{')
    await r.hset(k.actions(workflowId), 'badstate', '{}')
    await r.zadd(k.mailbox(workflowId, 'counter'), 0, `${String(seq++).padStart(12, '0')}:badstate`)
    await r.zadd(k.ready('counter'), 0, workflowId)
    await client.sendAction(workflowId, 'counter', 'ping', { i: 2 })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 15_000, 'the real ping after the junk')
    const dead = (await client.deadLetters(workflowId)).map((d) => d.actionId).sort()
    expect(dead).toEqual(['array', 'binary', 'deep', 'notype'])
    expect((await client.getStatus(workflowId))?.counts.malformed).toBe(1)
    await stillServes()
  })

  it('junk in event streams and on pub/sub channels', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    const k = client.keys
    await client.redis.xadd(k.events(workflowId), '*', 'e', '{broken')
    await client.redis.xadd(k.events(workflowId), '*', 'other', 'field')
    const seen: string[] = []
    const follow = (async () => {
      for await (const e of client.follow(workflowId, { untilEnd: true })) seen.push(e.event.type)
    })()
    for (const ch of [k.channel(workflowId), k.control()]) {
      for (const junk of ['', 'null', '{"streamId":5}', '{"op":"abort"}', '\u0000\xff', 'x'.repeat(100_000)]) await client.redis.publish(ch, junk)
    }
    await client.sendAction(workflowId, 'counter', 'finish')
    await follow
    expect(seen.filter((t) => t === 'troupe.malformed')).toHaveLength(2)
    expect(seen.at(-1)).toBe('workflow.completed')
    await stillServes()
  })

  it('junk in the wake-up marker: odd members wake harmlessly, a wrong type only slows wake-ups to the poll', async () => {
    const wake = client.keys.wake('counter')
    await client.redis.zadd(wake, '-inf', '', 5, 'x'.repeat(100_000), 'inf', '\u0000\xff')
    await stillServes()
    await client.redis.del(wake)
    await client.redis.set(wake, 'not a sorted set')
    await stillServes()
    await client.redis.del(wake)
    await stillServes()
  })
})
