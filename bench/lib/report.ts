// Turns a run's results into the markdown tables printed at the end and kept in
// docs/benchmarks.md, and checks the targets of issue 7 against them.
import type { Machine } from './machine.ts'
import type { RedisCeiling } from './ceiling.ts'
import type { ExternalSection } from './sections.ts'
import type { IdleMeasured } from './run.ts'
import { FLOW_STAGES } from './spec.ts'
import { cell, fmt, ratio, summarize, type Summary } from './stats.ts'
import type { Sizes, SystemResult, VariantResult } from '../scenarios.ts'

export interface Target {
  name: string
  goal: string
  measured: string
  met: boolean
}

export interface BenchResults {
  version: 1
  date: string
  mode: 'full' | 'quick'
  command: string
  durationS: number
  machine: Machine
  sizes: Sizes
  settings: { concurrency: number; troupePersistence: boolean }
  variants: VariantResult[]
  ceiling: RedisCeiling | null
  idle: IdleMeasured | null
  persister: ExternalSection
  sse: ExternalSection
  targets: Target[]
}

function find(r: BenchResults, id: string): VariantResult | undefined {
  return r.variants.find((v) => v.id === id)
}

function sys(v: VariantResult | undefined, label: string): SystemResult | undefined {
  return v?.systems.find((s) => s.label === label)
}

function x(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}×` : 'n/a'
}

/** Targets of issue 7: throughput ratios, latency p99, the naive pattern, busy-actor round trips. */
export function checkTargets(r: BenchResults): Target[] {
  const out: Target[] = []
  const thr = (id: string, peer: string, goal: number, name: string): void => {
    const v = find(r, id)
    const t = sys(v, 'Troupe')
    const p = sys(v, peer)
    if (!t || !p) return
    const q = ratio(t.throughput, p.throughput)
    out.push({ name, goal: `≥ ${goal.toFixed(1)}× ${peer}`, measured: x(q), met: q >= goal })
  }
  const p99 = (id: string, peer: string, name: string): void => {
    const v = find(r, id)
    const t = sys(v, 'Troupe')?.p99
    const p = sys(v, peer)?.p99
    if (!t || !p) return
    out.push({ name, goal: `p99 ≤ ${peer}'s`, measured: `${fmt(t.median)} ms vs ${fmt(p.median)} ms`, met: t.median <= p.median })
  }
  for (const procs of r.sizes.spread.procs) thr(`noop.spread.${procs}p`, 'BullMQ', 1, `1. no-op throughput, ${procs} process${procs > 1 ? 'es' : ''}`)
  // Equal concurrency, as the requirement asks; BullMQ at concurrency 1 (the same
  // in-order guarantee) stays in the table as context.
  thr('noop.busy', `BullMQ c=${r.settings.concurrency}`, 1, `1. no-op throughput, one busy actor (vs BullMQ at the same concurrency, ${r.settings.concurrency})`)
  thr('noop.cold', 'BullMQ', 1, '1. no-op throughput, one action per actor')
  for (const procs of r.sizes.paced.procs) p99(`noop.paced.${procs}p`, 'BullMQ', `1. enqueue-to-start latency, ${procs} process${procs > 1 ? 'es' : ''}`)
  thr('flow.burst', 'BullMQ flow', 1, '2. workflow throughput')
  p99('flow.paced', 'BullMQ flow', '2. workflow end-to-end latency')
  thr('flow.burst', 'naive', 3, '2. workflow throughput vs the naive pattern')
  const busy = find(r, 'noop.busy')
  const tb = sys(busy, 'Troupe')?.roundTrips
  for (const peer of busy?.systems.filter((s) => s.system === 'bullmq') ?? []) {
    if (!tb) continue
    out.push({ name: `3. round trips per action, busy actor (vs ${peer.label})`, goal: `< ${peer.label}`, measured: `${fmt(tb.median)} vs ${fmt(peer.roundTrips.median)}`, met: tb.median < peer.roundTrips.median })
  }
  return out
}

