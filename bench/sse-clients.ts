// Child process of bench/sse.ts: the receiving side (the parent starts two and
// splits the SSE clients between them). It holds SSE clients, and in the first
// one the raw Redis subscriber of the baseline and the status-request load
// generator, so the gateway (another child) and the emitter (the parent) never
// share an event loop with what measures them. Driven over IPC; exits when the
// parent goes away.
import { Agent, request as httpRequest } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'

/** Commands from the parent. */
export type ToClients =
  | { t: 'raw'; id: number; redisUrl: string; channel: string }
  | { t: 'sse'; id: number; url: string; token: string; n: number }
  /** Forget what was recorded; from now on count only events stamped at or after `since` (wall ms). */
  | { t: 'reset'; id: number; since: number }
  | { t: 'collect'; id: number }
  | { t: 'rps'; id: number; url: string; token: string; conns: number; durationMs: number }

/** Latency summary of one phase, in milliseconds. */
export interface LatencyStats {
  count: number
  p50: number
  p99: number
  max: number
}

/** One process's latencies of a phase: its non-empty histogram buckets as [bucket, count] pairs, flattened. */
export interface Histogram {
  buckets: number[]
  count: number
  max: number
}

/** Answers to the parent (same `id` as the command). */
export type FromClients =
  | { t: 'ok'; id: number; opened?: number }
  | { t: 'stats'; id: number; hist: Histogram }
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
// Events of the warm-up still in flight at the reset are not the window's.
let since = Number.NEGATIVE_INFINITY

function record(ms: number): void {
  const b = Math.min(BUCKETS, Math.max(0, Math.floor(ms / BUCKET_MS)))
  hist[b] = (hist[b] ?? 0) + 1
  samples++
  if (ms > maxMs) maxMs = ms
}

function histogram(): Histogram {
  const buckets: number[] = []
  for (let b = 0; b <= BUCKETS; b++) if (hist[b]) buckets.push(b, hist[b] as number)
  return { buckets, count: samples, max: maxMs }
}

/** Percentiles over the histograms of every receiving process. */
export function latencyStats(parts: readonly Histogram[]): LatencyStats {
  const merged = new Map<number, number>()
  let count = 0
  let max = 0
  for (const p of parts) {
    for (let i = 0; i < p.buckets.length; i += 2) merged.set(p.buckets[i] as number, (merged.get(p.buckets[i] as number) ?? 0) + (p.buckets[i + 1] as number))
    count += p.count
    max = Math.max(max, p.max)
  }
  const sorted = [...merged].sort((a, b) => a[0] - b[0])
  const at = (q: number): number => {
    const want = Math.ceil(q * count)
    let seen = 0
    for (const [b, n] of sorted) {
      seen += n
      if (seen >= want) return (b + 1) * BUCKET_MS
    }
    return max
  }
  return { count, p50: count ? at(0.5) : 0, p99: count ? at(0.99) : 0, max }
}

function reset(from = Number.NEGATIVE_INFINITY): void {
  hist.fill(0)
  samples = 0
  maxMs = 0
  since = from
}

// Searched by its rare tail: a pattern starting with a quote is slow to find in
// JSON (quotes are everywhere).
const TAIL = Buffer.from('At":', 'latin1')
const HEAD = Buffer.from('"sent', 'latin1')
const ZERO = 48
const DOT = 46

/**
 * The JSON number at `i` of `b` (plain decimal notation, as JavaScript writes
 * wall-clock milliseconds), read from the bytes: the receivers handle a million
 * frames a second, so they parse only the one field they measure, and never
 * turn bytes into strings (which cost more than the rest of the receiver).
 */
function numberAt(b: Buffer, i: number): number {
  let v = 0
  let digits = 0
  for (; ; i++, digits++) {
    const d = (b[i] ?? 0) - ZERO
    if (!(d >= 0 && d <= 9)) break
    v = v * 10 + d
  }
  if (digits === 0) return Number.NaN
  if (b[i] !== DOT) return v
  let scale = 1
  let frac = 0
  for (i++; ; i++) {
    const d = (b[i] ?? 0) - ZERO
    if (!(d >= 0 && d <= 9)) break
    frac = frac * 10 + d
    scale *= 10
  }
  return v + frac / scale
}

function headBefore(b: Buffer, i: number): boolean {
  if (i < HEAD.length) return false
  for (let k = 0; k < HEAD.length; k++) if (b[i - HEAD.length + k] !== HEAD[k]) return false
  return true
}

/**
 * Records one latency per `"sentAt":<ms>` in `b` (whole frames only), all
 * received at `at`. The marker and the digits are ASCII, and no byte of a
 * multi-byte UTF-8 character can look like them.
 */
function scan(b: Buffer, at: number): void {
  let i = b.indexOf(TAIL)
  while (i >= 0) {
    if (headBefore(b, i)) {
      const sent = numberAt(b, i + TAIL.length)
      if (sent >= since) record(at - sent)
    }
    i = b.indexOf(TAIL, i + TAIL.length)
  }
}

const HEX: Record<number, number> = {}
for (let i = 0; i < 16; i++) HEX[i.toString(16).charCodeAt(0)] = i
for (let i = 10; i < 16; i++) HEX[i.toString(16).toUpperCase().charCodeAt(0)] = i
const CR = 13
const LF = 10
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024)
const FRAME_END = Buffer.from('\n\n', 'latin1')

