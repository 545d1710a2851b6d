// One pub/sub connection per process, shared by everything that listens (workers'
// wake-ups, control messages, every follower of a workflow), with a resync signal
// after reconnects so followers can replay what they missed.
import type { RedisClient } from './redis/connection.ts'

type Handler = (message: string) => void

/** Multiplexes channel subscriptions over one dedicated connection. */
export class Subscriber {
  private readonly conn: RedisClient
  private readonly handlers = new Map<string, Set<Handler>>()
  private readonly resyncs = new Set<() => void>()
  private everReady = false

  constructor(redis: RedisClient) {
    // Both clients duplicate themselves; the union of their signatures is not callable.
    this.conn = (redis as { duplicate(): RedisClient }).duplicate()
    this.conn.on('error', () => undefined)
    this.conn.on('message', (channel: string, message: string) => {
      for (const h of this.handlers.get(channel) ?? []) h(message)
    })
    this.conn.on('ready', () => {
      // ioredis resubscribes by itself; messages published while we were away are
      // lost, so tell followers to replay from their last stream id.
      if (this.everReady) for (const r of this.resyncs) r()
      this.everReady = true
    })
  }

  /** Subscribes `handler` to `channel`; the returned function unsubscribes it. */
  async subscribe(channel: string, handler: Handler): Promise<() => Promise<void>> {
    let set = this.handlers.get(channel)
    if (!set) {
      set = new Set()
      this.handlers.set(channel, set)
      await this.conn.subscribe(channel)
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
    this.conn.disconnect()
  }
}