function machineBlock(r: BenchResults): string[] {
  const m = r.machine
  return [
    `- **When / how**: ${r.date}, \`${r.command}\` (${r.mode} mode, ${r.sizes.rounds} round${r.sizes.rounds > 1 ? 's' : ''} per variant, systems alternating), ${fmt(r.durationS)} s in all`,
    `- **Machine**: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}; load average ${m.loadStart.join(' / ')} at start, ${m.loadEnd.join(' / ')} after the Troupe/peer sections (1/5/15 min)`,
    `- **Software**: Node ${m.node}, Redis ${m.redis} (${Object.entries(m.redisConfig).map(([k, v]) => `${k} ${v}`).join(', ')}), BullMQ ${m.versions.bullmq ?? '?'}, ioredis ${m.versions.ioredis ?? '?'}, XState ${m.versions.xstate ?? '?'}`,
    `- **Settings**: concurrency ${r.settings.concurrency} per agent / queue, in each process (the flow: Troupe's three researcher agents share ${r.settings.concurrency}, so Troupe and BullMQ each have ${FLOW_STAGES} × ${r.settings.concurrency} handler slots; the naive pattern ${FLOW_STAGES * r.settings.concurrency} loops); Troupe persistence ${r.settings.troupePersistence ? 'on (its default: every commit also appends a pointer to `persistence:queue`)' : 'off'}; BullMQ defaults (completed jobs kept)`,
    `- **Note**: ${m.note}`,
  ]
}

const HEAD_COST = 'Redis µs | round trips | Redis cmds | Node CPU µs | Redis CPU'

function costCells(s: SystemResult): string {
  return `${cell(s.redisCpuUs)} | ${cell(s.roundTrips)} | ${cell(s.commands)} | ${cell(s.nodeCpuUs)} | ${fmt(s.redisCpuPct.median)}%`
}

function throughputTable(vs: VariantResult[]): string[] {
  const lines = [`| variant | system | per second | Troupe ÷ it | ${HEAD_COST} |`, '|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for (const v of vs) {
    const t = sys(v, 'Troupe')
    for (const s of v.systems) {
      const q = s.label === 'Troupe' ? '' : x(ratio(t?.throughput, s.throughput))
      lines.push(`| ${v.id} | ${s.label} | ${cell(s.throughput)} | ${q} | ${costCells(s)} |`)
    }
  }
  return lines
}

function latencyTable(vs: VariantResult[]): string[] {
  const lines = [`| variant | system | p50 ms | p99 ms | Troupe p99 ÷ it | ${HEAD_COST} |`, '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for (const v of vs) {
    const t = sys(v, 'Troupe')
    for (const s of v.systems) {
      const q = s.label === 'Troupe' ? '' : x(ratio(t?.p99 ?? undefined, s.p99 ?? undefined))
      lines.push(`| ${v.id} | ${s.label} | ${cell(s.p50 ?? undefined)} | ${cell(s.p99 ?? undefined)} | ${q} | ${costCells(s)} |`)
    }
  }
  return lines
}

