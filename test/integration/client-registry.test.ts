// A registration in system:agents that no runtime has rewritten for longer
// than REGISTRATION_STALE_MS (ten minutes) is an agent nobody hosts (removed or renamed):
// validated sends to it were accepted and queued forever. Refused now, saying
// when it was last registered; a runtime down for a minute (a restart, a
// deploy) is still sent to.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fleetSettings } from '../../runtime/config.ts'
import { TroupeClient } from '../../runtime/index.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
let c: TroupeClient
beforeAll(() => {
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
})

const MINUTE = 60_000

/** Registers `name` as a runtime with `cfg`'s settings would have, `ageMs` ago by Redis's clock. */
async function register(name: string, ageMs: number, settings = fleetSettings(cfg)): Promise<void> {
  const [s, us] = await c.redis.time()
  const now = Number(s) * 1000 + Math.floor(Number(us) / 1000)
  await c.redis.hset(c.keys.agents(), name, JSON.stringify({ version: 1, actionTypes: ['t'], actionPatterns: [], ...settings, updatedAt: now - ageMs }))
}

describe('stale registrations', () => {
  it('refuses a validated start or send to an agent last registered 11 minutes ago, and takes one registered a minute ago', async () => {
    await register('gone', 11 * MINUTE)
    await register('restarting', MINUTE)
    const refused = { code: 'unknown_agent', message: expect.stringMatching(/unknown agent 'gone': it was last registered 11 minutes ago and no live runtime hosts it now \(registered: restarting\)/) as unknown }
    await expect(c.startWorkflow({ workflowId: 'never', agent: 'gone', type: 't' })).rejects.toMatchObject(refused)
    expect(await c.getStatus('never')).toBeNull()
    const { workflowId } = await c.startWorkflow({ agent: 'restarting', type: 't' })
    await expect(c.sendAction(workflowId, 'gone', 't')).rejects.toMatchObject(refused)
    await c.sendAction(workflowId, 'restarting', 't')
    expect([...(await c.agents()).keys()]).toEqual(['restarting'])
  })

  it('does not refuse a cancel for the settings of a stale registration', async () => {
    const own = TroupeClient.connect(cfg)
    try {
      const { workflowId } = await own.startWorkflow({ agent: 'restarting', type: 't', validate: false })
      await own.redis.hdel(own.keys.agents(), 'restarting')
      // Settings no live runtime runs with any more: no reason to refuse.
      await register('gone', 11 * MINUTE, { ...fleetSettings(cfg), persistence: !cfg.persistence })
      await own.cancelWorkflow(workflowId)
      expect((await own.getStatus(workflowId))?.status).toBe('cancelled')
    } finally {
      await own.close()
    }
  })
})
