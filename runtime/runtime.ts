// A runtime process: hosts some agents (a worker each), shares one Redis command
// connection, one pub/sub connection, one Redlock and one metrics Registry, and
// drains cleanly on stop.
import { createServer, type Server, type ServerResponse } from 'node:http'
import { hostname } from 'node:os'
import { Redlock } from '@sesamecare-oss/redlock'
import { nanoid } from 'nanoid'
import { isAgentDefinition, type AgentDefinition } from './agent.ts'
import type { ActivationEnv } from './activation.ts'
import { isLiveRegistration } from './client.ts'
import { fleetSettings, loadConfig, MAX_TIMER_MS, type FleetSettings, type TroupeConfig } from './config.ts'
import type { ProtocolContext } from './claims.ts'
import { TroupeError } from './errors.ts'
import { gcTuningFromEnv, tuneGarbageCollector } from './gc-tuning.ts'
import { createLogger, type Logger } from './log.ts'
import type { SendProblem } from './live-actor.ts'
import { RuntimeMetrics } from './metrics.ts'
import { closeRedis, createRedis, waitReachable, type RedisClient } from './redis/connection.ts'
import { Keys } from './redis/keys.ts'
import { loadScripts, runScript } from './redis/scripts.ts'
import { execAll, execOps } from './redis/batch.ts'
import { Subscriber } from './subscriber.ts'
import { TERMINAL_STATUSES, type WorkflowStatusValue } from './types.ts'
import { AgentWorker } from './worker.ts'

/**
 * A component hosted by a runtime process next to its agents (supervisor,
 * persister, gateway): started after the workers, stopped while they drain.
 */
export interface HostedService {
  /** Role name shown in `system:health` and `troupe status` (e.g. `supervisor`). */
  readonly role: string
  start(rt: Runtime): Promise<void>
  stop(): Promise<void>
  /** Extra readiness check for `/readyz` (e.g. Neo4j reachable); true when ready. */
  ready?(): Promise<boolean>
  /** Extra fields for this process's `system:health` record. */
  health?(): Record<string, string>
}

/** Options of {@link startRuntime}. */
export interface RuntimeOptions {
  /** Agents hosted by this process (may be empty when `services` are given). */
  agents: readonly AgentDefinition[]
  /** Built-in components hosted by this process. */
  services?: readonly HostedService[]
  /** Heartbeat interval (default 2 s); `system:health:<id>` lives for 5 intervals. */
  heartbeatMs?: number
  config?: Partial<TroupeConfig>
  /** Start even when Redis may evict keys without TTL (`maxmemory-policy`). */
  allowEviction?: boolean
  /** Port of the `/metrics`, `/healthz`, `/readyz` server; 0 picks a free one; false disables it (default `TROUPE_METRICS_PORT`, else 0). */
  metricsPort?: number | false
  /** Bound on the graceful drain at stop (default 10 s). */
  drainTimeoutMs?: number
  serviceId?: string
  logger?: Logger
  /**
   * Turn V8's allocation-site pretenuring off for this process (default: on
   * unless `TROUPE_GC_TUNING=off`): it misjudges activations' short-lived
   * objects, and with it on a runtime spends 15–25% more CPU (in scavenges).
   * It is a process-wide V8 setting; see docs/operations.md.
   */
  gcTuning?: boolean
}

/** Resolves with `p`'s value, or undefined after `ms`, without leaving a timer behind. */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** Heartbeats between two readings of Redis's clock (see Runtime.clockOffset). */
/**
 * How long a newer version's registration of an agent stands against older
 * runtimes' refreshes (see register.lua): three refresh periods, so one missed
 * refresh does not hand the registry back to the old version mid-rollout.
 */
export const REGISTRATION_HOLD_MS = 30_000
const CLOCK_SYNC_EVERY = 15
/**
 * A reading of Redis's clock whose round trip took longer is not trusted (a
 * reconnect's offline queue, a stalled event loop): the offset would be off by
 * half of it. The next heartbeat tries again.
 */
const CLOCK_SYNC_MAX_RTT_MS = 100
/** Eviction policies that never evict keys without a TTL (our queues and mailboxes). */
const SAFE_POLICIES = new Set(['noeviction', 'volatile-lru', 'volatile-lfu', 'volatile-random', 'volatile-ttl'])

