// The workflow status hash as enqueue.lua and commit.lua keep it: its counters,
// the agents listed (null until their first commit writes a state value), and
// running/waiting as the count of live actions says, after a mix of outcomes
// (done, a retry, a dead letter), sends to another agent and to the sender itself,
// and an action delayed by a minute (live, so the workflow is running).
import { afterEach, describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { defineAgent, sendToAgent, sendToSelf, startRuntime, TroupeClient, type ActionEvent } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ lockTtlMs: 10_000 })
const opened: { stop(): Promise<void> }[] = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.stop()
})

type Ev = ActionEvent<string, { n?: number }>

/**
 * `go`: moves to `busy` and sends itself `stay` and `sink` two `take`s in one
 * action; `park` the same with one `take` due in a minute; `stay` changes nothing.
 */
const hopper = defineAgent({
  name: 'hopper',
  machine: setup({ types: { events: {} as Ev } }).createMachine({
    initial: 'idle',
    states: {
      idle: {
        on: {
          go: { target: 'busy', actions: [sendToSelf('stay', {}), sendToAgent('sink', 'take', { n: 1 }), sendToAgent('sink', 'take', { n: 2 })] },
          park: { target: 'busy', actions: [sendToSelf('stay', {}), sendToAgent('sink', 'take', { n: 1 }, { delayMs: 60_000 })] },
        },
      },
      // An action, or XState's can() calls the transition a no-op and it is refused.
      busy: { on: { stay: { actions: () => undefined } } },
    },
  }),
})

/** Takes anything; a `take` of n 2 fails on its first attempt (retried), `boom` always (dead letter). */
const sink = defineAgent({
  name: 'sink',
  maxAttempts: 2,
  backoff: { initialMs: 50, maxMs: 50, jitter: 0 },
  machine: setup({ types: { events: {} as Ev } }).createMachine({
    initial: 'open',
    states: {
      open: {
        on: {
          take: {
            actions: ({ event }) => {
              if (event.payload.n === 2 && event.meta.attempt === 1) throw new Error('first attempt fails')
            },
          },
          boom: {
            actions: () => {
              throw new Error('always fails')
            },
          },
        },
      },
    },
  }),
})

describe('the status hash', () => {
  it('counts and lists what commits did, and a send to itself keeps the sender state it wrote', async () => {
    const rt = await startRuntime({ agents: [hopper, sink], config: cfg, metricsPort: false })
    opened.push(rt)
    const c = TroupeClient.connect(cfg)
    opened.push({ stop: () => c.close() })
    const { workflowId: wf } = await c.startWorkflow({ agent: 'hopper', type: 'go', payload: {} })
    await c.sendAction(wf, 'sink', 'boom', {})
    await eventually(async () => {
      const st = await c.getStatus(wf)
      return st?.counts.queued === 0 && st.counts.done === 4 && st.counts.dead === 1
    }, 15_000, 'go, stay, both takes done and boom dead')
    const st = await c.getStatus(wf)
    // go + boom from the client, stay + two takes sent by go's commit.
    expect(st?.counts).toEqual({ queued: 0, done: 4, dead: 1, actions: 5, malformed: 0 })
    expect(st?.status).toBe('waiting')
    // hopper's own commit sent it `stay`: its state must not be left blank by the
    // listing of a target, and `stay` (no transition) keeps it.
    expect(st?.agents.hopper).toBe('busy')
    // sink was listed by the client's send and never changed state.
    expect(st?.agents.sink).toBe('open')
    const raw = await c.redis.hgetall(c.keys.status(wf))
    expect(Object.keys(raw).filter((f) => f.startsWith('agent:')).sort()).toEqual(['agent:hopper', 'agent:sink'])
    for (const f of ['queued', 'done', 'dead', 'actions']) expect(raw[f]).toMatch(/^\d+$/)
  })

  it('lists an agent first sent work by a commit with no state until its own commit', async () => {
    const rt = await startRuntime({ agents: [hopper, sink], config: cfg, metricsPort: false })
    opened.push(rt)
    const c = TroupeClient.connect(cfg)
    opened.push({ stop: () => c.close() })
    // sink's take is due in a minute: it waits in sink's mailbox, sink never ran.
    const { workflowId: wf } = await c.startWorkflow({ agent: 'hopper', type: 'park', payload: {} })
    await eventually(async () => (await c.getStatus(wf))?.counts.done === 2, 15_000, 'park and stay done')
    const st = await c.getStatus(wf)
    expect(st?.agents).toEqual({ hopper: 'busy', sink: null })
    expect(st?.counts).toEqual({ queued: 1, done: 2, dead: 0, actions: 3, malformed: 0 })
    // A delayed action is a live one: the workflow is running, not waiting.
    expect(st?.status).toBe('running')
  })
})
