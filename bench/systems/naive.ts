// The seed's naive pattern, written the way its README suggests: one list per
// workflow (`workflow:queue:<id>`, LPUSH to enqueue, RPOP to take), a plain Redlock
// on the workflow around every action, and the workflow's state in a hash. Workers
// learn which workflow has work from a global list of workflow ids (one entry per
// pushed action) that they BRPOP on, each loop on its own blocking connection.
//
// Choices made in the pattern's favour, so the comparison is not a straw man: the
// state and the outgoing actions are written in one MULTI, and Redlock retries every
// 10 ms (+ up to 10 ms jitter) instead of its default 200 ms.
import { Redlock, type Lock } from '@sesamecare-oss/redlock'
import { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { probe } from '../lib/probe.ts'
import { ANGLES, type BenchWorker, type WorkerSpec } from '../lib/spec.ts'

interface NaiveAction {
  type: 'plan' | 'research' | 'finding' | 'review'
  payload: Record<string, unknown>
}

class NaiveKeys {
  constructor(private readonly p: string) {}
  queue(wf: string): string {
    return `${this.p}workflow:queue:${wf}`
  }
  state(wf: string): string {
    return `${this.p}workflow:state:${wf}`
  }
  lock(wf: string): string {
    return `${this.p}lock:${wf}`
  }
  ready(): string {
    return `${this.p}workflow:ready`
  }
}

/** What handling one action changes: state fields, actions to push, completion. */
interface Effects {
  set: Record<string, string>
  send: NaiveAction[]
  complete: boolean
}

function handle(a: NaiveAction, state: Record<string, string>): Effects {
  const topic = typeof a.payload.topic === 'string' ? a.payload.topic : (state.topic ?? '')
  switch (a.type) {
    case 'plan':
      probe.started(0)
      return {
        set: { topic, t0: String(a.payload.t0), status: 'researching' },
        send: Array.from({ length: ANGLES }, (_, angle) => ({ type: 'research' as const, payload: { topic, angle } })),
        complete: false,
      }
    case 'research': {
      const done = Number(state.researched ?? 0) + 1
      return { set: { researched: String(done) }, send: [{ type: 'finding', payload: { angle: a.payload.angle, text: `${topic} #${String(a.payload.angle)}` } }], complete: false }
    }
    case 'finding': {
      const findings = Object.keys(state).filter((k) => k.startsWith('finding:')).length + 1
      const set: Record<string, string> = { [`finding:${String(a.payload.angle)}`]: String(a.payload.text) }
      if (findings < ANGLES) return { set, send: [], complete: false }
      const draft = [...Object.entries(state).filter(([k]) => k.startsWith('finding:')).map(([, v]) => v), String(a.payload.text)].join('; ')
      return { set: { ...set, status: 'reviewing' }, send: [{ type: 'review', payload: { draft } }], complete: false }
    }
    case 'review':
      return { set: { status: 'completed', verdict: `approved ${String(a.payload.draft).length} chars` }, send: [], complete: true }
  }
}

/**
 * A worker process: `spec.concurrency` loops, each taking one action at a time
 * (the harness gives it FLOW_STAGES × the run's concurrency: as many handler
 * slots as Troupe's agents and BullMQ's queues have together). Every action of a
 * workflow runs under that workflow's lock, so its three researches run one
 * after another: that is the seed's pattern, kept as it is.
 */
export function naiveWorker(spec: WorkerSpec): BenchWorker {
  if (spec.workload !== 'flow') throw new Error('the naive pattern runs only the flow in this harness')
  const keys = new NaiveKeys(spec.prefix)
  const redis = new Redis(spec.redisUrl, { maxRetriesPerRequest: null })
  const redlock = new Redlock([redis], { retryCount: 200, retryDelay: 10, retryJitter: 10 })
  let running = true
  const loops: Promise<void>[] = []

  async function one(blocking: Redis): Promise<void> {
    const popped = await blocking.brpop(keys.ready(), 1)
    if (!popped) return
    const wf = popped[1]
    let lock: Lock
    try {
      lock = await redlock.acquire([keys.lock(wf)], 5000)
    } catch {
      // Gave up after every retry: put the work back rather than lose it.
      probe.count('naive_lock_gave_up')
      await redis.lpush(keys.ready(), wf)
      return
    }
    probe.count('naive_lock_retries', lock.attempts.length - 1)
    try {
      const raw = await redis.rpop(keys.queue(wf))
      if (!raw) return
      const action = JSON.parse(raw) as NaiveAction
      const state = await redis.hgetall(keys.state(wf))
      const fx = handle(action, state)
      const m = redis.multi().hset(keys.state(wf), fx.set)
      for (const a of fx.send) m.lpush(keys.queue(wf), JSON.stringify(a)).lpush(keys.ready(), wf)
      await m.exec()
      // Stamped once the completing MULTI is done, like the other systems.
      if (fx.complete) {
        probe.latencySince(Number(state.t0 ?? 0))
        probe.finished()
      }
    } finally {
      await lock.release().catch(() => probe.count('naive_release_failed'))
    }
  }

  return {
    async go() {
      await redis.ping()
      for (let i = 0; i < spec.concurrency; i++) {
        const blocking = redis.duplicate()
        loops.push((async () => {
          while (running) {
            try {
              await one(blocking)
            } catch (err) {
              probe.count('naive_errors')
              if (running) console.error(`naive loop: ${err instanceof Error ? err.message : String(err)}`)
            }
          }
          blocking.disconnect()
        })())
      }
    },
    async stop() {
      running = false
      await Promise.all(loops)
      redis.disconnect()
    },
  }
}

/** The producer side: a workflow is its state hash plus its first action, in one MULTI. */
export class NaiveProducer {
  private readonly redis: Redis
  private readonly keys: NaiveKeys

  constructor(redisUrl: string, prefix: string) {
    this.redis = new Redis(redisUrl, { maxRetriesPerRequest: null })
    this.keys = new NaiveKeys(prefix)
  }

  async startFlow(t0: number): Promise<void> {
    const wf = nanoid()
    const first: NaiveAction = { type: 'plan', payload: { topic: 'fusion', t0 } }
    await this.redis.multi().hset(this.keys.state(wf), { status: 'running', t0: String(t0) }).lpush(this.keys.queue(wf), JSON.stringify(first)).lpush(this.keys.ready(), wf).exec()
  }

  async close(): Promise<void> {
    await this.redis.quit()
  }
}
