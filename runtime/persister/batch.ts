// One batch, end to end: parse the pointers (malformed ones are parked), read the
// events they name (at most maxBytesPerRead at a time, each read written before
// the next), write them to Neo4j in as few transactions as the size limits
// allow, and only then ack and delete the entries. A batch whose data Neo4j
// refuses is split in halves until the entry at fault is found and parked, so one
// bad entry never blocks those behind it. Outages are not split: the error goes
// up and the same batch is retried after a backoff.
import type { Driver } from 'neo4j-driver'
import type { Logger } from '../log.ts'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import { compareStreamIds } from '../events.ts'
import { execOps } from '../redis/batch.ts'
import { batchRanges, collectBatch, rangeIds } from './collect.ts'
import { countEvents, planTransactions, writeRows } from './graph.ts'
import type { PersisterMetrics } from './metrics.ts'
import { describeError, isDataError, isPoolError } from './neo4j.ts'
import type { ResolvedPersisterOptions } from './options.ts'
import { isParked, parsePointer, type Delivery, type Parked, type Pointer } from './pointers.ts'
import type { PersistenceQueue } from './queue.ts'
import { recordRefused } from './refused.ts'
import { applyRetention, type RetentionCandidate } from './retention.ts'
import type { GraphRows } from './rows.ts'
import { dueForTrim, trimSlack, trimStreams } from './trim.ts'

/** Dependencies of a {@link BatchWriter}. */
export interface BatchDeps {
  redis: RedisClient
  keys: Keys
  driver: Driver
  queue: PersistenceQueue
  metrics: PersisterMetrics
  log: Logger
  opts: ResolvedPersisterOptions
  /**
   * The cap (TROUPE_STREAM_MAXLEN) the streams of a batch's workflows are trimmed
   * to once Neo4j holds their older entries; 0 or absent: never trimmed.
   */
  streamMaxLen?: number
}

/** What one batch did. */
export interface BatchReport {
  entries: number
  events: number
  transactions: number
  parked: number
  expired: number
  /** Stream entries trimmed (see trim.ts). */
  trimmed: number
  seconds: number
  /** Reads of Redis the batch took (one unless its events exceed maxBytesPerRead), and the largest one in bytes. */
  reads: number
  maxReadBytes: number
}

interface Written {
  events: number
  transactions: number
  /** Reads of at most maxBytesPerRead each, and the largest of them in bytes. */
  reads: number
  maxReadBytes: number
  parked: Parked[]
  readings: RetentionCandidate[]
  /** Each workflow's stream length as last read (what decides trimming). */
  lengths: Map<string, number>
}

const NOTHING = (): Written => ({ events: 0, transactions: 0, reads: 0, maxReadBytes: 0, parked: [], readings: [], lengths: new Map() })

/**
 * How many times in a row one entry alone may meet a full memory pool before it
 * is parked: until then the batch waits out a backoff and goes again, as in an
 * outage (the pool fills with others' work and empties again). An entry that
 * fills the pool by itself every time must not hold the queue forever.
 */
export const POOL_RETRIES = 5

/** Writes batches of queue entries to Neo4j and acks them. */
export class BatchWriter {
  /** Entries that met a full memory pool when written alone, with how many times since they were last acked. */
  private readonly poolFailures = new Map<string, number>()
  /**
   * Workflows whose trim found their oldest entry missing from Neo4j, with their
   * stream's length then: tried again once it has grown by another trimSlack, so
   * that a stream held back by one entry (a lost pointer, with reconciliation
   * off) costs a look at its head every so many entries, not every batch.
   */
  private readonly trimBlocked = new Map<string, number>()

  constructor(private readonly d: BatchDeps) {}

