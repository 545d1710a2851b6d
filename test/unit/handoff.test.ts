// AgentWorker.handOff, the decision a commit's follow-ups ask for: which sent
// work this process keeps for its own worker's next pick (no hint write, no
// wake-up to other processes). Pure bookkeeping: no Redis, the worker is never started.
import { describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { defineAgent } from '../../runtime/index.ts'
import type { ActivationEnv, ActorActivation } from '../../runtime/activation.ts'
import { RuntimeMetrics } from '../../runtime/metrics.ts'
import { AgentWorker } from '../../runtime/worker.ts'

const agent = defineAgent({ name: 'rx', concurrency: 2, machine: setup({}).createMachine({}) })

function worker(): { w: AgentWorker; handOffs: () => Promise<number> } {
  const metrics = new RuntimeMetrics()
  const w = new AgentWorker({ metrics } as unknown as ActivationEnv, agent)
  const handOffs = async (): Promise<number> => (await metrics.handOffs.get()).values.find((v) => v.labels.agent === 'rx')?.value ?? 0
  return { w, handOffs }
}

/** Stands for an activation of the actor running here that claimed `ids`. */
function running(ids: string[]): ActorActivation {
  return { hasClaimed: (sent: readonly string[]) => sent.length > 0 && sent.every((id) => ids.includes(id)) } as unknown as ActorActivation
}

describe('AgentWorker.handOff', () => {
  it('keeps no more actors for its next pick than it has free slots', async () => {
    const { w, handOffs } = worker()
    expect(w.handOff('wf1', ['a1'])).toBe(true)
    expect(w.handOff('wf2', ['a2'])).toBe(true)
    // Both slots are spoken for until the pick that takes them is sent.
    expect(w.handOff('wf3', ['a3'])).toBe(false)
    expect(await handOffs()).toBe(2)
  })

  it('needs no hint for an actor running here whose activation claimed the sent work', async () => {
    const { w, handOffs } = worker()
    w.active.set('wf1', running(['a1', 'a2']))
    expect(w.handOff('wf1', ['a1', 'a2'])).toBe(true)
    // Work it has not claimed (it may have gone idle before the send landed) needs the hint.
    expect(w.handOff('wf1', ['a1', 'a3'])).toBe(false)
    expect(w.handOff('wf1', [])).toBe(false)
    expect(await handOffs()).toBe(1)
  })

  it('keeps nothing while draining', () => {
    const { w } = worker()
    w.state = 'draining'
    expect(w.handOff('wf1', ['a1'])).toBe(false)
  })
})
