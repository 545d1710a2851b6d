// Runtime configuration: flags override environment variables, which override defaults.
import { TroupeError } from './errors.ts'

/** Settings shared by runtimes, clients and the gateway. */
export interface TroupeConfig {
  /** `REDIS_URL`; `redis+cluster://[user:password@]h:p,h:p` for Redis Cluster (`rediss+cluster://` with TLS). */
  redisUrl: string
  /** `TROUPE_NAMESPACE`: prefix for every key and channel (default none). */
  namespace: string
  /** `TROUPE_PERSISTENCE=off` stops feeding `persistence:queue` (deployments without Neo4j). */
  persistence: boolean
  /**
   * `TROUPE_STREAM_MAXLEN`: approximate cap of each workflow's event stream (0: no cap). With
   * persistence off the scripts trim as they append; with it on the persister trims a stream
   * back to it once Neo4j holds what goes (its own process's value counts).
   */
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
  // Digits only: Number(' ') is 0 and Number('2500.5') reaches Redis as a TTL it refuses.
  if (!/^\d+$/.test(raw)) throw new TroupeError('config', `${name}=${JSON.stringify(raw)} must be a whole number`)
  return Number(raw)
}

/** TROUPE_PERSISTENCE: on (default) or off; anything else is a mistake, not "on". */
function persistenceFromEnv(raw: string | undefined): boolean {
  const v = (raw ?? '').trim().toLowerCase()
  if (v === '' || ['on', '1', 'true', 'yes'].includes(v)) return true
  if (['off', '0', 'false', 'no'].includes(v)) return false
  throw new TroupeError('config', `TROUPE_PERSISTENCE=${JSON.stringify(raw)} must be on or off`)
}

/**
 * Where the user info of `url` ends (its @), or -1: at the last @, whatever
 * the password before it holds (an unencoded / ? or # ends the authority for a
 * URL parser, yet it is still the password the user typed, and a URL without a
 * scheme has one too), unless that @ is in a query parameter of a URL that
 * parses as one (`redis://h:6379/0?name=a@b`): then at the authority's own @.
 */
