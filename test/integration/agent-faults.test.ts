// Agent code failing in the ways XState does not catch for us, and activations cut
// short, each ending as a clear outcome for the action concerned only: a guard that
// throws, a state that cannot be stored, a drain that times out, a workflow ended
// by one agent while another is still working. The locks here last a minute, so
// an activation that threw out of its run and held its lock until the TTL (what
// the first two did) makes these tests time out instead of passing late.
import { runInNewContext } from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { assign, fromPromise, raise, setup, spawnChild } from 'xstate'
import { completeWorkflow, defineAgent, startRuntime, TroupeClient, type ActionEvent, type Runtime } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 60_000 })
const opened: { stop(): Promise<void> }[] = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.stop()
})

async function runtime(agents: Parameters<typeof startRuntime>[0]['agents'], drainTimeoutMs?: number): Promise<Runtime> {
  const rt = await startRuntime({ agents, config: cfg, metricsPort: false, ...(drainTimeoutMs ? { drainTimeoutMs } : {}) })
  opened.push(rt)
  return rt
}

function client(): TroupeClient {
  const c = TroupeClient.connect(cfg)
  opened.push({ stop: () => c.close() })
  return c
}

async function context<T>(c: TroupeClient, wf: string, agent: string): Promise<T> {
  const raw = await c.redis.hget(c.keys.actor(wf, agent), 'snapshot')
  return (JSON.parse(raw ?? '{}') as { context: T }).context
}

type Take = ActionEvent<'take', { items?: number[] }>

describe('agent code failing where XState does not catch it', () => {
  it('fails only the action whose guard throws; the actions around it in the batch are done', async () => {
    const picky = defineAgent({
      name: 'picky',
      maxAttempts: 1,
      machine: setup({
        types: { context: {} as { taken: number }, events: {} as Take },
        guards: { hasItems: ({ event }) => (event.payload.items as number[]).length > 0 },
      }).createMachine({
        context: { taken: 0 },
        on: { take: { guard: 'hasItems', actions: assign({ taken: ({ context }) => context.taken + 1 }) } },
      }),
    })
    const c = client()
    // Queued before any runtime runs, so one activation claims all three together.
    const { workflowId: wf } = await c.startWorkflow({ agent: 'picky', type: 'take', payload: { items: [1] }, validate: false })
    await c.sendAction(wf, 'picky', 'take', {}, { validate: false })
    await c.sendAction(wf, 'picky', 'take', { items: [2] }, { validate: false })
    await runtime([picky])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 2, 20_000, 'the two good actions')
    const dead = await c.deadLetters(wf)
    expect(dead).toHaveLength(1)
    expect(dead[0]?.error).toMatch(/Cannot read properties of undefined/)
    expect((await context<{ taken: number }>(c, wf, 'picky')).taken).toBe(2)
  })

  it('fails the action whose state cannot be stored, keeps the one before it and redelivers the one after', async () => {
    const add = { target: 'added', actions: 'count' } as const
    const keeper = defineAgent({
      name: 'keeper',
      maxAttempts: 1,
      machine: setup({
        types: { context: {} as { added: number; big: unknown }, events: {} as ActionEvent<'add'> | ActionEvent<'bad'> },
        actions: { count: assign({ added: ({ context }) => context.added + 1 }) },
      }).createMachine({
        context: { added: 0, big: null },
        initial: 'fresh',
        states: {
          fresh: { on: { add } },
          // JSON.stringify throws on a BigInt: the snapshot after `bad` cannot be written.
          added: { on: { add, bad: { target: 'broken', actions: assign({ big: () => BigInt(1) }) } } },
          broken: { on: { add } },
        },
      }),
    })
    const c = client()
    const { workflowId: wf } = await c.startWorkflow({ agent: 'keeper', type: 'add', validate: false })
    await c.sendAction(wf, 'keeper', 'bad', null, { validate: false })
    await c.sendAction(wf, 'keeper', 'add', null, { validate: false })
    // A second workflow whose batch ends with the bad action: nothing after it writes the state.
    const { workflowId: last } = await c.startWorkflow({ agent: 'keeper', type: 'add', validate: false })
    await c.sendAction(last, 'keeper', 'bad', null, { validate: false })
    await runtime([keeper])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 2, 20_000, 'both adds')
    const dead = await c.deadLetters(wf)
    expect(dead).toHaveLength(1)
    expect(dead[0]?.error).toMatch(/cannot be stored: .*BigInt/)
    expect(await context<{ added: number; big: unknown }>(c, wf, 'keeper')).toEqual({ added: 2, big: null })

    await eventually(async () => (await c.deadLetters(last)).length === 1, 20_000, 'the bad action of the second workflow')
    // The status shows the state that was stored, the one before the bad action.
    expect((await c.getStatus(last))?.agents.keeper).toBe('added')
    expect(await context<{ added: number }>(c, last, 'keeper')).toEqual({ added: 1, big: null })
  })
})

