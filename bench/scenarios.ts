// The scenarios of issue 7 as variants: each variant runs Troupe and its peers
// alternately (the order flips every round, so drift on a shared machine does not
// favour whoever runs first), several rounds, and keeps every run.
import { backlogRun, flowRun, pacedRun, type BenchContext, type Measured } from './lib/run.ts'
import { fmt, summarize, type Summary } from './lib/stats.ts'
import { FLOW_STAGES, type System } from './lib/spec.ts'

/** Sizes of one mode. */
export interface Sizes {
  rounds: number
  /** Per process, per agent or queue (issue 2 measured BullMQ at 50). */
  concurrency: number
  spread: { workflows: number; perWorkflow: number; procs: number[] }
  busy: number
  cold: number
  paced: { workflows: number; count: number; rate: number; procs: number[] }
  flow: { workflows: number; rate: number }
  idle: number
}

export const SIZES: Record<'full' | 'quick', Sizes> = {
  full: {
    rounds: 3,
    concurrency: 50,
    spread: { workflows: 1000, perWorkflow: 30, procs: [1, 2, 4] },
    busy: 10_000,
    cold: 10_000,
    paced: { workflows: 1000, count: 5000, rate: 1000, procs: [1, 4] },
    flow: { workflows: 1000, rate: 100 },
    idle: 10_000,
  },
  quick: {
    rounds: 1,
    concurrency: 50,
    // Big enough that four processes have not worked the backlog off by the time the window starts.
    spread: { workflows: 500, perWorkflow: 20, procs: [1, 4] },
    busy: 1000,
    cold: 500,
    paced: { workflows: 200, count: 400, rate: 400, procs: [1] },
    flow: { workflows: 100, rate: 100 },
    idle: 1000,
  },
}

/** One system's runs in a variant, with the summaries the report needs. */
export interface SystemResult {
  label: string
  system: System
  runs: Measured[]
  throughput: Summary
  p50: Summary | null
  p99: Summary | null
  redisCpuUs: Summary
  roundTrips: Summary
  reads: Summary
  commands: Summary
  scripts: Summary
  /** Backlog runs: Redis CPU per unit of putting the backlog in place (outside the window). */
  enqueueRedisCpuUs: Summary | null
  /**
   * Redis CPU per unit including the enqueue: backlog runs add the enqueue's cost
   * per unit to the window's; paced and flow runs enqueue inside the window, so
   * this is the window's figure.
   */
  withEnqueueRedisCpuUs: Summary
  nodeCpuUs: Summary
  redisCpuPct: Summary
  memoryBytes: Summary | null
}

export interface VariantResult {
  id: string
  scenario: 1 | 2
  title: string
  unit: 'action' | 'workflow'
  procs: number
  /** What the variant measures: `throughput` on a backlog or burst, `latency` at a fixed rate. */
  kind: 'throughput' | 'latency'
  systems: SystemResult[]
}

interface Entry {
  label: string
  system: System
  run: () => Promise<Measured>
}

interface VariantDef {
  id: string
  scenario: 1 | 2
  title: string
  unit: 'action' | 'workflow'
  procs: number
  kind: 'throughput' | 'latency'
  entries: Entry[]
}

