// The listing drops the ids of its owner's index whose status is gone (HMGET,
// then one ZREM). A caller-chosen id can be started again once its keys
// expired; a restart landing between that HMGET and the ZREM had its new entry
// removed with the old one, and the running workflow was missing from its
// owner's list for good (the same race as the client's prune, see
// test/integration/client-owner-index-race.test.ts).
import type { Command } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { call, startStack, type Stack } from './helpers.ts'

let s: Stack
let token: string
beforeAll(async () => {
  s = await startStack()
  token = (await s.login('rhea')).access_token
})
afterAll(async () => {
  await s?.stop()
})

describe('the workflow listing', () => {
  it('keeps the entry of an id started again between its read and its removal', async () => {
    const { keys, redis: gwRedis } = s.gw.deps
    const index = keys.byOwner('rhea')
    const wf = 'rheas-report'
    // An earlier run of rhea's whose keys expired: its entry is all that is left.
    await s.redis.zadd(index, Date.now() - 60_000, wf)

    // The listing finds its status gone. Just before its ZREM goes out, rhea
    // starts the id again (through the same gateway).
    const redis = gwRedis as unknown as { sendCommand: (cmd: Command) => unknown }
    const send = redis.sendCommand.bind(redis)
    let restarted: number | null = null
    redis.sendCommand = (cmd: Command) => {
      if (restarted !== null || cmd.name !== 'zrem' || String(cmd.args[0]) !== index || !cmd.args.map(String).includes(wf)) return send(cmd)
      restarted = 0
      return (async () => {
        restarted = (await call(s, 'POST', '/v1/workflows', { token, body: { workflowId: wf, agent: 'counter', type: 'ping' } })).status
        return await send(cmd)
      })()
    }
    try {
      const listed = await call(s, 'GET', '/v1/workflows', { token })
      expect(listed.status, listed.text).toBe(200)
    } finally {
      redis.sendCommand = send
    }
    expect(restarted).toBe(201)
    expect(await s.redis.zscore(index, wf)).not.toBeNull()
    const again = (await call(s, 'GET', '/v1/workflows', { token })).json as { items: { workflowId: string }[] }
    expect(again.items.map((i) => i.workflowId)).toContain(wf)
  })
})