/** Checks `maxmemory-policy`; throws a TroupeError unless it is safe or `allow` is set. */
export async function checkEvictionPolicy(redis: RedisClient, allow: boolean, log: Logger): Promise<void> {
  let policy: string | undefined
  try {
    const r = await redis.config('GET', 'maxmemory-policy')
    policy = r[1]
  } catch {
    log.warn('cannot read maxmemory-policy (CONFIG disabled?): make sure Redis never evicts keys without TTL')
    return
  }
  if (policy && !SAFE_POLICIES.has(policy)) {
    const msg = `Redis maxmemory-policy is ${policy}: it may evict queued actions. Set it to noeviction (redis-cli CONFIG SET maxmemory-policy noeviction) or start with --allow-eviction`
    if (!allow) throw new TroupeError('eviction_policy', msg)
    log.warn(msg)
  }
}

/** A started runtime process. */
export class Runtime {
  readonly serviceId: string
  readonly keys: Keys
  readonly metrics = new RuntimeMetrics({ version: '0.1.0' })
  readonly workers = new Map<string, AgentWorker>()
  private readonly pending = new Set<Promise<unknown>>()
  private sub: Subscriber | null = null
  private server: Server | null = null
  private registryTimer: NodeJS.Timeout | null = null
  /** When the agent registry was last read (ms): an unknown send target reads it again, at most every 250 ms. */
  private registryReadAt = 0
  /** Agents with a live registration (see REGISTRATION_STALE_MS in client.ts), and ours. */
  private knownAgents = new Set<string>()
  /** Agents registered only stale, with when (Redis's clock): named in a refused send's error. */
  private staleAgents = new Map<string, number>()
  /** The registry refresh in flight, and the one queued behind it (see refreshRegistry). */
  private registryRun: Promise<void> | null = null
  private registryNext: Promise<void> | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  /** A timer's heartbeat is in flight: the next tick skips (see start). */
  private beating = false
  readonly startedAt = Date.now()
  /**
   * Redis's clock minus this host's, from the last heartbeat's TIME: `lastSeen`
   * is stamped on Redis's clock, which the supervisor judges it by, so a host
   * whose clock runs ahead or behind is not marked dead (or kept alive) for it.
   */
  private clockOffset = 0
  /** Heartbeat interval: the option, else `TROUPE_HEARTBEAT_MS`, else 2 s. */
  readonly heartbeatMs: number
  /** Address of the metrics server once listening, e.g. `http://127.0.0.1:9464/metrics`. */
  metricsUrl = ''

  constructor(
    readonly redis: RedisClient,
    readonly cfg: TroupeConfig,
    private readonly opts: RuntimeOptions,
    readonly log: Logger,
  ) {
    this.serviceId = opts.serviceId ?? `${hostname()}-${process.pid}-${nanoid(6)}`
    this.heartbeatMs = opts.heartbeatMs ?? heartbeatFromEnv(process.env.TROUPE_HEARTBEAT_MS)
    this.keys = new Keys(cfg.namespace)
  }

  /**
   * The settings the scripts must see the same way in every process and client
   * of the namespace, published with each agent's registration: clients compare
   * them with their own before they send (see TroupeClient.validateTarget).
   */
  private get fleet(): FleetSettings {
    return fleetSettings(this.cfg)
  }

  /** Protocol context shared by workers. */
  get ctx(): ProtocolContext {
    return { redis: this.redis, keys: this.keys, cfg: this.cfg }
  }

  /** Runs a follow-up write without blocking the caller, logging (never dropping) failures. */
  background(p: Promise<unknown>): void {
    const tracked = p.catch((err: unknown) => {
      this.metrics.protocolErrors.inc({ step: 'follow-up' })
      this.log.error('background write failed', { error: err instanceof Error ? err.message : String(err) })
    })
    this.pending.add(tracked)
    void tracked.finally(() => this.pending.delete(tracked))
  }

