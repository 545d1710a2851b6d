// The persister: drains `persistence:queue` into Neo4j. Its control logic is an
// XState machine hosted next to agents (`troupe start --persister`) or alone
// (`troupe persister`); any number may run at once, sharing the consumer group
// `persister`. The pieces (queue, batch, graph, reconciliation, retention) live in
// runtime/persister/; docs/persister.md describes the guarantees.
import type { Driver } from 'neo4j-driver'
import { assign, createActor, fromPromise, setup, waitFor, type Actor } from 'xstate'
import { createRedis, type RedisClient } from '../runtime/redis/connection.ts'
import type { HostedService, Runtime } from '../runtime/runtime.ts'
import { AdaptiveSize, BatchWriter } from '../runtime/persister/batch.ts'
import { ensureSchema } from '../runtime/persister/graph.ts'
import { PersisterMetrics } from '../runtime/persister/metrics.ts'
import { createNeo4jDriver, describeError, isNeo4jError, neo4jReachable } from '../runtime/persister/neo4j.ts'
import { resolvePersisterOptions, type PersisterOptions, type ResolvedPersisterOptions } from '../runtime/persister/options.ts'
import type { Delivery, Parked } from '../runtime/persister/pointers.ts'
import { PersistenceQueue } from '../runtime/persister/queue.ts'
import { Reconciler, type ReconcileReport } from '../runtime/persister/reconcile.ts'

export type { PersisterOptions } from '../runtime/persister/options.ts'

/** Entries read from the queue and not yet acked. */
export interface HeldBatch {
  deliveries: Delivery[]
  /** Entries already judged unusable (delivered too often); parked with the batch's ack. */
  parked: Parked[]
  /** How many entries the read asked for (feeds the adaptive size). */
  asked: number
}

/** What the machine does to the outside world; the service provides it, tests may fake it. */
export interface PersisterPorts {
  /** Resolves once Neo4j answers. */
  connect(): Promise<void>
  /** Creates the constraints and the consumer group. */
  prepare(): Promise<void>
  /** Claims entries of dead consumers, or reads new ones (blocking briefly). */
  read(): Promise<HeldBatch>
  /** Writes a batch and acks it; rejects (acking nothing) on any outage. */
  write(batch: HeldBatch): Promise<void>
  /** Hands a batch it could not write back to the group, for another persister's next claim. */
  release(batch: HeldBatch): Promise<void>
  /** One step of the reconciliation sweep; never rejects. */
  reconcile(signal: AbortSignal): Promise<void>
}

/**
 * Writes of one batch that fail in a row before the batch is handed back: a
 * persister that stays alive but cannot write (say, its Neo4j password went
 * stale) otherwise kept the batch for good, touched so that no one else took it.
 */
export const RELEASE_AFTER_FAILURES = 5

/** Where the machine resumes after a backoff. */
type Resume = 'connecting' | 'ensuringSchema' | 'writing'

interface Ctx {
  batch: HeldBatch | null
  failures: number
  resume: Resume
  stopping: boolean
}

/** Exponential backoff with full jitter between `minMs` and `maxMs`. */
export function backoffMs(failures: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(0, failures - 1), 20))
  return Math.round(minMs + (cap - minMs) * random())
}

/**
 * The persister's lifecycle. Region `pipeline`, one line per state:
 * - `connecting`: waiting for Neo4j to answer;
 * - `ensuringSchema`: creating the constraints and the consumer group;
 * - `consuming`: claiming dead consumers' entries or blocking briefly for new ones;
 * - `writing`: one batch to Neo4j, then XACK + XDEL;
 * - `backingOff`: Neo4j or Redis failed; wait, then resume where it failed (the batch is kept);
 * - `releasing`: the same batch failed RELEASE_AFTER_FAILURES writes in a row: hand it back, then `connecting`.
 *
 * Region `housekeeping`: `waiting` ⇄ `reconciling` (one sweep step per interval), or `off`.
 * STOP finishes the batch in hand (reads are woken by the service), then `stopped`.
 *
 * @example
 * ```ts
 * const actor = createActor(createPersisterMachine(ports, { backoffMinMs: 200, backoffMaxMs: 10_000, reconcileMs: 30_000 })).start()
 * actor.send({ type: 'STOP' })
 * ```
 */
