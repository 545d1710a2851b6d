// Settings of the persister: flags override environment variables, which override
// defaults. Neo4j's address and credentials come from the same NEO4J_* variables
// the local services bootstrap (scripts/with-services.ts) exports.
import { MAX_TIMER_MS } from '../config.ts'
import { TroupeError } from '../errors.ts'

/** What a persister can be told; every field is optional. */
export interface PersisterOptions {
  /** `NEO4J_URI` (default `bolt://127.0.0.1:7687`); `neo4j://` for clusters and Aura. */
  neo4jUri?: string
  /** `NEO4J_USER` (default `neo4j`). */
  neo4jUser?: string
  /** `NEO4J_PASSWORD` (default empty: no auth when the server allows it). */
  neo4jPassword?: string
  /** `NEO4J_DATABASE` (default: the server's default database). */
  database?: string
  /** Fewest / most pointer entries read at once; the read size adapts in between. */
  minBatch?: number
  maxBatch?: number
  /** Most events written in one transaction (a batch is split beyond it). */
  maxEventsPerTx?: number
  /** Most bytes of event content and metadata in one transaction. */
  maxBytesPerTx?: number
  /**
   * About the most bytes of events a batch (or a reconciliation backfill) holds
   * in memory at once (default 4 × maxBytesPerTx): past it, what was read is
   * written before the rest is read.
   */
  maxBytesPerRead?: number
  /** Transactions of one batch written at once (workflows split between them; default 2). */
  writeConcurrency?: number
  /** Write time above which the read size shrinks (and below which it may grow). */
  targetWriteMs?: number
  /** How long one XREADGROUP blocks waiting for new entries. */
  blockMs?: number
  /** `TROUPE_PERSISTER_CLAIM_IDLE_MS`: entries unacked this long are taken over from their consumer (default 30 s). */
  claimIdleMs?: number
  /** An entry delivered more often than this is parked instead of retried forever (default 10). */
  maxDeliveries?: number
  /** First and largest pause between attempts while Neo4j or Redis is down. */
  backoffMinMs?: number
  backoffMaxMs?: number
  /** `TROUPE_RECONCILE_MS`: interval of the reconciliation sweep steps (default 30 s; 0 turns it off). */
  reconcileMs?: number
  /** The sweep leaves workflows alone whose last event is younger than this plus the current lag (default 5 s). */
  reconcileSettleMs?: number
  /** SCAN calls per reconciliation step. */
  reconcileScanBudget?: number
  /** `TROUPE_RETENTION_MS`: TTL put on a finished workflow's keys once it is fully persisted (default 7 days). */
  retentionMs?: number
  /** Approximate cap of `persistence:parked`. */
  parkedMaxLen?: number
  /**
   * Consumers of the group idle this long and holding nothing are removed (those
   * of persisters gone; every process joins under a new name). Default: 20 ×
   * claimIdleMs, at least 10 minutes.
   */
  pruneIdleMs?: number
}

/** Options with every default applied. */
export type ResolvedPersisterOptions = Required<Omit<PersisterOptions, 'database'>> & { database: string | undefined }

/** Where a setting can come from, for messages: its flag (under `troupe persister`, and `troupe start`) and variable. */
const SOURCES: Partial<Record<keyof ResolvedPersisterOptions, { flag?: string; env?: string }>> = {
  claimIdleMs: { flag: 'claim-idle', env: 'TROUPE_PERSISTER_CLAIM_IDLE_MS' },
  reconcileMs: { flag: 'reconcile-every', env: 'TROUPE_RECONCILE_MS' },
  retentionMs: { flag: 'retention', env: 'TROUPE_RETENTION_MS' },
  maxBatch: { flag: 'batch' },
}

function named(k: keyof ResolvedPersisterOptions): string {
  const s = SOURCES[k]
  const names = [s?.flag ? `--${s.flag} / --persister-${s.flag}` : '', s?.env ?? ''].filter(Boolean)
  return names.length > 0 ? `${k} (${names.join(', ')})` : k
}

function envInt(name: string, max = MAX_TIMER_MS): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  // Whole milliseconds only: Redis refuses a fraction as a min-idle time or a
  // TTL, and a value Node cannot time (past MAX_TIMER_MS) fires after 1 ms.
  const v = /^\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN
  if (!(v <= max)) throw new TroupeError('config', `${name}=${raw} must be a whole number of milliseconds, from 0 to ${max}`)
  return v
}

/**
 * Applies environment variables and defaults to `opts`, and checks the result.
 *
 * @example
 * ```ts
 * const o = resolvePersisterOptions({ claimIdleMs: 5000 })
 * o.neo4jUri // NEO4J_URI or bolt://127.0.0.1:7687
 * ```
 */