  /**
   * Persists `deliveries` (plus entries already judged unusable in `preParked`),
   * then acks them all. Rejects, without acking anything, when Redis or Neo4j
   * fails: the caller retries the same batch later.
   */
  async write(deliveries: readonly Delivery[], preParked: readonly Parked[] = []): Promise<BatchReport> {
    const started = process.hrtime.bigint()
    const parked: Parked[] = [...preParked]
    const pointers: Pointer[] = []
    for (const d of deliveries) {
      const p = parsePointer(d)
      if (isParked(p)) parked.push(p)
      else pointers.push(p)
    }
    const w = await this.writePointers(pointers)
    parked.push(...w.parked)
    // Before the ack: a crash in between writes them again with the batch.
    const refused = await this.recordRefused(parked)
    await this.d.queue.ack([...deliveries.map((d) => d.id), ...preParked.map((p) => p.entryId)], parked, Date.now())
    // Only once acked: until then the batch may be tried again, and an entry
    // parked (or written) in a try that ended without an ack must keep its count.
    // Forgotten at once, entries too big for the pool took turns: each one parked
    // started again from 0 while the next failed, so n of them took 5^n tries.
    if (this.poolFailures.size > 0) for (const d of deliveries) this.poolFailures.delete(d.id)
    for (const p of parked) this.d.metrics.parked.inc({ reason: p.reason })
    if (parked.length > 0) {
      // One line per batch: a flood of bad entries must not flood the log too.
      const first = parked[0] as Parked
      this.d.log.warn(`parked ${parked.length} persistence entr${parked.length === 1 ? 'y' : 'ies'} in ${this.d.queue.parkedKey}, e.g. ${first.entryId}: ${first.reason} (${first.detail})`)
    }
    let expired: string[] = []
    try {
      expired = await applyRetention({ redis: this.d.redis, keys: this.d.keys, driver: this.d.driver, database: this.d.opts.database, ttlMs: this.d.opts.retentionMs }, [...w.readings, ...refused])
      this.d.metrics.expired.inc(expired.length)
    } catch (err) {
      // The events are written and acked; reconciliation applies retention later.
      this.d.metrics.errors.inc({ kind: 'retention' })
      this.d.log.warn('retention check failed', { error: describeError(err) })
    }
    const trimmed = await this.trim(w.lengths)
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    this.d.metrics.writeSeconds.observe(seconds)
    return { entries: deliveries.length + preParked.length, events: w.events, transactions: w.transactions, parked: parked.length, expired: expired.length, trimmed, seconds, reads: w.reads, maxReadBytes: w.maxReadBytes }
  }

  /**
   * Records the events of the ranges parked `unwritable` as refused (refused.ts),
   * so that their workflow counts as complete. Returns the workflows' statuses for
   * retention. A stub Neo4j refuses too is left out (reconciliation records the
   * event later, see reconcile.ts); an outage rejects, and the batch goes again.
   */
  private async recordRefused(parked: readonly Parked[]): Promise<RetentionCandidate[]> {
    const out: RetentionCandidate[] = []
    for (const p of parked) {
      if (!p.refused) continue
      try {
        const c = await recordRefused({ redis: this.d.redis, keys: this.d.keys, driver: this.d.driver, database: this.d.opts.database, maxBytes: this.d.opts.maxBytesPerRead }, p.refused, `${p.reason}: ${p.detail}`)
        if (c) out.push(c)
      } catch (err) {
        if (!isDataError(err)) throw err
        this.d.metrics.errors.inc({ kind: 'data' })
        this.d.log.warn(`could not record the refused events of ${p.refused.wf} (${p.refused.from}..${p.refused.to}); reconciliation tries again`, { error: describeError(err) })
      }
    }
    return out
  }

  /** Trims the streams of the batch's workflows that are due (trim.ts); returns the entries removed. */
  private async trim(lengths: ReadonlyMap<string, number>): Promise<number> {
    const cap = this.d.streamMaxLen ?? 0
    const due = new Map<string, number>()
    for (const [wf, len] of lengths) {
      if (!dueForTrim(len, cap)) continue
      const blockedAt = this.trimBlocked.get(wf)
      if (blockedAt !== undefined && len < blockedAt + trimSlack(cap)) continue
      this.trimBlocked.delete(wf)
      due.set(wf, len)
    }
    if (due.size === 0) return 0
    try {
      const r = await trimStreams({ redis: this.d.redis, keys: this.d.keys, driver: this.d.driver, database: this.d.opts.database, maxBytes: this.d.opts.maxBytesPerRead }, cap, due)
      // Bounded: a workflow forgotten is only looked at again sooner.
      if (this.trimBlocked.size >= 10_000) this.trimBlocked.clear()
      for (const wf of r.blocked) this.trimBlocked.set(wf, due.get(wf) ?? 0)
      let n = 0
      for (const v of r.removed.values()) n += v
      return n
    } catch (err) {
      // The batch is written and acked; the next batch of the workflow trims it.
      this.d.metrics.errors.inc({ kind: 'retention' })
      this.d.log.warn('trimming event streams failed', { error: describeError(err) })
      return 0
    }
  }

