// What the gateway's route modules share: built once in server.ts, passed to each.
import type { TroupeClient } from '../client.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import type { AuthStore } from './auth-store.ts'
import type { GatewayMetrics } from './metrics.ts'
import type { PendingSignOuts } from './pending-sign-outs.ts'
import type { RateLimiter } from './rate-limit.ts'
import type { GatewaySettings } from './settings.ts'
import type { SseHub } from './sse-hub.ts'

/** Services every route module may use. */
export interface GatewayDeps {
  redis: RedisClient
  keys: Keys
  client: TroupeClient
  store: AuthStore
  limiter: RateLimiter
  metrics: GatewayMetrics
  hub: SseHub
  /** Session sign-outs made while Redis was away, revoked when it is back. */
  signOuts: PendingSignOuts
  settings: GatewaySettings
  now: () => number
  /** Whether Redis answers now: its connection is up and it has not stalled (see RedisGate). */
  redisReady(): boolean
}
