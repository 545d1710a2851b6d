// Fan-out of live workflow events to SSE clients over the gateway's ONE shared
// Subscriber: one channel subscription per followed workflow (not per client),
// each message parsed once and turned into one SSE frame. The frames of one
// workflow that arrive in the same tick (a batch of tokens comes in one Redis
// read) are joined into one Batch whose bytes every client gets in ONE write:
// with a thousand clients the per-write cost, not the per-byte cost, is what
// limits the gateway. One heartbeat timer serves all streams.
import { FINAL_EVENT_TYPES, compareStreamIds, parseLive } from '../events.ts'
import type { Keys } from '../redis/keys.ts'
import type { Subscriber } from '../subscriber.ts'

/** One SSE message, encoded once. */
export interface Frame {
  /** Stream id (the SSE `id:`). */
  id: string
  /** The encoded `id:` + `data:` lines, blank-line terminated, as UTF-8. */
  bytes: Buffer
  /** Event type, e.g. `token` or `workflow.completed`. */
  type: string
  /** True for the workflow's last event. */
  final: boolean
}

/** Consecutive frames of one workflow, written to many clients as one buffer. */
export interface Batch {
  /** In stream order; never empty. */
  readonly frames: readonly Frame[]
  /** Every frame's bytes, concatenated once for all clients. */
  readonly bytes: Buffer
  /** `bytes` as one HTTP/1.1 chunk (size line, bytes, CRLF), for responses sent chunked. */
  readonly chunk: Buffer
  /** Id of the first frame. */
  readonly first: string
  /** Id of the last frame. */
  readonly last: string
  /**
   * True when the whole batch may go out as `bytes`: ids strictly increase and
   * no final event is followed by more frames. Otherwise a client takes it frame
   * by frame (the frames of a well-behaved workflow always qualify).
   */
  readonly whole: boolean
}

const CRLF = Buffer.from('\r\n', 'latin1')

/** Joins `frames` (non-empty) into one batch. */
export function batchOf(frames: readonly Frame[]): Batch {
  let whole = true
  for (let i = 1; i < frames.length && whole; i++) {
    const prev = frames[i - 1] as Frame
    if (prev.final || compareStreamIds(prev.id, (frames[i] as Frame).id) >= 0) whole = false
  }
  const first = frames[0] as Frame
  const last = frames[frames.length - 1] as Frame
  const bytes = frames.length === 1 ? first.bytes : Buffer.concat(frames.map((f) => f.bytes))
  const chunk = Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`, 'latin1'), bytes, CRLF])
  return { frames, bytes, chunk, first: first.id, last: last.id, whole }
}

/** What the hub needs from a client stream. */
export interface FeedClient {
  /** Live frames for this client's workflow (possibly some it has already seen). */
  push(batch: Batch): void
  /** Redis reconnected: pub/sub may have lost messages, replay from the last id. */
  resync(): void
  /** Writes a heartbeat comment if the socket has room. */
  heartbeat(): void
  /** Ends the stream (the gateway is stopping). */
  shutdown(): void
}

/** Builds the frame for a stream entry; `json` is the stored WorkflowEvent JSON. */
export function frameOf(id: string, json: string, type: string): Frame {
  let data = `{"streamId":"${id}","event":${json}}`
  // A line break would split the SSE data field; only hand-written entries can have one.
  if (/[\r\n]/.test(data)) data = JSON.stringify({ streamId: id, event: JSON.parse(json) as unknown })
  return { id, bytes: Buffer.from(`id: ${id}\ndata: ${data}\n\n`), type, final: FINAL_EVENT_TYPES.has(type) }
}

interface Feed {
  readonly clients: Set<FeedClient>
  /** Frames received in the current tick, not yet handed to the clients. */
  pending: Frame[]
  readonly ready: Promise<void>
  unsubscribe: (() => Promise<void>) | null
}

/** Routes each workflow channel's messages to the clients following it. */
export class SseHub {
  private readonly feeds = new Map<string, Feed>()
  private closed = false
  private readonly timer: NodeJS.Timeout
  private readonly stopResync: () => void

  constructor(
    private readonly sub: Subscriber,
    private readonly keys: Keys,
    heartbeatMs: number,
  ) {
    this.timer = setInterval(() => this.each((c) => c.heartbeat()), heartbeatMs)
    this.timer.unref()
    this.stopResync = sub.onResync(() => this.each((c) => c.resync()))
  }

  private each(fn: (c: FeedClient) => void): void {
    for (const f of this.feeds.values()) for (const c of [...f.clients]) fn(c)
  }

  /** Number of workflows followed right now. */
  get workflows(): number {
    return this.feeds.size
  }

  /**
   * Adds `client` to `wf`'s feed and resolves once the channel is subscribed:
   * from then on no published event can be missed (subscribe before replay).
   */
  async attach(wf: string, client: FeedClient): Promise<void> {
    // A request that was opening its stream when close() ran: nobody would shut
    // this one down, and the gateway's stop would wait on it.
    if (this.closed) {
      client.shutdown()
      return
    }
    let feed = this.feeds.get(wf)
    if (!feed) {
      const created: Feed = {
        clients: new Set<FeedClient>(),
        pending: [],
        unsubscribe: null,
        ready: this.sub
          .subscribe(this.keys.channel(wf), (msg) => this.receive(created, msg))
          .then(
            (unsub) => {
              created.unsubscribe = unsub
              // Everyone left while we were subscribing.
              if (created.clients.size === 0 && this.feeds.get(wf) !== created) void unsub()
            },
            (err: unknown) => {
              // A failed subscription must not poison the next client's attempt.
              if (this.feeds.get(wf) === created) this.feeds.delete(wf)
              throw err
            },
          ),
      }
      feed = created
      this.feeds.set(wf, feed)
    }
    feed.clients.add(client)
    try {
      await feed.ready
    } catch (err) {
      this.detach(wf, client)
      throw err
    }
  }

  /** Removes `client`; the channel is unsubscribed when its last client leaves. */
  detach(wf: string, client: FeedClient): void {
    const feed = this.feeds.get(wf)
    if (!feed || !feed.clients.delete(client) || feed.clients.size > 0) return
    this.feeds.delete(wf)
    if (feed.unsubscribe) void feed.unsubscribe()
  }

  private receive(feed: Feed, msg: string): void {
    if (feed.clients.size === 0) return
    const live = parseLive(msg)
    if (!live) return
    let frame: Frame
    if (/[\r\n]/.test(msg)) frame = frameOf(live.streamId, JSON.stringify(live.event), live.event.type)
    else frame = { id: live.streamId, bytes: Buffer.from(`id: ${live.streamId}\ndata: ${msg}\n\n`), type: live.event.type, final: FINAL_EVENT_TYPES.has(live.event.type) }
    // The subscriber hands over every message of one Redis read synchronously:
    // deliver them together once that read is done, in the same turn of the loop.
    if (feed.pending.push(frame) === 1) process.nextTick(() => this.deliver(feed))
  }

  private deliver(feed: Feed): void {
    const frames = feed.pending
    feed.pending = []
    if (frames.length === 0 || feed.clients.size === 0) return
    const batch = batchOf(frames)
    for (const c of [...feed.clients]) c.push(batch)
  }

  /** Ends every stream and stops the heartbeat (gateway shutdown). */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    this.stopResync()
    this.each((c) => c.shutdown())
  }
}
