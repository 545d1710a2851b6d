// A fan-in (sendToAgent's join): actions sent to one agent under one key wait in
// its mailbox until the last of them is sent, then become due together, in the
// order they were sent, so the receiver takes them in one activation; a join
// that is never completed lets its actions go at its deadline; a bad join fails
// the action that asked for it; a commit that completed a join but whose reply
// was lost (unknown outcome) still lets the join's actions go at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { assign, setup } from 'xstate'
import { defineAgent, MAX_DELAY_MS, sendToAgent, startRuntime, TroupeClient, type ActionEvent, type Runtime, type StreamedEvent } from '../../runtime/index.ts'
import { scriptFor } from '../../runtime/redis/scripts.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { startReplyCutter } from '../helpers/reply-cutter.ts'

type Ask = ActionEvent<'research', { i: number; key: string; of: unknown; timeoutMs?: number; delayMs?: number }>
type Finding = ActionEvent<'finding', { i: number }>

/** Sends one finding to the sink per `research`, under the join the payload names. */
const researcher = (name: string) => defineAgent({
  name,
  maxAttempts: 1,
  machine: setup({ types: { events: {} as Ask } }).createMachine({
    on: {
      research: {
        actions: sendToAgent('sink', 'finding', ({ event }: { event: Ask }) => ({ i: event.payload.i }), {
          join: ({ event }: { event: Ask }) => ({ key: event.payload.key, of: event.payload.of as number, timeoutMs: event.payload.timeoutMs }),
          delayMs: ({ event }: { event: Ask }) => event.payload.delayMs ?? 0,
        }),
      },
    },
  }),
})

/** Records the findings in the order delivered. */
const sink = defineAgent({
  name: 'sink',
  machine: setup({ types: { context: {} as { seen: number[] }, events: {} as Finding } }).createMachine({
    context: { seen: [] },
    on: { finding: { actions: assign({ seen: ({ context, event }) => [...context.seen, event.payload.i] }) } },
  }),
})

const cfg = testConfig()
let rt: Runtime
let c: TroupeClient
beforeAll(async () => {
  rt = await startRuntime({ agents: [researcher('r1'), researcher('r2'), researcher('r3'), sink], config: cfg, metricsPort: false })
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
  await rt.stop()
})

