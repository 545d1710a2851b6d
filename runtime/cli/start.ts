// `troupe start`: hosts agents (and built-in services) until SIGTERM/SIGINT, then drains.
import { startRuntime } from '../runtime.ts'
import type { HostedService } from '../runtime.ts'
import { TroupeError } from '../errors.ts'
import { MAX_TIMER_MS } from '../config.ts'
import { configFlags, metricsPortFlag, parse, parseDuration, serveUntilSignal, UsageError, type Command } from './common.ts'
import { loadAgents } from './load-agents.ts'
import { SERVICES } from './services.ts'

function usage(): string {
  const svc = Object.entries(SERVICES).map(([n, s]) => `  --${n.padEnd(22)} ${s.describe}`)
  return [
    'usage: troupe start --agents <module> [options]',
    '',
    'Hosts the agents exported by <module> until SIGTERM/SIGINT, then drains: the',
    'action in progress finishes (or, after --drain-timeout, is aborted and handed back to run elsewhere).',
    '',
    'options:',
    '  --agents <module>        TypeScript or JavaScript module exporting defineAgent(...) values',
    '  --only a,b               host only these agents of the module',
    '  --concurrency <n>        override every hosted agent\'s concurrency',
    '  --metrics-port <port>    port of /metrics, /healthz, /readyz (default: TROUPE_METRICS_PORT or a free one)',
    '  --drain-timeout <dur>    how long running actions get to finish before they are aborted (default 10s; bare numbers are ms)',
    '  --allow-eviction         start even if Redis maxmemory-policy may evict keys',
    ...svc,
    '  --redis <url>            Redis URL (default REDIS_URL or redis://127.0.0.1:6379)',
    '  --namespace <prefix:>    key prefix (default TROUPE_NAMESPACE or none)',
  ].join('\n')
}

/** The `start` command. */
export const command: Command = {
  summary: 'host agents (and --supervisor/--persister/--gateway) in this process',
  get usage() {
    return usage()
  },
  async run(argv) {
    const serviceFlags: Record<string, { type: 'boolean' } | { type: 'string' }> = {}
    for (const [name, s] of Object.entries(SERVICES)) {
      serviceFlags[name] = { type: 'boolean' }
      for (const f of s.flags ?? []) serviceFlags[f] = { type: 'string' }
      for (const f of s.booleanFlags ?? []) serviceFlags[f] = { type: 'boolean' }
    }
    const { values, positionals } = parse(argv, {
      agents: { type: 'string' },
      only: { type: 'string' },
      concurrency: { type: 'string' },
      'metrics-port': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'allow-eviction': { type: 'boolean' },
      ...serviceFlags,
    })
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0] ?? ''} (did you mean --agents ${positionals[0] ?? ''}?)`)
    const v = values as Record<string, string | boolean | undefined>
    const services: HostedService[] = []
    for (const [name, s] of Object.entries(SERVICES)) if (v[name] === true) services.push(await s.create({ values: v }))
    let agents = typeof v.agents === 'string' ? await loadAgents(v.agents) : []
    if (agents.length === 0 && services.length === 0) throw new UsageError('nothing to host: give --agents <module> and/or a service flag')
    if (typeof v.only === 'string') {
      const only = new Set(v.only.split(',').map((s) => s.trim()).filter(Boolean))
      const missing = [...only].filter((n) => !agents.some((a) => a.name === n))
      if (missing.length) throw new TroupeError('unknown_agent', `--only names agents the module does not export: ${missing.join(', ')} (it exports ${agents.map((a) => a.name).join(', ')})`)
      agents = agents.filter((a) => only.has(a.name))
    }
    if (typeof v.concurrency === 'string') {
      const c = Number(v.concurrency)
      if (!Number.isInteger(c) || c < 1) throw new UsageError('--concurrency must be a positive integer')
      agents = agents.map((a) => ({ ...a, concurrency: c }))
    }
    const metricsPort = metricsPortFlag(v)
    const drain = typeof v['drain-timeout'] === 'string' ? parseDuration(v['drain-timeout']) : 10_000
    if (drain > MAX_TIMER_MS) throw new UsageError('--drain-timeout must be at most 24d (Node cannot time longer)')
    const rt = await startRuntime({ agents, services, config: configFlags(v), allowEviction: v['allow-eviction'] === true, metricsPort, drainTimeoutMs: drain })
    return await serveUntilSignal(rt, 'draining')
  },
}
