// Statistics of a benchmark: one number per round becomes median and spread, so a
// round disturbed by a neighbour on a shared machine shows up as spread rather
// than silently moving the headline figure.

/** A metric measured over several rounds. */
export interface Summary {
  median: number
  min: number
  max: number
  /** (max - min) / median, in percent: how much the rounds disagree. */
  spreadPct: number
  rounds: number[]
}

/** The q-quantile (0..1) of `sorted` (ascending), nearest-rank. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i] as number
}

/** p50, p99, p99.9 and max of a sample (any order). */
export function percentiles(sample: readonly number[]): { p50: number; p99: number; p999: number; max: number; n: number } {
  const s = [...sample].sort((a, b) => a - b)
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99), p999: quantile(s, 0.999), max: s[s.length - 1] ?? Number.NaN, n: s.length }
}

/** Median and spread of the per-round values. */
export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length === 0 ? Number.NaN : s.length % 2 === 1 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2
  const min = s[0] ?? Number.NaN
  const max = s[s.length - 1] ?? Number.NaN
  return { median: mid, min, max, spreadPct: mid === 0 ? 0 : ((max - min) / Math.abs(mid)) * 100, rounds: [...values] }
}

/** Troupe's median over the peer's; NaN when the peer has none. */
export function ratio(troupe: Summary | undefined, peer: Summary | undefined): number {
  if (!troupe || !peer || !Number.isFinite(peer.median) || peer.median === 0) return Number.NaN
  return troupe.median / peer.median
}

/** Rounds a number for a table: 3 significant digits, thousands kept whole. */
export function fmt(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return 'n/a'
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US')
  return Number(v.toPrecision(digits)).toString()
}

/**
 * A table cell: `median ±h%` (h = half the range between rounds, relative to the
 * median), or `median (min–max)` when the rounds disagree by more than the median
 * itself, which a percentage would only obscure.
 */
export function cell(s: Summary | undefined, digits = 3): string {
  if (!s) return 'n/a'
  if (s.rounds.length < 2) return fmt(s.median, digits)
  if (s.spreadPct > 100) return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`
  return `${fmt(s.median, digits)} ±${Math.round(s.spreadPct / 2)}%`
}
