// A start prunes its owner's index of workflows whose keys expired: EXISTS on
// each old entry's status, then one ZREM. A caller-chosen id can be started
// again once its keys expired; a restart landing between that EXISTS and the
// ZREM had its new entry removed with the old one, and the running workflow
// was missing from its owner's list for good.
import type { Command } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

// Persistence off: a cancel puts the (short) retention TTL on the workflow's keys.
const cfg = testConfig({ persistence: false, retentionMs: 1000 })
let c: TroupeClient
let other: TroupeClient
beforeAll(() => {
  c = TroupeClient.connect(cfg)
  other = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
  await other.close()
})

describe('owner index pruning', () => {
  it('keeps the entry of an id started again between its prune\'s read and its removal', async () => {
    const index = c.keys.byOwner('bob')
    const wf = 'bobs-report'
    // No runtime: actions stay queued. The first run ends and its keys expire.
    await c.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', owner: 'bob', validate: false })
    await c.cancelWorkflow(wf)
    await eventually(async () => (await c.redis.exists(c.keys.status(wf))) === 0, 10_000, 'the first run to expire')
    await eventually(async () => Date.now() - Number(await c.redis.zscore(index, wf)) > cfg.retentionMs + 50, 5000, 'the retention to pass')

    // The next start of bob's finds the entry old and its status gone. Just
    // before its ZREM goes out, another client starts the id again.
    const redis = c.redis as unknown as { sendCommand: (cmd: Command) => unknown }
    const send = redis.sendCommand.bind(redis)
    let restarted = false
    redis.sendCommand = (cmd: Command) => {
      if (restarted || cmd.name !== 'zrem' || cmd.args[0] !== index || !cmd.args.includes(wf)) return send(cmd)
      restarted = true
      return (async () => {
        await other.startWorkflow({ workflowId: wf, agent: 'counter', type: 'ping', owner: 'bob', validate: false })
        return await send(cmd)
      })()
    }
    try {
      await c.startWorkflow({ agent: 'counter', type: 'ping', owner: 'bob', validate: false })
    } finally {
      redis.sendCommand = send
    }
    expect(restarted).toBe(true)
    expect((await c.getStatus(wf))?.status).toBe('running')
    expect(await c.redis.zscore(index, wf)).not.toBeNull()
  })
})
