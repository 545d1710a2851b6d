// Gateway benchmark: emit-to-client latency of live events through a real gateway
// with many concurrent SSE clients, next to raw Redis PUBLISH-to-subscriber latency
// measured in the same run, and requests/s of the status endpoint.
//
// Separate processes, so no event loop measures itself: this one emits (the real
// path, `emitEvents` against a started workflow, as an agent streaming tokens
// does), `troupe gateway` serves, bench/sse-clients.ts receives (the clients split
// over two processes). Timestamps are wall-clock with sub-millisecond resolution,
// which processes on one machine share. Each phase also reports where the CPU went
// during its window (per process, from /proc and Redis INFO) and the gateway's
// CPU per delivered frame.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { emitEvents, type ProtocolContext } from '../runtime/claims.ts'
import { TroupeClient } from '../runtime/client.ts'
import { loadConfig } from '../runtime/config.ts'
import { encodeEvent } from '../runtime/events.ts'
import { AuthStore } from '../runtime/gateway/auth-store.ts'
import { gatewaySettings } from '../runtime/gateway/settings.ts'
import { Keys } from '../runtime/redis/keys.ts'
import { latencyStats, wallMs, type FromClients, type LatencyStats, type ToClients } from './sse-clients.ts'
import { cpuReport, cpuSnap, round } from './lib/cpu.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CLIENTS = fileURLToPath(new URL('./sse-clients.ts', import.meta.url))
const TICK_MS = 10
// SSE_BENCH_CLIENT_PROCS=1 puts every client in one process (to compare).
const CLIENT_PROCS = Math.max(1, Number(process.env.SSE_BENCH_CLIENT_PROCS ?? 2) || 2)

/** A command without its id (distributes over the union, which plain Omit does not). */
type Command = ToClients extends infer T ? (T extends ToClients ? Omit<T, 'id'> : never) : never

/** Options of {@link benchSse}. */
export interface SseBenchOptions {
  redisUrl: string
  quick: boolean
  log: (s: string) => void
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = addr && typeof addr === 'object' ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()))
}

/** Stops a child: SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
async function stopChild(p: ChildProcess, graceMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return
  p.kill('SIGTERM')
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs)
  await exited(p)
  clearTimeout(t)
}

/** One receiving child, driven by request/answer over IPC. */
class ClientProc {
  private next = 1
  private readonly waiting = new Map<number, (m: FromClients) => void>()
  private readonly ready: Promise<void>
  readonly proc: ChildProcess

  constructor(profDir?: string) {
    const prof = profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []
    this.proc = spawn(process.execPath, [...prof, '--import', 'tsx', CLIENTS], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    let started!: () => void
    this.ready = new Promise((r) => (started = r))
    this.proc.on('message', (m: FromClients) => {
      if (m.id === 0) return started()
      const w = this.waiting.get(m.id)
      this.waiting.delete(m.id)
      w?.(m)
    })
    this.proc.once('exit', (code) => {
      for (const w of this.waiting.values()) w({ t: 'error', id: -1, message: `clients process exited (${String(code)})` })
      this.waiting.clear()
    })
  }

  async ask(cmd: Command, timeoutMs = 120_000): Promise<FromClients> {
    await this.ready
    const id = this.next++
    const answer = new Promise<FromClients>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`clients: no answer to ${cmd.t} within ${timeoutMs} ms`)), timeoutMs)
      this.waiting.set(id, (m) => {
        clearTimeout(t)
        if (m.t === 'error') reject(new Error(m.message))
        else resolve(m)
      })
    })
    this.proc.send({ ...cmd, id })
    return answer
  }

  async stop(): Promise<void> {
    if (this.proc.connected) this.proc.disconnect()
    await stopChild(this.proc, 5000)
  }
}

/**
 * The receiving side: the SSE clients spread evenly over {@link CLIENT_PROCS}
 * processes (a thousand streams at a thousand events/s is a million frames/s to
 * read, more than one event loop keeps up with next to the gateway); the raw
 * subscriber and the status load run in the first.
 */
class Clients {
  readonly procs: ClientProc[]

  constructor(profDir?: string) {
    this.procs = Array.from({ length: CLIENT_PROCS }, () => new ClientProc(profDir))
  }

  get first(): ClientProc {
    return this.procs[0] as ClientProc
  }

  get pids(): (number | undefined)[] {
    return this.procs.map((p) => p.proc.pid)
  }

  /** Opens `n` streams, split over the processes; resolves with how many opened. */
  async open(url: string, token: string, n: number): Promise<number> {
    const k = this.procs.length
    const answers = await Promise.all(this.procs.map((p, i) => p.ask({ t: 'sse', url, token, n: Math.floor(n / k) + (i < n % k ? 1 : 0) }, 180_000)))
    return answers.reduce((sum, a) => sum + (a.t === 'ok' ? (a.opened ?? 0) : 0), 0)
  }