function ceilingTable(r: BenchResults): string[] {
  const c = r.ceiling
  const lines: string[] = []
  if (c) {
    lines.push(`Raw capacity of this Redis (${c.tool}): ${fmt(c.pingRps)} requests/s one per round trip, ${fmt(c.pipelinedRps)} requests/s pipelined ×16, ${fmt(c.evalRps)} no-op script calls/s.`, '')
  }
  lines.push(
    '| variant | system | unit | Redis CPU s per 10k | incl. enqueue | cmds | scripts | round trips | server reads | CPU ceiling /s | incl. enqueue /s | achieved |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  )
  for (const v of r.variants) {
    if (v.procs !== 1) continue
    for (const s of v.systems) {
      const cpuCeil = 1e6 / s.redisCpuUs.median
      const withEnqueue = s.withEnqueueRedisCpuUs.median
      const backlog = s.runs.every((m) => m.enqueuePerUnit !== null)
      const mark = backlog ? '' : ' ¹'
      const achieved = v.kind === 'throughput' ? `${fmt((s.throughput.median / cpuCeil) * 100)}%` : 'paced'
      lines.push(`| ${v.id} | ${s.label} | ${v.unit} | ${fmt((s.redisCpuUs.median * 1e4) / 1e6)} | ${fmt((withEnqueue * 1e4) / 1e6)}${mark} | ${fmt(s.commands.median)} | ${fmt(s.scripts.median)} | ${fmt(s.roundTrips.median)} | ${fmt(s.reads.median)} | ${fmt(cpuCeil)} | ${fmt(1e6 / withEnqueue)}${mark} | ${achieved} |`)
    }
  }
  return lines
}

function topTable(r: BenchResults, id: string): string[] {
  const v = find(r, id)
  if (!v) return []
  const lines = [`Where Redis time goes in \`${id}\` (commandstats, first round; µs per ${v.unit}, calls per ${v.unit}):`, '']
  for (const s of v.systems) {
    const top = s.runs[0]?.top ?? []
    lines.push(`- ${s.label}: ${top.map((t) => `${t.cmd} ${fmt(t.usecPerUnit)} µs / ${fmt(t.callsPerUnit)}`).join(', ')}`)
  }
  return lines
}

function enqueueLines(r: BenchResults): string[] {
  const vs = r.variants.filter((v) => v.systems.some((s) => s.enqueueRedisCpuUs))
  if (vs.length === 0) return []
  const lines = [
    'Enqueueing the backlog (Troupe: the pipelined enqueue the client uses; BullMQ: `addBulk`), per action, every backlog variant, median over rounds; the backlog runs\' windows leave it out:',
    '',
    '| variant | system | enqueue Redis µs | enqueue cmds | enqueue scripts | window Redis µs | window + enqueue Redis µs |',
    '|---|---|---:|---:|---:|---:|---:|',
  ]
  for (const v of vs) {
    for (const s of v.systems) {
      if (!s.enqueueRedisCpuUs) continue
      const med = (f: (m: (typeof s.runs)[number]) => number): number => summarize(s.runs.map(f)).median
      lines.push(`| ${v.id} | ${s.label} | ${cell(s.enqueueRedisCpuUs)} | ${fmt(med((m) => m.enqueuePerUnit?.commands ?? Number.NaN))} | ${fmt(med((m) => m.enqueuePerUnit?.scripts ?? Number.NaN))} | ${cell(s.redisCpuUs)} | ${cell(s.withEnqueueRedisCpuUs)} |`)
    }
  }
  return lines
}

function scaleTable(r: BenchResults): string[] {
  const lines = ['| processes | Troupe actions/s | BullMQ jobs/s | Troupe ÷ BullMQ | Troupe Redis µs/action | BullMQ Redis µs/job | Redis CPU (Troupe / BullMQ) |', '|---:|---:|---:|---:|---:|---:|---:|']
  for (const procs of r.sizes.spread.procs) {
    const v = find(r, `noop.spread.${procs}p`)
    const t = sys(v, 'Troupe')
    const b = sys(v, 'BullMQ')
    if (!t || !b) continue
    lines.push(`| ${procs} | ${cell(t.throughput)} | ${cell(b.throughput)} | ${x(ratio(t.throughput, b.throughput))} | ${cell(t.redisCpuUs)} | ${cell(b.redisCpuUs)} | ${fmt(t.redisCpuPct.median)}% / ${fmt(b.redisCpuPct.median)}% |`)
  }
  return lines
}

function memoryLines(r: BenchResults): string[] {
  const lines: string[] = []
  const v = find(r, 'flow.burst')
  if (v) {
    lines.push('Redis memory per finished workflow (MEMORY USAGE of every key the run left, divided by the workflows; defaults of each system):', '')
    for (const s of v.systems) {
      const keys = s.runs[0]?.memory?.keysPerWorkflow ?? Number.NaN
      lines.push(`- ${s.label}: ${cell(s.memoryBytes ?? undefined as Summary | undefined)} bytes, ${fmt(keys)} keys`)
    }
    lines.push('')
  }
  const i = r.idle
  if (i) {
    lines.push(
      `${fmt(i.workflows)} workflows waiting (each actor deactivated after its one action), one runtime process: ` +
        `${fmt(i.activeActors)} actors held in memory; runtime heap ${fmt(i.heapBytesPerWorkflow)} bytes and RSS ${fmt(i.rssBytesPerWorkflow)} bytes per waiting workflow ` +
        `(growth between half and all of them, after a full GC); RSS ${fmt(i.rssBaseMiB)} MiB idle, ${fmt(i.rssAfterMiB)} MiB after; ` +
        `Redis ${fmt(i.redisBytesPerWorkflow)} bytes and ${fmt(i.redisKeysPerWorkflow)} keys per waiting workflow.`,
    )
  }
  return lines
}

function sectionLines(p: ExternalSection | undefined): string[] {
  if (!p) return ['Skipped: not measured in this run.']
  if (!p.ran) return [`Skipped: ${p.reason}`]
  return ['| measure | value |', '|---|---:|', ...Object.entries(p.numbers).map(([k, v]) => `| ${k} | ${typeof v === 'number' ? fmt(v) : v} |`)]
}

/** The results as markdown: machine, the five sections, the targets. */
export function renderMarkdown(r: BenchResults): string {
  const by = (scenario: number, kind: VariantResult['kind']): VariantResult[] => r.variants.filter((v) => v.scenario === scenario && v.kind === kind)
  const out = [
    ...machineBlock(r),
    '',
    'Cells are the median over rounds with ± half the range between rounds (or the range itself when the rounds disagree by more than the median). Costs are per unit of the row (action, or workflow in section 2): Redis CPU µs, client round trips (commands sent alone plus pipelines, counted in every process), Redis commands (including those run inside scripts), CPU µs of the worker processes; Redis CPU is the server\'s share of one core during the window.',
    '',
    '### 1. No-op actions: throughput',
    '',
    ...throughputTable(by(1, 'throughput')),
    '',
    '### 1. No-op actions: enqueue-to-start latency (costs include the enqueue)',
    '',
    ...latencyTable(by(1, 'latency')),
    '',
    '### 2. Multi-agent workflow (per workflow: Troupe and naive 8 actions, BullMQ 6 jobs)',
    '',
    ...throughputTable(by(2, 'throughput')),
    '',
    ...latencyTable(by(2, 'latency')),
    '',
    '### 3. Cost per unit and the ceiling (1-process variants)',
    '',
    ...ceilingTable(r),
    '',
    'CPU ceiling: units/s if the Redis server spent a whole core on this mix (1 / Redis CPU per unit, the server\'s reads and writes included); "incl. enqueue": the same with the cost of enqueueing each unit added, which backlog runs pay before their window (see the enqueue table below) — ¹ paced and flow runs enqueue inside the window, so there it is the window\'s figure; achieved: throughput as a share of the CPU ceiling. There is no round-trip ceiling: the raw one-request-per-round-trip rate divided by round trips per unit bounds nothing when one round trip carries dozens of pipelined commands (on 2026-12-06 it gave 1.18M actions/s for Troupe\'s `noop.spread.1p`), and what a round trip costs the server is already in its CPU per unit.',
    '',
    ...topTable(r, 'noop.spread.1p'),
    '',
    ...topTable(r, 'flow.burst'),
    '',
    ...enqueueLines(r),
    '',
    '### 4. Scale',
    '',
    ...scaleTable(r),
    '',
    ...memoryLines(r),
    '',
    '### 5. Persister (bench/persister.ts)',
    '',
    ...sectionLines(r.persister),
    '',
    '### 5. Live events over SSE (bench/sse.ts)',
    '',
    ...sectionLines(r.sse),
    '',
    '### Targets (issue 7)',
    '',
    '| target | goal | measured | met |',
    '|---|---|---|---|',
    ...r.targets.map((t) => `| ${t.name} | ${t.goal} | ${t.measured} | ${t.met ? 'yes' : '**no**'} |`),
  ]
  return out.join('\n')
}
