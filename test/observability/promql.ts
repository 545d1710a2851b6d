// Reading the committed dashboard JSON the way Grafana would: its panels'
// queries, its template variables, Grafana's macros substituted, and the metric
// names each PromQL expression selects.
import { readFileSync } from 'node:fs'
import { DASHBOARD_PATH } from '../../scripts/dashboard.ts'

/** One query of one panel. */
export interface PanelQuery {
  panelId: number
  panel: string
  refId: string
  expr: string
  legend: string
  /** Grafana runs it as an instant query (the value now), not over the time range. */
  instant: boolean
}

interface PanelJson {
  id: number
  type: string
  title: string
  targets?: { refId: string; expr: string; legendFormat?: string; instant?: boolean }[]
  panels?: PanelJson[]
}

/** The committed dashboard. */
export function loadDashboard(): Record<string, unknown> {
  return JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as Record<string, unknown>
}

/** Every panel query, rows' nested panels included. */
export function dashboardQueries(dash: Record<string, unknown>): PanelQuery[] {
  const out: PanelQuery[] = []
  const visit = (panels: PanelJson[]): void => {
    for (const p of panels) {
      for (const t of p.targets ?? []) out.push({ panelId: p.id, panel: p.title, refId: t.refId, expr: t.expr, legend: t.legendFormat ?? '', instant: t.instant === true })
      if (p.panels) visit(p.panels)
    }
  }
  visit((dash.panels ?? []) as PanelJson[])
  return out
}

/** The template variables' `label_values(<selector>, <label>)` queries. */
export function variableQueries(dash: Record<string, unknown>): { name: string; selector: string; label: string }[] {
  const list = ((dash.templating as { list?: { name: string; query: { query: string } | string }[] } | undefined)?.list ?? [])
  return list.map((v) => {
    const q = typeof v.query === 'string' ? v.query : v.query.query
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q)
    if (!m?.[1] || !m[2]) throw new Error(`variable ${v.name}: unsupported query ${q}`)
    return { name: v.name, selector: m[1], label: m[2] }
  })
}

/**
 * Replaces Grafana's variables and macros for an instant query: every template
 * variable by `vars[name]` (default `.*`, the "All" value), `$__rate_interval` and
 * `$__interval` by `window`.
 */
export function substitute(expr: string, window: string, vars: Record<string, string> = {}): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range/g, window)
    .replace(/\$\{?(\w+)\}?/g, (_, name: string) => vars[name] ?? '.*')
}

const NOT_METRICS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'group', 'count_values',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset',
  'inf', 'nan',
])

/** Metric names an expression selects (function names, labels, strings and durations left out). */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names = new Set<string>()
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0]
    const after = stripped.slice((m.index ?? 0) + word.length).trimStart()
    if (after.startsWith('(') || NOT_METRICS.has(word.toLowerCase())) continue
    names.add(word)
  }
  return [...names]
}

/** Every metric name a Prometheus text page exposes, histogram and summary series included. */
export function exposedNames(page: string): Set<string> {
  const names = new Set<string>()
  for (const line of page.split('\n')) {
    const type = /^# TYPE (\S+) (\w+)/.exec(line)
    if (type?.[1]) {
      names.add(type[1])
      if (type[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(type[1] + s)
      if (type[2] === 'summary') for (const s of ['_sum', '_count']) names.add(type[1] + s)
      continue
    }
    const sample = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line)
    if (sample?.[1]) names.add(sample[1])
  }
  return names
}
