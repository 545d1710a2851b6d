// A supervisor stopped while it is taking over leadership: the machine has left
// the election by then and drops what the election returns, so the takeover must
// give the lease back itself. Before, the leader lock stayed held and the leader
// record named a process that had exited until the lease ran out (failover late
// by a whole lease on a clean stop). The takeover script is held back here until
// the stop has begun: the moment this test is about.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { supervisorService } from '../../agents/supervisor.ts'
import { startRuntime, TroupeClient } from '../../runtime/index.ts'
import type * as Fence from '../../runtime/supervisor/fence.ts'
import { eventually, testConfig } from '../helpers/redis.ts'

const gate: { reached: (() => void) | null; open: Promise<void>; release: () => void } = { reached: null, open: Promise.resolve(), release: () => undefined }

vi.mock('../../runtime/supervisor/fence.ts', async (importOriginal) => {
  const real = await importOriginal<typeof Fence>()
  return {
    ...real,
    runSupervisorScript: async (...args: Parameters<typeof real.runSupervisorScript>) => {
      if (args[1] === 'takeover' && gate.reached) {
        gate.reached()
        await gate.open
      }
      return await real.runSupervisorScript(...args)
    },
  }
})

const cfg = testConfig()
let client: TroupeClient

beforeAll(() => {
  client = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await client?.close()
})

describe('supervisor stopped during its takeover', () => {
  it('gives the leader lease back and clears the leader record', async () => {
    let reached!: () => void
    const atTakeover = new Promise<void>((r) => (reached = r))
    gate.reached = reached
    gate.open = new Promise<void>((r) => (gate.release = r))
    // A long lease: a lock still held when the test looks can only be the bug, not a slow expiry.
    const sup = supervisorService({ leaseMs: 60_000, tickMs: 200 })
    const rt = await startRuntime({ agents: [], services: [sup], config: cfg, metricsPort: false })
    try {
      await atTakeover
      const stopped = rt.stop()
      // The stop has reached the supervisor's machine; now let the takeover finish.
      await eventually(() => Promise.resolve(sup.state === 'stopped'), 10_000, 'supervisor machine stopped')
      gate.release()
      await stopped
      await eventually(async () => (await client.redis.exists(client.keys.leader())) === 0, 10_000, 'leader lock released')
      expect(await client.redis.exists(client.keys.leaderInfo())).toBe(0)
    } finally {
      gate.release()
      gate.reached = null
      await rt.stop()
    }
  })
})