  private checkSend(to: string, type: string, payloadJson: string): SendProblem | null {
    if (!this.knownAgents.has(to)) {
      // The registry here is a copy refreshed every 10 s: a runtime that started
      // since may host `to`. Read it again now, and let the action fail and be
      // retried (its backoff outlasts the read); an agent nobody hosts still ends
      // in the dead letters, after the agent's attempts.
      if (Date.now() - this.registryReadAt > 250) {
        // Stamped before the read, not after: sends made while it is in flight (or
        // while Redis is unreachable) must not start one read each.
        this.registryReadAt = Date.now()
        this.refreshInBackground()
      }
      // A stale registration is an agent no runtime hosts any more (retired or
      // renamed): refused as the client refuses it, not queued for no one.
      const at = this.staleAgents.get(to)
      const why = at === undefined
        ? 'no runtime has registered it'
        : Number.isFinite(at)
          ? `no live runtime hosts it: it was last registered ${Math.round((Date.now() + this.clockOffset - at) / 60_000)} minutes ago`
          : 'its registration has no time (written by hand?)'
      return { error: `sends action '${type}' to unknown agent '${to}' (${why})`, transient: true }
    }
    const size = Buffer.byteLength(payloadJson)
    if (size > this.cfg.maxPayloadBytes) return { error: `sends a ${size}-byte payload to '${to}', over the ${this.cfg.maxPayloadBytes}-byte limit`, transient: false }
    return null
  }

  /**
   * Writes our registrations and reads the registry back. One runs at a time: a
   * call while one is in flight gets the one queued behind it (which starts when
   * the first ends, so it sees whatever made the caller ask), never a third.
   * While Redis was away every timer tick and control message added a write that
   * ioredis queued and replayed at once on reconnect.
   */
  private refreshRegistry(): Promise<void> {
    if (!this.registryRun) return this.startRegistryRun()
    this.registryNext ??= this.registryRun.catch(() => undefined).then(() => {
      this.registryNext = null
      return this.startRegistryRun()
    })
    return this.registryNext
  }

  private startRegistryRun(): Promise<void> {
    const run: Promise<void> = this.registerAndRead().finally(() => {
      if (this.registryRun === run) this.registryRun = null
    })
    this.registryRun = run
    return run
  }

  /** A refresh in the background, unless one is queued already (which will do). */
  private refreshInBackground(): void {
    if (!this.registryNext) this.background(this.refreshRegistry())
  }

  private async registerAndRead(): Promise<void> {
    // Stamped on Redis's clock, as the clients and the supervisor judge a
    // registration's age by it (REGISTRATION_STALE_MS in client.ts).
    const updatedAt = Date.now() + this.clockOffset
    // A registration a newer version of the agent refreshed lately stands (a
    // rolling update: see register.lua); ours goes in once it has not been
    // refreshed for REGISTRATION_HOLD_MS.
    await runScript(this.redis, 'register', [this.keys.agents()], [
      24 * 3600 * 1000, REGISTRATION_HOLD_MS,
      ...this.opts.agents.flatMap((a) => [a.name, a.version, JSON.stringify({ version: a.version, actionTypes: a.actionTypes, actionPatterns: a.actionPatterns, ...this.fleet, updatedAt })]),
    ])
    this.registryReadAt = Date.now()
    const raw = await this.redis.hgetall(this.keys.agents())
    const now = Date.now() + this.clockOffset
    const known = new Set(this.opts.agents.map((a) => a.name))
    const stale = new Map<string, number>()
    for (const [name, json] of Object.entries(raw)) {
      const at = registeredAt(json)
      if (isLiveRegistration({ updatedAt: at }, now)) known.add(name)
      else if (!known.has(name)) stale.set(name, at)
    }
    this.knownAgents = known
    this.staleAgents = stale
  }