  /** Reads and writes what `pointers` name; splits on data errors down to the single bad pointer. */
  private async writePointers(pointers: readonly Pointer[]): Promise<Written> {
    if (pointers.length === 0) return NOTHING()
    try {
      return await this.writeOnce(pointers)
    } catch (err) {
      if (!isDataError(err)) throw err
      this.d.metrics.errors.inc({ kind: 'data' })
      if (pointers.length === 1) {
        const p = pointers[0] as Pointer
        if (isPoolError(err)) {
          const n = (this.poolFailures.get(p.entryId) ?? 0) + 1
          // Bounded: entries parked or written by another persister leave no trace here for long.
          if (this.poolFailures.size >= 10_000) this.poolFailures.clear()
          this.poolFailures.set(p.entryId, n)
          if (n < POOL_RETRIES) throw err
        }
        // A pointer covers a whole commit's events (its transitions, the action's
        // completion, the enqueue of each action it sent): one refused event must
        // not keep the others out of the graph. Split by event until it is alone.
        const whole: Written = { ...NOTHING(), parked: [{ entryId: p.entryId, fields: ['wf', p.wf, 'from', p.from, 'to', p.to], reason: 'unwritable', detail: describeError(err), refused: p }] }
        const ids = await rangeIds(this.d.redis, this.d.keys, p.wf, p.from, p.to)
        // A refused write to a full pool costs the driver's retries (about 3 s):
        // past a commit's usual size the split would take minutes.
        if (ids.length > 1 && (!isPoolError(err) || ids.length <= MAX_POOL_SPLIT)) {
          const half = Math.ceil(ids.length / 2)
          const split = combine(await this.writePointers([{ ...p, to: ids[half - 1] as string }]), await this.writePointers([{ ...p, from: ids[half] as string }]))
          // Nothing of it went in: what Neo4j refuses is not one event (the
          // workflow's own row, an action record): one parked record, not one per event.
          return split.events === 0 && split.parked.length > 1 ? whole : split
        }
        return whole
      }
      const half = Math.ceil(pointers.length / 2)
      return combine(await this.writePointers(pointers.slice(0, half)), await this.writePointers(pointers.slice(half)))
    }
  }

  /**
   * Reads and writes what `pointers` name, at most `maxBytesPerRead` of events at
   * a time: what was read is written before the rest is read. Nothing is acked
   * here, so a failure in a later read leaves the whole batch to be tried again,
   * and what was already written is written again as the same MERGEs, harmlessly.
   */
  private async writeOnce(pointers: readonly Pointer[]): Promise<Written> {
    const o = this.d.opts
    const seen = new Set<string>()
    // Only the status of each workflow is kept for retention: the events of a read are let go once written.
    const latest = new Map<string, RetentionCandidate>()
    const lengths = new Map<string, number>()
    let ranges = batchRanges(pointers)
    let events = 0
    let transactions = 0
    let reads = 0
    let maxReadBytes = 0
    while (ranges.length > 0) {
      const batch = await collectBatch(this.d.redis, this.d.keys, ranges, o.maxBytesPerRead)
      reads++
      maxReadBytes = Math.max(maxReadBytes, batch.bytes)
      const txs = planTransactions(batch.parts, o.maxEventsPerTx, o.maxBytesPerTx, o.writeConcurrency)
      await this.writeTransactions(txs)
      for (const id of batch.seen) seen.add(id)
      for (const r of batch.readings) {
        latest.set(r.wf, { wf: r.wf, status: r.status })
        if (r.len !== undefined) lengths.set(r.wf, r.len)
      }
      events += batch.events
      transactions += txs.length
      ranges = batch.rest
    }
    const parked: Parked[] = []
    const unseen = pointers.filter((p) => !seen.has(p.entryId))
    const firsts = await this.firstIds(unseen)
    for (const p of unseen) {
      // Before the stream's first entry: trimmed, which only ever removes entries
      // found in Neo4j (trim.ts), so written already (a redelivery).
      const first = firsts.get(p.wf)
      if (first && compareStreamIds(p.to, first) < 0) continue
      parked.push({ entryId: p.entryId, fields: ['wf', p.wf, 'from', p.from, 'to', p.to], reason: 'empty_range', detail: `no event of ${p.wf} between ${p.from} and ${p.to}` })
    }
    return { events, transactions, reads, maxReadBytes, parked, readings: [...latest.values()], lengths }
  }

