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

describe('core', () => {
  it('runs a workflow to completion with events in order', async () => {
    const { workflowId } = await client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
    await client.sendAction(workflowId, 'counter', 'ping', { i: 2 })
    await client.sendAction(workflowId, 'counter', 'relay', { text: 'hey' })
    const events: string[] = []
    const waiter = (async () => {
      for await (const e of client.follow(workflowId, { untilEnd: true })) events.push(e.event.type)
    })()
    await eventually(async () => (await client.getStatus(workflowId))?.agents.echo === 'idle' && (await client.readEvents(workflowId)).some((e) => e.event.type === 'echoed'), 10_000, 'echo')
    await client.sendAction(workflowId, 'counter', 'finish')
    await waiter
    const st = await client.getStatus(workflowId)
    expect(st?.status).toBe('completed')
    expect(st?.result).toEqual({ n: 2 })
    expect(events.filter((t) => t === 'token')).toHaveLength(3)
    expect(events[0]).toBe('workflow.started')
    expect(events.at(-1)).toBe('workflow.completed')
  })
})
