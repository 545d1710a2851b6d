// Child process of bench/sse.ts: the receiving side. It holds the SSE clients, the
// raw Redis subscriber of the baseline and the status-request load generator, so
// the gateway (another child) and the emitter (the parent) never share an event
// loop with what measures them. Driven over IPC; exits when the parent goes away.
import { Agent, request as httpRequest, type ClientRequest } from 'node:http'
import { Redis } from 'ioredis'

/** Commands from the parent. */
export type ToClients =
  | { t: 'raw'; id: number; redisUrl: string; channel: string }
  | { t: 'sse'; id: number; url: string; token: string; n: number }
  | { t: 'reset'; id: number }
  | { t: 'collect'; id: number }
  | { t: 'rps'; id: number; url: string; token: string; conns: number; durationMs: number }

/** Latency summary of one phase, in milliseconds. */
export interface LatencyStats {
  count: number
  p50: number
  p99: number
  max: number
}

/** Answers to the parent (same `id` as the command). */
export type FromClients =
  | { t: 'ok'; id: number; opened?: number }
  | { t: 'stats'; id: number; stats: LatencyStats }
  | { t: 'rps'; id: number; requests: number; errors: number; seconds: number }
  | { t: 'error'; id: number; message: string }

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one machine. */
export const wallMs = (): number => performance.timeOrigin + performance.now()

// Fixed 10 µs buckets up to 10 s: constant memory however many samples arrive.
const BUCKET_MS = 0.01
const BUCKETS = 1_000_000
const hist = new Uint32Array(BUCKETS + 1)
let samples = 0
let maxMs = 0

function record(ms: number): void {
  const b = Math.min(BUCKETS, Math.max(0, Math.floor(ms / BUCKET_MS)))
  hist[b] = (hist[b] ?? 0) + 1
  samples++
  if (ms > maxMs) maxMs = ms
}

function stats(): LatencyStats {
  const at = (q: number): number => {
    const want = Math.ceil(q * samples)
    let seen = 0
    for (let b = 0; b <= BUCKETS; b++) {
      seen += hist[b] ?? 0
      if (seen >= want) return (b + 1) * BUCKET_MS
    }
    return maxMs
  }
  return { count: samples, p50: samples ? at(0.5) : 0, p99: samples ? at(0.99) : 0, max: maxMs }
}

function reset(): void {
  hist.fill(0)
  samples = 0
  maxMs = 0
}

const MARK = '"sentAt":'

/** Records one latency per `"sentAt":<ms>` in `text`, all received at `at`. */
function scan(text: string, at: number): void {
  let i = text.indexOf(MARK)
  while (i >= 0) {
    const sent = Number.parseFloat(text.slice(i + MARK.length, i + MARK.length + 24))
    if (Number.isFinite(sent)) record(at - sent)
    i = text.indexOf(MARK, i + MARK.length)
  }
}

let sub: Redis | null = null
const streams: ClientRequest[] = []
const agent = new Agent({ keepAlive: false, maxSockets: Infinity })

function openOne(url: string, token: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent, headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` } })
    streams.push(req)
    const timer = setTimeout(() => reject(new Error('SSE client: no retry line within 30 s')), 30_000)
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        clearTimeout(timer)
        reject(new Error(`SSE client: status ${res.statusCode ?? '?'}`))
        res.resume()
        return
      }
      res.setEncoding('utf8')
      // Only the tail after the last complete frame is kept between chunks.
      let carry = ''
      let opened = false
      res.on('data', (chunk: string) => {
        const at = wallMs()
        const text = carry + chunk
        const cut = text.lastIndexOf('\n\n')
        if (cut < 0) {
          carry = text
          return
        }
        carry = text.slice(cut + 2)
        if (!opened) {
          opened = true
          clearTimeout(timer)
          resolve()
        }
        scan(text.slice(0, cut), at)
      })
    })
    req.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    req.end()
  })
}

/** Keep-alive GET loop: `conns` requests in flight until `durationMs` passes. */
async function rps(url: string, token: string, conns: number, durationMs: number): Promise<{ requests: number; errors: number; seconds: number }> {
  const ka = new Agent({ keepAlive: true, maxSockets: conns })
  const t0 = performance.now()
  const deadline = t0 + durationMs
  let requests = 0
  let errors = 0
  const one = (): Promise<boolean> =>
    new Promise((resolve) => {
      const req = httpRequest(url, { agent: ka, headers: { authorization: `Bearer ${token}` } }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode === 200))
      })
      req.on('error', () => resolve(false))
      req.end()
    })
  await Promise.all(
    Array.from({ length: conns }, async () => {
      while (performance.now() < deadline) {
        if (await one()) requests++
        else errors++
      }
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  ka.destroy()
  return { requests, errors, seconds }
}

async function handle(m: ToClients): Promise<FromClients> {
  switch (m.t) {
    case 'raw': {
      sub = new Redis(m.redisUrl, { maxRetriesPerRequest: null })
      sub.on('message', (_ch: string, msg: string) => scan(msg, wallMs()))
      await sub.subscribe(m.channel)
      return { t: 'ok', id: m.id }
    }
    case 'sse': {
      // Batches keep the gateway's accept backlog from overflowing.
      for (let i = 0; i < m.n; i += 50) {
        await Promise.all(Array.from({ length: Math.min(50, m.n - i) }, () => openOne(m.url, m.token)))
      }
      return { t: 'ok', id: m.id, opened: m.n }
    }
    case 'reset':
      reset()
      return { t: 'ok', id: m.id }
    case 'collect': {
      const s = stats()
      for (const r of streams.splice(0)) r.destroy()
      if (sub) {
        sub.disconnect()
        sub = null
      }
      reset()
      return { t: 'stats', id: m.id, stats: s }
    }
    case 'rps':
      return { t: 'rps', id: m.id, ...(await rps(m.url, m.token, m.conns, m.durationMs)) }
  }
}

process.on('message', (m: ToClients) => {
  handle(m).then(
    // Some messages (unknown kinds) have no reply; sending undefined would throw.
    (reply) => {
      if (reply !== undefined && process.connected) process.send?.(reply)
    },
    (err: unknown) => process.send?.({ t: 'error', id: m.id, message: err instanceof Error ? err.message : String(err) } satisfies FromClients),
  )
})
process.on('disconnect', () => process.exit(0))
process.send?.({ t: 'ok', id: 0 } satisfies FromClients)
