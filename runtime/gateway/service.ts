// The gateway as a HostedService: `troupe start --gateway` or `troupe gateway`
// run it inside a runtime process, sharing its Redis connection and metrics.
import type { HostedService, Runtime } from '../runtime.ts'
import { createGateway, type Gateway } from './server.ts'
import type { GatewaySettingsInput } from './settings.ts'

/** Options of {@link gatewayService}. */
export interface GatewayServiceOptions extends GatewaySettingsInput {
  /** Clock for token expiry and rate limits (tests). */
  now?: () => number
}

/** The hosted gateway, with access to the running server (e.g. its URL) once started. */
export interface GatewayService extends HostedService {
  readonly gateway: Gateway | null
}

/**
 * Creates the gateway service (role `gateway`): the HTTP API, SSE and web UI.
 *
 * @example
 * ```ts
 * const gw = gatewayService({ port: 8080 })
 * const rt = await startRuntime({ agents: [], services: [gw] })
 * console.log(gw.gateway?.url)
 * ```
 */
export function gatewayService(opts: GatewayServiceOptions = {}): GatewayService {
  let gateway: Gateway | null = null
  const { now, ...settings } = opts
  return {
    role: 'gateway',
    get gateway() {
      return gateway
    },
    async start(rt: Runtime) {
      const gw = await createGateway({ redis: rt.redis, cfg: rt.cfg, registry: rt.metrics.registry, settings, ...(now ? { now } : {}) })
      await gw.listen()
      gateway = gw
      rt.log.info(`gateway listening on ${gw.url} (web UI at ${gw.url}/)`)
    },
    async stop() {
      const gw = gateway
      gateway = null
      await gw?.close()
    },
    // Bounded by the gateway's Redis wait: a Redis that stopped answering is not ready.
    async ready() {
      return gateway !== null && (await gateway.redisAnswers())
    },
    health(): Record<string, string> {
      return gateway ? { gatewayUrl: gateway.url } : {}
    },
  }
}