const sinkCompleted = async (wf: string): Promise<StreamedEvent[]> =>
  (await c.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.completed' && e.event.metadata?.agent === 'sink')
const seen = async (wf: string): Promise<number[]> =>
  (JSON.parse((await c.redis.hget(c.keys.actor(wf, 'sink'), 'snapshot')) ?? '{"context":{"seen":[]}}') as { context: { seen: number[] } }).context.seen
/** Waits until `n` research actions are done, so their sends are committed. */
const researched = (wf: string, n: number) =>
  eventually(async () => ((await c.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.completed' && e.event.metadata?.agent !== 'sink').length >= n), 10_000, `${n} research actions done`)
/** Event ids are <activation>.<commit>.<n>: the commit an event came from. */
const commitOf = (e: StreamedEvent): string => e.event.id.split('.').slice(0, 2).join('.')

describe('join', () => {
  it('holds the findings until the last is sent, then delivers them together and in order', async () => {
    const ask = (i: number) => ({ i, key: 'findings', of: 3, timeoutMs: 600_000 })
    const { workflowId: wf } = await c.startWorkflow({ agent: 'r1', type: 'research', payload: ask(0) })
    // One after the other: the order of the sends is the order of delivery.
    await researched(wf, 1)
    await c.sendAction(wf, 'r2', 'research', ask(1))
    await researched(wf, 2)
    // Both wait in the sink's mailbox at the join's deadline, not due now.
    const waiting = await c.redis.zrange(c.keys.mailbox(wf, 'sink'), '0', '-1', 'WITHSCORES')
    expect(waiting.length).toBe(4)
    for (const score of [waiting[1], waiting[3]]) expect(Number(score)).toBeGreaterThan(Date.now() + 500_000)
    expect(await sinkCompleted(wf)).toEqual([])
    const enqueued = (await c.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.enqueued' && e.event.metadata?.agent === 'sink')
    expect(enqueued.map((e) => (e.event.content as { join?: unknown }).join)).toEqual([{ key: 'findings', of: 3 }, { key: 'findings', of: 3 }])
    // The status says what holds them (they count as queued).
    const held = await c.getStatus(wf)
    expect(held?.joins).toEqual([{ agent: 'sink', key: 'findings', waiting: 2, until: Number(waiting[1]) }])
    expect(held?.counts.queued).toBe(2)

    await c.sendAction(wf, 'r3', 'research', ask(2))
    await eventually(async () => (await sinkCompleted(wf)).length === 3, 10_000, 'three findings delivered')
    const done = await sinkCompleted(wf)
    expect(new Set(done.map(commitOf)).size).toBe(1)
    expect(await seen(wf)).toEqual([0, 1, 2])
    expect(await c.redis.hget(c.keys.status(wf), 'join:sink:findings')).toBeNull()
    expect((await c.getStatus(wf))?.joins).toBeUndefined()
    const st = JSON.parse((await c.redis.hget(c.keys.actions(wf), `${(done[0]?.event.metadata?.actionId) ?? ''}:st`)) ?? '{}') as { status: string }
    expect(st.status).toBe('done')

    // The key is free again: a second round under it is held afresh.
    await c.sendAction(wf, 'r1', 'research', { i: 3, key: 'findings', of: 2 })
    await researched(wf, 4)
    const again = await c.redis.zrange(c.keys.mailbox(wf, 'sink'), '0', '-1', 'WITHSCORES')
    expect(again.length).toBe(2)
    expect(Number(again[1])).toBeGreaterThan(Date.now() + 500_000)
    await c.sendAction(wf, 'r2', 'research', { i: 4, key: 'findings', of: 2 })
    await eventually(async () => (await sinkCompleted(wf)).length === 5, 10_000, 'second round delivered')
    expect(await seen(wf)).toEqual([0, 1, 2, 3, 4])
  })

  it('lets what it holds go at its deadline when the join is never completed, and a straggler through at once', async () => {
    const ask = (i: number) => ({ i, key: 'partial', of: 3, timeoutMs: 1000 })
    const { workflowId: wf } = await c.startWorkflow({ agent: 'r1', type: 'research', payload: ask(0) })
    await researched(wf, 1)
    await c.sendAction(wf, 'r2', 'research', ask(1))
    await eventually(async () => (await sinkCompleted(wf)).length === 2, 15_000, 'two findings delivered after the timeout')
    expect(await seen(wf)).toEqual([0, 1])
    // Both were held to one deadline, so one claim took them.
    expect(new Set((await sinkCompleted(wf)).map(commitOf)).size).toBe(1)
    expect((await c.getStatus(wf))?.status).toBe('waiting')

    // The third, late: due as it is sent, not held for a new timeout of its own.
    await c.sendAction(wf, 'r3', 'research', ask(2))
    await researched(wf, 3)
    const late = (await c.readEvents(wf, '0', 1000)).filter((e) => e.event.type === 'action.enqueued' && e.event.metadata?.agent === 'sink').at(-1)
    expect((late?.event.content as { availableAt?: number }).availableAt).toBe(late?.event.metadata?.at)
    await eventually(async () => (await sinkCompleted(wf)).length === 3, 10_000, 'the straggler delivered')
    expect(await seen(wf)).toEqual([0, 1, 2])
    // The third of three closes the key.
    expect(await c.redis.hget(c.keys.status(wf), 'join:sink:partial')).toBeNull()
  })

  it('forgets a timed-out join once no straggler can come (a key per round leaves no field per round)', async () => {
    const rounds = 20
    const ask = (i: number) => ({ i, key: `round-${i}`, of: 2, timeoutMs: 200 })
    const { workflowId: wf } = await c.startWorkflow({ agent: 'r1', type: 'research', payload: ask(0) })
    // One finding per round of two: every round times out and lets its finding go.
    for (let i = 1; i < rounds; i++) await c.sendAction(wf, 'r1', 'research', ask(i))
    await eventually(async () => (await sinkCompleted(wf)).length === rounds, 15_000, 'every round let go')
    const joinFields = async (): Promise<string[]> => (await c.redis.hkeys(c.keys.status(wf))).filter((f) => f.startsWith('join'))
    // A round's field is kept through its straggler window (deadline + timeout); the
    // workflow's next commits after that delete it. Each try is such a commit (a
    // join of one: complete at once, no field of its own).
    let n = rounds
    await eventually(async () => {
      await c.sendAction(wf, 'r1', 'research', { i: n++, key: 'single', of: 1 })
      await researched(wf, n)
      if ((await joinFields()).length === 0) return true
      await new Promise((r) => setTimeout(r, 100))
      return false
    }, 15_000, 'the timed-out joins\' fields gone')
    expect((await c.getStatus(wf))?.joins).toBeUndefined()
  })

  it('lists no join for a workflow that ended, since it dropped what they held', async () => {
    const { workflowId: wf } = await c.startWorkflow({ agent: 'r1', type: 'research', payload: { i: 0, key: 'k', of: 2, timeoutMs: 600_000 } })
    await researched(wf, 1)
    expect((await c.getStatus(wf))?.joins?.length).toBe(1)
    await c.cancelWorkflow(wf, 'test')
    expect((await c.getStatus(wf))?.joins).toBeUndefined()
  })

  it('fails the action whose join is malformed, and sends nothing for it', async () => {
    const { workflowId: wf } = await c.startWorkflow({ agent: 'r1', type: 'research', payload: { i: 0, key: 'k', of: 0 } })
    const cases: [Ask['payload'], RegExp][] = [
      [{ i: 1, key: '', of: 2 }, /join\.key/],
      [{ i: 2, key: 'k', of: 2.5 }, /join\.of/],
      [{ i: 3, key: 'k', of: '3' }, /join\.of/],
      [{ i: 4, key: 'k', of: 2, timeoutMs: -5 }, /join\.timeoutMs/],
      [{ i: 5, key: 'k', of: 2, delayMs: 1000 }, /cannot be combined with delayMs/],
      [{ i: 6, key: 'k'.repeat(201), of: 2 }, /join\.key/],
      [{ i: 7, key: 'k', of: 1001 }, /join\.of/],
      [{ i: 8, key: 'k', of: 2, timeoutMs: MAX_DELAY_MS + 1 }, /join\.timeoutMs/],
    ]
    const ids = [(await c.readEvents(wf, '0', 10))[1]?.event.metadata?.actionId]
    for (const [payload] of cases) ids.push((await c.sendAction(wf, 'r1', 'research', payload)).actionId)
    const dead = await eventually(async () => {
      const d = await c.deadLetters(wf)
      return d.length === ids.length ? d : null
    }, 10_000, 'every bad join dead-lettered')
    const errorOf = (id: unknown): string => dead.find((d) => d.actionId === id)?.error ?? ''
    expect(errorOf(ids[0])).toMatch(/join\.of/)
    cases.forEach(([, re], n) => expect(errorOf(ids[n + 1])).toMatch(re))
    expect(await c.redis.zcard(c.keys.mailbox(wf, 'sink'))).toBe(0)
  })
})

describe('join, completed by a commit whose reply is lost', () => {
  it('lets what it holds go at once, not at its deadline', async () => {
    // The runtime talks to Redis through a proxy that can drop one reply.
    const proxy = await startReplyCutter(cfg.redisUrl)
    const own = testConfig({ redisUrl: proxy.url })
    const viaProxy = await startRuntime({ agents: [researcher('r1'), researcher('r2'), sink], config: own, metricsPort: false, heartbeatMs: 60_000 })
    const direct = TroupeClient.connect(testConfig({ namespace: own.namespace }))
    try {
      const commitSha = scriptFor('commit').sha
      // A first join completed normally, so the commit script is loaded on the connection (its load would be answered first).
      const { workflowId: warm } = await direct.startWorkflow({ agent: 'r1', type: 'research', payload: { i: 0, key: 'warm', of: 1 } })
      await eventually(async () => (await direct.getStatus(warm))?.counts.done === 2, 10_000, 'the warm-up join delivered')

      const ask = (i: number) => ({ i, key: 'findings', of: 2, timeoutMs: 600_000 })
      const { workflowId: wf } = await direct.startWorkflow({ agent: 'r1', type: 'research', payload: ask(1) })
      await eventually(async () => (await direct.getStatus(wf))?.counts.done === 1, 10_000, 'the first research done')
      // r2's commit completes the join and runs; the connection drops before its
      // reply (the pre-hint written before it, at the join's deadline, got its
      // reply), so ioredis fails the commit and the runtime cannot tell whether it ran.
      const cut = proxy.cutReplyOf((args) => args[0]?.toLowerCase() === 'evalsha' && args[1] === commitSha && args.includes(wf) && args.includes('r2'))
      await direct.sendAction(wf, 'r2', 'research', ask(2))
      await cut
      // Held at the deadline, ten minutes away, unless the failed commit's joined targets were made due.
      await eventually(async () => (await direct.getStatus(wf))?.counts.done === 4, 15_000, 'the sink ran both findings')
      const snap = JSON.parse((await direct.redis.hget(direct.keys.actor(wf, 'sink'), 'snapshot')) ?? '{}') as { context: { seen: number[] } }
      expect(snap.context.seen).toEqual([1, 2])
    } finally {
      await direct.close()
      await viaProxy.stop()
      await proxy.close()
    }
  })
})