export function userinfoEnd(url: string): number {
  const last = url.lastIndexOf('@')
  if (last < 0) return -1
  const start = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0].length ?? 0
  const query = url.indexOf('?', start)
  if (query < 0 || query > last || !url.slice(query, last).includes('=')) return last
  try {
    // Read as a query parameter only when the URL parses that way (a valid host
    // and port before the ?): `redis://alice:x?password=y@h` does not.
    new URL(url)
  } catch {
    return last
  }
  const end = url.slice(start).search(/[/?#]/)
  const authority = end < 0 ? url.slice(start) : url.slice(start, start + end)
  const at = authority.lastIndexOf('@')
  return at < 0 ? -1 : start + at
}

/**
 * `url` with its secrets replaced by *** (for messages and logs): the password
 * (everything from the user name to the @ that ends the user info, see
 * userinfoEnd) and `password=` query values.
 */
export function redactUrl(url: string): string {
  const masked: boolean[] = Array.from({ length: url.length }, () => false)
  const mask = (from: number, to: number): void => {
    for (let i = from; i < to; i++) masked[i] = true
  }
  const at = userinfoEnd(url)
  if (at >= 0) {
    const start = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0].length ?? 0
    const colon = url.indexOf(':', start)
    // The user name stays, as a clue to which account, unless it cannot be one.
    const keepUser = colon >= 0 && colon < at && !/[/?#]/.test(url.slice(start, colon))
    mask(keepUser ? colon + 1 : start, at)
  }
  // Both on the original text: a query password may hold an @, and a userinfo
  // password may hold "?password=".
  for (const m of url.matchAll(/[?&;]password=([^&#]*)/gi)) mask((m.index ?? 0) + m[0].length - (m[1] ?? '').length, (m.index ?? 0) + m[0].length)
  let out = ''
  for (let i = 0; i < url.length; i++) {
    if (!masked[i]) out += url[i] ?? ''
    else if (!masked[i - 1]) out += '***'
  }
  return out
}

/** Longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Reads the configuration from the environment, with `overrides` on top. */
export function loadConfig(given: Partial<TroupeConfig> = {}): TroupeConfig {
  // An override written as `undefined` (`{ namespace: opts.ns }` with no ns) is
  // no override: spread as it is, it replaced the environment's value, and a
  // client silently used the keyspace without a namespace, or persistence off.
  const overrides = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as Partial<TroupeConfig>
  const cfg: TroupeConfig = {
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    namespace: process.env.TROUPE_NAMESPACE ?? '',
    persistence: overrides.persistence ?? persistenceFromEnv(process.env.TROUPE_PERSISTENCE),
    streamMaxLen: num('TROUPE_STREAM_MAXLEN', 10_000),
    maxPayloadBytes: num('TROUPE_MAX_PAYLOAD_BYTES', 1024 * 1024),
    retentionMs: num('TROUPE_RETENTION_MS', 7 * 24 * 3600 * 1000),
    lockTtlMs: num('TROUPE_LOCK_TTL_MS', 30_000),
    idlePollMs: num('TROUPE_IDLE_POLL_MS', 1000),
    ...overrides,
  }
  if (typeof cfg.redisUrl !== 'string' || typeof cfg.namespace !== 'string' || typeof cfg.persistence !== 'boolean') {
    throw new TroupeError('config', 'redisUrl and namespace must be strings, persistence a boolean')
  }
  if (!/^(redis|rediss|redis\+cluster|rediss\+cluster):\/\//.test(cfg.redisUrl)) {
    throw new TroupeError('config', `the Redis URL ${JSON.stringify(redactUrl(cfg.redisUrl))} (REDIS_URL or --redis) must start with redis://, rediss://, redis+cluster:// or rediss+cluster://`)
  }
  if (cfg.namespace && !/^[A-Za-z0-9_.-]+:$/.test(cfg.namespace)) {
    throw new TroupeError('config', `the namespace ${JSON.stringify(cfg.namespace)} (TROUPE_NAMESPACE or --namespace) must be letters, digits, _ . - and end with ':' (e.g. "staging:")`)
  }
  // Upper bounds: Node fires a longer timer after 1 ms, which would extend every
  // lock, or poll, in a busy loop.
  if (!(cfg.lockTtlMs >= 1000 && cfg.lockTtlMs <= MAX_TIMER_MS)) throw new TroupeError('config', `lockTtlMs must be from 1000 to ${MAX_TIMER_MS} ms`)
  if (!(cfg.idlePollMs >= 10 && cfg.idlePollMs <= MAX_TIMER_MS)) throw new TroupeError('config', `idlePollMs must be from 10 to ${MAX_TIMER_MS} ms`)
  // Whole numbers: the scripts pass them to Redis as TTLs and counts, which
  // refuses a fraction halfway through a script (its earlier writes kept).
  // Retention 0 meant "no TTL" to the scripts and "already expired" to the
  // owner index; a payload limit of 0 refused every send.
  const whole: [keyof TroupeConfig, string, number][] = [
    ['lockTtlMs', 'TROUPE_LOCK_TTL_MS', 1000], ['idlePollMs', 'TROUPE_IDLE_POLL_MS', 10], ['retentionMs', 'TROUPE_RETENTION_MS', 1000],
    ['maxPayloadBytes', 'TROUPE_MAX_PAYLOAD_BYTES', 1], ['streamMaxLen', 'TROUPE_STREAM_MAXLEN', 0],
  ]
  for (const [k, env, min] of whole) {
    const v = cfg[k]
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new TroupeError('config', `${k} (${env}) must be a whole number, at least ${min}; got ${String(v)}`)
  }
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

/**
 * The settings that decide what the shared scripts do to a workflow's keys
 * (stream trimming, TTLs, persistence pointers), whichever process runs them:
 * every runtime and client of a namespace must share them. Runtimes publish
 * theirs with their agents' registrations (`system:agents`).
 */
export interface FleetSettings {
  /** `TROUPE_PERSISTENCE` */
  persistence: boolean
  /** `TROUPE_STREAM_MAXLEN` */
  streamMaxLen: number
  /** `TROUPE_RETENTION_MS` */
  retentionMs: number
}

/** The {@link FleetSettings} of `cfg`. */
export function fleetSettings(cfg: TroupeConfig): FleetSettings {
  return { persistence: cfg.persistence, streamMaxLen: cfg.streamMaxLen, retentionMs: cfg.retentionMs }
}

/**
 * Whether two processes with these settings make the scripts behave the same.
 * The cap and the retention count only with persistence off: with it on the
 * scripts neither trim nor expire (effectiveMaxLen, effectiveRetention), and a
 * runtime set up for its persister's retention must not lock every client out.
 */
export function sameFleetSettings(a: FleetSettings, b: FleetSettings): boolean {
  if (a.persistence !== b.persistence) return false
  return a.persistence || (a.streamMaxLen === b.streamMaxLen && a.retentionMs === b.retentionMs)
}

/** `s` as the environment variables that set it, for messages. */
export function describeFleetSettings(s: FleetSettings): string {
  return `TROUPE_PERSISTENCE=${s.persistence ? 'on' : 'off'} TROUPE_STREAM_MAXLEN=${s.streamMaxLen} TROUPE_RETENTION_MS=${s.retentionMs}`
}
