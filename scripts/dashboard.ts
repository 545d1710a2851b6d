// Builds grafana/dashboards/troupe.json, the dashboard that docker compose
// provisions. Written as code so that every panel gets the same datasource, the
// same template filters and a tidy grid; the JSON is committed (Grafana reads it)
// and test/observability/stack-files.test.ts fails when the two differ.
//
//   npx tsx scripts/dashboard.ts          # rewrite the JSON
//   npx tsx scripts/dashboard.ts --check  # exit 1 when it is stale
//
// Rows read top-down from "is it healthy" to "why not": health at a glance,
// throughput and latency, queues, then the failure mechanics (contention,
// fencing, retries), the supervisor, persistence, the gateway, the processes.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** The uid of the provisioned datasource (grafana/provisioning/datasources/prometheus.yml). */
export const DATASOURCE_UID = 'troupe-prometheus'
/** Where the dashboard JSON lives. */
export const DASHBOARD_PATH = fileURLToPath(new URL('../grafana/dashboards/troupe.json', import.meta.url))

const DS = { type: 'prometheus', uid: DATASOURCE_UID } as const

// Filters every panel shares. Cluster figures come from the supervisor leader
// alone, so they are filtered by agent but never by instance.
const A = 'agent=~"$agent"'
const I = 'instance=~"$instance"'
const AI = `${A}, ${I}`
const NODE = `job="troupe", ${I}`
const W = '$__rate_interval'

interface Query {
  expr: string
  legend?: string
}

interface PanelSpec {
  title: string
  description: string
  kind: 'timeseries' | 'stat'
  queries: Query[]
  unit?: string
  w: number
  h?: number
  /** Stat panels: show the series name (e.g. the leader's id) instead of its value. */
  showName?: boolean
  /**
   * Stat panels: an instant query (the value now) instead of a range query over
   * the dashboard's time range. Needed where the series' labels get replaced over
   * time (the leader's `service`, a process's `version`): a range query still
   * returns the replaced series for the whole range, its last value looks
   * current, and the stat shows old and new side by side. Stat panels whose
   * queries keep the same series (unlabelled sums, `status`, which the leader
   * always publishes for every status) stay range queries, for their sparkline.
   */
  instant?: boolean
  /** Stat panels: value from which the panel turns red (a number of bad things). */
  redFrom?: number
  stack?: boolean
}

interface RowSpec {
  title: string
  panels: PanelSpec[]
}

const quantiles = (metric: string, by: string, filter: string, qs: number[] = [0.5, 0.95, 0.99]): Query[] =>
  qs.map((q) => ({
    expr: `histogram_quantile(${q}, sum by (le${by ? `, ${by}` : ''}) (rate(${metric}_bucket${filter ? `{${filter}}` : ''}[${W}])))`,
    legend: `${by ? `{{${by}}} ` : ''}p${Math.round(q * 100)}`,
  }))

