// `troupe gateway`: a runtime process hosting only the gateway (HTTP API, SSE,
// web UI) until SIGTERM/SIGINT. `troupe start --agents m --gateway` hosts it next
// to agents instead.
import { gatewayService, type GatewayServiceOptions } from '../gateway/service.ts'
import { parse, portFlag, serveAlone, UsageError, type Command } from './common.ts'

const usage = `usage: troupe gateway [--port 8080] [--host 127.0.0.1] [--metrics-port N] [--heartbeat 2s] [--allow-eviction]

Serves the HTTP API (/v1), live SSE streams and the web UI (/) until SIGTERM/SIGINT.
  --port          listening port (also --gateway-port; default TROUPE_GATEWAY_PORT or 8080)
  --host          listening address (also --gateway-host; default TROUPE_GATEWAY_HOST or 127.0.0.1)
  --metrics-port  port of /metrics, /healthz, /readyz (default TROUPE_METRICS_PORT or a free one)
  --heartbeat     this process's heartbeat interval (default 2s)
  --allow-eviction  start even if Redis maxmemory-policy may evict keys
Users sign in with credentials from 'troupe auth issue --user <name>' (see docs/gateway.md).`

/** Gateway options from `--gateway-port` / `--port` and `--gateway-host` / `--host` (`troupe start --gateway` passes the `gateway-` ones). */
export function gatewayFlags(values: Record<string, string | boolean | undefined>): GatewayServiceOptions {
  const text = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined)
  const port = portFlag(text(values['gateway-port']) ?? text(values.port), text(values['gateway-port']) !== undefined ? '--gateway-port' : '--port')
  const host = text(values['gateway-host']) ?? text(values.host)
  return { ...(port !== undefined ? { port } : {}), ...(host ? { host } : {}) }
}

/** The `gateway` command. */
export const command: Command = {
  summary: 'serve the HTTP API, SSE and web UI',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      port: { type: 'string' },
      'gateway-port': { type: 'string' },
      host: { type: 'string' },
      'gateway-host': { type: 'string' },
      'metrics-port': { type: 'string' },
      heartbeat: { type: 'string' },
      'allow-eviction': { type: 'boolean' },
    })
    if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0] ?? ''}`)
    return await serveAlone(gatewayService(gatewayFlags(values)), values)
  },
}