export function resolvePersisterOptions(opts: PersisterOptions = {}): ResolvedPersisterOptions {
  const env = process.env
  const claimIdleMs = opts.claimIdleMs ?? envInt('TROUPE_PERSISTER_CLAIM_IDLE_MS') ?? 30_000
  const o: ResolvedPersisterOptions = {
    neo4jUri: opts.neo4jUri ?? (env.NEO4J_URI || 'bolt://127.0.0.1:7687'),
    neo4jUser: opts.neo4jUser ?? (env.NEO4J_USER || 'neo4j'),
    neo4jPassword: opts.neo4jPassword ?? env.NEO4J_PASSWORD ?? '',
    database: opts.database ?? (env.NEO4J_DATABASE || undefined),
    minBatch: opts.minBatch ?? 50,
    maxBatch: opts.maxBatch ?? 2000,
    maxEventsPerTx: opts.maxEventsPerTx ?? 5000,
    maxBytesPerTx: opts.maxBytesPerTx ?? 8 * 1024 * 1024,
    maxBytesPerRead: opts.maxBytesPerRead ?? 4 * (opts.maxBytesPerTx ?? 8 * 1024 * 1024),
    writeConcurrency: opts.writeConcurrency ?? 2,
    targetWriteMs: opts.targetWriteMs ?? 500,
    blockMs: opts.blockMs ?? 1000,
    claimIdleMs,
    maxDeliveries: opts.maxDeliveries ?? 10,
    backoffMinMs: opts.backoffMinMs ?? 200,
    backoffMaxMs: opts.backoffMaxMs ?? 10_000,
    reconcileMs: opts.reconcileMs ?? envInt('TROUPE_RECONCILE_MS') ?? 30_000,
    reconcileSettleMs: opts.reconcileSettleMs ?? 5000,
    reconcileScanBudget: opts.reconcileScanBudget ?? 4,
    retentionMs: opts.retentionMs ?? envInt('TROUPE_RETENTION_MS', Number.MAX_SAFE_INTEGER) ?? 7 * 24 * 3600 * 1000,
    parkedMaxLen: opts.parkedMaxLen ?? 10_000,
    pruneIdleMs: opts.pruneIdleMs ?? Math.min(MAX_TIMER_MS, Math.max(10 * 60_000, 20 * claimIdleMs)),
  }
  if (!/^(bolt|neo4j)(\+s|\+ssc)?:\/\//.test(o.neo4jUri)) {
    throw new TroupeError('config', `NEO4J_URI=${o.neo4jUri} is not a Neo4j URI: use bolt://host:7687 or neo4j://host:7687`)
  }
  // Counts and sizes go to Redis (COUNT, MAXLEN) and into arithmetic: whole numbers.
  const counts: (keyof ResolvedPersisterOptions)[] = ['minBatch', 'maxBatch', 'maxEventsPerTx', 'writeConcurrency', 'maxBytesPerTx', 'maxBytesPerRead', 'maxDeliveries', 'parkedMaxLen', 'reconcileScanBudget']
  for (const k of counts) {
    const v = o[k]
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new TroupeError('config', `persister option ${named(k)} must be a positive whole number (got ${String(v)})`)
  }
  // Durations that become timers (setInterval, XState delays) or Redis's
  // min-idle and BLOCK times: whole milliseconds Node can time. A fraction made
  // every claim fail in Redis; past MAX_TIMER_MS a timer fires after 1 ms.
  const timers: [keyof ResolvedPersisterOptions, number][] = [
    ['claimIdleMs', 1], ['reconcileMs', 0], ['blockMs', 1], ['backoffMinMs', 1], ['backoffMaxMs', 1], ['targetWriteMs', 1], ['reconcileSettleMs', 0], ['pruneIdleMs', 1],
  ]
  for (const [k, min] of timers) {
    const v = o[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > MAX_TIMER_MS) {
      throw new TroupeError('config', `persister option ${named(k)} must be a whole number of milliseconds, from ${min}${k === 'reconcileMs' ? ' (off)' : ''} to ${MAX_TIMER_MS} (got ${String(v)})`)
    }
  }
  // A TTL, not a timer: PEXPIRE takes any whole number of milliseconds.
  if (!Number.isSafeInteger(o.retentionMs) || o.retentionMs <= 0) throw new TroupeError('config', `persister option ${named('retentionMs')} must be a positive whole number of milliseconds (got ${String(o.retentionMs)})`)
  if (o.minBatch > o.maxBatch) throw new TroupeError('config', `persister minBatch (${o.minBatch}) is larger than maxBatch (${o.maxBatch})`)
  return o
}
