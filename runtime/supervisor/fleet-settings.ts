// The fleet-settings check of the leader: every tick it compares the settings the
// runtimes registered with their agents (`system:agents`: TROUPE_PERSISTENCE,
// TROUPE_STREAM_MAXLEN, TROUPE_RETENTION_MS) with its own. A client refuses a
// mismatch it meets and the leader's deadline cancels adopt the runtimes'
// settings (docs/architecture.md, "Fleet settings checked by the client"), so a
// misconfigured process shows up only when it acts; this makes it a standing
// signal. Runtimes that disagree among themselves show up too: at most one side
// can match the leader.
import { registeredFleet, type AgentRegistration } from '../client.ts'
import { describeFleetSettings, sameFleetSettings, type FleetSettings } from '../config.ts'

/** One agent hosted by a live service, and whether its registered settings differ from the leader's. */
export interface FleetCheck {
  agent: string
  /** The settings its runtimes registered (the last one to register wins). */
  theirs: FleetSettings
  mismatch: boolean
}

/**
 * The agents of `hosted` whose registration carries fleet settings, each
 * compared with `mine`. Registrations of agents no live service hosts are left
 * out: they stay in `system:agents` after their runtimes are gone, and a
 * stale one would keep the signal up for a fleet that no longer runs it.
 */
export function checkFleetSettings(reg: Map<string, AgentRegistration>, hosted: ReadonlySet<string>, mine: FleetSettings): FleetCheck[] {
  const out: FleetCheck[] = []
  for (const [agent, r] of reg) {
    const theirs = hosted.has(agent) ? registeredFleet(r) : null
    if (theirs) out.push({ agent, theirs, mismatch: !sameFleetSettings(theirs, mine) })
  }
  return out.sort((a, b) => a.agent.localeCompare(b.agent))
}

/** A log line naming every mismatching agent and both sides' settings, or null when all agree. */
export function describeMismatch(checks: FleetCheck[], mine: FleetSettings): string | null {
  const bad = checks.filter((c) => c.mismatch)
  if (bad.length === 0) return null
  const theirs = bad.map((c) => `${c.agent} (${describeFleetSettings(c.theirs)})`).join(', ')
  return `fleet settings differ: runtimes of ${theirs}; this supervisor runs with ${describeFleetSettings(mine)}. ` +
    'Every process and client of a namespace must share TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN and TROUPE_RETENTION_MS ' +
    '(clients refuse to act for the differing agents; deadlines are enforced with the runtimes\' settings)'
}
