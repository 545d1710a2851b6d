// Troupe's side of every scenario: the bench agents, the worker process (a real
// runtime) and the producer (the client API, or the pipelined enqueue the client
// uses underneath when preparing a backlog).
import { assign, setup } from 'xstate'
import { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { completeWorkflow, defineAgent, Keys, sendToAgent, startRuntime, TroupeClient, type ActionEvent, type AgentDefinition, type Runtime } from '../../runtime/index.ts'
import { enqueueMany, type EnqueueArgs } from '../../runtime/claims.ts'
import { createLogger } from '../../runtime/log.ts'
import { probe } from '../lib/probe.ts'
import { excludeFromRoundTrips } from '../lib/round-trips.ts'
import { ANGLES, type BenchWorker, type WorkerSpec } from '../lib/spec.ts'

type Tick = ActionEvent<'tick', { t: number }>

/** Does nothing but record when it started (and, for paced actions, since when it waited). */
export function noopAgent(concurrency: number): AgentDefinition {
  return defineAgent({
    name: 'noop',
    concurrency,
    machine: setup({ types: { events: {} as Tick } }).createMachine({
      on: { tick: { actions: ({ event }) => probe.started(event.payload.t) } },
    }),
  })
}

type PlanEvent = ActionEvent<'plan', { topic: string; t0: number }>
type ResearchEvent = ActionEvent<'research', { topic: string; angle: number; t0: number }>
type Finding = { angle: number; text: string; t0: number }
type FindingEvent = ActionEvent<'finding', Finding>
type ReviewEvent = ActionEvent<'review', { draft: string; t0: number }>

/** The researcher agent of one angle: each workflow's three researches run as three independent actors. */
export function researcherName(angle: number): string {
  return `researcher-${angle}`
}

/**
 * Splits `concurrency` over the researcher agents (17 / 17 / 16 for 50), so the
 * flow has as many handler slots as BullMQ's four queues (4 × `concurrency`).
 */
export function researcherConcurrency(concurrency: number, angle: number): number {
  return Math.max(1, Math.floor(concurrency / ANGLES) + (angle < concurrency % ANGLES ? 1 : 0))
}

/**
 * Called by the writer when it sends the review, with the workflow and its start
 * time (0 during warm-up): the worker then watches for the workflow's end.
 */
export type WatchCompletion = (wf: string, t0: number) => void

/**
 * The multi-agent workflow with no-op work and real state (context) in every
 * agent: planner → researcher-0..2 (one research each, in parallel like BullMQ's
 * three child jobs) → writer (fans the three findings in with a join) → reviewer.
 */
export function flowAgents(concurrency: number, watch: WatchCompletion = () => undefined): AgentDefinition[] {
  const planner = defineAgent({
    name: 'planner',
    concurrency,
    machine: setup({ types: { context: {} as { topic: string; t0: number }, events: {} as PlanEvent } }).createMachine({
      context: { topic: '', t0: 0 },
      initial: 'idle',
      states: {
        idle: {
          on: {
            plan: {
              target: 'delegated',
              actions: [
                () => probe.started(0),
                assign({ topic: ({ event }) => event.payload.topic, t0: ({ event }) => event.payload.t0 }),
                ...Array.from({ length: ANGLES }, (_, angle) =>
                  sendToAgent(researcherName(angle), 'research', ({ context }: { context: { topic: string; t0: number } }) => ({ topic: context.topic, angle, t0: context.t0 }))),
              ],
            },
          },
        },
        delegated: { type: 'final' },
      },
    }),
  })
  const researchers = Array.from({ length: ANGLES }, (_, angle) => defineAgent({
    name: researcherName(angle),
    concurrency: researcherConcurrency(concurrency, angle),
    machine: setup({ types: { context: {} as { done: number }, events: {} as ResearchEvent } }).createMachine({
      context: { done: 0 },
      on: {
        research: {
          actions: [
            assign({ done: ({ context }) => context.done + 1 }),
            // A join, as BullMQ's parent job waits for its children: the writer
            // takes the three findings in one activation instead of one each.
            sendToAgent('writer', 'finding', ({ event }: { event: ResearchEvent }) => ({ angle: event.payload.angle, text: `${event.payload.topic} #${event.payload.angle}`, t0: event.payload.t0 }),
              { join: { key: 'findings', of: ANGLES } }),
          ],
        },
      },
    }),
  }))
  const writer = defineAgent({
    name: 'writer',
    concurrency,
    machine: setup({
      types: { context: {} as { findings: Finding[] }, events: {} as FindingEvent },
      guards: { last: ({ context }) => context.findings.length === ANGLES - 1 },
    }).createMachine({
      context: { findings: [] },
      initial: 'collecting',
      states: {
        collecting: {
          on: {
            finding: [
              {
                guard: 'last',
                target: 'drafted',
                actions: [
                  assign({ findings: ({ context, event }) => [...context.findings, event.payload] }),
                  ({ context, event }) => watch(event.meta.workflowId, context.findings[0]?.t0 ?? 0),
                  sendToAgent('reviewer', 'review', ({ context }: { context: { findings: Finding[] } }) => ({
                    draft: context.findings.map((f) => f.text).join('; '), t0: context.findings[0]?.t0 ?? 0,
                  })),
                ],
              },
              { actions: assign({ findings: ({ context, event }) => [...context.findings, event.payload] }) },
            ],
          },
        },
        drafted: {},
      },
    }),
  })
  const reviewer = defineAgent({
    name: 'reviewer',
    concurrency,
    machine: setup({ types: { context: {} as { verdict: string }, events: {} as ReviewEvent } }).createMachine({
      context: { verdict: '' },
      initial: 'reading',
      states: {
        reading: {
          on: {
            review: {
              target: 'approved',
              actions: [
                assign({ verdict: ({ event }) => `approved ${event.payload.draft.length} chars` }),
                completeWorkflow(({ context }: { context: { verdict: string } }) => ({ verdict: context.verdict })),
              ],
            },
          },
        },
        approved: { type: 'final' },
      },
    }),
  })
  return [planner, ...researchers, writer, reviewer]
}

/**
 * End-to-end latency, stamped when the reviewer's completing commit is done: a
 * commit that ends a workflow publishes `{op: 'abort', wf, reason: 'completed'}`
 * on the runtime's control channel once it has been applied (so that other
 * agents' running actions stop), and every runtime process listens there. The
 * runtime's own completion signal (the `troupe_actions_total` increment the
 * worker hooks below) comes right after the same commit but carries no workflow
 * id. One subscription per worker process, no per-workflow commands: the
 * measurement adds nothing to Redis's work but the delivery of a message the
 * runtime publishes anyway.
 */
class CompletionWatch {
  private readonly sub: Redis
  /** Workflow → its start time, from the writer's review on (see flowAgents). */
  private readonly started = new Map<string, number>()
  private emptied: (() => void) | null = null
  readonly ready: Promise<unknown>

  constructor(redisUrl: string, keys: Keys) {
    this.sub = new Redis(redisUrl, { maxRetriesPerRequest: null })
    // Measurement, not the system's own traffic: left out of the round trips.
    excludeFromRoundTrips(this.sub)
    this.sub.on('error', () => undefined)
    this.sub.on('message', (_channel: string, message: string) => this.onMessage(message))
    this.ready = this.sub.subscribe(keys.control())
  }

  readonly watch: WatchCompletion = (wf, t0) => {
    if (t0 > 0) this.started.set(wf, t0)
  }

  private onMessage(message: string): void {
    let m: { op?: unknown; wf?: unknown; reason?: unknown }
    try {
      m = JSON.parse(message) as typeof m
    } catch {
      return
    }
    if (m.op !== 'abort' || typeof m.wf !== 'string') return
    const t0 = this.started.get(m.wf)
    if (t0 === undefined) return
    if (m.reason === 'completed') probe.latencySince(t0)
    else probe.count('troupe_flow_not_completed')
    this.started.delete(m.wf)
    if (this.started.size === 0) this.emptied?.()
  }

  /** Waits (up to `ms`) for the completions still on their way; counts the ones that never came. */
  async drain(ms: number): Promise<void> {
    if (this.started.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms)
        this.emptied = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.emptied = null
    }
    if (this.started.size > 0) probe.count('troupe_watch_missed', this.started.size)
    this.started.clear()
  }

  close(): void {
    this.sub.disconnect()
  }
}

