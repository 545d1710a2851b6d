// Retries, backoff, dead letters, timeouts, cancel, delayed actions and drain, in
// one runtime against real Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_DELAY_MS, startRuntime, TroupeClient, type Runtime, type StreamedEvent } from '../../runtime/index.ts'
import { emitEvents } from '../../runtime/claims.ts'
import { encodeEvent } from '../../runtime/events.ts'
import { counter, echo, flaky, slow } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let rt: Runtime
let client: TroupeClient

beforeAll(async () => {
  rt = await startRuntime({ agents: [counter, echo, flaky, slow], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

async function events(wf: string): Promise<StreamedEvent[]> {
  return await client.readEvents(wf, '0', 10_000)
}
const ofType = (list: StreamedEvent[], t: string): StreamedEvent[] => list.filter((e) => e.event.type === t)

/**
 * When an action was stored, when it was due and when its run was committed, all
 * from Redis's clock (the scripts stamp events with TIME), so a loaded test
 * process does not move them.
 */
async function timeline(wf: string, actionId: string): Promise<{ sent: number; due: number; done: number }> {
  const ev = await events(wf)
  const enqueued = ofType(ev, 'action.enqueued').find((e) => (e.event.content as { actionId: string }).actionId === actionId)
  const completed = ofType(ev, 'action.completed').find((e) => e.event.metadata?.actionId === actionId)
  return {
    sent: enqueued?.event.metadata?.at ?? Number.NaN,
    due: (enqueued?.event.content as { availableAt?: number } | undefined)?.availableAt ?? Number.NaN,
    done: completed?.event.metadata?.at ?? Number.NaN,
  }
}

describe('delivery', () => {
  it('retries a failing action with backoff until it succeeds', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'flaky', type: 'flaky', payload: { failTimes: 2 } })
    await eventually(async () => ofType(await events(workflowId), 'succeeded').length === 1, 10_000, 'success')
    const ev = await events(workflowId)
    const failed = ofType(ev, 'action.failed')
    expect(failed).toHaveLength(2)
    expect(ofType(ev, 'succeeded')[0]?.event.content).toEqual({ attempt: 3 })
    // backoff: 50 ms then 100 ms (jitter 0), measured between failure events' scheduled times
    const retryAt = failed.map((f) => (f.event.content as { retryAt: number }).retryAt - (f.event.metadata?.at ?? 0))
    expect(retryAt[0]).toBeGreaterThanOrEqual(45)
    expect(retryAt[1]).toBeGreaterThanOrEqual(95)
    // The agent's event streams live while the action runs (its promise settles
    // later), so it can be read before the commit that counts the action done.
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'committed')
    expect((await client.getStatus(workflowId))?.counts).toMatchObject({ done: 1, dead: 0, queued: 0 })
  })

  it('dead-letters after maxAttempts with the reason', async () => {
    const { workflowId, actionId } = await client.startWorkflow({ agent: 'flaky', type: 'throw' })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'dead letter')
    const [d] = await client.deadLetters(workflowId)
    expect(d).toMatchObject({ actionId, agent: 'flaky', type: 'throw', attempt: 3 })
    expect(d?.error).toContain('always fails')
    expect(ofType(await events(workflowId), 'action.failed')).toHaveLength(2)
    expect(ofType(await events(workflowId), 'action.dead')).toHaveLength(1)
    // the actor still works after its failures (restored from the last committed snapshot)
    await client.sendAction(workflowId, 'flaky', 'flaky', { failTimes: 0 })
    await eventually(async () => ofType(await events(workflowId), 'succeeded').length === 1, 10_000, 'recovery')
  })

  it('aborts an action that outlives its timeout and retries it', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'flaky', type: 'hang' })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 15_000, 'timeouts to dead letter')
    const failed = ofType(await events(workflowId), 'action.failed')
    expect(failed).toHaveLength(2)
    expect(JSON.stringify(failed[0]?.event.content)).toContain('timed out after 400 ms')
  })

  it('dead-letters an action the machine does not accept in its state, and keeps serving', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'finish' })
    await eventually(async () => (await client.getStatus(workflowId))?.status === 'completed', 10_000, 'completion')
    const { workflowId: wf2 } = await client.startWorkflow({ agent: 'echo', type: 'echo', payload: { text: 'abc' } })
    await client.sendAction(wf2, 'echo', 'echo', { text: 'x' }, { validate: false })
    await eventually(async () => (await client.deadLetters(wf2)).length + (await client.getStatus(wf2))!.counts.done === 2, 10_000, 'both handled')
    // the second echo arrives while the first has finished: echo is idle again, so both complete
    expect((await client.getStatus(wf2))?.counts.done).toBe(2)
    const { workflowId: wf3 } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    await client.sendAction(wf3, 'counter', 'nonsense', null, { validate: false })
    await eventually(async () => (await client.deadLetters(wf3)).length === 1, 10_000, 'rejection')
    const [d] = await client.deadLetters(wf3)
    expect(d?.error).toMatch(/does not accept action 'nonsense'/)
    expect(d?.attempt).toBe(1)
  })

  it('delivers delayed actions no earlier than asked (durable timers)', async () => {
    const { workflowId, actionId: later } = await client.startWorkflow({ agent: 'counter', type: 'later' })
    await eventually(async () => ((await client.getStatus(workflowId))?.counts.done ?? 0) === 2, 10_000, 'delayed ping')
    const sentBack = ofType(await events(workflowId), 'action.enqueued').map((e) => (e.event.content as { actionId: string }).actionId).filter((id) => id !== later)
    expect(sentBack).toHaveLength(1)
    const fromAgent = await timeline(workflowId, sentBack[0] as string)
    const { actionId } = await client.sendAction(workflowId, 'counter', 'ping', { i: 'x' }, { delayMs: 500 })
    await eventually(async () => ofType(await events(workflowId), 'action.completed').some((e) => e.event.metadata?.actionId === actionId), 10_000, 'delayed send')
    const fromClient = await timeline(workflowId, actionId)
    console.log(`delayed actions committed ${fromAgent.done - fromAgent.sent} ms (asked 300) and ${fromClient.done - fromClient.sent} ms (asked 500) after they were sent`)
    // Due exactly the delay after they were stored, and run no earlier than that.
    expect(fromAgent.due - fromAgent.sent).toBe(300)
    expect(fromAgent.done).toBeGreaterThanOrEqual(fromAgent.due)
    expect(fromClient.due - fromClient.sent).toBe(500)
    expect(fromClient.done).toBeGreaterThanOrEqual(fromClient.due)
  })

  it('measures a delayed action\'s queue wait from when it came due, not from its send', async () => {
    // A runtime of its own, so that its histogram holds this one action.
    const own = testConfig()
    const alone = await startRuntime({ agents: [counter], config: own, metricsPort: false })
    const c = TroupeClient.connect(own)
    try {
      const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
      await eventually(async () => ((await c.getStatus(workflowId))?.counts.done ?? 0) === 1, 10_000, 'first ping')
      const wait = async (): Promise<{ sum: number; count: number }> => {
        const m = ((await alone.metrics.registry.getSingleMetric('troupe_queue_wait_seconds')?.get())?.values ?? []) as { metricName?: string; value: number }[]
        const of = (name: string): number => m.filter((v) => v.metricName === name).reduce((a, v) => a + v.value, 0)
        return { sum: of('troupe_queue_wait_seconds_sum'), count: of('troupe_queue_wait_seconds_count') }
      }
      const before = await wait()
      await c.sendAction(workflowId, 'counter', 'ping', { i: 2 }, { delayMs: 6000 })
      await eventually(async () => ((await c.getStatus(workflowId))?.counts.done ?? 0) === 2, 20_000, 'delayed ping')
      const after = await wait()
      expect(after.count - before.count).toBe(1)
      // Its six seconds of delay were no wait for a worker (it counted them all);
      // what is left is how long a due action took to start, ms on an idle machine.
      expect(after.sum - before.sum).toBeLessThan(4)
    } finally {
      await alone.stop()
      await c.close()
    }
  })

  it('cancel drops queued actions, aborts the running one, and nothing commits after', async () => {
    const { workflowId, actionId: first } = await client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms: 5_000, i: 1 } })
    const { actionId: second } = await client.sendAction(workflowId, 'slow', 'work', { ms: 10, i: 2 })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.slow === 'working', 10_000, 'working')
    // The second action is either still queued (dropped here) or claimed with the
    // first in one batch (then cancelled by the aborted activation's commit).
    const { dropped } = await client.cancelWorkflow(workflowId, 'test')
    expect(dropped).toBeLessThanOrEqual(1)
    await eventually(() => Promise.resolve(rt.workers.get('slow')?.active.size === 0), 10_000, 'aborted')
    const st = await client.getStatus(workflowId)
    expect(st?.status).toBe('cancelled')
    expect(st?.agents.counter).toBeUndefined()
    const ev = await events(workflowId)
    expect(ofType(ev, 'workflow.cancelled')).toHaveLength(1)
    expect(ofType(ev, 'action.completed')).toHaveLength(0)
    for (const id of [first, second]) {
      const st = JSON.parse((await client.redis.hget(client.keys.actions(workflowId), `${id}:st`)) ?? '{}') as { status: string }
      expect(st.status).toBe('cancelled')
    }
    await expect(client.sendAction(workflowId, 'slow', 'work', {})).rejects.toMatchObject({ code: 'workflow_ended' })
    await expect(client.cancelWorkflow(workflowId)).rejects.toMatchObject({ code: 'workflow_ended' })
    // Agent code that keeps streaming after the cancel appends nothing: the final event stays last.
    const late = await emitEvents({ redis: client.redis, keys: client.keys, cfg }, workflowId, [encodeEvent({ workflowId, type: 'token', agent: 'slow', content: 'late' })])
    expect(late.first).toBe('')
    expect((await events(workflowId)).at(-1)?.event.type).toBe('workflow.cancelled')
  })

  it('fails the workflow from agent code', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'bad' })
    await eventually(async () => (await client.getStatus(workflowId))?.status === 'failed', 10_000, 'failure')
    expect((await client.getStatus(workflowId))?.error).toBe('asked to fail')
  })
})

