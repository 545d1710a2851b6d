// A whole Troupe deployment as real child processes, the way an operator runs it:
// two runtime processes hosting agents, a supervisor (which serves Prometheus
// http_sd) and a gateway. Used by the observability test and by
// scripts/render-dashboard.ts, so the picture in the docs comes from the same
// fleet the test scrapes.
import { TroupeClient } from '../../runtime/index.ts'
import type { TroupeConfig } from '../../runtime/config.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'

/** A child process with what it announced at start. */
export interface FleetProcess extends RuntimeChild {
  readonly serviceId: string
  readonly role: 'worker' | 'supervisor' | 'gateway'
}

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** Agents module of the two worker runtimes. */
  agents: string
  /** Extra `troupe start` flags of the workers (e.g. `--concurrency 1`). */
  workerArgs?: string[]
  /** Extra flags of the first worker only (e.g. `--persister`). */
  firstWorkerArgs?: string[]
  /** Environment for every process. */
  env?: Record<string, string>
  /** Extra environment for the gateway (SSE and limit settings). */
  gatewayEnv?: Record<string, string>
  /** More runtimes, each `troupe start` with these arguments (e.g. another agents module). */
  extraRuntimes?: string[][]
}

/** A running fleet. */
export interface Fleet {
  readonly cfg: TroupeConfig
  readonly workers: FleetProcess[]
  readonly supervisor: FleetProcess
  readonly gateway: FleetProcess
  /** Every process, for `up` checks. */
  readonly processes: FleetProcess[]
  /** The supervisor's http_sd endpoint. */
  readonly sdUrl: string
  /** The gateway's base URL. */
  readonly gatewayUrl: string
  readonly client: TroupeClient
  stop(): Promise<void>
}

function announced(c: RuntimeChild, re: RegExp, what: string): string {
  const m = re.exec(c.output())
  if (!m?.[1]) throw new Error(`no ${what} in the output of a child process:\n${c.output()}`)
  return m[1]
}

async function spawnAs(cfg: TroupeConfig, role: FleetProcess['role'], command: string[], env: Record<string, string>): Promise<FleetProcess> {
  const c = await spawnRuntime(cfg, { command, env })
  return Object.assign(c, { role, serviceId: announced(c, /runtime (\S+) \(/, 'service id') })
}

/**
 * Starts the fleet in the namespace of `cfg`; resolves once every process serves
 * /metrics. Short supervisor timings so rollups and stuck reports show up within
 * a test's patience.
 */
export async function startFleet(cfg: TroupeConfig, opts: FleetOptions): Promise<Fleet> {
  const env = { TROUPE_LOG_LEVEL: 'warn', ...opts.env }
  // The supervisor and the gateway print their addresses at `info`.
  const loud = { ...env, TROUPE_LOG_LEVEL: 'info' }
  const started = await Promise.allSettled([
    spawnAs(cfg, 'worker', ['start', '--agents', opts.agents, ...(opts.workerArgs ?? []), ...(opts.firstWorkerArgs ?? [])], loud),
    spawnAs(cfg, 'worker', ['start', '--agents', opts.agents, ...(opts.workerArgs ?? [])], loud),
    spawnAs(cfg, 'supervisor', ['supervisor', '--tick', '250ms', '--lease', '3s', '--stuck-after', '1s', '--heartbeat', '500ms', '--sd-port', '0'], loud),
    spawnAs(cfg, 'gateway', ['gateway', '--port', '0'], { ...loud, ...opts.gatewayEnv }),
    ...(opts.extraRuntimes ?? []).map((args) => spawnAs(cfg, 'worker', ['start', ...args], loud)),
  ])
  const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
  const failed = started.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []))
  if (failed.length > 0) {
    await Promise.all(ok.map((c) => c.stop(5000)))
    throw failed[0] instanceof Error ? failed[0] : new Error(String(failed[0]))
  }
  const [w1, w2, supervisor, gateway, ...extra] = ok as [FleetProcess, FleetProcess, FleetProcess, FleetProcess, ...FleetProcess[]]
  const client = TroupeClient.connect(cfg)
  const processes = [w1, w2, supervisor, gateway, ...extra]
  return {
    cfg,
    workers: [w1, w2, ...extra],
    supervisor,
    gateway,
    processes,
    sdUrl: announced(supervisor, /service discovery (http:\/\/\S+?)[,)]/, 'service discovery URL'),
    gatewayUrl: announced(gateway, /gateway listening on (http:\/\/\S+)/, 'gateway URL'),
    client,
    async stop() {
      await Promise.all(processes.map((c) => c.stop(5000)))
      await client.close()
    },
  }
}

/** Removes every key of the fleet's namespace (the tests share one Redis). */
export async function dropNamespace(client: TroupeClient, namespace: string): Promise<void> {
  if (!namespace) return
  let cursor = '0'
  do {
    const [next, keys] = await client.redis.scan(cursor, 'MATCH', `${namespace}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await client.redis.unlink(...keys)
  } while (cursor !== '0')
}
