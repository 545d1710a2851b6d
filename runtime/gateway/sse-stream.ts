// One SSE client following one workflow: resumes exactly after the id it asks for
// (subscribe first and queue, replay with an exclusive XRANGE, then flush the queue
// without what the replay already sent), honours socket backpressure, and drops a
// client whose socket stays full too long or that falls too far behind (it resumes
// on reconnect with Last-Event-ID, for free).
//
// States, one line each:
//   replaying  reading the stream from Redis; live frames wait in the queue
//   live       frames are written as they arrive (queued while the socket is full)
//   closed     ended (final event sent, client left, dropped, or gateway stopping)
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { compareStreamIds, parseEntry } from '../events.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { TERMINAL_STATUSES, type WorkflowStatusValue } from '../types.ts'
import type { DropReason } from './metrics.ts'
import { batchOf, frameOf, type Batch, type FeedClient, type Frame } from './sse-hub.ts'
import type { SseSettings } from './settings.ts'

/** Lifecycle of a stream. */
export type SseState = 'replaying' | 'live' | 'closed'

/** What a stream needs around it. */
export interface SseStreamDeps {
  redis: RedisClient
  keys: Keys
  settings: SseSettings
  /** Builds the `reset` event's payload (the workflow's current status). */
  status(): Promise<unknown>
  /**
   * Whether the credential the stream was opened with is still good (not
   * expired, not revoked); asked at every heartbeat. False ends the stream.
   */
  authorized?(): Promise<boolean>
  onDrop(reason: DropReason): void
  onClose(): void
}

const REPLAY_PAGE = 200
/** How long a stopping gateway lets a stream's last bytes drain before it cuts the socket. */
const SHUTDOWN_GRACE_MS = 2000
const REPLAY_WRITE_BYTES = 64 * 1024

/** Fields of XINFO STREAM that tell whether entries after `after` were deleted. */
async function trimmedAfter(redis: RedisClient, key: string, after: string): Promise<boolean> {
  let info: unknown[]
  try {
    info = (await redis.xinfo('STREAM', key)) as unknown[]
  } catch {
    return false // no stream (yet): nothing was trimmed
  }
  const field = (name: string): unknown => info[info.indexOf(name) + 1]
  const length = Number(field('length'))
  const added = Number(field('entries-added'))
  const first = field('first-entry') as [string, string[]] | null
  const md = field('max-deleted-entry-id')
  const maxDeleted = typeof md === 'string' ? md : '0-0'
  // Trimming removes the oldest entries (7.0 does not record them in
  // max-deleted-entry-id): a client behind the first retained entry may have
  // missed some. XDEL of later entries is caught by max-deleted-entry-id.
  if (added > length && first && compareStreamIds(after, first[0]) < 0) return true
  return compareStreamIds(after, maxDeleted) < 0
}

/**
 * `compareStreamIds(a, b) > 0`, without splitting strings on the per-client hot
 * path: when both halves have the same number of digits (the usual case: ids of
 * one stream), Redis ids carry no leading zeros, so string order is numeric order.
 */
function newer(a: string, b: string): boolean {
  if (a.length === b.length && a.indexOf('-') === b.indexOf('-')) return a > b
  return compareStreamIds(a, b) > 0
}

/** Streams one workflow's events to one HTTP response. */
export class SseStream implements FeedClient {
  state: SseState = 'replaying'
  /** Id of the last event written (the client's Last-Event-ID). */
  last: string
  private queue: Batch[] = []
  private queuedBytes = 0
  private congested = false
  private slowTimer: NodeJS.Timeout | null = null
  private drainWaiters: (() => void)[] = []
  private replayAgain = false
  private released = false
  /** A credential check is in flight (see recheck). */
  private checking = false
  /**
   * The response's socket once its headers are out, when the body is sent
   * chunked: batches go to it as their shared, already framed chunk.
   */
  private direct: Socket | null = null
  private readonly drained = (): void => this.onDrain()

  constructor(
    readonly wf: string,
    private readonly res: ServerResponse,
    after: string,
    private readonly deps: SseStreamDeps,
  ) {
    this.last = after
    res.on('close', () => this.close(false))
    res.on('drain', this.drained)
  }

  /** Sends `retry:`, a reset if needed, the replay, then goes live. Call after the hub attached it. */
  async start(): Promise<void> {
    // Closed before it began (the client left, or the hub was stopping): the
    // replay would set the state back to replaying.
    if (this.isClosed()) return
    this.write(`retry: ${this.deps.settings.retryMs}\n\n`)
    // Written through the response, `retry:` took the headers out: from here on
    // the socket carries only body chunks. A response writes straight to its
    // socket once the headers are out, so the two paths stay in order, and a
    // direct write's `false` is the response's backpressure signal too (but
    // only the socket then says when it drained).
    const socket = this.res.socket
    if (this.res.chunkedEncoding && socket && !this.isClosed()) {
      this.direct = socket
      // The response's own 'drain' comes from the same socket event: one listener.
      this.res.off('drain', this.drained)
      socket.on('drain', this.drained)
    }
    if (await trimmedAfter(this.deps.redis, this.deps.keys.events(this.wf), this.last)) {
      const status = await this.deps.status()
      this.write(`event: reset\ndata: ${JSON.stringify({ reason: 'trimmed', after: this.last, status })}\n\n`)
    }
    await this.replay()
  }

