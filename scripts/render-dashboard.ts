// Renders docs/dashboard.png from a real run: starts a fleet (two runtimes with the
// research-team example, a supervisor, a gateway, and a runtime with an agent that
// fails on purpose), a private Prometheus that discovers it through the
// supervisor's http_sd, drives a demo-like workload through the gateway, then
// evaluates the committed dashboard's own queries over the run and draws the main
// panels (headless Chromium screenshot of an HTML page with inline SVG).
//
//   npx tsx scripts/with-services.ts --no-neo4j tsx scripts/render-dashboard.ts [seconds]
//
// With NEO4J_URI set (drop --no-neo4j) the first runtime also hosts the persister.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { loadConfig } from '../runtime/config.ts'
import { TroupeClient } from '../runtime/index.ts'
import { SERVICES } from '../runtime/cli/services.ts'
import { dropNamespace, startFleet, type Fleet } from '../test/observability/fleet.ts'
import { dashboardQueries, loadDashboard, substitute } from '../test/observability/promql.ts'
import { api, follow, signIn, startVia } from '../test/observability/workload.ts'
import { dashboardHtml, type RenderedPanel } from './dashboard-svg.ts'
import { startPrometheus, type PrometheusProcess } from './services/prometheus.ts'

const OUT = fileURLToPath(new URL('../docs/dashboard.png', import.meta.url))
const CHROMIUM = '/usr/bin/chromium'
const seconds = Number(process.argv[2] ?? 120)
// Rate and quantile window: what Grafana's $__rate_interval gives for a 15 s scrape;
// short enough to show the burst, long enough not to draw every scrape's jitter.
const WINDOW = '30s'

/** The panels drawn, by title, in dashboard order (the health row is drawn whole). */
const CHARTS = [
  'Actions by agent and outcome', 'Action duration p95 by agent', 'Queue wait p95 by agent',
  'Queue depth', 'Active actors by agent', 'Retries and dead letters',
  'Persistence backlog', 'SSE clients', 'Auth failures',
  'Rate-limit rejections', 'Event-loop lag p99', 'Memory',
]

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const log = (s: string): void => void process.stderr.write(`[render] ${s}\n`)

/** Runs `fn` every `everyMs` until `until`, without overlapping itself. */
async function every(everyMs: number, until: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 0; Date.now() < until; i++) {
    const t = Date.now()
    await fn(i).catch((err: unknown) => log(`workload step failed: ${err instanceof Error ? err.message : String(err)}`))
    await sleep(Math.max(0, everyMs - (Date.now() - t)))
  }
}

/**
 * A demo-like load: research workflows through the gateway at a steady pace (every
 * third followed live over SSE) with one burst that queues work, a flaky agent that
 * sometimes needs a retry or gives up, a few bad sign-ins and a client that
 * ignores its rate limit.
 */
async function workload(fleet: Fleet, until: number): Promise<void> {
  const token = await signIn(fleet, 'demo')
  const greedy = await signIn(fleet, 'greedy-script', { rate: 1, burst: 2 })
  const followers: Promise<unknown>[] = []
  const topics = ['fusion energy', 'tidal power', 'perovskite cells', 'grid storage', 'small reactors', 'geothermal']
  const burstAt = Date.now() + (until - Date.now()) * 0.45
  let burst = false
  await Promise.all([
    every(1500, until, async (i) => {
      const n = !burst && Date.now() >= burstAt ? 16 : 1
      if (n > 1) burst = true
      for (let k = 0; k < n; k++) {
        const wf = await startVia(fleet, token, 'planner', 'plan', { topic: topics[(i + k) % topics.length] })
        if ((i + k) % 3 === 0) followers.push(follow(fleet, token, wf, 120_000).catch(() => 0))
      }
    }),
    every(4000, until, async (i) => {
      await fleet.client.startWorkflow({ agent: 'flaky', type: i % 4 === 3 ? 'throw' : 'flaky', payload: { failTimes: i % 2 } })
    }),
    every(9000, until, async () => {
      await api(fleet, 'POST', '/v1/auth/token', { body: { credential: 'tcr.demo.guessed.wrong' } })
      await api(fleet, 'GET', '/v1/workflows', { token: 'expired-or-made-up' })
    }),
    every(15_000, until, async () => {
      for (let k = 0; k < 6; k++) await api(fleet, 'GET', '/v1/workflows', { token: greedy })
    }),
  ])
  await Promise.all(followers)
}