describe('bad input', () => {
  it('rejects ids, names and types that could break keys', async () => {
    for (const id of ['', 'a b', 'x{y}', 'a:b', 'é', 'x'.repeat(65), '\n']) {
      await expect(client.startWorkflow({ agent: 'counter', type: 'ping', workflowId: id })).rejects.toMatchObject({ code: 'bad_id' })
    }
    for (const name of ['', 'a b', 'a:b', '{x}']) {
      await expect(client.sendAction('abc', name, 'ping')).rejects.toMatchObject({ code: 'bad_agent' })
    }
    await expect(client.sendAction('abc', 'counter', 'x y')).rejects.toMatchObject({ code: 'bad_type' })
    await expect(client.sendAction('abc', 'counter', 'ping', {}, { actionId: 'a:b' })).rejects.toMatchObject({ code: 'bad_id' })
  })

  it('refuses delays and deadlines too far out to be stored as due times', async () => {
    // 1e20 ms overflowed the scripts' whole-millisecond due time and came due at once.
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    for (const delayMs of [1e20, MAX_DELAY_MS + 1, -1, Number.NaN]) {
      await expect(client.sendAction(workflowId, 'counter', 'ping', {}, { delayMs })).rejects.toMatchObject({ code: 'config' })
    }
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', deadlineMs: 1e20 })).rejects.toMatchObject({ code: 'config' })
    // From agent code: the action that asked for it is rejected with the reason, and nothing is queued.
    const { actionId: asked } = await client.sendAction(workflowId, 'counter', 'laterBy', { ms: 1e20 })
    const dead = await eventually(async () => (await client.deadLetters(workflowId)).find((d) => d.actionId === asked), 10_000, 'rejected')
    expect(dead.error).toMatch(/delayMs .* beyond/)
    expect(await client.redis.zcard(client.keys.mailbox(workflowId, 'counter'))).toBe(0)
    const { actionId } = await client.sendAction(workflowId, 'counter', 'ping', {}, { delayMs: MAX_DELAY_MS })
    const st = JSON.parse((await client.redis.hget(client.keys.actions(workflowId), `${actionId}:st`)) ?? '{}') as { availableAt: number }
    expect(st.availableAt).toBeGreaterThan(Date.now() + MAX_DELAY_MS - 60_000)
  })

  it('sends an action once when it is sent again with the same actionId', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping' })
    const a = await client.sendAction(workflowId, 'counter', 'ping', {}, { actionId: 'once-1', delayMs: 3_600_000 })
    const b = await client.sendAction(workflowId, 'counter', 'ping', {}, { actionId: 'once-1', delayMs: 3_600_000 })
    expect(a.actionId).toBe('once-1')
    expect(b.actionId).toBe('once-1')
    expect(await client.redis.zcard(client.keys.mailbox(workflowId, 'counter'))).toBe(1)
  })

  it('rejects unknown agents and action types with the known ones listed', async () => {
    await expect(client.startWorkflow({ agent: 'ghost', type: 'ping' })).rejects.toThrow(/unknown agent 'ghost'.*counter/)
    await expect(client.startWorkflow({ agent: 'counter', type: 'zap' })).rejects.toThrow(/does not handle action 'zap'.*ping/)
  })

  it('rejects payloads that are not JSON or too large, and duplicates', async () => {
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', payload: cyclic })).rejects.toMatchObject({ code: 'bad_payload' })
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', payload: { big: 'x'.repeat(1024 * 1024) } })).rejects.toMatchObject({ code: 'payload_too_large' })
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { __proto__: { polluted: true }, constructor: { prototype: { x: 1 } } } })
    await expect(client.startWorkflow({ agent: 'counter', type: 'ping', workflowId })).rejects.toMatchObject({ code: 'workflow_exists' })
    await expect(client.sendAction('nosuchwf', 'counter', 'ping')).rejects.toMatchObject({ code: 'workflow_not_found' })
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('takes a payload nested as deep as JSON can encode, or refuses it as bad_payload, never another error', async () => {
    const nested = (d: number): unknown => JSON.parse(`${'['.repeat(d)}${']'.repeat(d)}`)
    const encodes = (d: number): boolean => {
      try {
        JSON.stringify(nested(d))
        return true
      } catch {
        return false
      }
    }
    // The deepest nesting this process encodes (the stack decides): a payload just
    // inside it passed the client's check and then overflowed building the action
    // record around it, one level deeper (a RangeError, a 500 at the gateway).
    let lo = 10
    let hi = 1_000_000
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2)
      if (encodes(mid)) lo = mid
      else hi = mid
    }
    // The client runs from a shallower stack than this loop (after an await), so
    // its limit lies a little above: walk up until it refuses a few in a row.
    const outcomes = new Set<string>()
    let refused = 0
    for (let d = lo - 30; refused < 5 && d <= lo + 5000; d++) {
      try {
        await client.startWorkflow({ agent: 'counter', type: 'ping', payload: nested(d), validate: false })
        outcomes.add('started')
        refused = 0
      } catch (err) {
        expect(err, `depth ${d}`).toMatchObject({ code: 'bad_payload' })
        outcomes.add('bad_payload')
        refused++
      }
    }
    expect([...outcomes].sort()).toEqual(['bad_payload', 'started'])
  })

  it('survives malformed records written into queues by hand', async () => {
    const k = client.keys
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 0 } })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'first ping')
    const r = client.redis
    // a mailbox member with no record, a record that is not JSON, and a bogus ready hint
    await r.zadd(k.mailbox(workflowId, 'counter'), 0, '000000000001:ghost')
    await r.hset(k.actions(workflowId), 'junk', '{not json', 'junk:st', JSON.stringify({ status: 'queued', attempt: 0, seq: 2, availableAt: 0 }))
    await r.zadd(k.mailbox(workflowId, 'counter'), 1, '000000000002:junk')
    await r.zadd(k.ready('counter'), 0, 'bad{id}')
    await r.zadd(k.ready('counter'), 0, workflowId)
    await client.sendAction(workflowId, 'counter', 'ping', { i: 1 })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 10_000, 'next ping after junk')
    const st = await client.getStatus(workflowId)
    expect(st?.counts.malformed).toBe(1)
    const dead = await client.deadLetters(workflowId)
    expect(dead.map((d) => d.actionId)).toEqual(['junk'])
    expect(dead[0]?.error).toMatch(/malformed action record/)
    expect(await r.zscore(k.ready('counter'), 'bad{id}')).toBeNull()
  })
})