/** The dashboard, top to bottom. */
export const ROWS: RowSpec[] = [
  {
    title: 'Health: is it working?',
    panels: [
      { title: 'Processes up', kind: 'stat', w: 3, unit: 'none', description: 'Processes discovered through the supervisor\'s http_sd and scraped successfully, and those that failed their last scrape.', queries: [{ expr: `sum(up{${NODE}})`, legend: 'up' }, { expr: `sum(1 - up{${NODE}})`, legend: 'down' }] },
      { title: 'Services by status', kind: 'stat', w: 5, unit: 'none', description: 'Heartbeat records as the supervisor leader classifies them: alive, stopped (clean exit), dead (missed heartbeats), unusable (corrupt records).', queries: [{ expr: 'sum by (status) (troupe_cluster_services)', legend: '{{status}}' }] },
      { title: 'Supervisor leader', kind: 'stat', w: 4, showName: true, instant: true, description: 'The process leading the supervisor election now, as each supervisor last saw it (an instant query: a leader replaced by a takeover is not listed).', queries: [{ expr: 'max by (service) (troupe_supervisor_leader)', legend: '{{service}}' }] },
      { title: 'Actions / s', kind: 'stat', w: 3, unit: 'ops', description: 'Actions finished per second, every outcome.', queries: [{ expr: `sum(rate(troupe_actions_total{${AI}}[${W}]))` }] },
      { title: 'Retried or dead', kind: 'stat', w: 3, unit: 'percentunit', redFrom: 0.05, description: 'Share of finished actions that were retried or dead-lettered.', queries: [{ expr: `sum(rate(troupe_actions_total{outcome=~"retried|dead", ${AI}}[${W}])) / sum(rate(troupe_actions_total{${AI}}[${W}]))` }] },
      { title: 'Oldest due action', kind: 'stat', w: 3, unit: 's', redFrom: 60, description: 'Age of the oldest action that is due and not yet delivered, over all agents (from the supervisor leader).', queries: [{ expr: `max(troupe_cluster_oldest_due_action_seconds{${A}})` }] },
      { title: 'Dead letters stored', kind: 'stat', w: 3, unit: 'none', redFrom: 1, description: 'Dead-lettered actions still stored, from the leader\'s last sweep.', queries: [{ expr: `sum(troupe_cluster_dead_letters{${A}})` }] },
    ],
  },
  {
    title: 'Throughput and latency',
    panels: [
      { title: 'Actions by agent and outcome', kind: 'timeseries', w: 12, unit: 'ops', description: 'Finished actions per second. completed = acked; retried = failed and rescheduled with backoff; dead = dead-lettered; cancelled = its workflow ended meanwhile.', queries: [{ expr: `sum by (agent, outcome) (rate(troupe_actions_total{${AI}}[${W}]))`, legend: '{{agent}} {{outcome}}' }] },
      { title: 'Transitions and events', kind: 'timeseries', w: 12, unit: 'ops', description: 'State transitions of agent machines and workflow events published by agent code, per second.', queries: [{ expr: `sum by (agent) (rate(troupe_transitions_total{${AI}}[${W}]))`, legend: '{{agent}} transitions' }, { expr: `sum by (agent) (rate(troupe_events_published_total{${AI}}[${W}]))`, legend: '{{agent}} events' }] },
      { title: 'Action duration', kind: 'timeseries', w: 6, unit: 's', description: 'Time to run one action, from its delivery until its machine settles (the commit is not included), over the selected agents: p50, p95, p99 (histogram_quantile over troupe_action_duration_seconds).', queries: quantiles('troupe_action_duration_seconds', '', AI) },
      { title: 'Action duration p95 by agent', kind: 'timeseries', w: 6, unit: 's', description: '95th percentile of the time to run one action (delivery until its machine settles; the commit is not included), per agent: which agent is slow.', queries: quantiles('troupe_action_duration_seconds', 'agent', AI, [0.95]) },
      { title: 'Queue wait', kind: 'timeseries', w: 6, unit: 's', description: 'From an action being due to its first delivery over the selected agents: p50, p95, p99. Grows when workers are saturated or an actor is held.', queries: quantiles('troupe_queue_wait_seconds', '', AI) },
      { title: 'Queue wait p95 by agent', kind: 'timeseries', w: 6, unit: 's', description: '95th percentile of the wait for delivery, per agent: which agent lacks capacity.', queries: quantiles('troupe_queue_wait_seconds', 'agent', AI, [0.95]) },
    ],
  },
  {
    title: 'Queues and actors',
    panels: [
      { title: 'Queue depth', kind: 'timeseries', w: 8, unit: 'none', description: 'Actions waiting in mailboxes (queued) and those of them already due, by agent (from the supervisor leader).', queries: [{ expr: `sum by (agent) (troupe_cluster_queue_depth{${A}})`, legend: '{{agent}} queued' }, { expr: `sum by (agent) (troupe_cluster_due_actions{${A}})`, legend: '{{agent}} due' }] },
      { title: 'Oldest due action', kind: 'timeseries', w: 8, unit: 's', description: 'Age of the oldest due, undelivered action, by agent. A line that keeps climbing is work nobody picks.', queries: [{ expr: `max by (agent) (troupe_cluster_oldest_due_action_seconds{${A}})`, legend: '{{agent}}' }] },
      { title: 'Active actors by agent', kind: 'timeseries', w: 8, unit: 'none', description: 'Actors activated right now in live processes, by agent (from the supervisor leader).', queries: [{ expr: `sum by (agent) (troupe_cluster_active_actors{${A}})`, legend: '{{agent}}' }] },
      { title: 'Active actors by process', kind: 'timeseries', w: 8, unit: 'none', stack: true, description: 'Actors activated right now, per process (stacked): how work spreads over the runtimes.', queries: [{ expr: `sum by (instance, roles) (troupe_active_actors{${AI}})`, legend: '{{instance}} ({{roles}})' }] },
      { title: 'Activations', kind: 'timeseries', w: 8, unit: 'ops', description: 'Actor activations (lock taken, snapshot restored) per second. Many activations per action means actors go idle between actions.', queries: [{ expr: `sum by (agent) (rate(troupe_activations_total{${AI}}[${W}]))`, legend: '{{agent}}' }] },
      { title: 'Stuck actors reported', kind: 'timeseries', w: 8, unit: 'none', description: 'Actors the supervisor reported stuck: unpicked (due but nobody picks it: no worker or all saturated) or failing (activations keep dying).', queries: [{ expr: `sum by (agent, reason) (increase(troupe_supervisor_stuck_reports_total{${A}}[${W}]))`, legend: '{{agent}} {{reason}}' }] },
    ],
  },
  {
    title: 'Why not: contention, fencing, retries',
    panels: [
      { title: 'Lock contention', kind: 'timeseries', w: 8, unit: 'ops', description: 'Picks that found the actor lock held by another process, per second. Sustained contention means processes chase the same actors.', queries: [{ expr: `sum by (agent) (rate(troupe_lock_contention_total{${AI}}[${W}]))`, legend: '{{agent}}' }] },
      { title: 'Fence rejections and redeliveries', kind: 'timeseries', w: 8, unit: 'none', description: 'Commits rejected because a newer activation owns the actor (a paused or partitioned zombie), and actions redelivered after an activation died with them in flight.', queries: [{ expr: `sum by (agent) (increase(troupe_fence_rejections_total{${AI}}[${W}]))`, legend: '{{agent}} fence rejections' }, { expr: `sum by (agent) (increase(troupe_redeliveries_total{${AI}}[${W}]))`, legend: '{{agent}} redeliveries' }] },
      { title: 'Retries and dead letters', kind: 'timeseries', w: 8, unit: 'ops', description: 'Actions rescheduled after failing, and actions dead-lettered, per second.', queries: [{ expr: `sum by (agent) (rate(troupe_actions_total{outcome="retried", ${AI}}[${W}]))`, legend: '{{agent}} retried' }, { expr: `sum by (agent) (rate(troupe_actions_total{outcome="dead", ${AI}}[${W}]))`, legend: '{{agent}} dead' }] },
      { title: 'Dead letters stored', kind: 'timeseries', w: 12, unit: 'none', description: 'Dead-lettered actions still stored, by agent (the leader\'s last sweep). Retry or drop them with the API or the CLI.', queries: [{ expr: `sum by (agent) (troupe_cluster_dead_letters{${A}})`, legend: '{{agent}}' }] },
      { title: 'Protocol errors', kind: 'timeseries', w: 12, unit: 'ops', description: 'Unexpected errors in the claim protocol by step (Redis unreachable or out of memory, lock extensions lost, malformed data).', queries: [{ expr: `sum by (step) (rate(troupe_protocol_errors_total{${I}}[${W}]))`, legend: '{{step}}' }] },
    ],
  },
  {
    title: 'Supervisor and fleet',
    panels: [
      { title: 'Services by status', kind: 'timeseries', w: 6, unit: 'none', description: 'Heartbeat records by status, from the leader.', queries: [{ expr: 'sum by (status) (troupe_cluster_services)', legend: '{{status}}' }] },
      { title: 'Leadership', kind: 'timeseries', w: 6, unit: 'none', description: 'Which supervisor leads (1 = this instance), the fenced leader term, and elections won.', queries: [{ expr: 'max by (instance) (troupe_supervisor_is_leader)', legend: 'leader: {{instance}}' }, { expr: 'max(troupe_supervisor_term)', legend: 'term' }, { expr: `sum(increase(troupe_supervisor_elections_total[${W}]))`, legend: 'elections' }] },
      { title: 'Leader ticks', kind: 'timeseries', w: 6, unit: 'ops', description: 'Leader ticks per second by outcome; errors mean a duty failed (Redis trouble, a deposed leader).', queries: [{ expr: `sum by (outcome) (rate(troupe_supervisor_ticks_total[${W}]))`, legend: '{{outcome}}' }] },
      { title: 'Leader tick duration', kind: 'timeseries', w: 6, unit: 's', description: 'How long one leader tick takes (p50, p99). Ticks near the tick interval delay dead-service detection.', queries: quantiles('troupe_supervisor_tick_duration_seconds', '', '', [0.5, 0.99]) },
      { title: 'Supervisor actions', kind: 'timeseries', w: 16, h: 7, unit: 'none', description: 'What the leader did: services marked dead, workflow deadlines fired, ready hints repaired, writes refused after being deposed.', queries: [{ expr: `sum(increase(troupe_supervisor_services_marked_dead_total[${W}]))`, legend: 'marked dead' }, { expr: `sum(increase(troupe_supervisor_deadlines_fired_total[${W}]))`, legend: 'deadlines fired' }, { expr: `sum(increase(troupe_supervisor_repairs_total[${W}]))`, legend: 'hints repaired' }, { expr: `sum(increase(troupe_supervisor_deposed_writes_total[${W}]))`, legend: 'deposed writes' }] },
      { title: 'Fleet settings mismatch', kind: 'timeseries', w: 8, h: 7, unit: 'none', description: 'Agents whose runtimes registered TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN or TROUPE_RETENTION_MS other than the leader supervisor\'s (1). Anything above 0 is a misconfigured process: clients refuse to act for that agent, and the supervisor\'s log names both sides.', queries: [{ expr: `max by (agent) (troupe_cluster_fleet_mismatch{${A}})`, legend: '{{agent}}' }] },
    ],
  },
  {
    title: 'Persistence',
    panels: [
      { title: 'Persistence backlog', kind: 'timeseries', w: 8, unit: 'none', description: 'persistence:queue as the supervisor sees it: entries in the stream (length), delivered to a persister but unacknowledged (pending), and not yet delivered (lag). A growing lag means the persister is down or Neo4j is slow.', queries: [{ expr: 'max by (kind) (troupe_cluster_persistence_backlog)', legend: '{{kind}}' }] },
      { title: 'Events persisted', kind: 'timeseries', w: 8, unit: 'ops', description: 'Events written to Neo4j per second by the persisters, and those written by reconciliation (their pointer was missing or lost).', queries: [{ expr: `sum(rate(troupe_persister_events_total{${I}}[${W}]))`, legend: 'written' }, { expr: `sum(rate(troupe_persister_backfilled_events_total{${I}}[${W}]))`, legend: 'backfilled' }] },
      { title: 'Persister lag', kind: 'timeseries', w: 8, unit: 's', description: 'Age of the oldest unacknowledged persistence entry, per persister. It keeps growing during a Neo4j outage; nothing is lost meanwhile.', queries: [{ expr: `max by (instance) (troupe_persister_lag_seconds{${I}})`, legend: '{{instance}}' }] },
      { title: 'Batch size', kind: 'timeseries', w: 8, unit: 'none', description: 'Events per Neo4j transaction (p50, p95). The persister grows batches while writes are fast.', queries: quantiles('troupe_persister_batch_size', '', I, [0.5, 0.95]) },
      { title: 'Batch write time', kind: 'timeseries', w: 8, unit: 's', description: 'Time to write one batch: Redis reads, the Neo4j transaction and the ack (p50, p99).', queries: quantiles('troupe_persister_write_seconds', '', I, [0.5, 0.99]) },
      { title: 'Persister errors', kind: 'timeseries', w: 8, unit: 'none', description: 'Persister errors by kind (neo4j: unreachable or failing writes, redis, data, reconcile, retention). The persister backs off and retries.', queries: [{ expr: `sum by (kind) (increase(troupe_persister_errors_total{${I}}[${W}]))`, legend: '{{kind}}' }] },
    ],
  },
  {
    title: 'Gateway',
    panels: [
      { title: 'SSE clients', kind: 'timeseries', w: 8, unit: 'none', description: 'Open Server-Sent Events streams per gateway.', queries: [{ expr: `sum by (instance) (troupe_sse_connections{${I}})`, legend: '{{instance}}' }] },
      { title: 'SSE clients dropped', kind: 'timeseries', w: 8, unit: 'none', description: 'Clients dropped for not reading (slow: the socket stayed full; overflow: too far behind; they resume with Last-Event-ID) or because their token or session expired or was revoked (unauthorized).', queries: [{ expr: `sum by (reason) (increase(troupe_sse_dropped_total{${I}}[${W}]))`, legend: '{{reason}}' }] },
      { title: 'HTTP requests', kind: 'timeseries', w: 8, unit: 'reqps', description: 'Requests answered per second, by status code.', queries: [{ expr: `sum by (status) (rate(troupe_http_requests_total{${I}}[${W}]))`, legend: '{{status}}' }] },
      { title: 'Auth failures', kind: 'timeseries', w: 8, unit: 'ops', description: 'Rejected authentications per second, by reason (missing, malformed, unknown, expired, bad_credential, refresh_reused).', queries: [{ expr: `sum by (reason) (rate(troupe_auth_failures_total{${I}}[${W}]))`, legend: '{{reason}}' }] },
      { title: 'Rate-limit rejections', kind: 'timeseries', w: 8, unit: 'ops', description: 'Requests answered 429 per second, by limit: rate (the user\'s request rate), quota (workflows the user started today), auth (the user\'s sign-in attempts), streams (SSE streams the user has open on one gateway).', queries: [{ expr: `sum by (kind) (rate(troupe_rate_limited_total{${I}}[${W}]))`, legend: '{{kind}}' }] },
      { title: 'HTTP latency p95', kind: 'timeseries', w: 8, unit: 's', description: '95th percentile time to answer, by route pattern (SSE: time to open the stream).', queries: quantiles('troupe_http_request_duration_seconds', 'route', I, [0.95]) },
    ],
  },
  {
    title: 'Processes (Node.js)',
    panels: [
      { title: 'Event-loop lag p99', kind: 'timeseries', w: 8, unit: 's', description: 'How late timers and I/O callbacks run in each process. Above ~100 ms, lock extensions and heartbeats are at risk.', queries: [{ expr: `max by (instance, roles) (nodejs_eventloop_lag_p99_seconds{${NODE}})`, legend: '{{instance}} ({{roles}})' }] },
      { title: 'Memory', kind: 'timeseries', w: 8, unit: 'bytes', description: 'Resident set size and V8 heap in use, per process.', queries: [{ expr: `max by (instance, roles) (process_resident_memory_bytes{${NODE}})`, legend: 'rss {{instance}} ({{roles}})' }, { expr: `sum by (instance, roles) (nodejs_heap_size_used_bytes{${NODE}})`, legend: 'heap {{instance}} ({{roles}})' }] },
      { title: 'CPU', kind: 'timeseries', w: 8, unit: 'percentunit', description: 'CPU time per second of wall time, per process (1 = one core).', queries: [{ expr: `sum by (instance, roles) (rate(process_cpu_seconds_total{${NODE}}[${W}]))`, legend: '{{instance}} ({{roles}})' }] },
      { title: 'Versions', kind: 'stat', w: 24, h: 4, showName: true, instant: true, description: 'Troupe and Node.js versions the processes run now (troupe_build_info; an instant query, so versions replaced by an upgrade are not listed).', queries: [{ expr: `count by (version, node) (troupe_build_info{${I}})`, legend: 'troupe {{version}} on node {{node}}' }] },
    ],
  },
]