  async start(): Promise<void> {
    await checkEvictionPolicy(this.redis, this.opts.allowEviction ?? false, this.log)
    await loadScripts(this.redis)
    // Before the first registration, which is stamped on Redis's clock.
    await this.syncClock().catch(() => undefined)
    await this.refreshRegistry()
    this.registryTimer = setInterval(() => this.refreshInBackground(), 10_000)
    this.registryTimer.unref()
    const env: ActivationEnv = {
      ctx: this.ctx,
      redlock: new Redlock([this.redis], { retryCount: 0, driftFactor: 0.01, automaticExtensionThreshold: 0 }),
      metrics: this.metrics,
      log: this.log,
      checkSend: (to, type, p) => this.checkSend(to, type, p),
      background: (p) => this.background(p),
      handOff: (agent, wf, actionIds) => this.workers.get(agent)?.handOff(wf, actionIds) ?? false,
    }
    this.sub = new Subscriber(this.redis)
    await this.sub.subscribe(this.keys.control(), (msg) => this.onControl(msg))
    // An abort published while the subscription was down is lost to us: after a
    // reconnect, what runs here is checked against its workflow's status instead.
    this.sub.onResync(() => this.background(this.abortEnded()))
    // Other runtimes keep a copy of the agent registry: tell them ours is in it.
    // Read it once more now that we listen, so a runtime that registered between
    // our first read and the subscription is not missed.
    await this.redis.publish(this.keys.control(), JSON.stringify({ op: 'agents' }))
    await this.refreshRegistry()
    for (const def of this.opts.agents) {
      // Known label values start at zero so dashboards and rate() see every series from the first scrape.
      for (const outcome of ['completed', 'retried', 'dead', 'cancelled']) this.metrics.actions.inc({ agent: def.name, outcome }, 0)
      for (const c of [this.metrics.activations, this.metrics.handOffs, this.metrics.wakeUps, this.metrics.lockContention, this.metrics.fenceRejections, this.metrics.redeliveries, this.metrics.transitions, this.metrics.eventsPublished]) c.inc({ agent: def.name }, 0)
      this.metrics.activeActors.set({ agent: def.name }, 0)
      const w = new AgentWorker(env, def)
      this.workers.set(def.name, w)
    }
    if (this.opts.metricsPort !== false) await this.listen(this.opts.metricsPort ?? 0)
    await this.heartbeat('alive')
    const every = this.heartbeatMs
    this.heartbeatTimer = setInterval(() => {
      // One beat at a time: while Redis is away ioredis queues every command, and
      // a beat per tick piled up (a 100 ms heartbeat, 200 in 20 s) to be replayed
      // in one burst on reconnect. The beat after the reconnect says it all.
      if (this.beating) return
      this.beating = true
      this.background(this.heartbeat('alive').finally(() => (this.beating = false)))
    }, every)
    this.heartbeatTimer.unref()
    for (const w of this.workers.values()) w.start()
    for (const s of this.opts.services ?? []) await s.start(this)
    this.log.info(`runtime ${this.serviceId} (${this.roles.join(', ')}) hosting ${[...this.workers.keys()].join(', ') || 'no agents'}${this.metricsUrl ? ` (metrics ${this.metricsUrl})` : ''}`)
  }

  private onControl(msg: string): void {
    try {
      const m = JSON.parse(msg) as { op?: string; wf?: string; reason?: string; by?: string }
      if (m.op === 'abort' && typeof m.wf === 'string') {
        // An ending commit's abort (one per finished workflow, to every process)
        // only stops what runs: the workflow is over for any later activation anyway.
        const remember = m.by !== 'commit'
        for (const w of this.workers.values()) w.abortWorkflow(m.wf, `workflow ${m.reason ?? 'cancelled'}`, remember)
      } else if (m.op === 'agents') {
        this.refreshInBackground()
      }
    } catch {
      this.log.warn('ignoring malformed control message', { msg: msg.slice(0, 200) })
    }
  }

  /** Aborts the running actions of workflows that ended (or vanished), as their abort message would have. */
  private async abortEnded(): Promise<void> {
    const wfs = [...new Set([...this.workers.values()].flatMap((w) => [...w.active.keys()]))]
    if (wfs.length === 0) return
    // Each read on its own: one that fails (a Cluster node failing over) leaves
    // that workflow to its commit, not every other one unchecked.
    const res = await execOps(this.redis, wfs.map((wf) => ({ cmd: 'hget', args: [this.keys.status(wf), 'status'] })))
    wfs.forEach((wf, i) => {
      const [err, status] = res[i] ?? [new Error('no reply'), undefined]
      if (err) return
      if (status === null || TERMINAL_STATUSES.has(status as WorkflowStatusValue)) {
        for (const w of this.workers.values()) w.abortWorkflow(wf, `workflow ${typeof status === 'string' ? status : 'gone'}`)
      }
    })
  }