export function createPersisterMachine(ports: PersisterPorts, timing: { backoffMinMs: number; backoffMaxMs: number; reconcileMs: number }) {
  return setup({
    types: { context: {} as Ctx, events: {} as { type: 'STOP' } },
    actors: {
      connect: fromPromise<void>(() => ports.connect()),
      prepare: fromPromise<void>(() => ports.prepare()),
      read: fromPromise<HeldBatch>(() => ports.read()),
      write: fromPromise<void, HeldBatch>(({ input }) => ports.write(input)),
      release: fromPromise<void, HeldBatch>(({ input }) => ports.release(input)),
      reconcile: fromPromise<void>(({ signal }) => ports.reconcile(signal)),
    },
    delays: {
      backoff: ({ context }) => backoffMs(context.failures, timing.backoffMinMs, timing.backoffMaxMs),
      reconcile: Math.max(1, timing.reconcileMs),
    },
    actions: {
      failed: assign(({ context }, params: { resume: Resume }) => ({ failures: context.failures + 1, resume: params.resume })),
    },
    guards: {
      stopping: ({ context }) => context.stopping,
      hasEntries: (_, batch: HeldBatch) => batch.deliveries.length + batch.parked.length > 0,
    },
  }).createMachine({
    id: 'persister',
    initial: 'running',
    context: { batch: null, failures: 0, resume: 'connecting', stopping: false },
    states: {
      running: {
        type: 'parallel',
        states: {
          pipeline: {
            initial: 'connecting',
            states: {
              connecting: {
                on: { STOP: '#persister.stopped' },
                invoke: { src: 'connect', onDone: 'ensuringSchema', onError: { target: 'backingOff', actions: { type: 'failed', params: { resume: 'connecting' } } } },
              },
              ensuringSchema: {
                on: { STOP: '#persister.stopped' },
                invoke: { src: 'prepare', onDone: { target: 'consuming', actions: assign({ failures: 0 }) }, onError: { target: 'backingOff', actions: { type: 'failed', params: { resume: 'ensuringSchema' } } } },
              },
              consuming: {
                on: { STOP: { actions: assign({ stopping: true }) } },
                invoke: {
                  src: 'read',
                  onDone: [
                    { guard: { type: 'hasEntries', params: ({ event }) => event.output }, target: 'writing', actions: assign({ batch: ({ event }) => event.output }) },
                    { guard: 'stopping', target: '#persister.stopped' },
                    { target: 'consuming', reenter: true, actions: assign({ failures: 0 }) },
                  ],
                  // A read fails when Redis refuses it (e.g. NOGROUP after the stream was deleted): recreate the group.
                  onError: [{ guard: 'stopping', target: '#persister.stopped' }, { target: 'backingOff', actions: { type: 'failed', params: { resume: 'ensuringSchema' } } }],
                },
              },
              writing: {
                on: { STOP: { actions: assign({ stopping: true }) } },
                invoke: {
                  src: 'write',
                  input: ({ context }) => context.batch ?? { deliveries: [], parked: [], asked: 0 },
                  onDone: [
                    { guard: 'stopping', target: '#persister.stopped', actions: assign({ batch: null }) },
                    { target: 'consuming', actions: assign({ batch: null, failures: 0 }) },
                  ],
                  onError: [{ guard: 'stopping', target: '#persister.stopped' }, { target: 'backingOff', actions: { type: 'failed', params: { resume: 'writing' } } }],
                },
              },
              releasing: {
                on: { STOP: '#persister.stopped' },
                invoke: {
                  src: 'release',
                  input: ({ context }) => context.batch ?? { deliveries: [], parked: [], asked: 0 },
                  // Released or not (Redis away: it is claimable once idle anyway), the batch is no longer ours.
                  onDone: { target: 'connecting', actions: assign({ batch: null }) },
                  onError: { target: 'connecting', actions: assign({ batch: null }) },
                },
              },
              backingOff: {
                on: { STOP: '#persister.stopped' },
                after: {
                  backoff: [
                    { guard: ({ context }) => context.resume === 'writing' && context.failures >= RELEASE_AFTER_FAILURES, target: 'releasing' },
                    { guard: ({ context }) => context.resume === 'writing', target: 'writing' },
                    { guard: ({ context }) => context.resume === 'ensuringSchema', target: 'ensuringSchema' },
                    { target: 'connecting' },
                  ],
                },
              },
            },
          },
          housekeeping: {
            initial: timing.reconcileMs > 0 ? 'waiting' : 'off',
            states: {
              off: {},
              waiting: { after: { reconcile: 'reconciling' } },
              reconciling: { invoke: { src: 'reconcile', onDone: 'waiting', onError: 'waiting' } },
            },
          },
        },
      },
      stopped: { type: 'final' },
    },
  })
}