type Json = Record<string, unknown>

function panelJson(p: PanelSpec, id: number, gridPos: Json): Json {
  const targets = p.queries.map((q, i) => ({
    datasource: DS,
    refId: String.fromCharCode(65 + i),
    expr: q.expr,
    legendFormat: q.legend ?? (p.kind === 'stat' ? p.title : '__auto'),
    range: p.instant !== true,
    instant: p.instant === true,
  }))
  const thresholds = {
    mode: 'absolute',
    steps: p.redFrom === undefined ? [{ color: 'green', value: null }] : [{ color: 'green', value: null }, { color: 'red', value: p.redFrom }],
  }
  const base: Json = { id, type: p.kind, title: p.title, description: p.description, datasource: DS, gridPos, targets }
  if (p.kind === 'stat') {
    return {
      ...base,
      fieldConfig: { defaults: { unit: p.unit ?? 'none', noValue: p.showName ? 'none' : '0', color: { mode: p.showName ? 'fixed' : 'thresholds', fixedColor: 'blue' }, thresholds, mappings: [] }, overrides: [] },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: p.showName ? 'none' : 'value',
        graphMode: p.showName ? 'none' : 'area',
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: p.showName ? 'name' : 'value_and_name',
        wideLayout: true,
      },
    }
  }
  return {
    ...base,
    fieldConfig: {
      defaults: {
        unit: p.unit ?? 'none',
        min: 0,
        // A counter that never moved has no series yet: show 0, not "No data".
        noValue: '0',
        color: { mode: 'palette-classic' },
        thresholds,
        custom: {
          drawStyle: 'line',
          lineWidth: 1,
          fillOpacity: p.stack ? 30 : 10,
          showPoints: 'never',
          spanNulls: true,
          stacking: { mode: p.stack ? 'normal' : 'none', group: 'A' },
        },
        mappings: [],
      },
      overrides: [],
    },
    options: {
      legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  }
}

