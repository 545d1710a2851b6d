// Runtime configuration: flags override environment variables, which override defaults.
import { TroupeError } from './errors.ts'

/** Settings shared by runtimes, clients and the gateway. */
export interface TroupeConfig {
  /** `REDIS_URL`; `redis+cluster://h:p,h:p` for Redis Cluster. */
  redisUrl: string
  /** `TROUPE_NAMESPACE`: prefix for every key and channel (default none). */
  namespace: string
  /** `TROUPE_PERSISTENCE=off` stops feeding `persistence:queue` (deployments without Neo4j). */
  persistence: boolean
  /** `TROUPE_STREAM_MAXLEN`: approximate cap of each workflow's event stream, applied only when persistence is off. */
  streamMaxLen: number
  /** `TROUPE_MAX_PAYLOAD_BYTES`: largest accepted action payload (JSON bytes). */
  maxPayloadBytes: number
  /** `TROUPE_RETENTION_MS`: TTL of an ended workflow's keys when persistence is off. */
  retentionMs: number
  /** Lock TTL and ready-hint lease; held locks are extended every third of it. */
  lockTtlMs: number
  /** `TROUPE_IDLE_POLL_MS`: longest an idle worker sleeps without a wake-up before it looks at its ready queue again. */
  idlePollMs: number
}

function num(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const v = Number(raw)
  if (!Number.isFinite(v) || v < 0) throw new TroupeError('config', `${name}=${raw} is not a non-negative number`)
  return v
}

/** Longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Reads the configuration from the environment, with `overrides` on top. */
export function loadConfig(overrides: Partial<TroupeConfig> = {}): TroupeConfig {
  const persistenceEnv = (process.env.TROUPE_PERSISTENCE ?? 'on').toLowerCase()
  const cfg: TroupeConfig = {
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    namespace: process.env.TROUPE_NAMESPACE ?? '',
    persistence: !['off', '0', 'false', 'no'].includes(persistenceEnv),
    streamMaxLen: num('TROUPE_STREAM_MAXLEN', 10_000),
    maxPayloadBytes: num('TROUPE_MAX_PAYLOAD_BYTES', 1024 * 1024),
    retentionMs: num('TROUPE_RETENTION_MS', 7 * 24 * 3600 * 1000),
    lockTtlMs: num('TROUPE_LOCK_TTL_MS', 30_000),
    idlePollMs: num('TROUPE_IDLE_POLL_MS', 1000),
    ...overrides,
  }
  if (!/^(redis|rediss|redis\+cluster):\/\//.test(cfg.redisUrl)) {
    throw new TroupeError('config', `the Redis URL ${JSON.stringify(cfg.redisUrl)} (REDIS_URL or --redis) must start with redis://, rediss:// or redis+cluster://`)
  }
  if (cfg.namespace && !/^[A-Za-z0-9_.-]+:$/.test(cfg.namespace)) {
    throw new TroupeError('config', `the namespace ${JSON.stringify(cfg.namespace)} (TROUPE_NAMESPACE or --namespace) must be letters, digits, _ . - and end with ':' (e.g. "staging:")`)
  }
  // Upper bounds: Node fires a longer timer after 1 ms, which would extend every
  // lock, or poll, in a busy loop.
  if (!(cfg.lockTtlMs >= 1000 && cfg.lockTtlMs <= MAX_TIMER_MS)) throw new TroupeError('config', `lockTtlMs must be from 1000 to ${MAX_TIMER_MS} ms`)
  if (!(cfg.idlePollMs >= 10 && cfg.idlePollMs <= MAX_TIMER_MS)) throw new TroupeError('config', `idlePollMs must be from 10 to ${MAX_TIMER_MS} ms`)
  return cfg
}

/** Stream cap used by scripts: 0 (never trim) while the persister still has to read the stream. */
export function effectiveMaxLen(cfg: TroupeConfig): number {
  return cfg.persistence ? 0 : cfg.streamMaxLen
}

/** TTL scripts put on ended workflows: only when persistence is off (else the persister does it after writing). */
export function effectiveRetention(cfg: TroupeConfig): number {
  return cfg.persistence ? 0 : cfg.retentionMs
}