describe('XState features a Troupe actor cannot keep between actions', () => {
  type Go = ActionEvent<'go'>
  it('dead-letters an action that leaves an `after` timer or a delayed raise pending, naming sendToSelf, instead of losing the timer', async () => {
    const waiter = defineAgent({
      name: 'waiter',
      maxAttempts: 3,
      machine: setup({ types: { events: {} as Go | ActionEvent<'tick'> | { type: 'tock' } } }).createMachine({
        initial: 'idle',
        states: {
          // The actor is persisted and let go after this action: the timer would die with it.
          idle: { on: { go: 'waiting', tick: { actions: raise({ type: 'tock' }, { delay: 200 }) } } },
          waiting: { after: { 300: 'fired' } },
          fired: {},
        },
      }),
    })
    const c = client()
    const { workflowId: wf } = await c.startWorkflow({ agent: 'waiter', type: 'go', validate: false })
    const { workflowId: wf2 } = await c.startWorkflow({ agent: 'waiter', type: 'tick', validate: false })
    await runtime([waiter])
    await eventually(async () => (await c.deadLetters(wf)).length === 1 && (await c.deadLetters(wf2)).length === 1, 20_000, 'both actions dead-lettered')
    const [dead] = await c.deadLetters(wf)
    expect(dead?.error).toMatch(/delayed XState event .*xstate\.after\.300.*sendToSelf/)
    // At once, not after three attempts: a retry would leave the same timer.
    expect(dead?.attempt).toBe(1)
    expect((await c.deadLetters(wf2))[0]?.error).toMatch(/delayed XState event 'tock' .*sendToSelf/)
    // The state before the action stands; nothing fires later.
    await new Promise((r) => setTimeout(r, 500))
    expect((await c.getStatus(wf))?.agents.waiter ?? 'idle').toBe('idle')
  })

  it('settles an action whose spawned child has finished while the state stays (a done child is not running)', async () => {
    let ran = 0
    const spawner = defineAgent({
      name: 'spawner',
      maxAttempts: 1,
      actionTimeoutMs: 5_000,
      machine: setup({
        types: { events: {} as Go },
        actors: { job: fromPromise(async () => { ran++; await new Promise((r) => setTimeout(r, 50)); return 1 }) },
      }).createMachine({ on: { go: { actions: spawnChild('job', { id: 'job' }) } } }),
    })
    const c = client()
    const { workflowId: wf } = await c.startWorkflow({ agent: 'spawner', type: 'go', validate: false })
    await runtime([spawner])
    // Before: the finished child still counted as running, so the action timed out.
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 1 || (await c.deadLetters(wf)).length > 0, 20_000, 'the action to end')
    expect(await c.deadLetters(wf)).toEqual([])
    expect(ran).toBe(1)
  })

  it('refuses context that JSON would silently change (a Map, a Set, a Date, a class instance) instead of storing it mangled', async () => {
    class Money { constructor(readonly cents: number) {} }
    const holders = {
      map: () => new Map([['a', 1]]),
      set: () => new Set([1]),
      date: () => new Date(0),
      money: () => new Money(1),
    } as const
    type Kind = keyof typeof holders
    const hoarder = defineAgent({
      name: 'hoarder',
      // Refused at the first attempt all the same: another would store the same value.
      maxAttempts: 3,
      machine: setup({ types: { context: {} as { kept: number; held: unknown }, events: {} as ActionEvent<'keep'> | ActionEvent<'hold', { kind: Kind }> } }).createMachine({
        context: { kept: 0, held: null },
        on: {
          keep: { actions: assign({ kept: ({ context }) => context.kept + 1 }) },
          hold: { actions: assign({ held: ({ event }) => holders[event.payload.kind]() }) },
        },
      }),
    })
    const c = client()
    const wfs: Record<string, string> = {}
    for (const kind of Object.keys(holders) as Kind[]) {
      const { workflowId } = await c.startWorkflow({ agent: 'hoarder', type: 'keep', validate: false })
      await c.sendAction(workflowId, 'hoarder', 'hold', { kind }, { validate: false })
      wfs[kind] = workflowId
    }
    await runtime([hoarder])
    const names: Record<Kind, RegExp> = { map: /a Map/, set: /a Set/, date: /a Date/, money: /a Money/ }
    for (const [kind, wf] of Object.entries(wfs) as [Kind, string][]) {
      await eventually(async () => (await c.deadLetters(wf)).length === 1, 20_000, `the ${kind} action dead-lettered`)
      const [dead] = await c.deadLetters(wf)
      expect(dead?.error).toMatch(names[kind])
      expect(dead?.attempt).toBe(1)
      expect(await context<{ kept: number; held: unknown }>(c, wf, 'hoarder')).toEqual({ kept: 1, held: null })
    }
  })
})

