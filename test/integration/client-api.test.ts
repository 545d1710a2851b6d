// The library API as an embedding developer calls it (client/agent review): a
// close() ends open follows; bad cursors and counts are TroupeErrors, not raw
// Redis errors; an actionId reused for another agent or type is refused; agent
// code cannot fake the runtime's own events or send what JSON cannot encode;
// machines with wildcard transitions accept the types their wildcards match.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { emit, fromPromise, setup } from 'xstate'
import { defineAgent, sendToAgent, startRuntime, TroupeClient, type ActionEvent, type Runtime } from '../../runtime/index.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

type Ev = ActionEvent<string, { kind?: string }>

/** Misbehaves on purpose, as `kind` says. */
const rogue = defineAgent({
  name: 'rogue',
  maxAttempts: 1,
  machine: setup({
    types: { events: {} as Ev },
    actors: {
      fake: fromPromise(async ({ emit }: { emit: (e: { type: string; content: unknown }) => void }) => {
        await Promise.resolve()
        emit({ type: 'workflow.completed', content: { result: 'not really' } })
      }),
    },
  }).createMachine({
    initial: 'idle',
    states: {
      idle: {
        on: {
          fake: 'faking',
          // The control event emitEvent() makes, emitted by hand past its check.
          forge: { actions: emit({ type: 'troupe.event', eventType: 'workflow.completed', content: { result: 'forged' } } as { type: string }) },
          fn: { actions: sendToAgent('counter', 'ping', () => () => 'a function') },
          'research.*': { actions: sendToAgent('counter', 'ping', { i: 1 }) },
        },
      },
      faking: { invoke: { src: 'fake', onDone: 'idle' } },
    },
  }),
})

const cfg = testConfig()
let rt: Runtime
let c: TroupeClient
beforeAll(async () => {
  rt = await startRuntime({ agents: [rogue, counter], config: cfg, metricsPort: false })
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
  await rt.stop()
})

const deadError = async (wf: string, actionId: string): Promise<string> =>
  (await eventually(async () => (await c.deadLetters(wf)).find((d) => d.actionId === actionId), 10_000, 'dead-lettered')).error

describe('client and agent API', () => {
  it('ends an open follow when the client closes', async () => {
    const own = TroupeClient.connect(cfg)
    const { workflowId } = await own.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    const seen: string[] = []
    const following = (async () => {
      for await (const e of own.follow(workflowId)) seen.push(e.event.type)
      return 'ended'
    })()
    await eventually(() => Promise.resolve(seen.includes('action.completed')), 10_000, 'the follow live')
    await own.close()
    // It waited forever for the next event before.
    expect(await Promise.race([following, new Promise((r) => setTimeout(() => r('still open'), 5000))])).toBe('ended')
    await expect(own.follow(workflowId).next()).rejects.toMatchObject({ code: 'config' })
  })

  it('refuses bad event positions and counts as TroupeErrors', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    for (const after of ['latest', '', 'abc', '18446744073709551615-18446744073709551615']) {
      await expect(c.readEvents(workflowId, after)).rejects.toMatchObject({ code: 'bad_id' })
      await expect(c.follow(workflowId, { after }).next()).rejects.toMatchObject({ code: 'bad_id' })
    }
    for (const count of [0, -1, 1.5]) await expect(c.readEvents(workflowId, '0', count)).rejects.toMatchObject({ code: 'config' })
    expect((await c.readEvents(workflowId, '0', 1)).length).toBe(1)
  })

  it('refuses an actionId reused for another agent or type, and takes a true resend', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    await c.sendAction(workflowId, 'counter', 'ping', { i: 2 }, { actionId: 'job-1' })
    await c.sendAction(workflowId, 'counter', 'ping', { i: 2 }, { actionId: 'job-1' })
    // It answered as queued before, and queued nothing.
    await expect(c.sendAction(workflowId, 'rogue', 'fake', {}, { actionId: 'job-1' })).rejects.toMatchObject({ code: 'duplicate_action' })
    await expect(c.sendAction(workflowId, 'counter', 'other', {}, { actionId: 'job-1', validate: false })).rejects.toMatchObject({ code: 'duplicate_action' })
  })

  it('fails an action whose code emits a runtime event type, and publishes nothing of it', async () => {
    const { workflowId, actionId } = await c.startWorkflow({ agent: 'rogue', type: 'fake' })
    expect(await deadError(workflowId, actionId)).toMatch(/workflow\.completed.* is reserved/)
    const types = (await c.readEvents(workflowId, '0', 100)).map((e) => e.event.type)
    expect(types).not.toContain('workflow.completed')
    expect((await c.getStatus(workflowId))?.status).not.toBe('completed')
  })

  it('fails an action that emits the event-publishing control event by hand with a runtime type, and publishes nothing of it', async () => {
    const { workflowId, actionId } = await c.startWorkflow({ agent: 'rogue', type: 'forge' })
    expect(await deadError(workflowId, actionId)).toMatch(/workflow\.completed.* is reserved/)
    const types = (await c.readEvents(workflowId, '0', 100)).map((e) => e.event.type)
    expect(types).not.toContain('workflow.completed')
  })

  it('fails a send whose payload JSON cannot encode, with the reason', async () => {
    const { workflowId, actionId } = await c.startWorkflow({ agent: 'rogue', type: 'fn' })
    expect(await deadError(workflowId, actionId)).toMatch(/payload JSON cannot encode \(function\)/)
  })

  it('accepts the action types a wildcard transition matches', async () => {
    // 'research.start' was refused as unknown_action: the registry listed no wildcard.
    const { workflowId } = await c.startWorkflow({ agent: 'rogue', type: 'research.start' })
    await eventually(async () => (await c.getStatus(workflowId))?.counts.done === 2, 10_000, 'the wildcard action and its ping done')
    await expect(c.sendAction(workflowId, 'rogue', 'elsewhere')).rejects.toMatchObject({ code: 'unknown_action' })
  })
})
