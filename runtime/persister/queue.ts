// The consumer side of `persistence:queue`: consumer group `persister`, one
// consumer per process (its serviceId). Blocking reads use a connection of their
// own so they never stall the runtime's command connection. Entries are acked and
// deleted only after their events are committed to Neo4j; entries of consumers
// that died are taken over (XPENDING, then XCLAIM) once idle long enough.
import type { RedisClient } from '../redis/connection.ts'
import { execPhases, throwFirst, type CmdOp } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
import { LuaScripts } from '../redis/scripts.ts'
import type { QueueProbe } from './metrics.ts'
import type { Delivery, Parked } from './pointers.ts'

const scripts = new LuaScripts<'prune_consumers'>(new URL('./scripts/', import.meta.url))

/** The consumer group every persister joins. */
export const GROUP = 'persister'

/**
 * An entry claimed for more deliveries than this is written alone (see
 * claimBatch): it has been in a batch whose persisters died that often.
 */
export const ALONE_ABOVE_DELIVERIES = 3

function isBusyGroup(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('BUSYGROUP')
}

function toDeliveries(raw: unknown): Delivery[] {
  if (!Array.isArray(raw)) return []
  const out: Delivery[] = []
  for (const e of raw) {
    if (!Array.isArray(e) || typeof e[0] !== 'string') continue
    // A pending entry deleted meanwhile comes back with nil fields; it is acked like the rest.
    out.push({ id: e[0], fields: Array.isArray(e[1]) ? (e[1] as unknown[]).map(String) : [] })
  }
  return out
}

/** Reads, claims, acks and parks entries of `persistence:queue` for one consumer. */
export class PersistenceQueue {
  readonly key: string
  readonly parkedKey: string
  private blockingId: number | null = null

  /**
   * @param redis the shared command connection
   * @param blocking a connection used only for XREADGROUP BLOCK
   * @param consumer this consumer's name in the group (the runtime's serviceId)
   */
  constructor(
    private readonly redis: RedisClient,
    private readonly blocking: RedisClient,
    readonly keys: Keys,
    readonly consumer: string,
    private readonly parkedMaxLen: number,
  ) {
    this.key = keys.persistence()
    this.parkedKey = keys.persistenceParked()
  }