/** Waits for `p` at most `ms`, ignoring its failure: Redis commands queue while it is down. */
async function briefly(p: Promise<unknown> | undefined, ms = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p?.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))])
  clearTimeout(timer)
}

/** The pipeline state shown in health records and `troupe persister status`. */
export type PersisterState = 'connecting' | 'ensuringSchema' | 'consuming' | 'writing' | 'backingOff' | 'releasing' | 'stopped'

/** Counters of this service since it started. */
export interface PersisterStats {
  batches: number
  events: number
  parked: number
  expired: number
  /** Entries trimmed from running workflows' streams (see runtime/persister/trim.ts). */
  trimmed: number
  /** The last error seen (cleared on the next success). */
  lastError: string
}

/** The persister hosted by a runtime process (role `persister`). */
export class PersisterService implements HostedService {
  readonly role = 'persister'
  readonly opts: ResolvedPersisterOptions
  readonly stats: PersisterStats = { batches: 0, events: 0, parked: 0, expired: 0, trimmed: 0, lastError: '' }
  private rt: Runtime | null = null
  private driver: Driver | null = null
  private blocking: RedisClient | null = null
  private queue: PersistenceQueue | null = null
  private writer: BatchWriter | null = null
  private reconciler: Reconciler | null = null
  private metrics: PersisterMetrics | null = null
  private actor: Actor<ReturnType<typeof createPersisterMachine>> | null = null
  private readonly size: AdaptiveSize
  private held: string[] = []
  private timers: NodeJS.Timeout[] = []
  private probing = false
  private lastClaim = 0
  private pruning = false
  private ownChecked = false
  private reconciling: Promise<unknown> = Promise.resolve()
  private outageSince = 0

  constructor(opts: PersisterOptions = {}) {
    this.opts = resolvePersisterOptions(opts)
    this.size = new AdaptiveSize(this.opts.minBatch, this.opts.maxBatch, this.opts.targetWriteMs)
  }

  /** The pipeline's current state. */
  get state(): PersisterState {
    const snap = this.actor?.getSnapshot()
    if (!snap || snap.status !== 'active') return 'stopped'
    const value = snap.value as { running?: { pipeline?: PersisterState } } | string
    return typeof value === 'object' ? (value.running?.pipeline ?? 'stopped') : 'stopped'
  }

  start(rt: Runtime): Promise<void> {
    this.rt = rt
    this.metrics = new PersisterMetrics(rt.metrics.registry)
    this.driver = createNeo4jDriver(this.opts)
    this.blocking = createRedis(rt.cfg.redisUrl, { name: 'troupe-persister' })
    this.blocking.on('error', (err: Error) => rt.log.debug('persister redis connection error', { error: err.message }))
    this.queue = new PersistenceQueue(rt.redis, this.blocking, rt.keys, rt.serviceId, this.opts.parkedMaxLen)
    const deps = { redis: rt.redis, keys: rt.keys, driver: this.driver, metrics: this.metrics, log: rt.log, opts: this.opts }
    this.writer = new BatchWriter({ ...deps, queue: this.queue, streamMaxLen: rt.cfg.streamMaxLen })
    this.reconciler = new Reconciler(deps)
    this.actor = createActor(createPersisterMachine(this.ports(), this.opts))
    this.actor.start()
    const every = (ms: number, fn: () => Promise<void>): void => {
      const t = setInterval(() => void fn(), ms)
      t.unref()
      this.timers.push(t)
    }
    every(1000, () => this.probe())
    // On a timer of its own, not in the reconciliation sweep: with that off
    // (--reconcile-every 0) the consumers of every persister that ever ran piled up.
    every(Math.min(10 * 60_000, Math.max(1000, Math.floor(this.opts.pruneIdleMs / 2))), () => this.prune())
    // While a batch is held (a slow write, a backoff), keep it from looking abandoned.
    every(Math.max(100, Math.floor(this.opts.claimIdleMs / 3)), async () => {
      if (this.held.length > 0) await this.queue?.touch(this.held).catch(() => undefined)
    })
    rt.log.info(`persister ${rt.serviceId} writing to ${this.opts.neo4jUri} (claim after ${this.opts.claimIdleMs} ms idle, reconcile every ${this.opts.reconcileMs || 'never'} ms)`)
    // Not waiting for Neo4j: a persister started during an outage backs off and catches up.
    return Promise.resolve()
  }