  /** The first id of the stream of each workflow `pointers` name (absent when the stream is gone). */
  private async firstIds(pointers: readonly Pointer[]): Promise<Map<string, string>> {
    const wfs = [...new Set(pointers.map((p) => p.wf))]
    const res = await execOps(this.d.redis, wfs.map((wf) => ({ cmd: 'xrange', args: [this.d.keys.events(wf), '-', '+', 'COUNT', 1] })))
    const out = new Map<string, string>()
    wfs.forEach((wf, i) => {
      const [err, v] = res[i] ?? [new Error('no reply'), null]
      if (err) throw err
      const id = (v as [string, unknown][] | null)?.[0]?.[0]
      if (id) out.set(wf, id)
    })
    return out
  }

  private async writeTransactions(txs: readonly GraphRows[]): Promise<void> {
    const o = this.d.opts
    // A few transactions at once keep Neo4j's cores busy; the ack still waits for all of them.
    let next = 0
    let failed = false
    const worker = async (): Promise<void> => {
      while (next < txs.length && !failed) {
        const rows = txs[next++] as GraphRows
        try {
          await writeRows(this.d.driver, o.database, rows)
        } catch (err) {
          failed = true
          throw err
        }
        const n = countEvents(rows)
        this.d.metrics.batchSize.observe(n)
        this.d.metrics.events.inc(n)
      }
    }
    await Promise.all(Array.from({ length: Math.min(o.writeConcurrency, txs.length) }, worker))
  }
}

/** Events of one entry past which a pool refusal parks the entry whole instead of splitting it (see writePointers). */
const MAX_POOL_SPLIT = 16

/** What two parts of a split batch wrote and parked, as one. */
function combine(a: Written, b: Written): Written {
  return {
    events: a.events + b.events, transactions: a.transactions + b.transactions, reads: a.reads + b.reads, maxReadBytes: Math.max(a.maxReadBytes, b.maxReadBytes),
    parked: [...a.parked, ...b.parked], readings: [...a.readings, ...b.readings], lengths: new Map([...a.lengths, ...b.lengths]),
  }
}

/**
 * The read size: grows (doubling) while reads come back full and writes stay
 * under the target time, shrinks (halving) when a write takes twice the target.
 * Small when idle (low latency), large under a backlog (throughput).
 */
export class AdaptiveSize {
  private n: number

  constructor(
    private readonly min: number,
    private readonly max: number,
    private readonly targetMs: number,
  ) {
    // A few hundred to begin with: a backlog found at start is drained at once in
    // sizeable batches, and an idle queue returns whatever is there anyway.
    this.n = Math.min(max, Math.max(min, 250))
  }

  /** How many entries to ask for next. */
  get value(): number {
    return this.n
  }

  /** Feeds back one batch: how many entries it asked for, got, and how long the write took. */
  observe(asked: number, got: number, writeMs: number): void {
    if (writeMs > this.targetMs * 2) this.n = Math.max(this.min, Math.floor(this.n / 2))
    else if (got >= asked && writeMs < this.targetMs) this.n = Math.min(this.max, this.n * 2)
  }
}