/** Every variant of scenarios 1 and 2 for these sizes (section 4's scale table reuses the spread variants). */
export function plan(ctx: BenchContext, z: Sizes): VariantDef[] {
  const c = z.concurrency
  const out: VariantDef[] = []
  const { workflows, perWorkflow } = z.spread
  for (const procs of z.spread.procs) {
    out.push({
      id: `noop.spread.${procs}p`, scenario: 1, kind: 'throughput', unit: 'action', procs,
      title: `no-op, backlog of ${workflows * perWorkflow} actions over ${workflows} workflows, ${procs} process${procs > 1 ? 'es' : ''}`,
      entries: [
        { label: 'Troupe', system: 'troupe', run: () => backlogRun(ctx, 'troupe', { workflows, perWorkflow, procs, concurrency: c, label: 'Troupe' }) },
        { label: 'BullMQ', system: 'bullmq', run: () => backlogRun(ctx, 'bullmq', { workflows: workflows * perWorkflow, perWorkflow: 1, procs, concurrency: c, label: 'BullMQ' }) },
      ],
    })
  }
  out.push({
    id: 'noop.busy', scenario: 1, kind: 'throughput', unit: 'action', procs: 1,
    title: `no-op, one busy actor: ${z.busy} actions to one workflow's agent (BullMQ: one queue at concurrency ${c}, the target's peer; and in order at concurrency 1)`,
    entries: [
      { label: 'Troupe', system: 'troupe', run: () => backlogRun(ctx, 'troupe', { workflows: 1, perWorkflow: z.busy, procs: 1, concurrency: c, label: 'Troupe' }) },
      { label: 'BullMQ c=1', system: 'bullmq', run: () => backlogRun(ctx, 'bullmq', { workflows: z.busy, perWorkflow: 1, procs: 1, concurrency: 1, label: 'BullMQ c=1' }) },
      { label: `BullMQ c=${c}`, system: 'bullmq', run: () => backlogRun(ctx, 'bullmq', { workflows: z.busy, perWorkflow: 1, procs: 1, concurrency: c, label: `BullMQ c=${c}` }) },
    ],
  })
  out.push({
    id: 'noop.cold', scenario: 1, kind: 'throughput', unit: 'action', procs: 1,
    title: `no-op, one action per actor: ${z.cold} workflows with one action each (every action activates a cold actor)`,
    entries: [
      { label: 'Troupe', system: 'troupe', run: () => backlogRun(ctx, 'troupe', { workflows: z.cold, perWorkflow: 1, procs: 1, concurrency: c, label: 'Troupe' }) },
      { label: 'BullMQ', system: 'bullmq', run: () => backlogRun(ctx, 'bullmq', { workflows: z.cold, perWorkflow: 1, procs: 1, concurrency: c, label: 'BullMQ' }) },
    ],
  })
  const p = z.paced
  for (const procs of p.procs) {
    out.push({
      id: `noop.paced.${procs}p`, scenario: 1, kind: 'latency', unit: 'action', procs,
      title: `no-op, enqueue-to-start latency at ${p.rate} actions/s (${p.count} sent one by one through the public API; Troupe: round-robin over ${p.workflows} workflows), ${procs} process${procs > 1 ? 'es' : ''}`,
      entries: [
        { label: 'Troupe', system: 'troupe', run: () => pacedRun(ctx, 'troupe', { ...p, procs, concurrency: c, label: 'Troupe' }) },
        { label: 'BullMQ', system: 'bullmq', run: () => pacedRun(ctx, 'bullmq', { ...p, procs, concurrency: c, label: 'BullMQ' }) },
      ],
    })
  }
  const f = z.flow
  // Equal handler slots: Troupe's four stages (the researchers as three agents
  // sharing c) and BullMQ's four queues get c each; the naive pattern's single
  // pool of loops gets all of them.
  const flowEntries = (rate: number): Entry[] => (['troupe', 'bullmq', 'naive'] as const).map((system) => {
    const label = system === 'troupe' ? 'Troupe' : system === 'bullmq' ? 'BullMQ flow' : 'naive'
    const concurrency = system === 'naive' ? FLOW_STAGES * c : c
    return { label, system, run: () => flowRun(ctx, system, { workflows: f.workflows, rate, procs: 1, concurrency, label }) }
  })
  out.push({
    id: 'flow.burst', scenario: 2, kind: 'throughput', unit: 'workflow', procs: 1,
    title: `planner → 3 researchers → writer → reviewer: ${f.workflows} workflows started at once (100 start calls in flight), 1 process (naive: ${FLOW_STAGES * c} loops)`,
    entries: flowEntries(0),
  })
  out.push({
    id: 'flow.paced', scenario: 2, kind: 'latency', unit: 'workflow', procs: 1,
    title: `the same flow, end-to-end latency with ${f.workflows} workflows started at ${f.rate}/s, 1 process`,
    entries: flowEntries(f.rate),
  })
  return out
}

function summaries(label: string, system: System, runs: Measured[]): SystemResult {
  const of = (f: (m: Measured) => number): Summary => summarize(runs.map(f))
  const withLatency = runs.every((m) => m.latency !== null)
  const withMemory = runs.every((m) => m.memory !== null)
  const withEnqueue = runs.length > 0 && runs.every((m) => m.enqueuePerUnit !== null)
  return {
    label, system, runs,
    throughput: of((m) => m.throughput),
    p50: withLatency ? of((m) => m.latency?.p50 ?? Number.NaN) : null,
    p99: withLatency ? of((m) => m.latency?.p99 ?? Number.NaN) : null,
    redisCpuUs: of((m) => m.perUnit.redisCpuUs),
    roundTrips: of((m) => m.perUnit.roundTrips),
    reads: of((m) => m.perUnit.reads),
    commands: of((m) => m.perUnit.commands),
    scripts: of((m) => m.perUnit.scripts),
    enqueueRedisCpuUs: withEnqueue ? of((m) => m.enqueuePerUnit?.redisCpuUs ?? Number.NaN) : null,
    withEnqueueRedisCpuUs: of((m) => m.perUnit.redisCpuUs + (m.enqueuePerUnit?.redisCpuUs ?? 0)),
    nodeCpuUs: of((m) => m.nodeCpuUs),
    redisCpuPct: of((m) => m.redisCpuPct),
    memoryBytes: withMemory ? of((m) => m.memory?.bytesPerWorkflow ?? Number.NaN) : null,
  }
}

/** Runs a variant's entries alternately for `rounds` rounds, logging one line per run. */
export async function runVariant(def: VariantDef, rounds: number, log: (line: string) => void): Promise<VariantResult> {
  const runs = new Map<string, Measured[]>(def.entries.map((e) => [e.label, []]))
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? def.entries : [...def.entries].reverse()
    for (const e of order) {
      const t = performance.now()
      const m = await e.run()
      runs.get(e.label)?.push(m)
      const lat = m.latency ? ` · p50 ${fmt(m.latency.p50)} ms p99 ${fmt(m.latency.p99)} ms` : ''
      const rate = def.kind === 'throughput' ? `${fmt(m.throughput)} ${m.unit}s/s` : `paced, ${fmt(m.throughput)} ${m.unit}s/s done`
      const enq = m.enqueuePerUnit ? ` (+ ${fmt(m.enqueuePerUnit.redisCpuUs)} µs to enqueue)` : ''
      log(`[${def.id} ${r + 1}/${rounds}] ${e.label}: ${rate}${lat} · Redis ${fmt(m.perUnit.redisCpuUs)} µs${enq}, ${fmt(m.perUnit.roundTrips)} round trips per ${m.unit} · ${fmt((performance.now() - t) / 1000)} s`)
    }
  }
  return {
    id: def.id, scenario: def.scenario, title: def.title, unit: def.unit, procs: def.procs, kind: def.kind,
    systems: def.entries.map((e) => summaries(e.label, e.system, runs.get(e.label) ?? [])),
  }
}