  async stop(): Promise<void> {
    const actor = this.actor
    if (actor) {
      actor.send({ type: 'STOP' })
      await briefly(this.queue?.unblock())
      await waitFor(actor, (s) => s.status === 'done', { timeout: 15_000 }).catch(() => undefined)
      actor.stop()
    }
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    // An hour of idleness is past any persister's claim threshold.
    if (this.held.length > 0) await briefly(this.queue?.release(this.held, Math.max(this.opts.claimIdleMs, 3_600_000)))
    await briefly(this.reconciling, 5000)
    this.blocking?.disconnect()
    await this.driver?.close()
  }

  /** Ready when Neo4j answers. */
  async ready(): Promise<boolean> {
    return this.driver ? await neo4jReachable(this.driver, this.opts.database) : false
  }

  health(): Record<string, string> {
    return {
      persister: this.state,
      persisterBacklog: String(this.metrics?.backlogCount() ?? 0),
      persisterLagMs: String(Math.round(this.metrics?.lagMs() ?? 0)),
      persisterEvents: String(this.stats.events),
      persisterParked: String(this.stats.parked),
    }
  }

  /** Reconciles now: one workflow (or several), or a whole sweep without the settle time. */
  async reconcileNow(ids?: readonly string[]): Promise<ReconcileReport> {
    if (!this.reconciler) throw new Error('persister is not started')
    return ids ? await this.reconciler.workflows(ids) : await this.reconciler.all()
  }

  private async probe(): Promise<void> {
    if (this.probing || !this.queue || !this.metrics) return
    this.probing = true
    try {
      this.metrics.setProbe(await this.queue.probe())
    } catch {
      // The lag gauge keeps ageing from the last probe while Redis is away.
    } finally {
      this.probing = false
    }
  }

  private async prune(): Promise<void> {
    if (this.pruning || !this.queue) return
    this.pruning = true
    try {
      const n = await this.queue.pruneConsumers(this.opts.pruneIdleMs)
      if (n > 0) this.rt?.log.info(`persister: removed ${n} consumer${n === 1 ? '' : 's'} of persisters gone (idle ${this.opts.pruneIdleMs} ms or more, holding nothing)`)
    } catch (err) {
      // Redis away, or the group not created yet: the next tick tries again.
      this.rt?.log.debug('persister: pruning consumers failed', { error: describeError(err) })
    } finally {
      this.pruning = false
    }
  }

  private failed(err: unknown, what: string): void {
    const rt = this.rt as Runtime
    const kind = isNeo4jError(err) ? 'neo4j' : 'redis'
    this.metrics?.errors.inc({ kind })
    this.stats.lastError = describeError(err)
    if (this.outageSince === 0) {
      this.outageSince = Date.now()
      rt.log.warn(`persister: ${what} failed, backing off (nothing is lost; entries stay in persistence:queue)`, { error: this.stats.lastError })
    } else {
      rt.log.debug(`persister: ${what} failed again`, { error: this.stats.lastError })
    }
  }

  private recovered(): void {
    if (this.outageSince === 0) return
    this.rt?.log.info(`persister: recovered after ${((Date.now() - this.outageSince) / 1000).toFixed(1)} s`)
    this.outageSince = 0
    this.stats.lastError = ''
  }