/** Parks its workflow in a waiting state: the workflow is alive, its actor deactivated. */
export function idleAgent(concurrency: number): AgentDefinition {
  return defineAgent({
    name: 'waiter',
    concurrency,
    machine: setup({ types: { context: {} as { since: number }, events: {} as ActionEvent<'park', { t: number }> } }).createMachine({
      context: { since: 0 },
      initial: 'new',
      states: {
        new: { on: { park: { target: 'waiting', actions: assign({ since: ({ event }) => event.payload.t }) } } },
        waiting: { on: { park: {} } },
      },
    }),
  })
}

function agentsFor(spec: WorkerSpec, watch: WatchCompletion | undefined): { agents: AgentDefinition[]; counts: (agent: string) => boolean } {
  if (spec.workload === 'noop') return { agents: [noopAgent(spec.concurrency)], counts: () => true }
  if (spec.workload === 'idle') return { agents: [idleAgent(spec.concurrency)], counts: () => true }
  return { agents: flowAgents(spec.concurrency, watch), counts: (agent) => agent === 'reviewer' }
}

/** A runtime process hosting the bench agents. */
export function troupeWorker(spec: WorkerSpec): BenchWorker {
  let rt: Runtime | null = null
  const completions = spec.workload === 'flow' ? new CompletionWatch(spec.redisUrl, new Keys(spec.prefix)) : null
  const { agents, counts } = agentsFor(spec, completions?.watch)
  return {
    async go() {
      await completions?.ready
      rt = await startRuntime({
        agents,
        config: { redisUrl: spec.redisUrl, namespace: spec.prefix, persistence: spec.persistence },
        metricsPort: false,
        logger: createLogger('bench-runtime'),
      })
      // The runtime counts an action as completed right after its commit returns:
      // hooking that counter gives the exact commit time without polling. Nothing can
      // commit before startRuntime resolves (every commit awaits a Redis reply).
      const counter = rt.metrics.actions
      const inc = counter.inc.bind(counter) as (labels: Record<string, string>, value?: number) => void
      counter.inc = ((labels: Record<string, string>, value?: number) => {
        inc(labels, value)
        if (labels.outcome === 'completed' && counts(labels.agent ?? '')) probe.finished(value ?? 1)
        else if (labels.outcome !== 'completed') probe.count(`troupe_${labels.outcome ?? 'other'}`, value ?? 1)
      }) as typeof counter.inc
    },
    async drain() {
      await completions?.drain(2000)
    },
    async stop() {
      await rt?.stop()
      completions?.close()
    },
    gauges() {
      const active = Object.values(rt?.activeCounts() ?? {}).reduce((s, v) => s + v, 0)
      return { activeActors: active }
    },
  }
}