/**
 * One SSE stream over a plain TCP socket: the request written by hand, the
 * response head checked (200, chunked), the chunked body decoded here, frames
 * found by their blank line. The receivers read a million frames a second on a
 * machine they share with the gateway; `http.request` would spend most of that
 * in its parser and stream plumbing, which measures the receiver, not the gateway. Every frame is still
 * counted, and its latency taken when its bytes reach this process.
 */
class RawSse {
  private head = ''
  private inBody = false
  /** -1: reading a chunk-size line; >0: data bytes left in the chunk; 0: its CRLF. */
  private left = -1
  private size = 0
  private crlf = 0
  private ended = false
  /** Body bytes after the last complete SSE frame (a copy: the read buffer is shared). */
  private carry: Buffer | null = null
  private readonly socket: Socket
  readonly opened: Promise<void>

  constructor(url: string, token: string) {
    const u = new URL(url)
    let onData: (n: number) => void = () => undefined
    // Reads land in one buffer shared by all streams and are consumed at once:
    // no allocation and no stream machinery per read.
    this.socket = netConnect({ port: Number(u.port), host: u.hostname, onread: { buffer: READ_BUFFER, callback: (n) => (onData(n), true) } })
    this.socket.setNoDelay(true)
    this.socket.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    )
    this.opened = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('SSE client: no retry line within 30 s')), 30_000)
      const fail = (err: Error): void => {
        clearTimeout(timer)
        reject(err)
        this.socket.destroy()
      }
      this.socket.on('error', fail)
      onData = (n) => {
        const at = wallMs()
        try {
          if (this.read(READ_BUFFER, n, at)) {
            clearTimeout(timer)
            resolve()
          }
        } catch (err) {
          fail(err as Error)
        }
      }
    })
  }

  /** Consumes the `n` bytes of one read; true once the first complete frame (`retry:`) arrived. */
  private read(chunk: Buffer, n: number, at: number): boolean {
    let pos = 0
    if (!this.inBody) {
      this.head += chunk.toString('latin1', 0, n)
      const end = this.head.indexOf('\r\n\r\n')
      if (end < 0) return false
      const status = /^HTTP\/1\.1 (\d{3})/.exec(this.head)?.[1]
      if (status !== '200') throw new Error(`SSE client: status ${status ?? '?'}`)
      if (!/\r\ntransfer-encoding: *chunked\r\n/i.test(this.head.slice(0, end + 2))) throw new Error('SSE client: body not chunked')
      pos = n - (this.head.length - (end + 4))
      this.head = ''
      this.inBody = true
    }
    let framed = false
    while (pos < n && !this.ended) {
      if (this.left > 0) {
        const take = Math.min(this.left, n - pos)
        if (this.data(chunk.subarray(pos, pos + take), at)) framed = true
        pos += take
        this.left -= take
        if (this.left === 0) this.crlf = 2
      } else if (this.left === 0) {
        // The CRLF after a chunk's data.
        const c = chunk[pos++]
        if (c !== (this.crlf === 2 ? CR : LF)) throw new Error('SSE client: bad chunk end')
        if (--this.crlf === 0) this.left = -1
      } else {
        const c = chunk[pos++] as number
        const v = HEX[c]
        if (v !== undefined) this.size = this.size * 16 + v
        else if (c === LF) {
          if (this.size === 0) this.ended = true
          else this.left = this.size
          this.size = 0
        } else if (c !== CR) throw new Error('SSE client: bad chunk size')
      }
    }
    return framed
  }

  /**
   * Scans the complete frames of one piece of chunk data (with what an earlier
   * read left of a frame in front); true if it completed any. The usual read is
   * one whole chunk of whole frames, scanned where it lies.
   */
  private data(piece: Buffer, at: number): boolean {
    const body = this.carry ? Buffer.concat([this.carry, piece]) : piece
    this.carry = null
    const cut = body.lastIndexOf(FRAME_END)
    if (cut + FRAME_END.length < body.length) this.carry = Buffer.from(body.subarray(cut < 0 ? 0 : cut + FRAME_END.length))
    if (cut < 0) return false
    scan(body.subarray(0, cut), at)
    return true
  }

  close(): void {
    this.socket.destroy()
  }
}

let sub: Redis | null = null
const streams: RawSse[] = []

function openOne(url: string, token: string): Promise<void> {
  const s = new RawSse(url, token)
  streams.push(s)
  return s.opened
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
      sub.on('messageBuffer', (_ch: Buffer, msg: Buffer) => scan(msg, wallMs()))
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
      reset(m.since)
      return { t: 'ok', id: m.id }
    case 'collect': {
      const h = histogram()
      for (const r of streams.splice(0)) r.close()
      if (sub) {
        sub.disconnect()
        sub = null
      }
      reset()
      return { t: 'stats', id: m.id, hist: h }
    }
    case 'rps':
      return { t: 'rps', id: m.id, ...(await rps(m.url, m.token, m.conns, m.durationMs)) }
  }
}

// Only as the child: bench/sse.ts imports this module for its types and helpers.
if (process.argv[1] && resolvePath(process.argv[1]) === fileURLToPath(import.meta.url)) {
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
  // An orderly exit on the parent's SIGTERM, so `--cpu-prof` gets to write its profile.
  process.on('SIGTERM', () => process.exit(0))
  process.send?.({ t: 'ok', id: 0 } satisfies FromClients)
}
