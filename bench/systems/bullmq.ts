// BullMQ's side: what a BullMQ user would write for the same work. No-op jobs on one
// queue; the multi-agent workflow as a flow (the planner job adds the tree
// reviewer ← writer ← 3 researchers with a FlowProducer, and each parent reads its
// children's return values, which is where BullMQ keeps the workflow's state).
// Defaults everywhere (completed jobs are kept, as BullMQ does unless told otherwise).
import { FlowProducer, Queue, Worker, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import { probe } from '../lib/probe.ts'
import { ANGLES, type BenchWorker, type WorkerSpec } from '../lib/spec.ts'

function connect(url: string): Redis {
  // BullMQ requires maxRetriesPerRequest null on the connections its workers block on.
  return new Redis(url, { maxRetriesPerRequest: null })
}

/** BullMQ's key prefix for a run: its keys read `<prefix>:<queue>:...`. */
export function bullPrefix(prefix: string): string {
  return prefix.replace(/:$/, '')
}

type FlowData = { topic: string; t0: number; angle?: number }

/** A worker process: one Worker per queue, each at the spec's concurrency. */
export function bullWorker(spec: WorkerSpec): BenchWorker {
  const conn = connect(spec.redisUrl)
  const prefix = bullPrefix(spec.prefix)
  const opts = { connection: conn, prefix, concurrency: spec.concurrency, autorun: false }
  const workers: Worker[] = []
  let flow: FlowProducer | null = null
  if (spec.workload === 'noop') {
    const w = new Worker('noop', async (job: Job<{ t: number }>) => {
      probe.started(job.data.t)
      await Promise.resolve()
    }, opts)
    w.on('completed', () => probe.finished())
    workers.push(w)
  } else if (spec.workload === 'flow') {
    flow = new FlowProducer({ connection: conn, prefix })
    const producer = flow
    workers.push(
      new Worker('planner', async (job: Job<FlowData>) => {
        probe.started(0)
        const { topic, t0 } = job.data
        await producer.add({
          name: 'review', queueName: 'reviewer', data: { topic, t0 },
          children: [{
            name: 'write', queueName: 'writer', data: { topic, t0 },
            children: Array.from({ length: ANGLES }, (_, angle) => ({ name: 'research', queueName: 'researcher', data: { topic, t0, angle } })),
          }],
        })
        return { topic, angles: ANGLES }
      }, opts),
      new Worker('researcher', async (job: Job<FlowData>) => {
        await Promise.resolve()
        return { angle: job.data.angle, text: `${job.data.topic} #${job.data.angle ?? 0}` }
      }, opts),
      new Worker('writer', async (job: Job<FlowData>) => {
        const findings = Object.values(await job.getChildrenValues<{ angle: number; text: string }>())
        return { draft: findings.map((f) => f.text).join('; ') }
      }, opts),
    )
    const reviewer = new Worker('reviewer', async (job: Job<FlowData>) => {
      const [written] = Object.values(await job.getChildrenValues<{ draft: string }>())
      return { verdict: `approved ${written?.draft.length ?? 0} chars` }
    }, opts)
    // The workflow is done when the reviewer's job is: BullMQ emits `completed`
    // once moveToCompleted has returned, the same point Troupe's and the naive
    // pattern's end-to-end latency stop at (their completing write is done).
    reviewer.on('completed', (job: Job<FlowData>) => {
      probe.latencySince(job.data.t0)
      probe.finished()
    })
    workers.push(reviewer)
  } else {
    throw new Error('BullMQ has no idle workload in this harness')
  }
  for (const w of workers) w.on('failed', () => probe.count('bullmq_failed'))
  return {
    async go() {
      await Promise.all(workers.map((w) => w.waitUntilReady()))
      for (const w of workers) {
        w.run().catch((err: unknown) => console.error(`bullmq worker ${w.name} stopped: ${String(err)}`))
      }
    },
    async stop() {
      await Promise.all(workers.map((w) => w.close()))
      await flow?.close()
      conn.disconnect()
    },
  }
}

/** The producer side: jobs added through the public Queue API. */
export class BullProducer {
  private readonly conn: Redis
  private readonly queues = new Map<string, Queue>()

  constructor(redisUrl: string, readonly prefix: string) {
    this.conn = connect(redisUrl)
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name)
    if (!q) {
      q = new Queue(name, { connection: this.conn, prefix: bullPrefix(this.prefix) })
      this.queues.set(name, q)
    }
    return q
  }

  /** `n` no-op jobs with addBulk, in chunks. */
  async backlog(n: number): Promise<void> {
    const q = this.queue('noop')
    for (let i = 0; i < n; i += 1000) {
      await q.addBulk(Array.from({ length: Math.min(1000, n - i) }, () => ({ name: 'tick', data: { t: 0 } })))
    }
  }

  async send(t: number): Promise<void> {
    await this.queue('noop').add('tick', { t })
  }

  async startFlow(t0: number): Promise<void> {
    await this.queue('planner').add('plan', { topic: 'fusion', t0 })
  }

  async close(): Promise<void> {
    for (const q of this.queues.values()) await q.close()
    this.conn.disconnect()
  }
}