/** The producer side: the client API a user would call, on the run's namespace. */
export class TroupeProducer {
  readonly client: TroupeClient

  constructor(redisUrl: string, readonly prefix: string, persistence: boolean) {
    this.client = TroupeClient.connect({ redisUrl, namespace: prefix, persistence })
  }

  /**
   * Enqueues `perWorkflow` no-op actions into each of `workflows` new workflows, in
   * pipelined chunks, interleaved so every actor has work from the start.
   */
  async backlog(workflows: number, perWorkflow: number, agent = 'noop', type = 'tick'): Promise<string[]> {
    const wfs = Array.from({ length: workflows }, () => nanoid())
    const list: EnqueueArgs[] = []
    for (let j = 0; j < perWorkflow; j++) {
      for (const wf of wfs) list.push(this.args(wf, agent, type, { t: 0 }, j === 0 ? 'start' : 'send'))
    }
    for (let i = 0; i < list.length; i += 1000) {
      for (const r of await enqueueMany(this.client.ctx, list.slice(i, i + 1000))) if (r instanceof Error) throw r
    }
    return wfs
  }

  private args(wf: string, agent: string, type: string, payload: unknown, mode: 'start' | 'send'): EnqueueArgs {
    const actionId = nanoid()
    const eventId = nanoid()
    const record = JSON.stringify({ id: actionId, workflowId: wf, agent, type, payload, eventId, enqueuedAt: Date.now() })
    return { wf, actionId, agent, type, record, delayMs: 0, eventId, parentEventId: '', mode, owner: mode === 'start' ? 'bench' : '', deadlineMs: 0 }
  }

  /** One action through the public API, as a user sends it (defaults: the target is validated against the agent registry). */
  async send(wf: string, t: number): Promise<void> {
    await this.client.sendAction(wf, 'noop', 'tick', { t })
  }

  /**
   * One workflow of the flow, started through the public API (defaults, as `send`;
   * `validate` false only for a backlog made before any runtime has registered).
   */
  async startFlow(t0: number, validate = true): Promise<void> {
    await this.client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: 'fusion', t0 }, owner: 'bench', validate })
  }

  /** One idle workflow. */
  async startIdle(): Promise<void> {
    await this.client.startWorkflow({ agent: 'waiter', type: 'park', payload: { t: Date.now() }, owner: 'bench' })
  }

  async close(): Promise<void> {
    await this.client.close()
  }
}