  private async listen(port: number): Promise<void> {
    this.server = createServer((req, res) => {
      void this.serveHttp(req.url ?? '/', res)
    })
    // Loopback unless told otherwise (containers set TROUPE_METRICS_HOST=0.0.0.0).
    const bind = process.env.TROUPE_METRICS_HOST || '127.0.0.1'
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject)
      this.server?.listen(port, bind, () => resolve())
    })
    const addr = this.server.address()
    if (addr && typeof addr === 'object') this.metricsUrl = `http://${advertisedHost(bind)}:${addr.port}/metrics`
  }

  /** The readiness PING in flight, which later probes join. */
  private redisPing: Promise<boolean> | null = null

  /**
   * Whether Redis answers a PING, sharing the one in flight: a probe gives up
   * on it after its own limit, and a stalled Redis (connected, not answering)
   * would otherwise have one more PING queued behind it per probe.
   */
  private pingRedis(): Promise<boolean> {
    this.redisPing ??= this.redis.ping().then(() => true, () => false).finally(() => {
      this.redisPing = null
    })
    return this.redisPing
  }

  private async serveHttp(url: string, res: ServerResponse): Promise<void> {
    try {
      if (url.startsWith('/metrics')) {
        const body = await this.metrics.registry.metrics()
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(body)
      } else if (url.startsWith('/healthz')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok', serviceId: this.serviceId }))
      } else if (url.startsWith('/readyz')) {
        const within = async (p: Promise<boolean>): Promise<boolean> => (await withTimeout(p.catch(() => false), 1000)) === true
        const checks: Record<string, boolean> = { redis: await within(this.pingRedis()) }
        for (const s of this.opts.services ?? []) if (s.ready) checks[s.role] = await within(s.ready())
        const ok = Object.values(checks).every(Boolean)
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: ok ? 'ready' : 'not ready', checks }))
      } else {
        res.writeHead(404).end()
      }
    } catch (err) {
      res.writeHead(500).end(err instanceof Error ? err.message : 'error')
    }
  }

  /** Roles of this process: `worker` when it hosts agents, plus each hosted service's. */
  get roles(): string[] {
    return [...(this.workers.size > 0 ? ['worker'] : []), ...(this.opts.services ?? []).map((s) => s.role)]
  }

  /** Writes this process's `system:health` record and `system:services` entry. */
  async heartbeat(status: 'alive' | 'stopped'): Promise<void> {
    if (status === 'alive' && this.final) return
    const every = this.heartbeatMs
    // The first heartbeat learns the offset before it writes (startRuntime awaits
    // it); later ones refresh it now and then (clocks drift slowly), not when stopping.
    if (status === 'alive' && (this.beats++ % CLOCK_SYNC_EVERY === 0 || this.syncDue)) await this.syncClock().catch(() => undefined)
    // A beat that waited on Redis's clock past the end of the drain must not
    // write 'alive' over the final 'stopped' (the supervisor would then mark a
    // clean stop dead once the record's TTL ran out).
    if (status === 'alive' && this.final) return
    const now = Date.now() + this.clockOffset
    const extra: Record<string, string> = {}
    for (const s of this.opts.services ?? []) Object.assign(extra, s.health?.() ?? {})
    const key = this.keys.health(this.serviceId)
    const fields = {
      serviceId: this.serviceId, roles: this.roles.join(','), agents: [...this.workers.keys()].join(','), pid: String(process.pid), host: hostname(),
      version: '0.1.0', startedAt: String(this.startedAt), lastSeen: String(now), status, active: JSON.stringify(this.activeCounts()),
      metricsUrl: this.metricsUrl, heartbeatMs: String(every), ...extra,
    }
    await execAll(this.redis, [
      { cmd: 'hset', args: [key, ...Object.entries(fields).flat()] },
      { cmd: 'pexpire', args: [key, status === 'stopped' ? 10 * 60_000 : every * 5] },
      { cmd: 'zadd', args: [this.keys.services(), now, this.serviceId] },
    ])
  }

  /** Heartbeats written so far (see CLOCK_SYNC_EVERY). */
  private beats = 0
  /** The last reading of Redis's clock failed or was not trusted: read it again at the next heartbeat. */
  private syncDue = true

  /** Learns Redis's clock from TIME, against the middle of the round trip. */
  private async syncClock(): Promise<void> {
    this.syncDue = true
    const sent = Date.now()
    const [s, us] = await this.redis.time()
    const back = Date.now()
    const server = Number(s) * 1000 + Math.floor(Number(us) / 1000)
    if (!Number.isFinite(server) || back - sent > CLOCK_SYNC_MAX_RTT_MS) return
    this.clockOffset = server - Math.round((sent + back) / 2)
    this.syncDue = false
  }

  /** Actors active in this process now, per agent. */
  activeCounts(): Record<string, number> {
    return Object.fromEntries([...this.workers].map(([n, w]) => [n, w.active.size]))
  }

  /**
   * Drains every worker (bounded), flushes follow-up writes, closes connections.
   * Every call returns the same promise: a second caller (SIGINT after SIGTERM, a
   * host's own exit path) waits for the one drain instead of exiting in its middle.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutDown()
    return this.stopping
  }

  private stopping: Promise<void> | null = null
  /** The drain is over: only the 'stopped' heartbeat may be written now. */
  private final = false

  private async shutDown(): Promise<void> {
    if (this.registryTimer) clearInterval(this.registryTimer)
    const timeout = this.opts.drainTimeoutMs ?? 10_000
    // Workers stop picking at once and drain while the services stop (those
    // waited first, and took new work meanwhile, so a drain could start late
    // enough for the orchestrator's kill to land before its hand-back).
    const drained = Promise.all([...this.workers.values()].map((w) => w.drain(timeout)))
    for (const s of [...(this.opts.services ?? [])].reverse()) {
      await s.stop().catch((err: unknown) => this.log.error(`stopping ${s.role} failed`, { error: err instanceof Error ? err.message : String(err) }))
    }
    await drained
    // Heartbeats go on through the drain: a process that went quiet for three
    // of them was marked dead by the supervisor in the middle of a clean stop.
    this.final = true
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer)
    await withTimeout(Promise.all(this.pending), timeout)
    if (this.workers.size + (this.opts.services?.length ?? 0) > 0) {
      await withTimeout(this.heartbeat('stopped'), 1000).catch(() => undefined)
    }
    this.sub?.close()
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
    await closeRedis(this.redis)
  }
}

