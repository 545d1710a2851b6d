// A private Prometheus (the Debian package's binary) for the observability tests
// and the dashboard renderer: a generated config whose only discovery is the
// supervisor's http_sd endpoint, so what it scrapes is exactly what a real
// deployment would discover, with no static target list to drift.
import { spawn } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { dataDir, freePort, hasCommand, MissingPrerequisiteError, waitFor, type LocalService } from './util.ts'

/** The job name the dashboard's queries select (`up{job="troupe"}`); compose uses it too. */
export const TROUPE_JOB = 'troupe'

/** Options of {@link startPrometheus}. */
export interface StartPrometheusOptions {
  /** http_sd endpoints (every supervisor serves one); at least one. */
  sdUrls: string[]
  /** Scrape and discovery refresh interval (default 1 s: tests want data quickly). */
  intervalMs?: number
}

/** One instant-vector sample as the HTTP API returns it. */
export interface PromSample {
  metric: Record<string, string>
  value: [number, string]
}

/** One range-vector series as the HTTP API returns it. */
export interface PromSeries {
  metric: Record<string, string>
  values: [number, string][]
}

/** One scrape target from `/api/v1/targets`. */
export interface PromTarget {
  labels: Record<string, string>
  discoveredLabels: Record<string, string>
  scrapeUrl: string
  health: 'up' | 'down' | 'unknown'
  lastError: string
}

/** A Prometheus child process we own, with a small client for its HTTP API. */
export interface PrometheusProcess extends LocalService {
  readonly port: number
  /** Instant query; throws with Prometheus's own error text on a bad expression. */
  query(expr: string, time?: number): Promise<PromSample[]>
  /** Range query between two unix times (seconds). */
  queryRange(expr: string, start: number, end: number, stepSeconds: number): Promise<PromSeries[]>
  /** Values of `label` over the series matching `match` (Grafana's `label_values`). */
  labelValues(label: string, match: string): Promise<string[]>
  /** Active scrape targets. */
  targets(): Promise<PromTarget[]>
  /** What Prometheus printed (for failure messages). */
  output(): string
}

function seconds(ms: number): string {
  return `${Math.max(1, Math.round(ms / 1000))}s`
}

/** The generated configuration: one job fed by http_sd, as in prometheus/prometheus.yml minus the container relabelling. */
export function prometheusConfig(opts: StartPrometheusOptions): string {
  const every = seconds(opts.intervalMs ?? 1000)
  return [
    'global:',
    `  scrape_interval: ${every}`,
    `  scrape_timeout: ${every}`,
    `  evaluation_interval: ${every}`,
    'scrape_configs:',
    `  - job_name: ${TROUPE_JOB}`,
    '    http_sd_configs:',
    ...opts.sdUrls.flatMap((u) => [`      - url: ${JSON.stringify(u)}`, `        refresh_interval: ${every}`]),
    '',
  ].join('\n')
}

interface ApiReply<T> {
  status: 'success' | 'error'
  data: T
  error?: string
  errorType?: string
}

/**
 * Starts `prometheus` on a free loopback port with a fresh data folder.
 * A missing binary is an error naming the fix, never a skipped test.
 */
export async function startPrometheus(opts: StartPrometheusOptions): Promise<PrometheusProcess> {
  if (!hasCommand('prometheus')) {
    throw new MissingPrerequisiteError('prometheus is not on PATH.', 'install prometheus: apt-get install -y prometheus')
  }
  if (opts.sdUrls.length === 0) throw new Error('startPrometheus needs at least one http_sd URL')
  const port = await freePort()
  const dir = dataDir('prometheus', `${port}-${process.pid}`)
  const config = join(dir, 'prometheus.yml')
  writeFileSync(config, prometheusConfig(opts))
  const child = spawn('prometheus', [
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--storage.tsdb.retention.time=1h',
    '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  let exited = false
  const exit = new Promise<void>((r) => child.once('exit', () => {
    exited = true
    r()
  }))
  const base = `http://127.0.0.1:${port}`

  async function api<T>(path: string, params: Record<string, string>, method: 'GET' | 'POST' = 'POST'): Promise<T> {
    const qs = new URLSearchParams(params)
    // POST keeps long dashboard expressions out of the URL (the label API is GET only).
    const res = method === 'POST' ? await fetch(`${base}${path}`, { method, body: qs }) : await fetch(`${base}${path}?${qs.toString()}`)
    const reply = (await res.json()) as ApiReply<T>
    if (reply.status !== 'success') throw new Error(`prometheus ${path}: ${reply.errorType ?? ''} ${reply.error ?? res.status}`)
    return reply.data
  }

  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exit
      clearTimeout(t)
    }
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await waitFor(async () => !exited && (await fetch(`${base}/-/ready`)).ok, 30_000, `prometheus on port ${port}`)
  } catch (err) {
    await stop()
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${out}`)
  }

  return {
    url: base,
    port,
    started: true,
    output: () => out,
    stop,
    async query(expr, time) {
      const r = await api<{ resultType: string; result: PromSample[] }>('/api/v1/query', { query: expr, ...(time !== undefined ? { time: String(time) } : {}) })
      if (r.resultType !== 'vector') throw new Error(`expected an instant vector from ${expr}, got ${r.resultType}`)
      return r.result
    },
    async queryRange(expr, start, end, step) {
      const r = await api<{ result: PromSeries[] }>('/api/v1/query_range', { query: expr, start: String(start), end: String(end), step: String(step) })
      return r.result
    },
    async labelValues(label, match) {
      return await api<string[]>(`/api/v1/label/${encodeURIComponent(label)}/values`, { 'match[]': match }, 'GET')
    },
    async targets() {
      return (await api<{ activeTargets: PromTarget[] }>('/api/v1/targets', { state: 'active' }, 'GET')).activeTargets
    },
  }
}