describe('XState features a Troupe actor keeps, with care', () => {
  it('stores an Error kept in context (the onError pattern) as its name and message, and a plain object from another realm as it is', async () => {
    const keeper = defineAgent({
      name: 'errkeeper',
      machine: setup({
        types: { context: {} as { error: unknown; foreign: unknown }, events: {} as ActionEvent<'go'> },
        actors: { boom: fromPromise(() => Promise.reject(new RangeError('out of range'))) },
      }).createMachine({
        context: { error: null, foreign: null },
        initial: 'idle',
        states: {
          idle: { on: { go: 'working' } },
          working: {
            invoke: { src: 'boom', onError: { target: 'failure', actions: assign({ error: ({ event }) => event.error, foreign: () => runInNewContext('({ a: [1, { b: 2 }] })') as unknown }) } },
          },
          failure: {},
        },
      }),
    })
    const c = client()
    const { workflowId: wf } = await c.startWorkflow({ agent: 'errkeeper', type: 'go', validate: false })
    await runtime([keeper])
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 1 || (await c.deadLetters(wf)).length > 0, 20_000, 'the action to end')
    expect(await c.deadLetters(wf)).toEqual([])
    // JSON alone stored the Error as {}.
    expect(await context<unknown>(c, wf, 'errkeeper')).toEqual({ error: { name: 'RangeError', message: 'out of range' }, foreign: { a: [1, { b: 2 }] } })
  })

  it('refuses an agent whose initial state arms an `after` timer, at its first action, instead of running the timer between actions', async () => {
    const early = defineAgent({
      name: 'early',
      maxAttempts: 3,
      machine: setup({ types: { events: {} as ActionEvent<'go'> } }).createMachine({
        initial: 'idle',
        states: { idle: { after: { 50: 'expired' }, on: { go: {} } }, expired: { on: { go: {} } } },
      }),
    })
    const c = client()
    const { workflowId: wf } = await c.startWorkflow({ agent: 'early', type: 'go', validate: false })
    await runtime([early])
    await eventually(async () => (await c.deadLetters(wf)).length === 1, 20_000, 'the action dead-lettered')
    const [dead] = await c.deadLetters(wf)
    expect(dead?.error).toMatch(/cannot start early: .*its initial state left a delayed XState event 'xstate\.after\.50\..*sendToSelf/)
    expect(dead?.attempt).toBe(1)
    expect(await c.redis.hget(c.keys.actor(wf, 'early'), 'snapshot')).toBeNull()
  })
})