function variable(name: string, label: string, query: string): Json {
  return {
    name,
    label,
    type: 'query',
    datasource: DS,
    query: { query, refId: `${name}-values` },
    definition: query,
    refresh: 2,
    includeAll: true,
    multi: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
    hide: 0,
    options: [],
    regex: '',
  }
}

/** The dashboard as Grafana's JSON model. */
export function buildDashboard(): Json {
  const panels: Json[] = []
  let id = 1
  let y = 0
  for (const row of ROWS) {
    panels.push({ id: id++, type: 'row', title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] })
    y += 1
    let x = 0
    let rowHeight = 0
    for (const p of row.panels) {
      const h = p.h ?? (p.kind === 'stat' ? 4 : 8)
      if (x + p.w > 24) {
        x = 0
        y += rowHeight
        rowHeight = 0
      }
      panels.push(panelJson(p, id++, { h, w: p.w, x, y }))
      x += p.w
      rowHeight = Math.max(rowHeight, h)
    }
    y += rowHeight
  }
  return {
    uid: 'troupe-overview',
    title: 'Troupe',
    description: 'Troupe runtime, supervisor, persister and gateway: health first, then the reasons.',
    tags: ['troupe'],
    timezone: 'browser',
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: '10s',
    time: { from: 'now-30m', to: 'now' },
    timepicker: {},
    fiscalYearStartMonth: 0,
    liveNow: false,
    links: [],
    // No built-in annotation list: it would name Grafana's own datasource, and the
    // dashboard is meant to depend on the provisioned Prometheus alone.
    annotations: { list: [] },
    templating: {
      list: [
        variable('instance', 'Instance', 'label_values(up{job="troupe"}, instance)'),
        variable('agent', 'Agent', 'label_values(troupe_actions_total{job="troupe"}, agent)'),
      ],
    },
    panels,
  }
}

/** The JSON text as committed. */
export function dashboardText(): string {
  return `${JSON.stringify(buildDashboard(), null, 2)}\n`
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = dashboardText()
  if (process.argv.includes('--check')) {
    const current = readFileSync(DASHBOARD_PATH, 'utf8')
    if (current !== text) {
      process.stderr.write(`${DASHBOARD_PATH} is stale: run npx tsx scripts/dashboard.ts\n`)
      process.exit(1)
    }
  } else {
    writeFileSync(DASHBOARD_PATH, text)
    process.stdout.write(`wrote ${DASHBOARD_PATH}\n`)
  }
}