  /** Replays from `last`, then flushes queued live frames and goes live. */
  private async replay(): Promise<void> {
    do {
      this.replayAgain = false
      this.state = 'replaying'
      for (;;) {
        const start = this.last === '0' || this.last === '0-0' ? '-' : `(${this.last}`
        const page = (await this.deps.redis.xrange(this.deps.keys.events(this.wf), start, '+', 'COUNT', REPLAY_PAGE)) as [string, string[]][]
        if (!(await this.writePage(page))) return
        if (page.length < REPLAY_PAGE) break
      }
      if (this.isClosed()) return
      this.state = 'live'
      this.flush()
    } while (this.replayAgain && !this.isClosed())
    if (!this.isClosed()) await this.endIfTerminal()
  }

  /**
   * Writes stored entries in writes of about REPLAY_WRITE_BYTES (many small
   * events per write), with backpressure honoured between writes as it was
   * between events: a page of big events must not land in the socket buffer
   * whole. False once the stream is closed.
   */
  private async writePage(page: readonly [string, string[]][]): Promise<boolean> {
    let frames: Frame[] = []
    let bytes = 0
    for (let i = 0; i < page.length; i++) {
      const f = this.entryFrame(page[i] as [string, string[]])
      frames.push(f)
      bytes += f.bytes.length
      if (bytes < REPLAY_WRITE_BYTES && i < page.length - 1) continue
      if (this.isClosed()) return false
      this.writeBatch(batchOf(frames))
      frames = []
      bytes = 0
      if (this.congested && !(await this.waitDrain())) return false
    }
    return !this.isClosed()
  }

  // Stored entries are sent as stored; one that is not an event (written by
  // hand, truncated) becomes the same `troupe.malformed` event readers get.
  private entryFrame(entry: [string, string[]]): Frame {
    const [id, fields] = entry
    const i = fields.indexOf('e')
    const raw = i >= 0 ? fields[i + 1] : undefined
    let type: unknown
    try {
      type = (JSON.parse(raw ?? '') as { type?: unknown } | null)?.type
    } catch {
      type = undefined
    }
    if (raw !== undefined && typeof type === 'string') return frameOf(id, raw, type)
    const ev = parseEntry(this.wf, entry).event
    return frameOf(id, JSON.stringify(ev), ev.type)
  }

  // A workflow that ended with its final event trimmed (or racing our replay)
  // still ends the stream, with the status as the end event's payload.
  private async endIfTerminal(): Promise<void> {
    const st = (await this.deps.redis.hget(this.deps.keys.status(this.wf), 'status')) as WorkflowStatusValue | null
    if (this.isClosed() || st === null || !TERMINAL_STATUSES.has(st)) return
    // Everything up to the end, page by page: one commit can append more than a
    // page (its final event last) before its live copies reach us.
    for (;;) {
      const rest = (await this.deps.redis.xrange(this.deps.keys.events(this.wf), `(${this.last}`, '+', 'COUNT', REPLAY_PAGE)) as [string, string[]][]
      if (!(await this.writePage(rest))) return
      if (rest.length < REPLAY_PAGE) break
    }
    this.end(st)
  }

  private isClosed(): boolean {
    return this.state === 'closed'
  }

  /** Live frames from the hub. */
  push(batch: Batch): void {
    if (this.state === 'closed') return
    if (this.state === 'live' && !this.congested && this.queue.length === 0) {
      this.writeBatch(batch)
      return
    }
    this.queue.push(batch)
    this.queuedBytes += batch.bytes.length
    if (this.queuedBytes > this.deps.settings.maxQueueBytes) this.drop('overflow')
  }

  /** Replays what pub/sub may have lost while Redis was away. */
  resync(): void {
    if (this.state === 'replaying') {
      this.replayAgain = true
      return
    }
    if (this.state === 'live') void this.replay().catch(() => this.close(true))
  }

  heartbeat(): void {
    if (this.state === 'closed') return
    this.recheck()
    if (!this.congested) this.write(': keep-alive\n\n')
  }

  /**
   * Ends the stream once its credential is gone. The client reconnects after
   * `retry:` with Last-Event-ID, as after any end: a refreshed cookie or token
   * resumes exactly where it was, a revoked one gets 401 (EventSource stops).
   * A failed check (Redis away) keeps the stream: only a clear no ends it.
   */
  private recheck(): void {
    if (!this.deps.authorized || this.checking) return
    this.checking = true
    this.deps.authorized().then(
      (ok) => {
        this.checking = false
        if (ok || this.state === 'closed') return
        this.deps.onDrop('unauthorized')
        // A clean end, not a cut, so what was written reaches the client first;
        // cut when its socket is full (a client that stopped reading would hold it).
        this.close(this.congested)
      },
      () => {
        this.checking = false
      },
    )
  }