  /**
   * Creates the group (and the stream) if missing. It starts at `0` so pointers
   * written before any persister ever ran are persisted too.
   */
  async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', this.key, GROUP, '0', 'MKSTREAM')
    } catch (err) {
      if (!isBusyGroup(err)) throw err
    }
    if (!('nodes' in this.blocking)) {
      // Remembered so that stop() can wake a blocked read with CLIENT UNBLOCK.
      this.blockingId = Number(await this.blocking.client('ID'))
    }
  }

  /** Up to `count` new entries, waiting at most `blockMs` for the first. */
  async read(count: number, blockMs: number): Promise<Delivery[]> {
    const res = (await this.blocking.xreadgroup('GROUP', GROUP, this.consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', this.key, '>')) as unknown
    if (!Array.isArray(res)) return []
    const out: Delivery[] = []
    for (const stream of res) if (Array.isArray(stream)) out.push(...toDeliveries(stream[1]))
    return out
  }

  /** Wakes a blocked {@link read} at once (it returns no entries); used when stopping. */
  async unblock(): Promise<void> {
    if (this.blockingId !== null) await this.redis.client('UNBLOCK', this.blockingId).catch(() => undefined)
  }

  /**
   * Pending entries in id order, with how often each was delivered so far: those
   * idle for `minIdleMs` or more (their consumer died or hangs), or, with `own`,
   * those of this consumer name (from an earlier life under the same name).
   */
  private async pending(minIdleMs: number, count: number, own: boolean): Promise<{ id: string; deliveries: number }[]> {
    const raw: unknown = own
      ? await this.redis.xpending(this.key, GROUP, '-', '+', count, this.consumer)
      : await this.redis.call('XPENDING', this.key, GROUP, 'IDLE', minIdleMs, '-', '+', count)
    if (!Array.isArray(raw)) return []
    const out: { id: string; deliveries: number }[] = []
    for (const p of raw) if (Array.isArray(p) && typeof p[0] === 'string') out.push({ id: p[0], deliveries: Number(p[3]) })
    return out
  }

  /**
   * Claims `pending` for this consumer (XCLAIM, which counts a delivery), unless
   * another consumer took one meanwhile (it is no longer idle). A pending entry
   * deleted meanwhile is dropped from the group by XCLAIM and not returned.
   */
  private async take(pending: readonly { id: string; deliveries: number }[], minIdleMs: number): Promise<{ entry: Delivery; deliveries: number }[]> {
    if (pending.length === 0) return []
    const res: unknown = await this.redis.call('XCLAIM', this.key, GROUP, this.consumer, minIdleMs, ...pending.map((p) => p.id))
    const counts = new Map(pending.map((p) => [p.id, p.deliveries + 1]))
    return toDeliveries(res).map((entry) => ({ entry, deliveries: counts.get(entry.id) ?? 1 }))
  }

  /**
   * Takes over up to `count` entries idle for `minIdleMs` or more. Returns them
   * with how often each was delivered, this time included.
   */
  async claim(minIdleMs: number, count: number): Promise<{ entry: Delivery; deliveries: number }[]> {
    return await this.take(await this.pending(minIdleMs, count, false), minIdleMs)
  }

  /**
   * The next batch of entries to take over: idle ones (see {@link claim}), or with
   * `own` this consumer name's own pending ones. Entries delivered more than
   * `maxDeliveries` times are set aside to be parked: one that keeps killing or
   * stalling its persisters must not be retried forever. And once an entry is
   * claimed for more than {@link ALONE_ABOVE_DELIVERIES} deliveries it is taken
   * alone, the other pending entries left unclaimed: claimed together, every
   * crash on one entry counted a delivery for each entry of its batch, so the
   * whole batch reached maxDeliveries and was parked with the culprit.
   */
  async claimBatch(minIdleMs: number, count: number, maxDeliveries: number, own = false): Promise<{ deliveries: Delivery[]; parked: Parked[] }> {
    const pending = await this.pending(minIdleMs, count, own)
    const spent = pending.filter((p) => p.deliveries + 1 > maxDeliveries)
    const live = pending.filter((p) => p.deliveries + 1 <= maxDeliveries)
    const suspect = live.find((p) => p.deliveries + 1 > ALONE_ABOVE_DELIVERIES)
    const out: { deliveries: Delivery[]; parked: Parked[] } = { deliveries: [], parked: [] }
    for (const c of await this.take([...spent, ...(suspect ? [suspect] : live)], own ? 0 : minIdleMs)) {
      if (c.deliveries > maxDeliveries) out.parked.push({ entryId: c.entry.id, fields: c.entry.fields, reason: 'too_many_deliveries', detail: `delivered ${c.deliveries} times without being written` })
      else out.deliveries.push(c.entry)
    }
    return out
  }

  /**
   * Resets the idle time of entries we still hold (a long write or a backoff),
   * so other persisters do not take them over while we are alive.
   */
  async touch(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    await this.redis.call('XCLAIM', this.key, GROUP, this.consumer, 0, ...ids, 'JUSTID')
  }

  /**
   * Hands entries we hold back to the group at once (a stop in the middle of a
   * backoff, or writes that kept failing): their idle time is set past the claim
   * threshold, so the next persister's claim takes them without waiting.
   * Their delivery count goes back to 0: they were given up in good order (an
   * outage, a stop), not lost with a persister that died on them, which is what
   * the count is for (maxDeliveries). Counted, a write-only outage with
   * persisters restarting parked every entry after ten restarts.
   */
  async release(ids: readonly string[], idleMs: number): Promise<void> {
    if (ids.length === 0) return
    await this.redis.call('XCLAIM', this.key, GROUP, this.consumer, 0, ...ids, 'IDLE', idleMs, 'RETRYCOUNT', 0, 'JUSTID')
  }

  /**
   * Parks the malformed entries, then acks and deletes every entry of the batch,
   * in one round trip (two when something is parked). Deleting acked entries keeps the stream's length equal to
   * the backlog (and lets retention free memory).
   */
  async ack(ids: readonly string[], parked: readonly Parked[], at: number): Promise<void> {
    if (ids.length === 0 && parked.length === 0) return
    // Parked before acked, and acked only once parked: on a Cluster the two keys
    // live on different nodes, so the ack waits for the parking's reply (a crash in
    // between redelivers, never loses).
    const park: CmdOp[] = parked.map((p) => ({
      cmd: 'xadd',
      args: [this.parkedKey, 'MAXLEN', '~', this.parkedMaxLen, '*', 'entry', p.entryId, 'reason', p.reason, 'detail', p.detail, 'consumer', this.consumer, 'at', at, 'fields', JSON.stringify(p.fields).slice(0, 4096)],
    }))
    const done: CmdOp[] = ids.length > 0 ? [{ cmd: 'xack', args: [this.key, GROUP, ...ids] }, { cmd: 'xdel', args: [this.key, ...ids] }] : []
    if (park.length > 0) throwFirst(await execPhases(this.redis, [park]))
    throwFirst(await execPhases(this.redis, [done]))
  }

  /** Length, age of the oldest entry, and the server clock, in one round trip. */
  async probe(): Promise<QueueProbe> {
    const before = Date.now()
    const res = (await this.redis.pipeline().xlen(this.key).xrange(this.key, '-', '+', 'COUNT', 1).time().exec()) ?? []
    const after = Date.now()
    const [e0, len] = res[0] ?? [null, 0]
    const [e1, first] = res[1] ?? [null, []]
    const [e2, time] = res[2] ?? [null, ['0', '0']]
    const err = e0 ?? e1 ?? e2
    if (err) throw err
    const t = time as [string, string]
    const serverMs = Number(t[0]) * 1000 + Math.floor(Number(t[1]) / 1000)
    const oldest = (first as [string, unknown][])[0]?.[0]
    return { length: Number(len), oldestMs: oldest ? Number(oldest.split('-')[0]) : null, clockOffsetMs: serverMs - Math.round((before + after) / 2) }
  }

  /** Consumers of the group (name, pending, idle ms). */
  async consumers(): Promise<{ name: string; pending: number; idleMs: number }[]> {
    let raw: unknown[] = []
    try {
      raw = (await this.redis.xinfo('CONSUMERS', this.key, GROUP)) as unknown[]
    } catch {
      return []
    }
    const out: { name: string; pending: number; idleMs: number }[] = []
    for (const c of raw) {
      if (!Array.isArray(c)) continue
      const f: Record<string, unknown> = {}
      for (let i = 0; i + 1 < c.length; i += 2) f[String(c[i])] = c[i + 1]
      out.push({ name: String(f.name), pending: Number(f.pending ?? 0), idleMs: Number(f.idle ?? 0) })
    }
    return out
  }

  /**
   * Removes consumers of past processes that hold nothing and have been idle for
   * `idleMs`: each process joins under a new name, so they would pile up. One
   * that holds nothing loses nothing: a live persister removed while its queue
   * was quiet (before Redis 7.2 an empty read does not count as activity) joins
   * again at its next read. The check and the removal are one script
   * (prune_consumers.lua), so a consumer that reads in between is not removed
   * with its entries.
   */
  async pruneConsumers(idleMs: number): Promise<number> {
    const removed = await scripts.run(this.redis, 'prune_consumers', [this.key], [GROUP, idleMs, this.consumer])
    return Array.isArray(removed) ? removed.length : 0
  }
}
