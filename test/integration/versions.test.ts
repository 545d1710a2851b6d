// Snapshot versions: a mismatch without migrate fails the action clearly; migrate upgrades.
// Also: agent code that sends to an unknown agent is dead-lettered with the reason.
import { describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { defineAgent, sendToAgent, startRuntime, TroupeClient } from '../../runtime/index.ts'
import { tally } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

/** A workflow whose `tally` actor took one `add` of 2 at `version`; its runtime stopped. */
async function afterOneAdd(version: number): Promise<{ client: TroupeClient; cfg: ReturnType<typeof testConfig>; workflowId: string }> {
  const cfg = testConfig()
  const client = TroupeClient.connect(cfg)
  const rt = await startRuntime({ agents: [tally(version)], config: cfg, metricsPort: false })
  const { workflowId } = await client.startWorkflow({ agent: 'tally', type: 'add', payload: { n: 2 } })
  await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, `v${version} add`)
  await rt.stop()
  return { client, cfg, workflowId }
}

/** The stored total and snapshot version of the workflow's `tally` actor. */
async function stored(client: TroupeClient, workflowId: string): Promise<{ total: number; version: string | null }> {
  const [snap, version] = await client.redis.hmget(client.keys.actor(workflowId, 'tally'), 'snapshot', 'version')
  return { total: (JSON.parse(snap ?? '{}') as { context: { total: number } }).context.total, version: version ?? null }
}

