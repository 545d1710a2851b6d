// A benchmark worker process, started by the harness with an IPC channel: hosts one
// system's side of a workload (see lib/spec.ts), starts consuming on `go`, streams
// its progress, and reports its own CPU, memory and latency samples on `stop`.
import { mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { join } from 'node:path'
import { probe } from './lib/probe.ts'
import { installRoundTripCounter } from './lib/round-trips.ts'
import { SPEC_ENV, type BenchWorker, type FromWorker, type ToWorker, type WorkerSpec } from './lib/spec.ts'

function send(msg: FromWorker): void {
  process.send?.(msg)
}

async function create(spec: WorkerSpec): Promise<BenchWorker> {
  // Each system is imported only where it runs, so a BullMQ worker does not load
  // the Troupe runtime and the other way round.
  if (spec.system === 'troupe') return (await import('./systems/troupe.ts')).troupeWorker(spec)
  if (spec.system === 'bullmq') return (await import('./systems/bullmq.ts')).bullWorker(spec)
  return (await import('./systems/naive.ts')).naiveWorker(spec)
}

/**
 * Profiles from `go` to `stop` (the warm-up and the measured window):
 * `node --cpu-prof` would also record loading the modules, which dominates a
 * run of a few seconds.
 */
class WindowProfiler {
  private session: Session | null = null

  constructor(private readonly dir: string | undefined) {}

  async start(): Promise<void> {
    if (!this.dir) return
    this.session = new Session()
    this.session.connect()
    await this.session.post('Profiler.enable')
    // 100 µs: a run of a few seconds at the default 1 ms gives too few samples per function.
    await this.session.post('Profiler.setSamplingInterval', { interval: 100 })
    await this.session.post('Profiler.start')
  }

  async stop(): Promise<void> {
    if (!this.session || !this.dir) return
    const { profile } = await this.session.post('Profiler.stop')
    mkdirSync(this.dir, { recursive: true })
    writeFileSync(join(this.dir, `worker-${process.pid}.cpuprofile`), JSON.stringify(profile))
    this.session.disconnect()
  }
}

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc) {
    gc()
    gc()
  }
}

async function main(): Promise<void> {
  const raw = process.env[SPEC_ENV]
  if (!raw || !process.send) throw new Error(`bench/worker.ts is started by bench/index.ts (needs ${SPEC_ENV} and an IPC channel)`)
  const spec = JSON.parse(raw) as WorkerSpec
  installRoundTripCounter()
  const worker = await create(spec)
  const profiler = new WindowProfiler(spec.profileDir)
  let lastSent = -1
  // Progress is batched on a short timer: one IPC message per handler would cost
  // more CPU than the no-op work being measured.
  const ticker = setInterval(() => {
    if (probe.done !== lastSent) {
      lastSent = probe.done
      send({ t: 'progress', done: probe.done, at: probe.lastDone })
    }
  }, 10)
  process.on('message', (m: ToWorker) => {
    void (async () => {
      try {
        if (m.t === 'go') {
          await profiler.start()
          probe.go()
          await worker.go()
          // Consuming (a Troupe runtime has registered its agents): the producer may start.
          send({ t: 'started' })
        } else if (m.t === 'report') {
          collectGarbage()
          const report = probe.report()
          send({ t: 'report', report: { ...report, extra: { ...report.extra, ...worker.gauges?.() } } })
        } else {
          clearInterval(ticker)
          await worker.drain?.()
          const report = probe.report()
          await profiler.stop()
          await worker.stop()
          send({ t: 'result', report })
          process.disconnect()
        }
      } catch (err) {
        send({ t: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) })
      }
    })()
  })
  send({ t: 'ready' })
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
