// Reconciliation: the runtime appends an event and then, in a separate write,
// its pointer; a crash in between leaves an event no pointer names. This job
// compares each workflow still in Redis with Neo4j (last stream id, number of
// events, status) and backfills what is missing straight from the stream.
//
// Which workflows: a SCAN of `workflow:status:*`, a few SCAN calls per step, so a
// large keyspace is spread over many steps. Finished workflows that already carry
// their retention TTL were verified complete and are skipped; workflows whose last
// event is younger than the settle time (plus the current lag) are left to the
// queue, whose pointers are probably still on their way.
import neo4j, { type Driver } from 'neo4j-driver'
import { compareStreamIds } from '../events.ts'
import type { Logger } from '../log.ts'
import type { RedisClient } from '../redis/connection.ts'
import { execOps, type CmdOp } from '../redis/batch.ts'
import { isWorkflowId, type Keys } from '../redis/keys.ts'
import { readEvents, readState, type ReadRange } from './collect.ts'
import { POOL_RETRIES } from './batch.ts'
import { planTransactions, refusedRows, writeRefused, writeRows, type WorkflowPart } from './graph.ts'
import type { PersisterMetrics } from './metrics.ts'
import type { ResolvedPersisterOptions } from './options.ts'
import { describeError, isDataError, isPoolError } from './neo4j.ts'
import { streamMs } from './pointers.ts'
import { applyRetention, extentOps, lacksEvents, persistedState, readExtent, type PersistedState, type StreamExtent } from './retention.ts'
import { workflowRows, type GraphRows, type WorkflowRow } from './rows.ts'

/** Dependencies of a {@link Reconciler}. */
export interface ReconcileDeps {
  redis: RedisClient
  keys: Keys
  driver: Driver
  metrics: PersisterMetrics
  log: Logger
  opts: ResolvedPersisterOptions
}

/** What reconciliation found and did for one workflow. */
export interface WorkflowCheck {
  wf: string
  /**
   * `ok`: nothing missing; `backfilled`: events written; `status`: only the
   * status differed; `skipped`: too fresh or already retained; `gone`: not in
   * Redis; `failed`: Neo4j refused some of its data, not recorded as refused
   * yet (see `error`; not given a TTL this time).
   */
  outcome: 'ok' | 'backfilled' | 'status' | 'skipped' | 'gone' | 'failed'
  /** Why it failed, for `failed`. */
  error?: string
  redisLastId: string | null
  redisEvents: number
  neo4jLastId: string | null
  neo4jEvents: number
  backfilled: number
  expired: boolean
}

/** Totals of a reconciliation run. */
export interface ReconcileReport {
  checked: number
  backfilledWorkflows: number
  backfilledEvents: number
  statusFixed: number
  expired: number
  skipped: number
  /** Workflows whose data Neo4j refused; the others of the run are still checked. */
  failed: number
  /** True when the run reached the end of the keyspace (a sweep is complete). */
  complete: boolean
  workflows: WorkflowCheck[]
}

interface RedisSide extends StreamExtent {
  status: Record<string, string>
  ttl: number
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled'])
const PAGE = 2000
/** The most the queue's lag adds to the settle time (see check). */
export const MAX_LAG_SETTLE_MS = 10 * 60_000

function emptyReport(): ReconcileReport {
  return { checked: 0, backfilledWorkflows: 0, backfilledEvents: 0, statusFixed: 0, expired: 0, skipped: 0, failed: 0, complete: false, workflows: [] }
}

function add(into: ReconcileReport, r: ReconcileReport): void {
  into.checked += r.checked
  into.backfilledWorkflows += r.backfilledWorkflows
  into.backfilledEvents += r.backfilledEvents
  into.statusFixed += r.statusFixed
  into.expired += r.expired
  into.skipped += r.skipped
  into.failed += r.failed
  into.workflows.push(...r.workflows)
}

/** Compares workflows in Redis with Neo4j and backfills the differences. */
export class Reconciler {
  private node = 0
  private cursor = '0'
  /** Events refused for a full pool, with how many backfills in a row met it (see refuse). */
  private readonly poolRefusals = new Map<string, number>()