describe('versions', () => {
  it('fails on a version mismatch without migrate, and migrates when given', async () => {
    const { client, cfg, workflowId } = await afterOneAdd(1)
    let rt = await startRuntime({ agents: [tally(2)], config: cfg, metricsPort: false })
    await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'mismatch dead letter')
    expect((await client.deadLetters(workflowId))[0]?.error).toMatch(/version 1, agent is version 2 and has no migrate/)
    await rt.stop()

    const migrate = (s: unknown, from: number): unknown => {
      const snap = s as { context: { total: number } }
      return { ...snap, context: { total: snap.context.total * 10 + from } }
    }
    rt = await startRuntime({ agents: [tally(2, migrate)], config: cfg, metricsPort: false })
    await client.sendAction(workflowId, 'tally', 'add', { n: 5 })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 10_000, 'migrated add')
    expect(await stored(client, workflowId)).toEqual({ total: 2 * 10 + 1 + 5, version: '2' })
    await rt.stop()
    await client.close()
  })

  it('hands actions back from a snapshot a newer version wrote, for a process of that version (rolling update)', async () => {
    const ranOld = { n: 0 }
    const migrate = (s: unknown): unknown => {
      ranOld.n++
      return s
    }
    const { client, cfg, workflowId } = await afterOneAdd(2)

    // A process still on version 1 (with a migrate it must not run backwards) takes the next action.
    let rt = await startRuntime({ agents: [tally(1, migrate)], config: cfg, metricsPort: false })
    const { actionId } = await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
    const st = await eventually(async () => {
      const raw = await client.redis.hget(client.keys.actions(workflowId), `${actionId}:st`)
      const parsed = JSON.parse(raw ?? '{}') as { status?: string; attempt?: number; availableAt?: number }
      // Handed back: queued again, due later than now, no attempt spent.
      return parsed.status === 'queued' && (parsed.availableAt ?? 0) > Date.now() ? parsed : null
    }, 10_000, 'hand-back')
    expect(st.attempt).toBe(0)
    await rt.stop()
    expect(ranOld.n).toBe(0)
    expect(await client.deadLetters(workflowId)).toEqual([])

    rt = await startRuntime({ agents: [tally(2)], config: cfg, metricsPort: false })
    await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 2, 10_000, 'v2 add after the hand-back')
    expect(await stored(client, workflowId)).toEqual({ total: 5, version: '2' })
    expect(await client.deadLetters(workflowId)).toEqual([])
    await rt.stop()
    await client.close()
  })

  it('dead-letters an action handed back for over an hour (no process of the newer version came), not one merely sent long ago', async () => {
    const { client, cfg, workflowId } = await afterOneAdd(2)
    const key = client.keys.actions(workflowId)
    // Sent two hours ago (a durable timer, a long backlog), never handed back: it waits for version 2.
    const { actionId: old } = await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
    const record = JSON.parse((await client.redis.hget(key, old)) ?? '{}') as { enqueuedAt: number }
    await client.redis.hset(key, old, JSON.stringify({ ...record, enqueuedAt: Date.now() - 2 * 3600_000 }))
    // First handed back an hour and a minute ago, during a rollback that never rolled forward.
    const { actionId: stuck } = await client.sendAction(workflowId, 'tally', 'add', { n: 4 })
    const st = JSON.parse((await client.redis.hget(key, `${stuck}:st`)) ?? '{}') as Record<string, unknown>
    await client.redis.hset(key, `${stuck}:st`, JSON.stringify({ ...st, handedBackAt: Date.now() - 61 * 60_000 }))

    const rt = await startRuntime({ agents: [tally(1)], config: cfg, metricsPort: false })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'dead letter')
    const [dead] = await client.deadLetters(workflowId)
    expect(dead).toMatchObject({ actionId: stuck, error: expect.stringMatching(/written by version 2; this process runs version 1, and no process of version 2 took the action within an hour of its first hand-back/) as unknown })
    const oldSt = await eventually(async () => {
      const parsed = JSON.parse((await client.redis.hget(key, `${old}:st`)) ?? '{}') as { status?: string; attempt?: number; handedBackAt?: number }
      return parsed.status === 'queued' && parsed.handedBackAt !== undefined ? parsed : null
    }, 10_000, 'the old action handed back')
    expect(oldSt.attempt).toBe(0)
    expect(await stored(client, workflowId)).toEqual({ total: 2, version: '2' })
    await rt.stop()
    await client.close()
  })

  it('refuses a migrate() that returns no snapshot, keeping the stored state', async () => {
    const { client, cfg, workflowId } = await afterOneAdd(1)

    // Changes its argument and forgets to return it.
    const forgetful = (s: unknown): unknown => {
      ;(s as { context: { total: number } }).context.total = 99
      return undefined
    }
    const rt = await startRuntime({ agents: [tally(2, forgetful)], config: cfg, metricsPort: false })
    await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'dead letter')
    expect((await client.deadLetters(workflowId))[0]?.error).toMatch(/migrate\(\) returned undefined/)
    expect(await stored(client, workflowId)).toEqual({ total: 2, version: '1' })
    await rt.stop()
    await client.close()
  })

  it('delivers a send to an agent whose runtime started after the sender\'s', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    const early = defineAgent({
      name: 'early',
      machine: setup({}).createMachine({ on: { go: { actions: sendToAgent('late', 'hello') } } }),
    })
    const late = defineAgent({
      name: 'late',
      machine: setup({}).createMachine({ initial: 'waiting', states: { waiting: { on: { hello: 'greeted' } }, greeted: {} } }),
    })
    // The first runtime's copy of the registry predates the second one.
    const rt1 = await startRuntime({ agents: [early], config: cfg, metricsPort: false })
    const rt2 = await startRuntime({ agents: [late], config: cfg, metricsPort: false })
    const { workflowId } = await client.startWorkflow({ agent: 'early', type: 'go' })
    await eventually(async () => (await client.getStatus(workflowId))?.agents.late === 'greeted', 10_000, 'hello delivered')
    expect(await client.deadLetters(workflowId)).toEqual([])
    await rt1.stop()
    await rt2.stop()
    await client.close()
  })

  it('dead-letters an action whose handling sends to an unknown agent', async () => {
    const cfg = testConfig()
    const client = TroupeClient.connect(cfg)
    const lost = defineAgent({
      name: 'lost',
      machine: setup({}).createMachine({ on: { go: { actions: sendToAgent('nobody', 'hello') } } }),
    })
    const rt = await startRuntime({ agents: [lost], config: cfg, metricsPort: false })
    const { workflowId } = await client.startWorkflow({ agent: 'lost', type: 'go' })
    await eventually(async () => (await client.deadLetters(workflowId)).length === 1, 10_000, 'dead letter')
    // Only after the agent's attempts: an agent registered meanwhile would have taken it.
    expect((await client.deadLetters(workflowId))[0]).toMatchObject({ error: expect.stringMatching(/unknown agent 'nobody'/) as unknown, attempt: 3 })
    expect((await client.getStatus(workflowId))?.agents.nobody).toBeUndefined()
    await rt.stop()
    await client.close()
  })
})
