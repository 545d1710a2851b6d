// Stuck-actor rules, on hand-made queue readings: overdue hints, activations that
// keep dying without progress, and long actions that are neither.
import { describe, expect, it } from 'vitest'
import type { ActorQueue, AgentQueue } from '../../runtime/supervisor/queues.ts'
import { StuckTracker } from '../../runtime/supervisor/stuck.ts'

function queue(agent: string, actors: Partial<ActorQueue>[]): AgentQueue {
  const full = actors.map((a) => ({ wf: 'wf', hintAt: 0, queued: 1, due: 1, head: null, headAt: null, fence: 0, ...a }))
  return { agent, hinted: full.length, dueHints: 0, queued: 0, due: 0, oldestDueAt: null, actors: full, truncated: false }
}

describe('stuck actors', () => {
  it('reports an overdue hint once while it stays overdue, and again after it recovers', () => {
    const t = new StuckTracker({ stuckAfterMs: 1000, failingActivations: 3 })
    const overdue = [queue('a', [{ wf: 'w1', hintAt: 0 }])]
    expect(t.observe(overdue, new Set(), 500)).toEqual([])
    expect(t.observe(overdue, new Set(), 1500)).toMatchObject([{ agent: 'a', wf: 'w1', reason: 'unpicked', noWorker: true, waitingMs: 1500 }])
    expect(t.observe(overdue, new Set(['a']), 2000)).toEqual([])
    expect(t.counts().get('a')).toEqual({ unpicked: 1, failing: 0 })
    expect(t.observe([queue('a', [{ wf: 'w1', hintAt: 2000 }])], new Set(['a']), 2100)).toEqual([])
    expect(t.counts().size).toBe(0)
    expect(t.observe(overdue, new Set(['a']), 3000)).toMatchObject([{ reason: 'unpicked', noWorker: false }])
  })

  it('tells activations that die without progress from a long action', () => {
    const t = new StuckTracker({ stuckAfterMs: 1000, failingActivations: 3 })
    // The hint is a live lease each time (picked again), the head waits, the fence moves.
    const reading = (now: number, fence: number): AgentQueue[] => [queue('a', [{ wf: 'w1', hintAt: now + 500, head: 'h1', headAt: 0, fence }])]
    expect(t.observe(reading(1500, 10), new Set(['a']), 1500)).toEqual([])
    expect(t.observe(reading(2000, 11), new Set(['a']), 2000)).toEqual([])
    expect(t.observe(reading(2500, 13), new Set(['a']), 2500)).toMatchObject([{ reason: 'failing', activations: 3 }])
    // Same head, same fence: one long activation working through it, not stuck.
    const long = new StuckTracker({ stuckAfterMs: 1000, failingActivations: 3 })
    for (const now of [1500, 5000, 60_000]) expect(long.observe(reading(now, 10), new Set(['a']), now)).toEqual([])
  })
})