async function panels(prom: PrometheusProcess, start: number, end: number): Promise<{ stats: RenderedPanel[]; charts: RenderedPanel[] }> {
  const dash = loadDashboard() as { panels: { id: number; type: string; title: string; fieldConfig?: { defaults?: { unit?: string } }; options?: { textMode?: string }; gridPos: { y: number } }[] }
  const queries = dashboardQueries(dash)
  const step = Math.max(1, Math.round((end - start) / 120))
  const build = async (p: (typeof dash.panels)[number]): Promise<RenderedPanel> => ({
    title: p.title,
    kind: p.type === 'stat' ? 'stat' : 'timeseries',
    unit: p.fieldConfig?.defaults?.unit ?? 'none',
    showName: p.options?.textMode === 'name',
    queries: await Promise.all(queries.filter((q) => q.panelId === p.id).map(async (q) => ({
      legend: q.legend,
      // As Grafana runs it: an instant query (the leader stat) is the value at the end only.
      series: q.instant
        ? (await prom.query(substitute(q.expr, WINDOW), end)).map((r) => ({ metric: r.metric, values: [r.value] }))
        : await prom.queryRange(substitute(q.expr, WINDOW), start, end, step),
    }))),
  })
  const firstRow = dash.panels.filter((p) => p.type === 'stat' && p.gridPos.y <= 1)
  const charts = CHARTS.map((t) => {
    const p = dash.panels.find((x) => x.title === t && x.type === 'timeseries')
    if (!p) throw new Error(`dashboard has no time series panel "${t}"`)
    return p
  })
  return { stats: await Promise.all(firstRow.map(build)), charts: await Promise.all(charts.map(build)) }
}

async function screenshot(html: string): Promise<void> {
  if (!existsSync(CHROMIUM)) throw new Error('install chromium: apt-get install -y chromium')
  const dir = mkdtempSync(join(tmpdir(), 'troupe-render-'))
  const page = join(dir, 'dashboard.html')
  writeFileSync(page, html)
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  try {
    const tab = await browser.newPage({ viewport: { width: 1676, height: 900 }, deviceScaleFactor: 1 })
    await tab.goto(`file://${page}`)
    await tab.screenshot({ path: OUT, fullPage: true })
  } finally {
    await browser.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const cfg = loadConfig({ namespace: `render${Date.now().toString(36)}:` })
const persister = 'persister' in SERVICES && !!process.env.NEO4J_URI
log(`namespace ${cfg.namespace}, ${seconds} s of workload${persister ? ', with the persister' : ''}`)
const fleet = await startFleet(cfg, {
  agents: 'examples/research-team/agents.ts',
  // A capacity an LLM-backed deployment might have, so the burst visibly queues.
  workerArgs: ['--concurrency', '4'],
  firstWorkerArgs: persister ? ['--persister'] : [],
  env: { TROUPE_FAKE_MODEL_DELAY_MS: '25' },
  extraRuntimes: [['--agents', 'test/fixtures/agents.ts', '--only', 'flaky']],
})
let prom: PrometheusProcess | undefined
try {
  prom = await startPrometheus({ sdUrls: [fleet.sdUrl], intervalMs: 1000 })
  const start = Math.floor(Date.now() / 1000)
  await workload(fleet, Date.now() + seconds * 1000)
  const end = Math.floor(Date.now() / 1000) + 2
  // Two more scrapes and a supervisor rollup, so the last points are in.
  await sleep(4000)
  const { stats, charts } = await panels(prom, start, end)
  const when = new Date(start * 1000).toISOString().replace('T', ' ').slice(0, 16)
  await screenshot(dashboardHtml({
    title: 'Troupe — grafana/dashboards/troupe.json, main panels',
    subtitle: `Rendered from a real Prometheus (targets from the supervisor's http_sd) over ${Math.round(end - start)} s of the research-team demo (two runtimes, concurrency 4, one burst of 16 workflows) plus a deliberately flaky agent, ${when} UTC. `
      + `The dashboard's own queries, units and legends, $__rate_interval = ${WINDOW}.${persister ? '' : ' No persister ran (no Neo4j), so the persistence backlog only grows.'}`,
    stats, charts, start, end,
  }))
  log(`wrote ${OUT}`)
} finally {
  await prom?.stop()
  await fleet.stop()
  const c = TroupeClient.connect(cfg)
  await dropNamespace(c, cfg.namespace)
  await c.close()
}
