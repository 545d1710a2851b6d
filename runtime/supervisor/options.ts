// Supervisor settings: options override `TROUPE_SUPERVISOR_*` environment
// variables, which override the defaults. Validated once, with errors that name
// the setting.
import { MAX_TIMER_MS } from '../config.ts'
import { TroupeError } from '../errors.ts'
import type { DutyOptions } from './duties.ts'
import { FORGET_AFTER_MS } from './sweep.ts'

/** What `supervisorService()` accepts; every field is optional. */
export interface SupervisorOptions {
  /** Leader lease (Redlock TTL); a standby takes over within about this long after the leader dies. Default 10 s (`TROUPE_SUPERVISOR_LEASE_MS`). */
  leaseMs?: number
  /** Interval between leader ticks. Default 2 s (`TROUPE_SUPERVISOR_TICK_MS`). */
  tickMs?: number
  /** How often a standby tries to take over. Default a fifth of the lease. */
  retryMs?: number
  /** Heartbeats a service may miss before it is marked dead. Default 3; at most 4 (records expire after 5). */
  deadAfterMissed?: number
  /** How long a dead service stays listed (its record's TTL once marked); older index entries without a live record are removed. Default 1 h. */
  keepDeadMs?: number
  /** How long work may wait before its actor is reported stuck. Default 60 s (`TROUPE_SUPERVISOR_STUCK_MS`). */
  stuckAfterMs?: number
  /** Activations without progress that make an actor "failing". Default 3. */
  failingActivations?: number
  /** Passed deadlines handled per tick. Default 100. */
  deadlineBatch?: number
  /** SCAN calls of the workflow sweep per tick. Default 20. */
  sweepBudget?: number
  /** Time the sweep may take per tick, so a big keyspace never delays failure detection. Default a quarter of the tick (at least 50 ms). */
  sweepMaxMs?: number
  /** Window of the completed/failed-per-minute figures. Default 60 s. */
  sweepWindowMs?: number
  /** Hints walked per agent for the queue figures. Default 5000. */
  maxActorsPerAgent?: number
  /**
   * How long a `done` action's record stays at least before the leader forgets
   * it (see docs/supervisor.md, "Forgetting finished actions"). Default 1 h,
   * the persister's: a send with a caller's own action id is idempotent while
   * the first one's record exists.
   */
  forgetAfterMs?: number
  /** From the start of one pass forgetting finished actions' records to the start of the next. Default 1 h; at least 1 s. */
  forgetEveryMs?: number
  /** Fields asked per HSCAN of a workflow's records (one script call holds Redis for about 3–5 µs a field). Default 200; at most 10,000. */
  forgetPage?: number
  /** Most sweep_done.lua calls per tick. Default 64. */
  forgetCalls?: number
  /** Port of the Prometheus HTTP SD server; 0 picks a free one, false disables it. Default 0 (`TROUPE_SD_PORT`). */
  sdPort?: number | false
  /** Address the SD server binds. Default 127.0.0.1 (`TROUPE_SD_HOST`). */
  sdHost?: string
}

/** Options with every default filled in. */
export interface ResolvedSupervisorOptions extends DutyOptions {
  leaseMs: number
  tickMs: number
  retryMs: number
  sdPort: number | false
  sdHost: string
}

function envNum(name: string): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  // Digits only, as every other numeric setting (runtime/config.ts): Number() read
  // ' ' as 0 and '0x50' as 80, and took fractions the options then rounded.
  if (!/^\d+$/.test(raw)) throw new TroupeError('config', `${name}=${JSON.stringify(raw)} must be a whole number`)
  return Number(raw)
}

function positive(v: number, what: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isFinite(v) || v < min) throw new TroupeError('config', `supervisor ${what} must be at least ${min}, got ${v}`)
  // Past Node's timer limit a timer fires after 1 ms: a 30-day tick ran every duty in a tight loop.
  if (v > max) throw new TroupeError('config', `supervisor ${what} must be at most ${max}, got ${v}`)
  return Math.round(v)
}

/** Fills in defaults and validates; throws TroupeError('config') on a bad value. */
export function resolveSupervisorOptions(o: SupervisorOptions = {}): ResolvedSupervisorOptions {
  const leaseMs = positive(o.leaseMs ?? envNum('TROUPE_SUPERVISOR_LEASE_MS') ?? 10_000, 'leaseMs', 500, MAX_TIMER_MS)
  const tickMs = positive(o.tickMs ?? envNum('TROUPE_SUPERVISOR_TICK_MS') ?? 2000, 'tickMs', 50, MAX_TIMER_MS)
  const deadAfterMissed = positive(o.deadAfterMissed ?? 3, 'deadAfterMissed')
  if (deadAfterMissed > 4) throw new TroupeError('config', 'supervisor deadAfterMissed must be at most 4: health records expire after 5 missed heartbeats')
  const keepDeadMs = positive(o.keepDeadMs ?? 3_600_000, 'keepDeadMs', 1000)
  const envSd = envNum('TROUPE_SD_PORT')
  const sdPort = o.sdPort === false ? false : o.sdPort ?? envSd ?? 0
  if (sdPort !== false && (!Number.isInteger(sdPort) || sdPort > 65535)) throw new TroupeError('config', `supervisor sdPort must be a port number, got ${sdPort}`)
  return {
    leaseMs,
    tickMs,
    retryMs: positive(o.retryMs ?? Math.max(50, Math.floor(leaseMs / 5)), 'retryMs', 10, MAX_TIMER_MS),
    deadAfterMissed,
    keepDeadMs,
    stuckAfterMs: positive(o.stuckAfterMs ?? envNum('TROUPE_SUPERVISOR_STUCK_MS') ?? 60_000, 'stuckAfterMs', 100, MAX_TIMER_MS),
    failingActivations: positive(o.failingActivations ?? 3, 'failingActivations'),
    deadlineBatch: positive(o.deadlineBatch ?? 100, 'deadlineBatch'),
    // A claimed deadline comes back after this if its leader died mid-way.
    deadlineLeaseMs: Math.max(leaseMs, 5000),
    // Rollups outlive a failover but vanish when no supervisor runs at all.
    rollupTtlMs: Math.max(60_000, tickMs * 10),
    sweepBudget: positive(o.sweepBudget ?? 20, 'sweepBudget'),
    sweepMaxMs: positive(o.sweepMaxMs ?? Math.max(50, tickMs / 4), 'sweepMaxMs', 10),
    sweepWindowMs: positive(o.sweepWindowMs ?? 60_000, 'sweepWindowMs', 1000),
    repairGraceMs: Math.max(2000, tickMs),
    maxActorsPerAgent: positive(o.maxActorsPerAgent ?? 5000, 'maxActorsPerAgent'),
    // 0 is allowed: the stream alone decides then (tests, or sends that never reuse an id).
    forgetAfterMs: positive(o.forgetAfterMs ?? FORGET_AFTER_MS, 'forgetAfterMs', 0),
    forgetEveryMs: positive(o.forgetEveryMs ?? 3_600_000, 'forgetEveryMs', 1000),
    // A page is read, and its records removed, in one script call: bounded so none holds Redis long.
    forgetPage: positive(o.forgetPage ?? 200, 'forgetPage', 1, 10_000),
    forgetCalls: positive(o.forgetCalls ?? 64, 'forgetCalls'),
    sdPort,
    sdHost: o.sdHost ?? process.env.TROUPE_SD_HOST ?? '127.0.0.1',
  }
}