  /**
   * Ends the stream because the gateway is stopping. What was written may still
   * reach a reading client, for a little while; a client that stopped reading
   * would hold the socket, and with it the gateway's stop, for good.
   */
  shutdown(): void {
    if (this.state === 'closed') return
    const stuck = this.congested
    this.state = 'closed'
    if (stuck) this.res.destroy()
    else this.res.end()
    this.release()
    if (!stuck && !this.res.destroyed) {
      const cut = setTimeout(() => this.res.destroy(), Math.min(this.deps.settings.slowClientMs, SHUTDOWN_GRACE_MS))
      cut.unref()
      this.res.once('close', () => clearTimeout(cut))
    }
  }

  private flush(): void {
    while (this.state === 'live' && !this.congested && this.queue.length > 0) {
      const b = this.queue.shift() as Batch
      this.queuedBytes -= b.bytes.length
      this.writeBatch(b)
    }
  }

  /**
   * Writes what the client has not seen yet: the shared bytes in one write when
   * the whole batch is new (the live case), else frame by frame from the first
   * new one (a batch overlapping what the replay already sent).
   */
  private writeBatch(b: Batch): void {
    if (!newer(b.last, this.last)) return
    if (b.whole && newer(b.first, this.last)) {
      this.last = b.last
      this.writeBatchBytes(b)
      const f = b.frames[b.frames.length - 1] as Frame
      if (f.final) this.end(f.type.slice('workflow.'.length))
      return
    }
    for (const f of b.frames) {
      if (this.isClosed()) return
      if (newer(f.id, this.last)) this.writeFrame(f)
    }
  }

  private writeFrame(f: Frame): void {
    this.last = f.id
    this.write(f.bytes)
    if (f.final) this.end(f.type.slice('workflow.'.length))
  }

  private end(status: string): void {
    this.write(`event: end\ndata: ${JSON.stringify({ status })}\n\n`)
    const stuck = this.congested
    this.state = 'closed'
    this.res.end()
    this.release()
    // A client that stopped reading would otherwise hold the ended socket open.
    if (stuck) setTimeout(() => this.res.destroy(), this.deps.settings.slowClientMs).unref()
  }

  /**
   * One write per client per batch. Through the response, Node would frame the
   * bytes anew for every client (four buffered socket writes and a writev); the
   * batch's chunk is framed once for all of them.
   */
  private writeBatchBytes(b: Batch): void {
    const socket = this.direct
    if (!socket) return this.write(b.bytes)
    if (this.state === 'closed' || this.res.destroyed || this.res.writableEnded || socket.destroyed) return
    if (!socket.write(b.chunk)) this.full()
  }

  private write(text: string | Buffer): void {
    if (this.state === 'closed' || this.res.destroyed || this.res.writableEnded) return
    // No cork of our own: live frames of one tick already come as one batch, and
    // Node corks the socket until the end of the tick on a response's first write.
    if (!this.res.write(text)) this.full()
  }

  private full(): void {
    if (this.congested) return
    this.congested = true
    this.slowTimer = setTimeout(() => this.drop('slow'), this.deps.settings.slowClientMs)
    this.slowTimer.unref()
  }

  private onDrain(): void {
    if (!this.congested) return
    this.congested = false
    if (this.slowTimer) clearTimeout(this.slowTimer)
    this.slowTimer = null
    for (const w of this.drainWaiters.splice(0)) w()
    this.flush()
  }

  /** Resolves true once the socket drained, false if the stream closed first. */
  private waitDrain(): Promise<boolean> {
    if (!this.congested) return Promise.resolve(true)
    return new Promise((resolve) => this.drainWaiters.push(() => resolve(!this.isClosed())))
  }

  private drop(reason: DropReason): void {
    if (this.state === 'closed') return
    this.deps.onDrop(reason)
    this.close(true)
  }

  private release(): void {
    // A kept-alive socket outlives this response.
    this.direct?.off('drain', this.drained)
    this.direct = null
    if (this.slowTimer) clearTimeout(this.slowTimer)
    this.slowTimer = null
    this.queue = []
    this.queuedBytes = 0
    for (const w of this.drainWaiters.splice(0)) w()
    if (this.released) return
    this.released = true
    this.deps.onClose()
  }

  /** Closes the stream; `destroy` cuts the socket (a dropped client gets no more bytes). */
  close(destroy: boolean): void {
    if (this.state !== 'closed') {
      this.state = 'closed'
      if (destroy) this.res.destroy()
      else if (!this.res.writableEnded) this.res.end()
    }
    this.release()
  }
}
