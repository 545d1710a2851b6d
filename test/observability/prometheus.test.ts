// A real Prometheus (the Debian package) discovers a real fleet through the
// supervisor's http_sd endpoint and scrapes it; after a short workload that makes
// every kind of series appear, every expression of the committed Grafana
// dashboard must return data, and every metric it names must be exposed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TroupeClient } from '../../runtime/index.ts'
import { metricGroups } from '../../scripts/metrics-doc.ts'
import { freePort, hasCommand } from '../../scripts/services/util.ts'
import { startPrometheus, TROUPE_JOB, type PrometheusProcess } from '../../scripts/services/prometheus.ts'
import { eventually, testConfig } from '../helpers/redis.ts'
import { dropNamespace, startFleet, type Fleet } from './fleet.ts'
import { dashboardQueries, exposedNames, loadDashboard, metricNames, substitute, variableQueries } from './promql.ts'
import { authNoise, contention, failures, routine, saturate, signIn, slowSseClient, zombie } from './workload.ts'

// Series Prometheus makes itself rather than scraping them.
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped'])

const cfg = testConfig({ lockTtlMs: 1500 })
let fleet: Fleet | undefined
let prom: PrometheusProcess | undefined

// Never skipped: without the binary every test of this file fails with the fix.
const MISSING = hasCommand('prometheus') ? '' : 'prometheus is not on PATH: install prometheus: apt-get install -y prometheus'

beforeAll(async () => {
  if (MISSING) return
  fleet = await startFleet(cfg, {
    agents: 'test/observability/agents.ts',
    // One action at a time per agent and process, so three slow actions saturate both workers.
    workerArgs: ['--concurrency', '1'],
    // A persister whose Neo4j is down (nothing listens there): its series exist and
    // show an outage (lag, errors), and the test needs no Neo4j.
    firstWorkerArgs: ['--persister', '--neo4j-uri', `bolt://127.0.0.1:${await freePort()}`],
    gatewayEnv: { TROUPE_SSE_SLOW_MS: '300' },
  })
  prom = await startPrometheus({ sdUrls: [fleet.sdUrl], intervalMs: 1000 })
}, 90_000)

afterAll(async () => {
  await prom?.stop()
  if (fleet) {
    await fleet.stop()
    const c = TroupeClient.connect(cfg)
    await dropNamespace(c, cfg.namespace)
    await c.close()
  }
}, 60_000)

function need(): { fleet: Fleet; prom: PrometheusProcess } {
  if (MISSING) throw new Error(MISSING)
  if (!fleet || !prom) throw new Error('fleet or prometheus did not start')
  return { fleet, prom }
}

async function upByService(p: PrometheusProcess): Promise<Map<string, string>> {
  const rows = await p.query(`up{job="${TROUPE_JOB}"}`)
  return new Map(rows.map((r) => [r.metric.service_id ?? r.metric.instance ?? '', r.value[1]]))
}

/** When Prometheus last scraped each process (unix seconds, its sample timestamps), by service id. */
async function lastScrapes(p: PrometheusProcess): Promise<Map<string, number>> {
  const rows = await p.query(`timestamp(up{job="${TROUPE_JOB}"})`)
  return new Map(rows.map((r) => [r.metric.service_id ?? r.metric.instance ?? '', Number(r.value[1])]))
}

