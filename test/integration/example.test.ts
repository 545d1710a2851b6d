// The research-team example's sign-off gate: started with `signOff: true`, the
// approved report waits for a person's `approve` to the reviewer; an `approve`
// sent too early is refused (a dead letter saying why) and changes nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { researchTeam } from '../../examples/research-team/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let rt: Runtime
let client: TroupeClient
const delay = process.env.TROUPE_FAKE_MODEL_DELAY_MS

beforeAll(async () => {
  process.env.TROUPE_FAKE_MODEL_DELAY_MS = '0'
  rt = await startRuntime({ agents: researchTeam, config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
  if (delay === undefined) delete process.env.TROUPE_FAKE_MODEL_DELAY_MS
  else process.env.TROUPE_FAKE_MODEL_DELAY_MS = delay
})

describe('research-team example', () => {
  it('waits for a sign-off when asked, and completes with it', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: 'tides', signOff: true } })
    // Too early: the reviewer has not approved a draft yet.
    await client.sendAction(wf, 'reviewer', 'approve', { note: 'eager' })
    await eventually(async () => (await client.getStatus(wf))?.agents.reviewer === 'awaitingSignOff', 20_000, 'reviewer awaiting sign-off')
    const dead = await client.deadLetters(wf)
    expect(dead).toHaveLength(1)
    expect(dead[0]?.error).toMatch(/does not accept action 'approve'/)
    // Nothing left to run: the workflow waits for a person, not for a worker.
    expect((await client.getStatus(wf))?.status).toBe('waiting')

    await client.sendAction(wf, 'reviewer', 'approve', { note: 'ship it' })
    await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 10_000, 'completed after approve')
    const st = await client.getStatus(wf)
    expect(st?.result).toMatchObject({ revisions: 1, signedOff: true })
    expect((st?.result as { report: string }).report.length).toBeGreaterThan(0)
    const signOff = (await client.readEvents(wf)).find((e) => e.event.type === 'sign-off')
    expect(signOff?.event.content).toEqual({ note: 'ship it' })
  })

  it('completes on its own without the flag, as before', async () => {
    const { workflowId: wf } = await client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: 'wind' } })
    await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 20_000, 'completed')
    const st = await client.getStatus(wf)
    expect(st?.result).toMatchObject({ revisions: 1 })
    expect(st?.result).not.toHaveProperty('signedOff')
    expect((await client.readEvents(wf)).some((e) => e.event.type === 'action.enqueued' && (e.event.content as { type?: string }).type === 'brief')).toBe(false)
  })
})