  private ports(): PersisterPorts {
    const queue = this.queue as PersistenceQueue
    const driver = this.driver as Driver
    const o = this.opts
    const guard = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn()
      } catch (err) {
        this.failed(err, what)
        throw err
      }
    }
    const claimEvery = Math.min(5000, Math.max(200, Math.floor(o.claimIdleMs / 4)))
    return {
      connect: () => guard('connecting to Neo4j', async () => {
        await driver.getServerInfo(o.database ? { database: o.database } : {})
      }),
      prepare: () => guard('preparing', async () => {
        await ensureSchema(driver, o.database)
        await queue.ensureGroup()
        this.recovered()
      }),
      read: () => guard('reading persistence:queue', async () => {
        const asked = this.size.value
        // Entries this consumer name already holds (a restart under a fixed
        // serviceId), batch after batch until none is left.
        if (!this.ownChecked) {
          const own = await queue.claimBatch(0, asked, o.maxDeliveries, true)
          if (own.deliveries.length + own.parked.length > 0) return this.hold({ ...own, asked })
          this.ownChecked = true
        }
        const now = Date.now()
        if (now - this.lastClaim >= claimEvery) {
          this.lastClaim = now
          const claimed = await queue.claimBatch(o.claimIdleMs, asked, o.maxDeliveries)
          if (claimed.deliveries.length + claimed.parked.length > 0) {
            // More may wait (the rest of a dead persister's entries, or those left
            // unclaimed while a suspect is written alone): the next read claims again.
            this.lastClaim = 0
            this.rt?.log.info(`persister: took over ${claimed.deliveries.length + claimed.parked.length} entries idle for ${o.claimIdleMs} ms or more`)
            return this.hold({ ...claimed, asked })
          }
        }
        return this.hold({ deliveries: await queue.read(asked, o.blockMs), parked: [], asked })
      }),
      write: (batch) => guard('writing to Neo4j', async () => {
        const w = this.writer as BatchWriter
        const rep = await w.write(batch.deliveries, batch.parked)
        this.held = []
        this.size.observe(batch.asked, batch.deliveries.length, rep.seconds * 1000)
        this.stats.batches++
        this.stats.events += rep.events
        this.stats.parked += rep.parked
        this.stats.expired += rep.expired
        this.stats.trimmed += rep.trimmed
        this.recovered()
      }),
      release: async (batch) => {
        this.held = []
        // Not ours to take back at once: the next own claim waits one more claim
        // period, so that another persister (one that can write) takes the batch
        // first; alone, this one takes it back a few seconds later.
        this.lastClaim = Date.now() + claimEvery
        // Handed back, they are no longer this consumer's own pending entries to
        // take back at once (the own claim ignores the claim period).
        this.ownChecked = true
        const ids = [...batch.deliveries.map((d) => d.id), ...batch.parked.map((p) => p.entryId)]
        this.rt?.log.warn(`persister: handing back ${ids.length} entries after ${RELEASE_AFTER_FAILURES} failed writes in a row; another persister takes them at its next claim (or this one, a claim period later, once Neo4j answers)`)
        await queue.release(ids, Math.max(o.claimIdleMs, 3_600_000))
      },
      reconcile: (signal) => {
        const run = (async () => {
          try {
            const r = this.reconciler as Reconciler
            await r.step(this.metrics?.lagMs() ?? 0, signal)
          } catch (err) {
            this.metrics?.errors.inc({ kind: 'reconcile' })
            this.rt?.log.debug('persister: reconciliation step failed', { error: describeError(err) })
          }
        })()
        this.reconciling = run
        return run
      },
    }
  }

  private hold(batch: HeldBatch): HeldBatch {
    this.held = [...batch.deliveries.map((d) => d.id), ...batch.parked.map((p) => p.entryId)]
    return batch
  }
}

/**
 * Creates the persister as a service for `startRuntime({ services })` or
 * `troupe start --persister`.
 *
 * @example
 * ```ts
 * const rt = await startRuntime({ agents: [], services: [persisterService({ neo4jUri: 'bolt://127.0.0.1:7687' })] })
 * ```
 */
export function persisterService(opts: PersisterOptions = {}): PersisterService {
  return new PersisterService(opts)
}
