// `npm run bench [-- --quick]`: Troupe against the peers a user would pick instead
// (BullMQ, the seed's naive pattern) on the same Redis, in the same run. Prints one
// line per run as it goes, then the tables; writes the results as JSON and, for a
// full run, refreshes the tables in docs/benchmarks.md.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { measureCeiling } from './lib/ceiling.ts'
import { describeMachine, finishMachine } from './lib/machine.ts'
import { profileDirs, summarizeProfiles } from './lib/profile.ts'
import { checkTargets, renderMarkdown, type BenchResults } from './lib/report.ts'
import { excludeFromRoundTrips, installRoundTripCounter } from './lib/round-trips.ts'
import { idleRun, type BenchContext } from './lib/run.ts'
import { PERSISTER, runSection, SSE, type ExternalSection } from './lib/sections.ts'
import { fmt } from './lib/stats.ts'
import { plan, runVariant, SIZES, type VariantResult } from './scenarios.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DOC = join(ROOT, 'docs', 'benchmarks.md')
const START_MARK = '<!-- bench:results:start -->'
const END_MARK = '<!-- bench:results:end -->'

const HELP = `usage: npm run bench [-- options]     (starts Redis and Neo4j, then runs bench/index.ts)

  --quick            small sizes, one round (well under two minutes)
  --rounds N         rounds per variant (default 3, quick 1)
  --only a,b         only variants whose id starts with one of these (e.g. noop.spread,flow),
                     plus 'ceiling', 'idle', 'persister', 'sse' for those sections
  --out FILE         where to write the JSON (default bench/results/<date>.json; quick or --only: the temp dir)
  --no-docs          do not refresh the tables in docs/benchmarks.md (full runs refresh them)
  --persistence off  run Troupe without feeding persistence:queue (default on, as Troupe ships)
  --profile          write V8 CPU profiles of every worker process and print where the time goes
  --wait-load X      first wait (up to 30 min) until the 1-minute load average is below X
`

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

/** On a shared machine, numbers taken while others run are noise: wait for a quiet moment. */
async function waitForLoad(max: number): Promise<void> {
  const deadline = Date.now() + 30 * 60_000
  while ((loadavg()[0] ?? 0) >= max && Date.now() < deadline) {
    log(`waiting for the load average (${(loadavg()[0] ?? 0).toFixed(2)}) to drop below ${max}`)
    await new Promise((r) => setTimeout(r, 15_000))
  }
}

function replaceBetweenMarks(doc: string, body: string): string {
  const a = doc.indexOf(START_MARK)
  const b = doc.indexOf(END_MARK)
  if (a < 0 || b < a) return `${doc.trimEnd()}\n\n${START_MARK}\n${body}\n${END_MARK}\n`
  return `${doc.slice(0, a + START_MARK.length)}\n${body}\n${doc.slice(b)}`
}