describe('activations cut short', () => {
  it('hands an action aborted by the drain timeout back without spending an attempt', async () => {
    let mayFinish = false
    let started = 0
    const slow = defineAgent({
      name: 'slow',
      maxAttempts: 1,
      machine: setup({
        actors: {
          work: fromPromise(async ({ signal }) => {
            started++
            while (!mayFinish) {
              if (signal.aborted) throw signal.reason
              await new Promise((r) => setTimeout(r, 20))
            }
            return 'done'
          }),
        },
      }).createMachine({
        initial: 'idle',
        states: { idle: { on: { go: 'working' } }, working: { invoke: { src: 'work', onDone: 'finished', onError: 'idle' } }, finished: {} },
      }),
    })
    const c = client()
    const first = await runtime([slow], 300)
    const { workflowId: wf, actionId } = await c.startWorkflow({ agent: 'slow', type: 'go' })
    await eventually(() => Promise.resolve(started === 1), 20_000, 'the action to start')
    // Drains for 300 ms, then aborts the action still running.
    await first.stop()
    const st = JSON.parse((await c.redis.hget(c.keys.actions(wf), `${actionId}:st`)) ?? '{}') as { status?: string; attempt?: number }
    expect(st).toMatchObject({ status: 'queued', attempt: 0 })
    expect(await c.deadLetters(wf)).toEqual([])

    mayFinish = true
    await runtime([slow])
    await eventually(async () => (await c.getStatus(wf))?.agents.slow === 'finished', 20_000, 'the action run elsewhere')
    expect(await c.deadLetters(wf)).toEqual([])
    expect(started).toBe(2)
  })

  it('aborts another agent\'s running action when one agent completes the workflow', async () => {
    // XState aborts the promise's own signal when the actor stops, with a reason of its own.
    let abortedWith = ''
    const sleeper = defineAgent({
      name: 'sleeper',
      actionTimeoutMs: 600_000,
      machine: setup({
        actors: {
          sleep: fromPromise(({ signal }) => new Promise((_resolve, reject) => {
            signal.addEventListener('abort', () => {
              abortedWith = signal.reason instanceof Error ? signal.reason.message : String(signal.reason)
              reject(signal.reason as Error)
            })
          })),
        },
      }).createMachine({
        initial: 'idle',
        states: { idle: { on: { sleep: 'sleeping' } }, sleeping: { invoke: { src: 'sleep', onDone: 'idle', onError: 'idle' } } },
      }),
    })
    const finisher = defineAgent({
      name: 'finisher',
      machine: setup({}).createMachine({ on: { finish: { actions: completeWorkflow({ ok: true }) } } }),
    })
    const c = client()
    await runtime([sleeper, finisher])
    const { workflowId: wf, actionId } = await c.startWorkflow({ agent: 'sleeper', type: 'sleep' })
    await eventually(async () => (await c.getStatus(wf))?.agents.sleeper === 'sleeping', 20_000, 'the sleeper to start')
    await c.sendAction(wf, 'finisher', 'finish')
    // Without the abort it would sleep for its whole ten-minute timeout.
    await eventually(() => Promise.resolve(abortedWith !== ''), 20_000, 'the sleeper aborted')
    expect((await c.getStatus(wf))?.status).toBe('completed')
    await eventually(async () => {
      const st = JSON.parse((await c.redis.hget(c.keys.actions(wf), `${actionId}:st`)) ?? '{}') as { status?: string }
      return st.status === 'cancelled'
    }, 20_000, 'the sleeper\'s action cancelled')
  })
})

describe('send validation', () => {
  it('trusts a registered target for a while, but never an unknown agent or action type', async () => {
    const echo = defineAgent({ name: 'echo', machine: setup({}).createMachine({ initial: 'up', states: { up: { on: { ping: 'up' } } } }) })
    const c = client()
    await runtime([echo])
    const { workflowId: wf } = await c.startWorkflow({ agent: 'echo', type: 'ping' })
    // Gone from the registry: a send right after still goes (trusted), as it would have a moment earlier.
    await c.redis.hdel(c.keys.agents(), 'echo')
    await c.sendAction(wf, 'echo', 'ping')
    await expect(c.sendAction(wf, 'echo', 'pong')).rejects.toThrow(/unknown agent 'echo'/)
    await expect(c.sendAction(wf, 'ghost', 'ping')).rejects.toThrow(/unknown agent 'ghost'/)
  })
})

describe('defineAgent', () => {
  it('refuses an action timeout longer than Node can time (it would fire at once)', () => {
    const machine = setup({}).createMachine({})
    expect(() => defineAgent({ name: 'patient', machine, actionTimeoutMs: 2 ** 31 })).toThrow(/actionTimeoutMs must be an integer from 1 to 2147483647/)
    expect(defineAgent({ name: 'patient', machine, actionTimeoutMs: 2 ** 31 - 1 }).actionTimeoutMs).toBe(2 ** 31 - 1)
  })
})
