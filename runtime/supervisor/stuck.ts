// Stuck actors, as the leader sees them from one tick to the next:
// - `unpicked`: its ready hint has been due for longer than the threshold, so no
//   worker picks it (none hosts the agent, all are saturated, or picks fail);
// - `failing`: its oldest due action has waited longer than the threshold while the
//   actor keeps being activated (its fence moves) without that action moving: every
//   activation dies before it commits.
// A long-running action is neither: the hint is a live lease and the fence stands
// still. Each stuck actor is reported once per reason while it stays stuck.
import type { AgentQueue } from './queues.ts'

/** Why an actor is reported stuck. */
export type StuckReason = 'unpicked' | 'failing'

/** One stuck actor. */
export interface StuckActor {
  agent: string
  wf: string
  reason: StuckReason
  /** How long it has been waiting (hint overdue, or oldest due action waiting), ms. */
  waitingMs: number
  /** For `unpicked`: no live service hosts the agent. */
  noWorker: boolean
  /** For `failing`: activations seen since the action started waiting. */
  activations: number
}

interface Seen {
  head: string
  fence: number
}

/** Options of {@link StuckTracker}. */
export interface StuckOptions {
  /** How long work may wait before its actor counts as stuck. */
  stuckAfterMs: number
  /** Activations without progress that make an actor `failing` (default 3). */
  failingActivations: number
}

/** Leader-local memory of actors whose work waits; a new leader starts afresh. */
export class StuckTracker {
  private seen = new Map<string, Seen>()
  private reported = new Set<string>()
  /** The actors stuck at the last {@link observe}. */
  current: StuckActor[] = []

  constructor(private readonly opts: StuckOptions) {}

  /**
   * Looks at this tick's queues; returns the actors that became stuck (to report)
   * and keeps {@link current} as every actor stuck now.
   */
  observe(queues: Iterable<AgentQueue>, hosted: ReadonlySet<string>, now: number): StuckActor[] {
    const fresh: StuckActor[] = []
    const current: StuckActor[] = []
    const seen = new Map<string, Seen>()
    const reported = new Set<string>()
    const limit = this.opts.stuckAfterMs
    for (const q of queues) {
      for (const a of q.actors) {
        const id = `${q.agent}\u0000${a.wf}`
        let stuck: StuckActor | null = null
        if (now - a.hintAt > limit) {
          stuck = { agent: q.agent, wf: a.wf, reason: 'unpicked', waitingMs: now - a.hintAt, noWorker: !hosted.has(q.agent), activations: 0 }
        } else if (a.head !== null && a.headAt !== null && now - a.headAt > limit) {
          const before = this.seen.get(id)
          const base = before && before.head === a.head ? before : { head: a.head, fence: a.fence }
          seen.set(id, base)
          const activations = a.fence - base.fence
          if (activations >= this.opts.failingActivations) {
            stuck = { agent: q.agent, wf: a.wf, reason: 'failing', waitingMs: now - a.headAt, noWorker: false, activations }
          }
        }
        if (!stuck) continue
        current.push(stuck)
        const key = `${id}\u0000${stuck.reason}`
        reported.add(key)
        if (!this.reported.has(key)) fresh.push(stuck)
      }
    }
    this.seen = seen
    this.reported = reported
    this.current = current
    return fresh
  }

  /** Stuck actors now, per agent and reason. */
  counts(): Map<string, Record<StuckReason, number>> {
    const out = new Map<string, Record<StuckReason, number>>()
    for (const s of this.current) {
      const c = out.get(s.agent) ?? { unpicked: 0, failing: 0 }
      c[s.reason]++
      out.set(s.agent, c)
    }
    return out
  }
}