describe('Prometheus with http_sd from the supervisor', () => {
  it('discovers the two runtimes, the supervisor and the gateway and scrapes each (up == 1)', async () => {
    const { fleet, prom } = need()
    const wanted = fleet.processes.map((c) => c.serviceId)
    await eventually(async () => {
      const up = await upByService(prom)
      return wanted.every((id) => up.get(id) === '1')
    }, 30_000, 'up == 1 for every process')
    const targets = await prom.targets()
    const byId = new Map(targets.map((t) => [t.labels.service_id, t]))
    for (const c of fleet.processes) {
      const t = byId.get(c.serviceId)
      expect(t?.health, `${c.role} ${c.serviceId}: ${t?.lastError ?? 'not discovered'}`).toBe('up')
      // The scrape address is the one the process published in its heartbeat.
      expect(t?.scrapeUrl).toBe(c.metricsUrl)
      expect(t?.labels.roles).toContain(c.role)
    }
    expect(fleet.processes.map((c) => c.role).sort()).toEqual(['gateway', 'supervisor', 'worker', 'worker'])
    expect(byId.get(fleet.workers[0]?.serviceId)?.labels.roles).toBe('worker,persister')
  })

  it('after a short workload, every dashboard expression returns at least one series', async () => {
    const { fleet, prom } = need()
    const token = await signIn(fleet, 'obs')
    await Promise.all([
      routine(fleet, token, 4),
      failures(fleet),
      authNoise(fleet),
      contention(fleet),
      saturate(fleet),
      slowSseClient(fleet, token),
    ])
    await zombie(fleet)
    // Everything must be back up, and scraped twice more, so that rates have two samples.
    await eventually(async () => {
      const up = await upByService(prom)
      return fleet.processes.every((c) => up.get(c.serviceId) === '1')
    }, 20_000, 'every process scraped again after the zombie woke up')
    // Counted by the scrape times Prometheus records, from its own clock now.
    let after = Number((await prom.query('vector(time())'))[0]?.value[1])
    for (const nth of ['one', 'two']) {
      const at = await eventually(async () => {
        const last = await lastScrapes(prom)
        return fleet.processes.every((c) => (last.get(c.serviceId) ?? 0) > after) ? last : null
      }, 20_000, `${nth} more scrape(s) of every process after the workload`)
      after = Math.max(...fleet.processes.map((c) => at.get(c.serviceId) ?? 0))
    }

    const empty: string[] = []
    const queries = dashboardQueries(loadDashboard())
    expect(queries.length).toBeGreaterThan(30)
    for (const q of queries) {
      const expr = substitute(q.expr, '1m')
      const rows = await prom.query(expr)
      if (rows.length === 0) empty.push(`${q.panel} [${q.refId}]: ${expr}`)
    }
    expect(empty, `expressions without data:\n${empty.join('\n')}`).toEqual([])

    for (const v of variableQueries(loadDashboard())) {
      const values = await prom.labelValues(v.label, v.selector)
      expect(values.length, `variable ${v.name}: label_values(${v.selector}, ${v.label})`).toBeGreaterThan(0)
    }
    const agents = await prom.labelValues('agent', 'troupe_actions_total{job="troupe"}')
    expect(agents).toEqual(expect.arrayContaining(['counter', 'echo', 'flaky', 'slow', 'bulky']))
  })

  it('the dashboard names only metrics that the processes expose', async () => {
    const { fleet } = need()
    const exposed = new Set<string>(SYNTHETIC)
    for (const c of fleet.processes) for (const n of exposedNames(await (await fetch(c.metricsUrl)).text())) exposed.add(n)
    const dash = loadDashboard()
    const used = new Set([...dashboardQueries(dash).flatMap((q) => metricNames(q.expr)), ...variableQueries(dash).flatMap((v) => metricNames(v.selector))])
    expect(used.size).toBeGreaterThan(20)
    expect([...used].filter((n) => !exposed.has(n)).sort()).toEqual([])
  })

  it('every troupe_* family the processes expose is documented in docs/metrics.md', async () => {
    const { fleet } = need()
    const documented = new Set(metricGroups().flatMap((g) => g.families.map((f) => f.name)))
    const live = new Set<string>()
    for (const c of fleet.processes) {
      for (const m of (await (await fetch(c.metricsUrl)).text()).matchAll(/^# TYPE (troupe_\w+) /gm)) if (m[1]) live.add(m[1])
    }
    expect(live.size).toBeGreaterThan(40)
    expect([...live].filter((n) => !documented.has(n)).sort()).toEqual([])
  })
})