  constructor(private readonly d: ReconcileDeps) {}

  private nodes(): RedisClient[] {
    return 'nodes' in this.d.redis ? this.d.redis.nodes('master') : [this.d.redis]
  }

  /** Checks the given workflows now, fresh or not (`troupe reconcile <wf>`). */
  async workflows(ids: readonly string[], force = true, lagMs = 0): Promise<ReconcileReport> {
    const report = emptyReport()
    for (let i = 0; i < ids.length; i += 200) add(report, await this.check(ids.slice(i, i + 200), force, lagMs))
    report.complete = true
    return report
  }

  /**
   * One step of the periodic sweep: up to `reconcileScanBudget` SCAN calls and
   * the workflows they find. `complete` is set when the sweep wrapped around.
   */
  async step(lagMs: number, signal?: AbortSignal): Promise<ReconcileReport> {
    const report = emptyReport()
    const match = `${this.d.keys.status('')}`.replace(/\{\}$/, '*')
    for (let calls = 0; calls < this.d.opts.reconcileScanBudget && !signal?.aborted; calls++) {
      const nodes = this.nodes()
      const node = nodes[this.node % nodes.length] as RedisClient
      const [next, found] = await node.scan(this.cursor, 'MATCH', match, 'COUNT', 500)
      this.cursor = next
      const ids = found.map((k) => /\{([^}]*)\}$/.exec(k)?.[1] ?? '').filter(isWorkflowId)
      if (ids.length > 0) add(report, await this.check(ids, false, lagMs))
      if (next === '0') {
        this.node++
        if (this.node % nodes.length === 0) {
          report.complete = true
          break
        }
      }
    }
    return report
  }

