// The files of the docker compose stack, checked without a Docker engine: the
// compose file through the compose CLI's own parser, prometheus.yml through
// promtool, the Grafana provisioning against the dashboard it must serve, and
// the dashboard JSON against its generator.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { buildDashboard, DASHBOARD_PATH, DATASOURCE_UID, dashboardText } from '../../scripts/dashboard.ts'
import { hasCommand } from '../../scripts/services/util.ts'
import { dashboardQueries, loadDashboard } from './promql.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
const read = (path: string): string => readFileSync(`${root}/${path}`, 'utf8')

function run(cmd: string, args: string[], env: Record<string, string> = {}): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } })
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

/** The compose CLI: the `docker compose` plugin, else the standalone `docker-compose`. */
function composeCli(): string[] | null {
  if (hasCommand('docker') && run('docker', ['compose', 'version']).status === 0) return ['docker', 'compose']
  if (hasCommand('docker-compose')) return ['docker-compose']
  return null
}

describe('docker compose stack', () => {
  it('docker compose config accepts docker-compose.yml', () => {
    const cli = composeCli()
    // Never skipped: the compose CLI parses the file without a Docker engine.
    if (!cli) throw new Error('no compose CLI to validate docker-compose.yml: run ./scripts/prereqs.sh, or apt-get install -y docker-compose (or the docker compose plugin)')
    const [bin, ...pre] = cli as [string, ...string[]]
    // Without the optional variables set, so the defaults are what gets checked.
    // One call (the standalone CLI is slow to start): it validates the whole file and lists the services.
    const r = run(bin, [...pre, '-f', 'docker-compose.yml', 'config', '--services'], { NEO4J_PASSWORD: '', GRAFANA_ADMIN_PASSWORD: '', REDIS_MAXMEMORY: '' })
    expect(r.status, r.out).toBe(0)
    expect(r.out.split('\n').filter(Boolean).sort()).toEqual(['gateway', 'grafana', 'neo4j', 'prometheus', 'redis', 'worker-1', 'worker-2'])
  })

  it('runs Redis with AOF everysec, noeviction and a memory cap, and waits on healthchecks', () => {
    const compose = read('docker-compose.yml')
    for (const flag of ['--appendonly', '--appendfsync', 'everysec', '--maxmemory', 'noeviction']) expect(compose).toContain(flag)
    expect(compose).toMatch(/image: neo4j:5\b/)
    expect(compose).toMatch(/NEO4J_AUTH: neo4j\/\$\{NEO4J_PASSWORD/)
    // Each Troupe service hosts what the issue asks for.
    expect(compose).toContain('"--agents", "examples/research-team/agents.ts", "--supervisor", "--persister"')
    expect(compose).toContain('["start", "--gateway"]')
    expect(compose.match(/condition: service_healthy/g)?.length ?? 0).toBeGreaterThanOrEqual(4)
    expect(compose.match(/healthcheck:/g)?.length ?? 0).toBe(5)
    expect(compose).toContain('/healthz')
    const dockerfile = read('Dockerfile')
    // Node 22: 20 is past its end of life, and a locked dependency (cookie) declares node >= 22.
    expect(dockerfile).toMatch(/^FROM node:22-bookworm-slim$/m)
    expect(dockerfile).toContain('npm ci')
    expect(dockerfile).toContain('"node", "bin/troupe.mjs"')
    expect(read('.dockerignore')).toMatch(/^node_modules$/m)
  })

  it('prometheus.yml passes promtool and discovers targets only through the supervisor http_sd', () => {
    if (!hasCommand('promtool')) throw new Error('promtool is not on PATH: install prometheus: apt-get install -y prometheus')
    const r = run('promtool', ['check', 'config', 'prometheus/prometheus.yml'])
    expect(r.status, r.out).toBe(0)
    const config = read('prometheus/prometheus.yml')
    expect(config).toMatch(/job_name: troupe\n\s+http_sd_configs:\n(\s+#.*\n)*\s+- url: http:\/\/worker-1:9465\/sd/)
    expect(config).not.toMatch(/job_name: troupe[\s\S]*static_configs[\s\S]*job_name: prometheus/)
    // One discovery URL, never one per supervisor: Prometheus keeps a failing
    // http_sd source's last list for good, so a stopped supervisor's entry would
    // leave its targets behind as up == 0 (docs/monitoring.md, several supervisors).
    const troupeJob = /job_name: troupe\n([\s\S]*?)(?=\n\s+- job_name:|$)/.exec(config)?.[1] ?? ''
    expect(troupeJob.match(/^\s+- url:/gm)?.length, troupeJob).toBe(1)
    // The SD port is the one worker-1 (the supervisor's host) is told to serve on.
    expect(read('docker-compose.yml')).toMatch(/TROUPE_SD_PORT: "9465"/)
  })

  it('provisions the datasource with the fixed uid the dashboard uses, and the dashboard from the mounted folder', () => {
    const ds = read('grafana/provisioning/datasources/prometheus.yml')
    expect(ds).toMatch(new RegExp(`^\\s+uid: ${DATASOURCE_UID}$`, 'm'))
    expect(ds).toMatch(/url: http:\/\/prometheus:9090/)
    const provider = read('grafana/provisioning/dashboards/troupe.yml')
    const path = /path: (\S+)/.exec(provider)?.[1]
    expect(path).toBeDefined()
    expect(read('docker-compose.yml')).toContain(`./grafana/dashboards:${path}:ro`)
    expect(read('docker-compose.yml')).toMatch(/GF_AUTH_ANONYMOUS_ENABLED: "true"\n\s+GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer/)
  })
})

describe('grafana/dashboards/troupe.json', () => {
  it('is what scripts/dashboard.ts generates (run npx tsx scripts/dashboard.ts when this fails)', () => {
    expect(readFileSync(DASHBOARD_PATH, 'utf8')).toBe(dashboardText())
  })

  it('references only the provisioned datasource uid', () => {
    const uids: string[] = []
    const visit = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(visit)
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === 'datasource') uids.push(typeof x === 'object' && x !== null ? String((x as { uid?: unknown }).uid) : String(x))
          visit(x)
        }
      }
    }
    visit(loadDashboard())
    expect(uids.length).toBeGreaterThan(50)
    expect([...new Set(uids)]).toEqual([DATASOURCE_UID])
  })

  it('is templated by agent and instance, and every query uses a template filter or is cluster-wide', () => {
    const dash = buildDashboard() as { templating: { list: { name: string }[] } }
    expect(dash.templating.list.map((v) => v.name)).toEqual(['instance', 'agent'])
    for (const q of dashboardQueries(loadDashboard())) {
      // Agent series must honour $agent; instance filters are left out only for leader-only cluster gauges.
      if (/troupe_(actions|action_duration|queue_wait|activations|lock_contention|fence|redeliveries|transitions|events_published|active_actors)/.test(q.expr)) expect(q.expr, q.panel).toContain('agent=~"$agent"')
      if (/^(nodejs|process)_|\b(nodejs|process)_/.test(q.expr)) expect(q.expr, q.panel).toContain('job="troupe"')
    }
  })

  it('runs stat panels that name series as instant queries, and range stats only over series that keep their labels', () => {
    const panels = (loadDashboard().panels ?? []) as { type: string; title: string; options?: { textMode?: string }; targets?: { expr: string; range?: boolean; instant?: boolean }[] }[]
    const stats = panels.filter((p) => p.type === 'stat')
    expect(stats.length).toBeGreaterThan(5)
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        // Exactly one of the two, or Grafana runs both and the panel shows every series twice.
        expect(t.range !== t.instant, `${p.title}: range ${String(t.range)}, instant ${String(t.instant)}`).toBe(true)
        if (p.type !== 'stat') expect(t.range, `${p.title} is a time series: range queries`).toBe(true)
      }
    }
    // A range query keeps a replaced series (the old leader, an old version) for the
    // whole time range, with a last value that looks current.
    for (const title of ['Supervisor leader', 'Versions']) {
      const p = stats.find((x) => x.title === title)
      expect(p, title).toBeDefined()
      for (const t of p?.targets ?? []) expect(t.instant, `${title}: ${t.expr}`).toBe(true)
    }
    for (const p of stats) {
      if (p.options?.textMode === 'name') for (const t of p.targets ?? []) expect(t.instant, `${p.title} shows series names`).toBe(true)
      for (const t of p.targets ?? []) {
        if (t.instant) continue
        // Range stats group by nothing, or by status (the leader publishes every status, 0 included).
        const by = [...t.expr.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((m) => (m[1] ?? '').split(',').map((l) => l.trim()))
        expect(by.filter((l) => l !== 'status'), `${p.title}: ${t.expr} is a range query; make it instant`).toEqual([])
      }
    }
  })

  it('lays panels out on the grid without overlaps, rows in the intended order', () => {
    const panels = (loadDashboard().panels ?? []) as { type: string; title: string; gridPos: { x: number; y: number; w: number; h: number } }[]
    const taken = new Set<string>()
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24)
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(taken.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false)
          taken.add(`${x},${y}`)
        }
      }
    }
    const rows = panels.filter((p) => p.type === 'row').map((p) => p.title)
    expect(rows[0]).toMatch(/^Health/)
    expect(rows.at(-1)).toMatch(/^Processes/)
  })
})