  /** Starts a measuring window: what was emitted before now is not counted. */
  async reset(): Promise<void> {
    const since = wallMs()
    await Promise.all(this.procs.map((p) => p.ask({ t: 'reset', since })))
  }

  /** Every process's latencies since the last reset, merged; closes the streams. */
  async stats(): Promise<LatencyStats> {
    const answers = await Promise.all(this.procs.map((p) => p.ask({ t: 'collect' })))
    return latencyStats(
      answers.map((m) => {
        if (m.t !== 'stats') throw new Error(`clients: expected stats, got ${m.t}`)
        return m.hist
      }),
    )
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop()))
  }
}

/**
 * Emits `rate` events per second for `ms`, in ticks of {@link TICK_MS}, through
 * `send(n)`; catches up after a late tick rather than drifting. Returns the count.
 */
async function paced(rate: number, ms: number, send: (n: number) => Promise<void>): Promise<number> {
  const t0 = performance.now()
  let sent = 0
  for (let tick = 1; ; tick++) {
    const elapsed = performance.now() - t0
    if (elapsed >= ms) break
    const due = Math.floor((elapsed * rate) / 1000) - sent
    if (due > 0) {
      await send(due)
      sent += due
    }
    const wait = t0 + tick * TICK_MS - performance.now()
    if (wait > 0) await sleep(wait)
  }
  return sent
}

/**
 * Runs the SSE benchmark against the Redis at `redisUrl` (in a private namespace,
 * removed afterwards). Loopback only; stops by itself. Set `SSE_BENCH_CPU_PROF` to
 * a directory to get `--cpu-prof` profiles of the gateway and the clients processes
 * in its `gateway/` and `clients/` subdirectories.
 */
