// One pub/sub connection per process, shared by everything that listens (workers'
// wake-ups, control messages, every follower of a workflow), with a resync signal
// after reconnects so followers can replay what they missed.
import { isCluster } from './redis/batch.ts'
import type { RedisClient } from './redis/connection.ts'

type Handler = (message: string) => void

/** Multiplexes channel subscriptions over one dedicated connection. */
export class Subscriber {
  private readonly conn: RedisClient
  private readonly handlers = new Map<string, Set<Handler>>()
  private readonly resyncs = new Set<() => void>()
  /** SUBSCRIBE commands not yet confirmed, per channel. */
  private readonly pending = new Map<string, Promise<unknown>>()
  private everReady = false

  /** The periodic resync on a Cluster (see the constructor). */
  private readonly timer: NodeJS.Timeout | null = null

  /**
   * `clusterResyncMs`: on a Redis Cluster, how often followers are told to
   * replay anyway. ioredis moves a Cluster's subscription to another node when
   * its node goes away and subscribes there again without any event we could
   * hear, so what was published in between would be a silent gap; a replay
   * from the last id received (cheap, usually empty) bounds that gap's delay.
   */
  constructor(redis: RedisClient, opts: { clusterResyncMs?: number } = {}) {
    // Both clients duplicate themselves; the union of their signatures is not callable.
    this.conn = (redis as { duplicate(): RedisClient }).duplicate()
    if (isCluster(this.conn)) {
      this.timer = setInterval(() => {
        for (const r of this.resyncs) r()
      }, opts.clusterResyncMs ?? 10_000)
      this.timer.unref()
    }
    this.conn.on('error', () => undefined)
    this.conn.on('message', (channel: string, message: string) => {
      for (const h of this.handlers.get(channel) ?? []) h(message)
    })
    this.conn.on('ready', () => {
      // ioredis resubscribes by itself; messages published while we were away are
      // lost, so tell followers to replay from their last stream id.
      if (!this.everReady) {
        this.everReady = true
        return
      }
      const resync = (): void => {
        for (const r of this.resyncs) r()
      }
      if (isCluster(this.conn)) return resync()
      // It emits 'ready' before it sends those SUBSCRIBEs: a replay started now
      // could read before the channel is live and miss what comes in between.
      // A PING sent after them is answered once they are done.
      setImmediate(() => {
        void (this.conn as { ping(): Promise<string> }).ping().then(resync, resync)
      })
    })
  }

  /**
   * Subscribes `handler` to `channel`; resolves once Redis has confirmed the
   * subscription (from then on nothing published is missed, so a caller may
   * replay what came before). The returned function unsubscribes it.
   */
  async subscribe(channel: string, handler: Handler): Promise<() => Promise<void>> {
    let set = this.handlers.get(channel)
    if (!set) {
      const fresh = new Set<Handler>()
      set = fresh
      this.handlers.set(channel, fresh)
      const confirmed = this.conn.subscribe(channel)
      this.pending.set(channel, confirmed)
      try {
        await confirmed
      } catch (err) {
        // Left in place, the empty set would make every later caller skip the SUBSCRIBE.
        if (this.handlers.get(channel) === fresh && fresh.size === 0) this.handlers.delete(channel)
        throw err
      } finally {
        if (this.pending.get(channel) === confirmed) this.pending.delete(channel)
      }
    } else {
      // Another caller's SUBSCRIBE may still be on its way: this one must not
      // start replaying before the channel is live either.
      const confirmed = this.pending.get(channel)
      if (confirmed) {
        await confirmed
        // Everyone else may have left meanwhile, unsubscribing the channel.
        if (this.handlers.get(channel) !== set) return await this.subscribe(channel, handler)
      }
    }
    set.add(handler)
    return async () => {
      const s = this.handlers.get(channel)
      if (!s) return
      s.delete(handler)
      if (s.size === 0) {
        this.handlers.delete(channel)
        await this.conn.unsubscribe(channel).catch(() => undefined)
      }
    }
  }

  /** Registers a callback run after each reconnect; returns its remover. */
  onResync(cb: () => void): () => void {
    this.resyncs.add(cb)
    return () => this.resyncs.delete(cb)
  }

  /** Number of channels with listeners (a gauge for the gateway). */
  get channels(): number {
    return this.handlers.size
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.conn.disconnect()
  }
}
