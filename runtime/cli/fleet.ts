// The fleet view of `troupe status` (no workflow id): services from system:health,
// the supervisor leader, per-agent queues read live from the run queues, dead
// letters and per-minute figures from the leader's rollups, and the persistence
// backlog. Unusable records are listed under "problems", never fatal.
import type { TroupeClient } from '../client.ts'
import { readFleet, type FleetProblem, type ServiceRecord } from '../supervisor/health.ts'
import { knownAgents, readQueues, serverNow } from '../supervisor/queues.ts'
import { readPersistence, readRollup, type PersistenceBacklog } from '../supervisor/rollups.ts'
import { printable } from './render.ts'
import { EXIT } from './common.ts'

/** One service as listed by the fleet view. */
export interface ServiceRow {
  serviceId: string
  status: 'alive' | 'stopped' | 'dead'
  roles: string
  agents: string
  lastSeen: number
  metricsUrl: string
  /** Why it is dead (missed heartbeats, marked by the supervisor, record expired), else ''. */
  note: string
  /** `leader` / `standby` for supervisors, else ''. */
  supervisor: string
  host: string
  pid: string
  active: Record<string, number>
}

/** The supervisor leader as recorded in `system:leader:info`. */
export interface LeaderView {
  serviceId: string
  term: number
  since: number
  renewedAt: number
  sdUrl: string
  /** False when the record outlived the lease (an election is under way). */
  leaseHeld: boolean
}

/** Per-agent figures; null where only the leader's rollup knows and there is none. */
export interface AgentRow {
  queued: number
  due: number
  hinted: number
  oldestDueMs: number
  active: number
  deadLetters: number | null
  completedPerMin: number | null
  failedPerMin: number | null
  stuck: number | null
}

/** Everything `troupe status` shows about the fleet (`--json` prints this). */
export interface FleetView {
  at: number
  leader: LeaderView | null
  services: ServiceRow[]
  agents: Record<string, AgentRow>
  deadLetters: number | null
  persistence: PersistenceBacklog
  /** When and by which term the rollups were written, or null without a leader. */
  rollup: { at: number; term: number; sweepAt: number } | null
  problems: FleetProblem[]
}

function row(s: ServiceRecord): ServiceRow {
  return {
    serviceId: s.serviceId, status: s.status, roles: s.roles.join(','), agents: s.agents.join(','), lastSeen: s.lastSeen, metricsUrl: s.metricsUrl,
    note: s.note, supervisor: s.fields.supervisor ?? '', host: s.host, pid: s.pid, active: s.active,
  }
}

/** Reads `system:services` and each `system:health:<id>`; unusable records are skipped. */
export async function readServices(client: TroupeClient): Promise<ServiceRow[]> {
  return (await readFleet(client.redis, client.keys, { now: await serverNow(client.redis) })).services.map(row)
}

async function readLeader(client: TroupeClient, problems: FleetProblem[]): Promise<LeaderView | null> {
  let info: Record<string, string>
  try {
    info = await client.redis.hgetall(client.keys.leaderInfo())
  } catch (err) {
    problems.push({ serviceId: '(leader record)', kind: 'corrupt', detail: err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err) })
    return null
  }
  const held = await client.redis.exists(client.keys.leader())
  if (!info.serviceId) return null
  return { serviceId: info.serviceId, term: Number(info.term ?? 0), since: Number(info.since ?? 0), renewedAt: Number(info.renewedAt ?? 0), sdUrl: info.sdUrl ?? '', leaseHeld: held === 1 }
}

/** Reads the whole fleet view. */
export async function readFleetView(client: TroupeClient): Promise<FleetView> {
  const { redis, keys } = client
  // Liveness by Redis's clock, as the supervisor judges it (heartbeats are stamped with it).
  const fleet = await readFleet(redis, keys, { now: await serverNow(redis) })
  const [leader, rollup, persistence, now] = await Promise.all([readLeader(client, fleet.problems), readRollup(redis, keys), readPersistence(redis, keys), serverNow(redis)])
  const names = await knownAgents(redis, keys, [...fleet.services.flatMap((s) => s.agents), ...Object.keys(rollup?.agents ?? {})])
  const queues = await readQueues(redis, keys, names, now, 2000)
  const active: Record<string, number> = {}
  for (const s of fleet.services) if (s.status === 'alive') for (const [a, n] of Object.entries(s.active)) active[a] = (active[a] ?? 0) + n
  const agents: Record<string, AgentRow> = {}
  for (const a of names) {
    const q = queues.get(a)
    const r = rollup?.agents[a]
    agents[a] = {
      queued: q?.queued ?? 0, due: q?.due ?? 0, hinted: q?.hinted ?? 0, oldestDueMs: q?.oldestDueAt == null ? 0 : Math.max(0, now - q.oldestDueAt), active: active[a] ?? 0,
      deadLetters: rollup ? (r?.deadLetters ?? 0) : null, completedPerMin: rollup ? (r?.completedPerMin ?? 0) : null,
      failedPerMin: rollup ? (r?.failedPerMin ?? 0) : null, stuck: rollup ? (r?.stuck ?? 0) : null,
    }
  }
  return {
    at: fleet.now, leader, services: fleet.services.map(row).sort((a, b) => a.serviceId.localeCompare(b.serviceId)), agents, persistence, problems: fleet.problems,
    deadLetters: rollup ? rollup.deadLettersTotal : null,
    rollup: rollup ? { at: rollup.at, term: rollup.term, sweepAt: rollup.sweepAt } : null,
  }
}