export async function benchSse(opts: SseBenchOptions): Promise<Record<string, number | string>> {
  const { quick, log } = opts
  // SSE_BENCH_CLIENTS=1000 runs only that phase and no status load (e.g. to profile it).
  const only = process.env.SSE_BENCH_CLIENTS?.split(',').map(Number).filter((n) => n > 0)
  const clientCounts = only?.length ? only : quick ? [20, 100] : [100, 1000]
  const rate = quick ? 200 : 1000
  const warmMs = quick ? 500 : 1000
  const measureMs = quick ? 1500 : 4000
  const namespace = `bsse${nanoid(6).replace(/[^A-Za-z0-9]/g, 'x')}:`
  const cfg = loadConfig({ redisUrl: opts.redisUrl, namespace, persistence: false })
  const keys = new Keys(namespace)
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: null })
  const ctx: ProtocolContext = { redis, keys, cfg }
  const client = new TroupeClient(redis, cfg)
  const out: Record<string, number | string> = { cores: cpus().length, load1Start: round(loadavg()[0] ?? 0) }
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const prof = process.env.SSE_BENCH_CPU_PROF
  const gateway = spawn(
    process.execPath,
    [...(prof ? ['--cpu-prof', '--cpu-prof-dir', join(prof, 'gateway')] : []), 'bin/troupe.mjs', 'gateway', '--port', String(port), '--host', '127.0.0.1'],
    {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: {
        ...process.env,
        REDIS_URL: opts.redisUrl,
        TROUPE_NAMESPACE: namespace,
        TROUPE_PERSISTENCE: 'off',
        TROUPE_LOG_LEVEL: 'warn',
        // The status load must measure the gateway, not the per-user limiter saying no.
        TROUPE_RATE_PER_SEC: '0',
        TROUPE_DAILY_STARTS: '0',
        // All the clients are one user: the per-user cap on open streams would refuse most.
        TROUPE_SSE_MAX_STREAMS_PER_USER: '100000',
      },
    },
  )
  const clients = new Clients(prof ? join(prof, 'clients') : undefined)
  try {
    // Up when an unauthenticated request gets its 401.
    const deadline = Date.now() + 60_000
    for (;;) {
      const ok = await fetch(`${base}/v1/me`).then((r) => r.status === 401, () => false)
      if (ok) break
      if (gateway.exitCode !== null || Date.now() > deadline) throw new Error('gateway did not start')
      await sleep(100)
    }
    const store = new AuthStore(redis, keys, gatewaySettings().auth)
    const { credential } = await store.issueCredential('bench', { rotate: true })
    const tokenRes = await fetch(`${base}/v1/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ credential }) })
    if (tokenRes.status !== 200) throw new Error(`token exchange failed: ${tokenRes.status}`)
    const token = ((await tokenRes.json()) as { access_token: string }).access_token

    // Baseline: the same pacing and batching, straight PUBLISH to a plain subscriber.
    const channel = `${namespace}raw`
    await clients.first.ask({ t: 'raw', redisUrl: opts.redisUrl, channel })
    let seq = 0
    const publish = async (n: number): Promise<void> => {
      const p = redis.pipeline()
      const sentAt = wallMs()
      for (let i = 0; i < n; i++) p.publish(channel, `{"sentAt":${sentAt},"seq":${seq++}}`)
      await p.exec()
    }
    await paced(rate, warmMs, publish)
    await clients.reset()
    const rawCpu0 = await cpuSnap(redis, gateway.pid, clients.pids)
    await paced(rate, measureMs, publish)
    const rawCpu1 = await cpuSnap(redis, gateway.pid, clients.pids)
    // The last tick's messages may still be on their way.
    await sleep(100)
    const raw = await clients.stats()
    out.rawP50Ms = round(raw.p50)
    out.rawP99Ms = round(raw.p99)
    log(`raw PUBLISH→subscriber at ${rate}/s: p50 ${out.rawP50Ms} ms, p99 ${out.rawP99Ms} ms (${raw.count} messages)`)
    log(`  ${cpuReport(rawCpu0, rawCpu1, 'raw', 0, {})}`)

    let statusWf = ''
    for (const n of clientCounts) {
      // The first action goes to an agent nobody hosts: the workflow stays running
      // and its stream holds only what this phase emits.
      const { workflowId: wf } = await client.startWorkflow({ agent: 'bench', type: 'stream', owner: 'bench', validate: false })
      statusWf = wf
      const opened = await clients.open(`${base}/v1/workflows/${wf}/events`, token, n)
      if (opened !== n) throw new Error(`opened ${opened} of ${n} streams`)
      const emit = async (k: number): Promise<void> => {
        const sentAt = wallMs()
        const events = Array.from({ length: k }, () => encodeEvent({ workflowId: wf, type: 'token', content: { sentAt, seq: seq++ } }))
        await emitEvents(ctx, wf, events, { agent: 'bench', value: '"streaming"' })
      }
      await paced(rate, warmMs, emit)
      await clients.reset()
      const cpu0 = await cpuSnap(redis, gateway.pid, clients.pids)
      const emitted = await paced(rate, measureMs, emit)
      const cpu1 = await cpuSnap(redis, gateway.pid, clients.pids)
      // Let the tail arrive before collecting.
      await sleep(Math.min(2000, 200 + n))
      const cpu2 = await cpuSnap(redis, gateway.pid, clients.pids)
      const s = await clients.stats()
      out[`sse${n}P50Ms`] = round(s.p50)
      out[`sse${n}P99Ms`] = round(s.p99)
      out[`sse${n}MaxMs`] = round(s.max)
      out[`sse${n}DeliveredPct`] = round((100 * s.count) / Math.max(1, emitted * n))
      log(`SSE ${n} clients at ${rate}/s: p50 ${out[`sse${n}P50Ms`]} ms, p99 ${out[`sse${n}P99Ms`]} ms, max ${out[`sse${n}MaxMs`]} ms, delivered ${out[`sse${n}DeliveredPct`]}%`)
      log(`  ${cpuReport(cpu0, cpu1, `sse${n}`, s.count, out, cpu2)}`)
    }

    const conns = quick ? 8 : 32
    if (!only?.length) {
      const r = await clients.first.ask({ t: 'rps', url: `${base}/v1/workflows/${statusWf}`, token, conns, durationMs: quick ? 1500 : 5000 })
      if (r.t !== 'rps') throw new Error(`clients: expected rps, got ${r.t}`)
      if (r.requests === 0) throw new Error(`status load: no successful request (${r.errors} errors)`)
      out.statusRps = Math.round(r.requests / r.seconds)
      out.statusErrors = r.errors
      log(`GET /v1/workflows/:id with ${conns} keep-alive connections: ${out.statusRps} requests/s (${r.errors} errors)`)
    }

    out.load1End = round(loadavg()[0] ?? 0)
    out.note =
      `${out.cores} cores shared by Redis, the gateway, ${CLIENT_PROCS} SSE client processes and the emitter: latencies include ` +
      `scheduling between them. Events emitted with emitEvents in ${TICK_MS} ms batches (as streamed tokens arrive), ` +
      `stamped at emit time; ${rate}/s for ${measureMs / 1000} s after ${warmMs / 1000} s warm-up, each phase on a fresh workflow. ` +
      `Every event counted and its latency taken when its bytes reach the client process (clients speak HTTP/1.1 over ` +
      `plain sockets, decode the chunked body and read only each event's sentAt, no full parse). ` +
      `CPU figures are % of one core per process during the window; "machine busy" is of all cores and includes other work. ` +
      `Raw baseline: pipelined PUBLISH at the same pace to one ioredis subscriber in a clients process. ` +
      `Status load: ${conns} keep-alive connections, rate limits off.`
    return out
  } finally {
    await clients.stop()
    await stopChild(gateway, 15_000)
    let cursor = '0'
    do {
      const [nextCursor, found] = await redis.scan(cursor, 'MATCH', `${namespace}*`, 'COUNT', 1000)
      cursor = nextCursor
      if (found.length) await redis.unlink(...found)
    } while (cursor !== '0')
    await client.close()
    redis.disconnect()
  }
}
