// `npm run bench:gc`: where a worker process's young-generation GC time comes
// from. Each variant fills a backlog, then one child process (run with V8's
// --trace-gc-nvp) works it off alone; the child's GC trace gives the bytes it
// allocated and promoted to the old generation and its scavenge pauses, per unit.
// Troupe runs with its GC tuning (the default) and without it
// (TROUPE_GC_TUNING=off), next to a BullMQ worker on the same backlog of no-op
// jobs. Promotion is what a scavenge pays for: docs/benchmarks.md, 2026-12-06.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { startRuntime } from '../runtime/index.ts'
import { createLogger } from '../runtime/log.ts'
import { flowAgents, noopAgent, TroupeProducer } from './systems/troupe.ts'

type Kind = 'troupe-cold' | 'troupe-flow' | 'bullmq-cold'
interface ChildResult { ms: number; cpuUs: number }
interface Row { variant: string; unit: string; n: number; perSec: number; cpuUs: number; allocKb: number; promotedKb: number; scavengeUs: number; scavenges: number }

const SELF = fileURLToPath(import.meta.url)
const url = (): string => {
  const u = process.env.REDIS_URL
  if (!u) throw new Error('REDIS_URL is not set: run `npm run bench:gc`, which starts Redis first')
  return u
}

/** The child: works off the backlog under `prefix` and prints one RESULT line. */
async function child(kind: Kind, n: number, prefix: string): Promise<void> {
  let done = 0
  let finish: () => void = () => undefined
  const finished = new Promise<void>((r) => (finish = r))
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let stop: () => Promise<void>
  if (kind === 'bullmq-cold') {
    const w = new Worker(prefix, () => Promise.resolve(), { connection: new Redis(url(), { maxRetriesPerRequest: null }), concurrency: 50 })
    w.on('completed', () => (++done >= n ? finish() : undefined))
    stop = () => w.close()
  } else {
    const rt = await startRuntime({
      agents: kind === 'troupe-cold' ? [noopAgent(50)] : flowAgents(50),
      config: { redisUrl: url(), namespace: prefix, persistence: true },
      metricsPort: false,
      logger: createLogger('bench-gc'),
    })
    const counts = kind === 'troupe-cold' ? 'noop' : 'reviewer'
    const counter = rt.metrics.actions
    const inc = counter.inc.bind(counter) as (labels: Record<string, string>, value?: number) => void
    counter.inc = ((labels: Record<string, string>, value?: number) => {
      inc(labels, value)
      if (labels.outcome === 'completed' && labels.agent === counts && (done += value ?? 1) >= n) finish()
    }) as typeof counter.inc
    stop = () => rt.stop()
  }
  await finished
  const cpu = process.cpuUsage(c0)
  const result: ChildResult = { ms: performance.now() - t0, cpuUs: cpu.user + cpu.system }
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`)
  await stop()
  process.exit(0)
}

/** Sums the child's scavenges (`gc=s` lines of --trace-gc-nvp). */
function scavenges(trace: string): { count: number; allocated: number; promoted: number; pauseMs: number } {
  const out = { count: 0, allocated: 0, promoted: 0, pauseMs: 0 }
  for (const line of trace.split('\n')) {
    if (!line.includes(' gc=s ')) continue
    const field = (name: string): number => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0)
    out.count++
    out.allocated += field('allocated')
    out.promoted += field('promoted')
    out.pauseMs += field('pause')
  }
  return out
}

async function fill(kind: Kind, n: number, prefix: string): Promise<void> {
  if (kind === 'bullmq-cold') {
    // BullMQ leaves a connection it was given open: close it here.
    const conn = new Redis(url(), { maxRetriesPerRequest: null })
    const q = new Queue(prefix, { connection: conn })
    for (let i = 0; i < n; i += 1000) await q.addBulk(Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ name: 'tick', data: { t: i + j } })))
    await q.close()
    conn.disconnect()
    return
  }
  const producer = new TroupeProducer(url(), prefix, true)
  if (kind === 'troupe-cold') await producer.backlog(n, 1)
  // The backlog is made before the child's runtime starts, so nothing is registered to validate against yet.
  else for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => producer.startFlow(0, false)))
  await producer.close()
}

async function variant(kind: Kind, n: number, tuning: boolean): Promise<Row> {
  // A Troupe namespace ends in ':'; a BullMQ queue name may not contain one.
  const id = `gc${nanoid(8).replace(/[^A-Za-z0-9]/g, 'x')}`
  const prefix = kind === 'bullmq-cold' ? id : `${id}:`
  await fill(kind, n, prefix)
  const env = { ...process.env, TROUPE_GC_TUNING: tuning ? 'on' : 'off', TROUPE_LOG_LEVEL: 'warn' }
  const proc = spawn(process.execPath, ['--trace-gc-nvp', '--import', 'tsx', SELF, '--child', kind, '--n', String(n), '--prefix', prefix], { env, stdio: ['ignore', 'pipe', 'inherit'] })
  let trace = ''
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (trace += d))
  const code = await new Promise<number | null>((r) => proc.once('exit', r))
  const line = trace.split('\n').find((l) => l.startsWith('RESULT '))
  if (code !== 0 || !line) throw new Error(`${kind} child exited with ${String(code)} and no result`)
  const res = JSON.parse(line.slice(7)) as ChildResult
  const gc = scavenges(trace)
  await cleanup(prefix, kind)
  return {
    variant: kind === 'bullmq-cold' ? 'BullMQ, no-op jobs' : `Troupe, ${kind === 'troupe-cold' ? 'cold actions' : 'flow workflows'}, GC tuning ${tuning ? 'on' : 'off'}`,
    unit: kind === 'troupe-flow' ? 'workflow' : 'action',
    n,
    perSec: (n / res.ms) * 1000,
    cpuUs: res.cpuUs / n,
    allocKb: gc.allocated / n / 1024,
    promotedKb: gc.promoted / n / 1024,
    scavengeUs: (gc.pauseMs * 1000) / n,
    scavenges: gc.count,
  }
}

async function cleanup(prefix: string, kind: Kind): Promise<void> {
  const r = new Redis(url())
  const pattern = kind === 'bullmq-cold' ? `bull:${prefix}:*` : `${prefix}*`
  for (let cursor = '0'; ;) {
    const [next, found] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    if (found.length > 0) await r.unlink(...found)
    if ((cursor = next) === '0') break
  }
  r.disconnect()
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { child: { type: 'string' }, n: { type: 'string' }, prefix: { type: 'string' }, cold: { type: 'string', default: '20000' }, flow: { type: 'string', default: '3000' } } })
  if (values.child) return await child(values.child as Kind, Number(values.n), values.prefix ?? '')
  const cold = Number(values.cold)
  const flow = Number(values.flow)
  if (!(cold > 0 && flow > 0)) throw new Error('--cold and --flow take positive counts')
  const rows: Row[] = []
  for (const [kind, n, tuning] of [['troupe-cold', cold, true], ['troupe-cold', cold, false], ['bullmq-cold', cold, true], ['troupe-flow', flow, true], ['troupe-flow', flow, false]] as const) {
    process.stderr.write(`bench:gc ${kind} (${n}, tuning ${tuning ? 'on' : 'off'})...\n`)
    rows.push(await variant(kind, n, tuning))
  }
  const f = (v: number, d = 1): string => v.toLocaleString('en-US', { maximumFractionDigits: d })
  process.stdout.write('| variant | per second | CPU µs per unit | KB allocated | KB promoted | scavenge pause µs | scavenges |\n|---|---:|---:|---:|---:|---:|---:|\n')
  for (const r of rows) process.stdout.write(`| ${r.variant} (per ${r.unit}) | ${f(r.perSec, 0)} | ${f(r.cpuUs, 0)} | ${f(r.allocKb)} | ${f(r.promotedKb, 2)} | ${f(r.scavengeUs)} | ${r.scavenges} |\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
