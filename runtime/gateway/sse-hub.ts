// Fan-out of live workflow events to SSE clients over the gateway's ONE shared
// Subscriber: one channel subscription per followed workflow (not per client),
// each message parsed once and turned into one SSE frame shared by every client
// of that workflow. One heartbeat timer serves all streams.
import { FINAL_EVENT_TYPES, parseLive } from '../events.ts'
import type { Keys } from '../redis/keys.ts'
import type { Subscriber } from '../subscriber.ts'

/** One SSE message, encoded once and written to many clients. */
export interface Frame {
  /** Stream id (the SSE `id:`). */
  id: string
  /** The encoded `id:` + `data:` lines, blank-line terminated, as UTF-8 once for every client. */
  bytes: Buffer
  /** Event type, e.g. `token` or `workflow.completed`. */
  type: string
  /** True for the workflow's last event. */
  final: boolean
}

/** What the hub needs from a client stream. */
export interface FeedClient {
  /** A live frame for this client's workflow (possibly one it has already seen). */
  push(frame: Frame): void
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
  readonly ready: Promise<void>
  unsubscribe: (() => Promise<void>) | null
}

/** Routes each workflow channel's messages to the clients following it. */
export class SseHub {
  private readonly feeds = new Map<string, Feed>()
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
    let feed = this.feeds.get(wf)
    if (!feed) {
      const clients = new Set<FeedClient>()
      const created: Feed = {
        clients,
        unsubscribe: null,
        ready: this.sub
          .subscribe(this.keys.channel(wf), (msg) => this.deliver(clients, msg))
          .then(
            (unsub) => {
              created.unsubscribe = unsub
              // Everyone left while we were subscribing.
              if (clients.size === 0 && this.feeds.get(wf) !== created) void unsub()
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

  private deliver(clients: Set<FeedClient>, msg: string): void {
    if (clients.size === 0) return
    const live = parseLive(msg)
    if (!live) return
    let frame: Frame
    if (/[\r\n]/.test(msg)) frame = frameOf(live.streamId, JSON.stringify(live.event), live.event.type)
    else frame = { id: live.streamId, bytes: Buffer.from(`id: ${live.streamId}\ndata: ${msg}\n\n`), type: live.event.type, final: FINAL_EVENT_TYPES.has(live.event.type) }
    for (const c of [...clients]) c.push(frame)
  }

  /** Ends every stream and stops the heartbeat (gateway shutdown). */
  close(): void {
    clearInterval(this.timer)
    this.stopResync()
    this.each((c) => c.shutdown())
  }
}
