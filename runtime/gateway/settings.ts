// Gateway settings: options passed in code override environment variables,
// which override defaults. Durations are milliseconds, like the runtime's own
// TROUPE_*_MS variables.
import { TroupeError } from '../errors.ts'
import { logLevelFromEnv } from '../log.ts'

/** The levels Fastify's logger (pino) takes. */
const PINO_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** Token lifetimes and cookie behaviour. */
export interface AuthSettings {
  /** `TROUPE_ACCESS_TTL_MS`: lifetime of a bearer access token (default 15 min). */
  accessTtlMs: number
  /** `TROUPE_REFRESH_TTL_MS`: lifetime of a refresh token, renewed on each rotation (default 30 days). */
  refreshTtlMs: number
  /** `TROUPE_SESSION_TTL_MS`: lifetime of a browser cookie session (default 12 h). */
  sessionTtlMs: number
  /** Add `Secure` to the session cookie: `auto` does so when the request came over HTTPS. */
  cookieSecure: boolean | 'auto'
}

/** Default per-user limits; each can be overridden per user with `troupe auth limits`. */
export interface LimitSettings {
  /** `TROUPE_RATE_PER_SEC`: sustained API requests per second per user (default 20). */
  ratePerSec: number
  /** `TROUPE_RATE_BURST`: requests a user may make at once after being idle (default 60). */
  burst: number
  /** `TROUPE_DAILY_STARTS`: workflows a user may start per UTC day (default 1000). */
  dailyStarts: number
  /** Credential exchanges per minute per user (brute-force brake; default 10). */
  authPerMin: number
}

/** Server-Sent Events behaviour. */
export interface SseSettings {
  /** `TROUPE_SSE_HEARTBEAT_MS`: comment line sent on every open stream (default 15 s). */
  heartbeatMs: number
  /** `TROUPE_SSE_RETRY_MS`: reconnect delay advertised with `retry:` (default 2 s). */
  retryMs: number
  /** `TROUPE_SSE_SLOW_MS`: a client whose socket stays full this long is dropped (default 10 s). */
  slowClientMs: number
  /** `TROUPE_SSE_MAX_QUEUE_BYTES`: a client that falls this far behind is dropped at once (default 8 MiB). */
  maxQueueBytes: number
  /** `TROUPE_SSE_MAX_STREAMS_PER_USER`: open streams one user may hold on one gateway process (default 64). */
  maxStreamsPerUser: number
}

/** Limits on how long a client may take to send its request (slowloris defence). */
export interface HttpSettings {
  /** `TROUPE_HEADERS_TIMEOUT_MS`: a client must send its complete request headers within this (default 20 s). */
  headersTimeoutMs: number
  /** `TROUPE_REQUEST_TIMEOUT_MS`: ... and its whole request, body included (default 60 s; must be >= headersTimeoutMs). */
  requestTimeoutMs: number
  /**
   * `TROUPE_GATEWAY_REDIS_WAIT_MS`: a request already waiting on Redis when the
   * connection dropped answers 503 once the outage lasts this long (default 5 s;
   * new requests get 503 at once).
   */
  redisWaitMs: number
}

/** Everything the gateway reads from its environment. */
export interface GatewaySettings {
  /** `--gateway-port` / `TROUPE_GATEWAY_PORT` (default 8080; 0 picks a free port). */
  port: number
  /** `TROUPE_GATEWAY_HOST` (default 127.0.0.1: expose it on purpose, behind TLS). */
  host: string
  /** Pino level for request logs (`TROUPE_LOG_LEVEL`, default info). */
  logLevel: string
  /**
   * `TROUPE_GATEWAY_TRUST_PROXY` (on/off, default off): trust `X-Forwarded-*`
   * from the one proxy in front, the gateway's peer. Each header's last entry
   * is the one it appended: the client's address, the public host and scheme.
   */
  trustProxy: boolean
  auth: AuthSettings
  limits: LimitSettings
  sse: SseSettings
  http: HttpSettings
}

/** Partial settings, as given in code (each group may be partial too). */
export interface GatewaySettingsInput {
  port?: number
  host?: string
  logLevel?: string
  trustProxy?: boolean
  auth?: Partial<AuthSettings>
  limits?: Partial<LimitSettings>
  sse?: Partial<SseSettings>
  http?: Partial<HttpSettings>
}