/** When a `system:agents` value was written (Redis's clock), or NaN when it does not say (a hand edit). */
function registeredAt(json: string): number {
  try {
    const v = JSON.parse(json) as { updatedAt?: unknown }
    return typeof v === 'object' && v !== null && typeof v.updatedAt === 'number' ? v.updatedAt : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** `TROUPE_METRICS_PORT`, read as the CLI reads it: digits from 0 to 65535 (set but blank is refused); unset is 0 (a free port). */
function metricsPortFromEnv(raw: string | undefined): number {
  if (raw === undefined) return 0
  // Digits only: Number(' ') is 0, which would quietly mean "any free port".
  const p = /^\d{1,5}$/.test(raw) ? Number(raw) : NaN
  if (!(p >= 0 && p <= 65535)) throw new TroupeError('config', `TROUPE_METRICS_PORT=${JSON.stringify(raw)} must be a port number (0-65535)`)
  return p
}

/**
 * Starts a runtime process hosting `agents`.
 *
 * @example
 * ```ts
 * const rt = await startRuntime({ agents: [planner, researcher], config: { redisUrl: 'redis://127.0.0.1:6379' } })
 * process.on('SIGTERM', () => void rt.stop())
 * ```
 */
export async function startRuntime(opts: RuntimeOptions): Promise<Runtime> {
  const cfg = loadConfig(opts.config)
  if (opts.agents.length === 0 && (opts.services?.length ?? 0) === 0) throw new TroupeError('config', 'a runtime needs at least one agent or service')
  const names = new Set<string>()
  opts.agents.forEach((a: unknown, i) => {
    // A plain { name, machine } (defineAgent forgotten, or cast past the types)
    // registered no action types: its actions stayed queued without a word, and
    // its registration broke every validated send of the namespace.
    if (!isAgentDefinition(a)) {
      const named = typeof a === 'object' && a !== null && typeof (a as { name?: unknown }).name === 'string' ? ` (${JSON.stringify((a as { name: string }).name)})` : ''
      throw new TroupeError('config', `agents[${i}]${named} is not an agent definition: wrap it in defineAgent({ name, machine })`)
    }
    if (names.has(a.name)) throw new TroupeError('config', `agent ${a.name} is defined twice`)
    names.add(a.name)
  })
  const log = opts.logger ?? createLogger('runtime')
  // Checked before a connection exists: a bad setting must not leave one open.
  // Past MAX_TIMER_MS Node fires a timer after 1 ms: a heartbeat every
  // millisecond, or a drain that gives up at once.
  if (opts.heartbeatMs === undefined) heartbeatFromEnv(process.env.TROUPE_HEARTBEAT_MS)
  // Whole: it becomes a TTL (PEXPIRE), which Redis refuses with a fraction.
  else if (!(Number.isInteger(opts.heartbeatMs) && opts.heartbeatMs >= 50 && opts.heartbeatMs <= MAX_TIMER_MS)) throw new TroupeError('config', `heartbeatMs must be a whole number from 50 to ${MAX_TIMER_MS} ms`)
  if (opts.drainTimeoutMs !== undefined && !(opts.drainTimeoutMs >= 0 && opts.drainTimeoutMs <= MAX_TIMER_MS)) {
    throw new TroupeError('config', `drainTimeoutMs (--drain-timeout) must be from 0 to ${MAX_TIMER_MS} ms`)
  }
  // The server starts after the agents registered and subscribed: a bad port
  // failed there with a raw RangeError, all that work done for nothing.
  const port = opts.metricsPort
  if (port !== undefined && port !== false && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new TroupeError('config', `metricsPort must be a whole number from 0 to 65535 (0 picks a free port), or false for no metrics server; got ${String(port)}`)
  }
  // TROUPE_METRICS_PORT, as the CLI reads it: an embedding process whose
  // Prometheus scrapes a fixed port got a random one (only the CLI read it).
  if (port === undefined) opts = { ...opts, metricsPort: metricsPortFromEnv(process.env.TROUPE_METRICS_PORT) }
  if (opts.gcTuning ?? gcTuningFromEnv(process.env.TROUPE_GC_TUNING)) {
    if (tuneGarbageCollector()) log.debug('V8 allocation-site pretenuring turned off (TROUPE_GC_TUNING=off keeps it)')
  }
  const redis = createRedis(cfg.redisUrl, { name: 'troupe-runtime' })
  redis.on('error', (err: Error) => log.debug('redis connection error', { error: err.message }))
  const rt = new Runtime(redis, cfg, opts, log)
  try {
    await waitReachable(redis, cfg.redisUrl)
    await rt.start()
  } catch (err) {
    await rt.stop().catch(() => undefined)
    throw err
  }
  return rt
}

/**
 * The host other machines should scrape, as published in `system:health` (and so
 * served by the supervisor's service discovery): TROUPE_METRICS_ADVERTISE_HOST
 * when set, else the bind address when it names one interface, else (bound to
 * every interface) this machine's host name. It used to be 127.0.0.1 always,
 * which only worked on one host.
 */
export function advertisedHost(bind: string, env: NodeJS.ProcessEnv = process.env, host: string = hostname()): string {
  const named = env.TROUPE_METRICS_ADVERTISE_HOST
  const h = named || (bind === '0.0.0.0' || bind === '::' ? host : bind)
  return h.includes(':') && !h.startsWith('[') ? `[${h}]` : h
}

/** TROUPE_HEARTBEAT_MS, or 2 s when unset; a bad value is an error like any other setting's (it used to fall back silently). */
export function heartbeatFromEnv(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 2000
  const v = /^\d+$/.test(raw) ? Number(raw) : Number.NaN
  if (!(v >= 50 && v <= MAX_TIMER_MS)) throw new TroupeError('config', `TROUPE_HEARTBEAT_MS=${raw} must be a whole number of milliseconds, from 50 to ${MAX_TIMER_MS} (as --heartbeat)`)
  return v
}
