// Draws dashboard panels as static HTML + inline SVG from Prometheus range
// results: line charts for time series, big numbers for stat panels, in the
// dashboard's own units and legend formats. Grafana cannot run here, so this is
// how docs/dashboard.png shows real data (scripts/render-dashboard.ts).
import type { PromSeries } from './services/prometheus.ts'

/** One query's result, with the legend format the dashboard gives it. */
export interface RenderedQuery {
  legend: string
  series: PromSeries[]
}

/** A panel to draw. */
export interface RenderedPanel {
  title: string
  kind: 'timeseries' | 'stat'
  unit: string
  /** Stat panels that show a series name (the leader) rather than a number. */
  showName: boolean
  queries: RenderedQuery[]
}

// Grafana's classic palette, so the picture reads like the real dashboard.
const PALETTE = ['#7EB26D', '#EAB839', '#6ED0E0', '#EF843C', '#E24D42', '#1F78C1', '#BA43A9', '#705DA0', '#508642', '#CCA300', '#447EBC', '#C15C17']

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** Applies a `{{label}}` legend format to a series' labels. */
export function legendOf(format: string, labels: Record<string, string>): string {
  if (!format || format === '__auto') return Object.entries(labels).filter(([k]) => k !== '__name__').map(([k, v]) => `${k}=${v}`).join(', ') || 'value'
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k: string) => labels[k] ?? '')
}

/** A value in the panel's unit, short. */
export function formatValue(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '–'
  const n = (x: number, digits = 2): string => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(digits).replace(/\.?0+$/, '') || '0')
  switch (unit) {
    case 's':
      if (v === 0) return '0 s'
      if (Math.abs(v) < 1e-3) return `${n(v * 1e6)} µs`
      if (Math.abs(v) < 1) return `${n(v * 1e3)} ms`
      return `${n(v)} s`
    case 'bytes': {
      const units = ['B', 'KiB', 'MiB', 'GiB']
      let x = v
      let i = 0
      while (Math.abs(x) >= 1024 && i < units.length - 1) {
        x /= 1024
        i++
      }
      return `${n(x)} ${units[i] ?? 'B'}`
    }
    case 'percentunit':
      return `${n(v * 100)}%`
    case 'ops':
      return `${n(v)}/s`
    case 'reqps':
      return `${n(v)} req/s`
    default:
      return n(v)
  }
}

function niceMax(max: number): number {
  if (max <= 0 || !Number.isFinite(max)) return 1
  const p = 10 ** Math.floor(Math.log10(max))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= max) return m * p
  return 10 * p
}

const clock = (t: number): string => new Date(t * 1000).toISOString().slice(11, 19)

function chart(panel: RenderedPanel, start: number, end: number): string {
  const W = 520
  const H = 190
  const L = 62
  const R = 10
  const T = 8
  const B = 22
  const lines: { name: string; color: string; points: [number, number][] }[] = []
  for (const q of panel.queries) {
    for (const s of q.series) {
      const points = s.values.map(([t, v]) => [t, Number(v)] as [number, number]).filter(([, v]) => Number.isFinite(v))
      lines.push({ name: legendOf(q.legend, s.metric), color: PALETTE[lines.length % PALETTE.length] ?? '#ccc', points })
    }
  }
  const max = niceMax(Math.max(0, ...lines.flatMap((l) => l.points.map(([, v]) => v))))
  const x = (t: number): number => L + ((t - start) / Math.max(1, end - start)) * (W - L - R)
  const y = (v: number): number => T + (1 - v / max) * (H - T - B)
  const grid: string[] = []
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4
    grid.push(`<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#2c3235"/>`, `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${esc(formatValue(v, panel.unit))}</text>`)
  }
  for (let i = 0; i <= 4; i++) {
    const t = start + ((end - start) * i) / 4
    grid.push(`<text x="${x(t)}" y="${H - 6}" text-anchor="${i === 0 ? 'start' : i === 4 ? 'end' : 'middle'}">${clock(t)}</text>`)
  }
  const paths = lines.map((l) => {
    // Break the line where samples are missing (more than two steps apart), as Grafana does.
    let d = ''
    let prev: number | null = null
    const step = (end - start) / 120
    for (const [t, v] of l.points) {
      d += `${prev === null || t - prev > step * 2.5 ? 'M' : 'L'}${x(t).toFixed(1)},${y(v).toFixed(1)} `
      prev = t
    }
    return d ? `<path d="${d}" fill="none" stroke="${l.color}" stroke-width="1.6"/>` : ''
  })
  const legend = lines.length === 0
    ? '<div class="nodata">no series in this window (nothing of this kind happened)</div>'
    : `<ul class="legend">${lines.slice(0, 12).map((l) => `<li><i style="background:${l.color}"></i>${esc(l.name)}</li>`).join('')}${lines.length > 12 ? `<li>+${lines.length - 12} more</li>` : ''}</ul>`
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">${grid.join('')}${paths.join('')}</svg>${legend}`
}

function stat(panel: RenderedPanel): string {
  const items: string[] = []
  for (const q of panel.queries) {
    for (const s of q.series) {
      const last = [...s.values].reverse().find(([, v]) => Number.isFinite(Number(v)))
      const name = legendOf(q.legend, s.metric)
      if (panel.showName) items.push(`<div class="stat name">${esc(name)}</div>`)
      else items.push(`<div class="stat"><b>${esc(last ? formatValue(Number(last[1]), panel.unit) : '–')}</b><span>${esc(name)}</span></div>`)
    }
  }
  return items.length ? items.join('') : '<div class="stat"><b>0</b></div>'
}

/** The whole page: a title, then the panels in dashboard order. */
export function dashboardHtml(opts: { title: string; subtitle: string; stats: RenderedPanel[]; charts: RenderedPanel[]; start: number; end: number }): string {
  const stats = opts.stats.map((p) => `<section class="panel s"><h3>${esc(p.title)}</h3><div class="stats">${stat(p)}</div></section>`).join('')
  const charts = opts.charts.map((p) => `<section class="panel"><h3>${esc(p.title)}</h3>${chart(p, opts.start, opts.end)}</section>`).join('')
  return `<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;padding:16px 18px;background:#111217;color:#ccccdc;font:13px/1.35 "DejaVu Sans",Arial,sans-serif;width:1640px}
h1{font-size:19px;margin:0 0 2px;color:#fff}p.sub{margin:0 0 12px;color:#8e8e9e}
.row{display:grid;gap:8px;margin-bottom:8px}.stats-row{grid-template-columns:repeat(${Math.max(1, opts.stats.length)},1fr)}.chart-row{grid-template-columns:repeat(3,1fr)}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px}
h3{margin:0 0 4px;font-size:13px;font-weight:600;color:#d8d9da}
svg{display:block;width:100%;height:auto}svg text{fill:#8e8e9e;font-size:10px}
.stats{display:flex;flex-wrap:wrap;gap:4px 14px;align-items:baseline}.stat b{font-size:24px;color:#73bf69;margin-right:4px}.stat span{color:#8e8e9e;font-size:11px}
.stat.name{font-size:14px;color:#6ed0e0;word-break:break-all}
ul.legend{list-style:none;margin:4px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:2px 12px;font-size:11px;color:#bfbfcc}
ul.legend i{display:inline-block;width:12px;height:3px;margin:0 4px 3px 0}.nodata{color:#8e8e9e;font-size:11px;margin-top:4px}
</style></head><body><h1>${esc(opts.title)}</h1><p class="sub">${esc(opts.subtitle)}</p>
<div class="row stats-row">${stats}</div><div class="row chart-row">${charts}</div></body></html>`
}