function envNum(name: string, fallback: number, min = 0): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  // Plain decimals only: Number() reads ' ' as 0 (any free port, for TROUPE_GATEWAY_PORT) and '0x50' as 80.
  const v = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN
  if (!Number.isFinite(v) || v < min) throw new TroupeError('config', `${name}=${JSON.stringify(raw)} must be a plain decimal number >= ${min}`)
  return v
}

/**
 * An on/off setting. Anything else is refused: `on` read as "off" once left
 * cookies without `Secure` behind a TLS proxy, and every cookie write looked
 * cross-site (403), with nothing said.
 */
function envSwitch(name: string, fallback: boolean): boolean {
  const raw = process.env[name]
  const v = (raw ?? '').trim().toLowerCase()
  if (v === '') return fallback
  if (['on', '1', 'true', 'yes'].includes(v)) return true
  if (['off', '0', 'false', 'no'].includes(v)) return false
  throw new TroupeError('config', `${name}=${JSON.stringify(raw)} must be on or off`)
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new TroupeError('config', `gateway setting ${name} must be a positive number, got ${v}`)
  return v
}

/** Resolves the gateway's settings from `input`, then the environment, then defaults. */
export function gatewaySettings(input: GatewaySettingsInput = {}): GatewaySettings {
  const port = input.port ?? envNum('TROUPE_GATEWAY_PORT', 8080)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TroupeError('config', `gateway port must be 0-65535, got ${port}`)
  const auth: AuthSettings = {
    accessTtlMs: envNum('TROUPE_ACCESS_TTL_MS', 15 * 60_000, 1),
    refreshTtlMs: envNum('TROUPE_REFRESH_TTL_MS', 30 * 24 * 3600_000, 1),
    sessionTtlMs: envNum('TROUPE_SESSION_TTL_MS', 12 * 3600_000, 1),
    cookieSecure: 'auto',
    ...input.auth,
  }
  const limits: LimitSettings = {
    ratePerSec: envNum('TROUPE_RATE_PER_SEC', 20),
    burst: envNum('TROUPE_RATE_BURST', 60, 1),
    dailyStarts: envNum('TROUPE_DAILY_STARTS', 1000),
    authPerMin: 10,
    ...input.limits,
  }
  const sse: SseSettings = {
    heartbeatMs: envNum('TROUPE_SSE_HEARTBEAT_MS', 15_000, 1),
    retryMs: envNum('TROUPE_SSE_RETRY_MS', 2000, 1),
    slowClientMs: envNum('TROUPE_SSE_SLOW_MS', 10_000, 1),
    maxQueueBytes: envNum('TROUPE_SSE_MAX_QUEUE_BYTES', 8 * 1024 * 1024, 1024),
    maxStreamsPerUser: envNum('TROUPE_SSE_MAX_STREAMS_PER_USER', 64, 1),
    ...input.sse,
  }
  const http: HttpSettings = {
    headersTimeoutMs: envNum('TROUPE_HEADERS_TIMEOUT_MS', 20_000, 1),
    requestTimeoutMs: envNum('TROUPE_REQUEST_TIMEOUT_MS', 60_000, 1),
    redisWaitMs: envNum('TROUPE_GATEWAY_REDIS_WAIT_MS', 5000, 1),
    ...input.http,
  }
  for (const [k, v] of Object.entries({ ...auth, ...sse, ...http })) if (typeof v === 'number') positive(k, v)
  // Node refuses to start a server whose headers may take longer than the whole request.
  if (http.headersTimeoutMs > http.requestTimeoutMs) {
    throw new TroupeError('config', `gateway headersTimeoutMs (${http.headersTimeoutMs}) must not exceed requestTimeoutMs (${http.requestTimeoutMs})`)
  }
  positive('burst', limits.burst)
  positive('authPerMin', limits.authPerMin)
  return {
    port,
    host: input.host ?? process.env.TROUPE_GATEWAY_HOST ?? '127.0.0.1',
    logLevel: input.logLevel ?? logLevelFromEnv(process.env.TROUPE_LOG_LEVEL, PINO_LEVELS),
    trustProxy: input.trustProxy ?? envSwitch('TROUPE_GATEWAY_TRUST_PROXY', false),
    auth,
    limits,
    sse,
    http,
  }
}