function ago(ms: number): string {
  // A heartbeat written while the view was being read is newer than its clock.
  if (ms < 1000) return `${Math.max(0, ms)}ms ago`
  if (ms < 120_000) return `${Math.round(ms / 1000)}s ago`
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)}m ago`
  return `${Math.round(ms / 3_600_000)}h ago`
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => `  ${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')}`.trimEnd()
  return [line(head), ...rows.map(line)]
}

/** Renders the fleet view as the text `troupe status` prints. */
export function renderFleet(v: FleetView): string {
  const out: string[] = []
  const l = v.leader
  if (!l) out.push('leader: none (start a supervisor: troupe supervisor, or troupe start --supervisor)')
  else out.push(`leader: ${l.serviceId} (term ${l.term}, leading since ${ago(v.at - l.since)})${l.leaseHeld ? '' : ' — lease expired, election under way'}`)
  const count = (s: string): number => v.services.filter((x) => x.status === s).length
  out.push('', `services: ${v.services.length} (${count('alive')} alive, ${count('stopped')} stopped, ${count('dead')} dead)`)
  if (v.services.length === 0) out.push('  none: start one with `troupe start --agents <module>`')
  else {
    const rows = v.services.map((s) => [
      s.serviceId, s.status, s.roles || '-', s.agents || '-', ago(v.at - s.lastSeen),
      [s.status === 'alive' && ['leader', 'standby'].includes(s.supervisor) ? s.supervisor : '', s.note].filter(Boolean).join('; '),
    ])
    out.push(...table(['SERVICE', 'STATUS', 'ROLES', 'AGENTS', 'LAST SEEN', 'NOTE'], rows))
  }
  const agents = Object.entries(v.agents)
  out.push('', `agents: ${agents.length}`)
  if (agents.length > 0) {
    const n = (x: number | null): string => (x === null ? '?' : String(x))
    const rows = agents.map(([a, f]) => [a, String(f.queued), String(f.due), f.oldestDueMs ? `${(f.oldestDueMs / 1000).toFixed(1)}s` : '-', String(f.active), n(f.deadLetters), n(f.completedPerMin), n(f.failedPerMin), n(f.stuck)])
    out.push(...table(['AGENT', 'QUEUED', 'DUE', 'OLDEST DUE', 'ACTIVE', 'DEAD LETTERS', 'DONE/MIN', 'FAILED/MIN', 'STUCK'], rows))
  }
  out.push('')
  if (v.deadLetters === null) out.push('dead letters: ? (no supervisor rollup; "?" columns need a running supervisor)')
  else out.push(`dead letters: ${v.deadLetters} (leader's sweep ${v.rollup?.sweepAt ? ago(v.at - v.rollup.sweepAt) : 'not finished yet'})`)
  const p = v.persistence
  out.push(`persistence backlog: ${p.length} entries${p.group ? ` (${p.lag} not yet read, ${p.pending} being written)` : p.length > 0 ? ' (no persister has ever read them)' : ''}`)
  if (v.problems.length > 0) {
    out.push('', `problems (${v.problems.length} records skipped):`)
    for (const pr of v.problems) out.push(`  ${pr.kind === 'corrupt' ? 'corrupted health record of' : 'unknown id'} ${JSON.stringify(pr.serviceId)}: ${pr.detail}`)
  }
  return out.join('\n')
}

/** Prints the fleet (table or JSON), once or every 2 s with `watch`. */
export async function fleetStatus(client: TroupeClient, opts: { json: boolean; watch: boolean; intervalMs?: number; signal?: AbortSignal }): Promise<number> {
  // A read stuck on an unreachable Redis must not outlast Ctrl-C.
  const stopped = new Promise<null>((resolve) => opts.signal?.addEventListener('abort', () => resolve(null), { once: true }))
  for (;;) {
    const view = await Promise.race([readFleetView(client), stopped])
    if (view === null) return EXIT.ok
    if (opts.json) process.stdout.write(`${JSON.stringify(view)}\n`)
    else {
      if (opts.watch && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H')
      process.stdout.write(`${printable(renderFleet(view))}\n${opts.watch ? `\n(refreshing every ${(opts.intervalMs ?? 2000) / 1000}s; Ctrl-C to stop)\n` : ''}`)
    }
    if (!opts.watch || opts.signal?.aborted) return EXIT.ok
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        opts.signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, opts.intervalMs ?? 2000)
      opts.signal?.addEventListener('abort', done)
    })
    if (opts.signal?.aborted) return EXIT.ok
  }
}
