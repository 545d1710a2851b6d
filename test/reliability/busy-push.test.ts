// A pick that finds the actor's lock held pushes the ready hint to the end of
// that lock. Its reply can be handled late (a busy event loop): by then the
// holder may have let go and a new action made the hint due. That push must
// not move the new action a whole lock TTL out. Here the late push is made
// deterministic: the runtime's push is held back while the holder lets go and a
// second action is sent, and the agent's one slot keeps its worker from picking
// again until the push is done.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nanoid } from 'nanoid'
import type { Command } from 'ioredis'
import { defineAgent, startRuntime, TroupeClient, type Runtime } from '../../runtime/index.ts'
import { scriptFor } from '../../runtime/redis/scripts.ts'
import { counter } from '../fixtures/agents.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const cfg = testConfig({ idlePollMs: 120_000, lockTtlMs: 60_000 })
const one = defineAgent({ name: 'counter', concurrency: 1, machine: counter.machine })
let rt: Runtime
let client: TroupeClient

beforeAll(async () => {
  rt = await startRuntime({ agents: [one], config: cfg, metricsPort: false })
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await rt?.stop()
  await client?.close()
})

type Send = (c: Command, stream?: unknown) => unknown

describe('busy push', () => {
  it('a push handled after the holder let go leaves the new action due', async () => {
    const wf = nanoid()
    const lock = client.keys.lock(wf, 'counter')
    // Another process holds the actor when the first action comes.
    await client.redis.set(lock, 'another-process', 'PX', 60_000)
    const redis = rt.redis as unknown as { sendCommand: Send }
    const send: Send = redis.sendCommand.bind(redis)
    const extend = scriptFor('extend_hint').sha
    let held = 0
    redis.sendCommand = (c: Command, stream?: unknown) => {
      // The push: a conditional move through extend_hint.lua, or a blind ZADD XX.
      const push = (c.name === 'evalsha' && c.args[0] === extend) || (c.name === 'zadd' && c.args.includes('XX'))
      if (!push || held > 0) return send(c, stream)
      held++
      return (async () => {
        // Before it lands: the holder lets go, and a second action comes (its hint due, a wake-up).
        await client.redis.del(lock)
        await client.sendAction(wf, 'counter', 'ping', { i: 2 })
        return await send(c, stream)
      })()
    }
    try {
      await client.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', payload: { i: 1 } })
      await eventually(() => Promise.resolve(held === 1), 10_000, 'the runtime bounced off the lock and pushed the hint')
      await eventually(async () => (await client.getStatus(wf))?.counts.done === 2, 10_000, 'both pings done (not 60 s later)')
    } finally {
      redis.sendCommand = send
    }
    expect((await client.getStatus(wf))?.counts).toMatchObject({ done: 2, queued: 0 })
  })
})