/** Runs the harness; `argv` as after `npm run bench --`. Returns the results. */
export async function main(argv: string[]): Promise<BenchResults> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      only: { type: 'string' },
      out: { type: 'string' },
      'no-docs': { type: 'boolean', default: false },
      persistence: { type: 'string', default: 'on' },
      profile: { type: 'boolean', default: false },
      'wait-load': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) {
    process.stdout.write(HELP)
    process.exit(0)
  }
  const redisUrl = process.env.REDIS_URL
  if (!redisUrl) throw new Error('REDIS_URL is not set: run `npm run bench`, which starts Redis (and Neo4j) first')
  const mode = values.quick ? 'quick' : 'full'
  const sizes = { ...SIZES[mode] }
  if (values.rounds !== undefined) {
    const n = Number(values.rounds)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`)
    sizes.rounds = n
  }
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean) ?? []
  const wanted = (id: string): boolean => only.length === 0 || only.some((o) => id.startsWith(o))
  const stamp = new Date().toISOString()
  const profileRoot = values.profile ? join(ROOT, 'bench', 'results', 'profiles', stamp.replace(/[:.]/g, '-')) : undefined

  if (values['wait-load']) await waitForLoad(Number(values['wait-load']))
  installRoundTripCounter()
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: null })
  excludeFromRoundTrips(admin)
  const ctx: BenchContext = { redisUrl, admin, persistence: values.persistence !== 'off', ...(profileRoot ? { profileDir: profileRoot } : {}) }
  const started = performance.now()
  try {
    const machine = await describeMachine(admin)
    log(`troupe bench (${mode}): ${machine.cores} cores ${machine.cpuModel}, Node ${machine.node}, Redis ${machine.redis} at ${redisUrl}, load ${machine.loadStart.join(' ')}`)
    if (machine.loadStart[0] !== undefined && machine.loadStart[0] > machine.cores * 0.75) {
      log(`warning: load average ${machine.loadStart[0]} on ${machine.cores} cores: other work is running, expect noisy numbers`)
    }
    const variants: VariantResult[] = []
    for (const def of plan(ctx, sizes)) {
      if (!wanted(def.id)) continue
      variants.push(await runVariant(def, sizes.rounds, log))
    }
    const took = (t: number): string => `${fmt((performance.now() - t) / 1000)} s`
    let ceiling: BenchResults['ceiling'] = null
    if (wanted('ceiling')) {
      const t = performance.now()
      ceiling = await measureCeiling(redisUrl, values.quick)
      log(`[ceiling] ${fmt(ceiling.pingRps)} req/s, ${fmt(ceiling.pipelinedRps)} pipelined, ${fmt(ceiling.evalRps)} scripts/s (${ceiling.tool}) · ${took(t)}`)
    }
    let idle: BenchResults['idle'] = null
    if (wanted('idle')) {
      const t = performance.now()
      idle = await idleRun(ctx, sizes.idle, sizes.concurrency)
      log(`[idle] ${sizes.idle} waiting workflows: ${idle.activeActors} actors active, heap ${fmt(idle.heapBytesPerWorkflow)} B and Redis ${fmt(idle.redisBytesPerWorkflow)} B per workflow · ${took(t)}`)
    }
    // The load after Troupe and its peers ran: the persister section below loads Neo4j, which would blur it.
    const measuredOn = finishMachine(machine)
    const section = async (name: string, spec: typeof PERSISTER): Promise<ExternalSection> => {
      if (!wanted(name)) return { ran: false, reason: 'not selected (--only)', numbers: {} }
      const t = performance.now()
      const r = await runSection(spec, { redisUrl, quick: values.quick, log: (s) => log(`[${name}] ${s}`) })
      log(r.ran ? `[${name}] ${Object.keys(r.numbers).length} numbers · ${took(t)}` : `[${name}] skipped: ${r.reason}`)
      return r
    }
    const persister = await section('persister', PERSISTER)
    const sse = await section('sse', SSE)
    const results: BenchResults = {
      version: 1,
      date: stamp,
      mode,
      command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
      durationS: (performance.now() - started) / 1000,
      machine: measuredOn,
      sizes,
      settings: { concurrency: sizes.concurrency, troupePersistence: ctx.persistence },
      variants,
      ceiling,
      idle,
      persister,
      sse,
      targets: [],
    }
    results.targets = checkTargets(results)
    const md = renderMarkdown(results)
    process.stdout.write(`\n${md}\n`)
    // Only a complete full run owns bench/results/<date>.json: a partial run
    // (--only) written there would replace the day's complete results.
    const complete = mode === 'full' && only.length === 0
    const out = values.out ?? (complete ? join(ROOT, 'bench', 'results', `${stamp.slice(0, 10)}.json`) : join(tmpdir(), `troupe-bench-${mode === 'full' ? 'partial' : 'quick'}-${process.pid}.json`))
    mkdirSync(join(out, '..'), { recursive: true })
    writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`)
    log(`results written to ${out}`)
    if (complete && !values['no-docs']) {
      writeFileSync(DOC, replaceBetweenMarks(existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n', md))
      log(`tables refreshed in ${DOC}`)
    }
    if (profileRoot) {
      for (const dir of profileDirs(profileRoot)) {
        const s = summarizeProfiles(dir)
        log(`\n[profile] ${dir} (${fmt(s.totalMs)} ms of samples, idle excluded)`)
        log(`  self time by module: ${s.modules.slice(0, 8).map((m) => `${m.name} ${fmt(m.pct)}%`).join(', ')}`)
        log(`  inclusive by package: ${s.packages.slice(0, 6).map((m) => `${m.name} ${fmt(m.pct)}%`).join(', ')}`)
        if (s.ours.length > 0) log(`  inclusive, our functions: ${s.ours.map((f) => `${f.name} ${fmt(f.pct)}%`).join(', ')}`)
        log('  top self time:')
        for (const f of s.functions) log(`    ${fmt(f.pct)}%  ${f.name}`)
      }
    }
    return results
  } finally {
    admin.disconnect()
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err))
      process.exit(1)
    },
  )
}