  /** A whole sweep, every workflow in Redis, ignoring the settle time (`troupe reconcile`). */
  async all(signal?: AbortSignal): Promise<ReconcileReport> {
    this.node = 0
    this.cursor = '0'
    const report = emptyReport()
    const match = `${this.d.keys.status('')}`.replace(/\{\}$/, '*')
    for (const node of this.nodes()) {
      let cursor = '0'
      do {
        if (signal?.aborted) return report
        const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', 500)
        cursor = next
        const ids = found.map((k) => /\{([^}]*)\}$/.exec(k)?.[1] ?? '').filter(isWorkflowId)
        if (ids.length > 0) add(report, await this.check(ids, true, 0))
      } while (cursor !== '0')
    }
    report.complete = true
    return report
  }

  private async readRedis(ids: readonly string[]): Promise<{ sides: Map<string, RedisSide>; now: number }> {
    const k = this.d.keys
    const ops: CmdOp[] = ids.flatMap((wf) => [
      ...extentOps(k, wf),
      { cmd: 'hgetall', args: [k.status(wf)] },
      { cmd: 'pttl', args: [k.status(wf)] },
    ])
    ops.push({ cmd: 'time', args: [] })
    const res = await execOps(this.d.redis, ops)
    const sides = new Map<string, RedisSide>()
    ids.forEach((wf, i) => {
      const at = i * 5
      const vals = res.slice(at + 3, at + 5).map(([err, v]) => {
        if (err) throw err
        return v
      })
      sides.set(wf, { ...readExtent(res, at), status: (vals[0] ?? {}) as Record<string, string>, ttl: Number(vals[1] ?? -2) })
    })
    const [terr, t] = res[res.length - 1] ?? [null, ['0', '0']]
    if (terr) throw terr
    const time = t as [string, string]
    return { sides, now: Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000) }
  }

  private async check(ids: readonly string[], force: boolean, lagMs: number): Promise<ReconcileReport> {
    const report = emptyReport()
    const { sides, now } = await this.readRedis(ids)
    const neo = await persistedState(this.d.driver, this.d.opts.database, ids.map((wf) => ({ wf, first: sides.get(wf)?.first ?? null })))
    // The queue's lag, capped: one entry stuck for hours (a persister that could
    // not write held it) made every workflow newer than it wait, so lost pointers
    // were never backfilled and ended workflows never got their TTL. Past the cap
    // a backfill may repeat what the queue is about to write; MERGE makes that harmless.
    const settle = this.d.opts.reconcileSettleMs + Math.min(lagMs, MAX_LAG_SETTLE_MS)
    const retain: { wf: string; status: Record<string, string> }[] = []
    let poolErrors = 0
    for (const wf of ids) {
      const r = sides.get(wf) as RedisSide
      const n = neo.get(wf) ?? { lastStreamId: null, events: 0, status: null, backfilledLen: null, backfilledFirst: null }
      const c: WorkflowCheck = { wf, outcome: 'ok', redisLastId: r.last, redisEvents: r.len, neo4jLastId: n.lastStreamId, neo4jEvents: n.events, backfilled: 0, expired: false }
      report.checked++
      report.workflows.push(c)
      const terminal = TERMINAL.has(r.status.status ?? '')
      if (!r.last && !r.status.status) {
        c.outcome = 'gone'
        continue
      }
      if (!force && ((terminal && r.ttl > 0) || (r.last !== null && streamMs(r.last) > now - settle))) {
        c.outcome = 'skipped'
        report.skipped++
        continue
      }
      try {
        await this.repair(c, r, n, report)
        poolErrors = 0
      } catch (err) {
        // An outage ends the run (every other workflow would fail the same way);
        // one workflow's refused data must not keep the rest of the page from
        // being backfilled and expired, sweep after sweep. A full memory pool
        // twice in a row is load, not one workflow: end the run rather than
        // press on into it.
        if (!isDataError(err) || (isPoolError(err) && ++poolErrors >= 2)) throw err
        c.outcome = 'failed'
        c.error = describeError(err)
        report.failed++
        this.d.metrics.errors.inc({ kind: 'reconcile' })
        this.d.log.warn(`reconciliation could not write workflow ${wf}; going on with the others`, { error: c.error })
        continue
      }
      if (terminal && r.ttl < 0) retain.push({ wf, status: r.status })
    }
    if (retain.length > 0) {
      const expired = new Set(await applyRetention({ redis: this.d.redis, keys: this.d.keys, driver: this.d.driver, database: this.d.opts.database, ttlMs: this.d.opts.retentionMs }, retain))
      for (const c of report.workflows) c.expired = expired.has(c.wf)
      report.expired += expired.size
      this.d.metrics.expired.inc(expired.size)
    }
    return report
  }

  /** Writes what Neo4j lacks of one workflow, and records what it did in `c` and `report`. */
  private async repair(c: WorkflowCheck, r: RedisSide, n: PersistedState, report: ReconcileReport): Promise<void> {
    const { wf } = c
    const behind = r.last !== null && (n.lastStreamId === null || compareStreamIds(r.last, n.lastStreamId) > 0)
    const holes = lacksEvents(n, r)
    if (holes || behind) {
      // With holes anywhere the whole stream is rewritten (MERGE skips what exists);
      // with only a missing tail, just the tail.
      const start = holes || n.lastStreamId === null ? '-' : `(${n.lastStreamId}`
      c.backfilled = await this.backfill(wf, start)
      if (start === '-') await this.markBackfilled(wf, r)
      c.outcome = 'backfilled'
      report.backfilledWorkflows++
      report.backfilledEvents += c.backfilled
      this.d.metrics.backfilled.inc(c.backfilled)
      if (c.backfilled > 0) this.d.log.info(`reconciliation backfilled ${c.backfilled} events of workflow ${wf}`)
    } else if (r.status.status && n.status !== r.status.status) {
      await this.backfill(wf, `(${r.last ?? '0-0'}`)
      c.outcome = 'status'
      report.statusFixed++
    }
  }

  /** Records that the whole stream, as `x` describes it, was written (see lacksEvents). */
  private async markBackfilled(wf: string, x: StreamExtent): Promise<void> {
    await this.d.driver.executeQuery(
      'MATCH (w:Workflow {id: $wf}) SET w.backfilledLen = $len, w.backfilledFirst = $first',
      { wf, len: neo4j.int(x.len), first: x.first },
      this.d.opts.database ? { database: this.d.opts.database } : {},
    )
  }

  /**
   * Writes the stream of `wf` from `start` to its end, with the workflow's current
   * status, at most `maxBytesPerRead` of events at a time (a stream of big events
   * once read 2,000 of them, whatever their size, before writing any). A start
   * past the end writes only the status.
   */
  private async backfill(wf: string, start: string): Promise<number> {
    let ranges: ReadRange[] = [{ wf, start, end: '+' }]
    let written = 0
    // The first refusal not recorded as such (see refuse): the rest of the stream
    // is written all the same (it used to stop there, sweep after sweep), then
    // this is thrown so that the workflow is reported failed.
    let refused: Error | null = null
    do {
      const read = await readEvents(this.d.redis, this.d.keys, ranges, { pageSize: PAGE, maxBytes: this.d.opts.maxBytesPerRead })
      const events = read.events.get(wf) ?? []
      const [reading] = await readState(this.d.redis, this.d.keys, new Map([[wf, events]]))
      if (!reading) break
      const part = workflowRows(reading)
      try {
        for (const rows of planTransactions([part], this.d.opts.maxEventsPerTx, this.d.opts.maxBytesPerTx)) {
          await writeRows(this.d.driver, this.d.opts.database, rows)
        }
      } catch (err) {
        if (!isDataError(err)) throw err
        refused ??= await this.eventByEvent(part)
      }
      written += events.length
      ranges = read.rest
    } while (ranges.length > 0)
    if (refused !== null) throw refused
    return written
  }

  /**
   * Writes a read one event per transaction, leaving out those Neo4j refuses
   * (what the read's transactions wrote before the refusal is written again,
   * as the same MERGEs). A full pool on two events in a row is load, not one
   * event's size: that ends it, as it ends a run. Returns the first refusal it
   * could not record as such (see refuse), or null.
   */
  private async eventByEvent(part: WorkflowPart): Promise<Error | null> {
    let poolErrors = 0
    let left: Error | null = null
    // The read's action rows in a transaction of their own, first: planned with
    // the events they ride with the first event, and a refusal of that one
    // would leave every action of the read without its record.
    const txs = [...planTransactions([{ ...part, events: [] }], 1, this.d.opts.maxBytesPerTx), ...planTransactions([{ ...part, actions: [] }], 1, this.d.opts.maxBytesPerTx)]
    for (const rows of txs) {
      try {
        await writeRows(this.d.driver, this.d.opts.database, rows)
        poolErrors = 0
      } catch (err) {
        if (!isDataError(err) || (isPoolError(err) && ++poolErrors >= 2)) throw err
        if (!(await this.refuse(part.workflow, rows, err))) left ??= err instanceof Error ? err : new Error(String(err))
      }
    }
    return left
  }

  /**
   * Records the event of `rows`, which Neo4j refused with `err`, as refused
   * (graph.ts, WRITE_REFUSED), so that its workflow counts as complete and is no
   * longer rewritten sweep after sweep. A full pool may be someone else's load:
   * as in a batch, only the POOL_RETRIES-th refusal in a row of the same event
   * records it. Returns whether it is recorded; false for refused action rows,
   * which are not events.
   */
  private async refuse(workflow: WorkflowRow, rows: GraphRows, err: unknown): Promise<boolean> {
    const events = rows.groups.flatMap((g) => g.events)
    const first = events[0]
    if (!first) return false
    if (isPoolError(err)) {
      const key = `${workflow.id}\n${first.id}`
      const n = (this.poolRefusals.get(key) ?? 0) + 1
      // Bounded: events recorded or written meanwhile leave no trace here for long.
      if (this.poolRefusals.size >= 10_000) this.poolRefusals.clear()
      this.poolRefusals.set(key, n)
      if (n < POOL_RETRIES) return false
      this.poolRefusals.delete(key)
    }
    try {
      await writeRefused(this.d.driver, this.d.opts.database, workflow, refusedRows(events, `unwritable: ${describeError(err)}`))
    } catch (e) {
      if (!isDataError(e)) throw e
      return false
    }
    this.d.log.warn(`reconciliation recorded event ${first.id} of workflow ${workflow.id} as refused by Neo4j`, { error: describeError(err) })
    return true
  }
}
