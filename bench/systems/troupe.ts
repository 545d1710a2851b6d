// Troupe's side of every scenario: the bench agents, the worker process (a real
// runtime) and the producer (the client API, or the pipelined enqueue the client
// uses underneath when preparing a backlog).
import { assign, setup } from 'xstate'
import { nanoid } from 'nanoid'
import { completeWorkflow, defineAgent, sendToAgent, startRuntime, TroupeClient, type ActionEvent, type AgentDefinition, type Runtime } from '../../runtime/index.ts'
import { enqueueMany, type EnqueueArgs } from '../../runtime/claims.ts'
import { createLogger } from '../../runtime/log.ts'
import { probe } from '../lib/probe.ts'
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

/** The multi-agent workflow with no-op work and real state (context) in every agent. */
export function flowAgents(concurrency: number): AgentDefinition[] {
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
                  sendToAgent('researcher', 'research', ({ context }: { context: { topic: string; t0: number } }) => ({ topic: context.topic, angle, t0: context.t0 }))),
              ],
            },
          },
        },
        delegated: { type: 'final' },
      },
    }),
  })
  const researcher = defineAgent({
    name: 'researcher',
    concurrency,
    machine: setup({ types: { context: {} as { done: number }, events: {} as ResearchEvent } }).createMachine({
      context: { done: 0 },
      on: {
        research: {
          actions: [
            assign({ done: ({ context }) => context.done + 1 }),
            sendToAgent('writer', 'finding', ({ event }: { event: ResearchEvent }) => ({ angle: event.payload.angle, text: `${event.payload.topic} #${event.payload.angle}`, t0: event.payload.t0 })),
          ],
        },
      },
    }),
  })
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
                ({ event }) => probe.latencySince(event.payload.t0),
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
  return [planner, researcher, writer, reviewer]
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

function agentsFor(spec: WorkerSpec): { agents: AgentDefinition[]; counts: (agent: string) => boolean } {
  if (spec.workload === 'noop') return { agents: [noopAgent(spec.concurrency)], counts: () => true }
  if (spec.workload === 'idle') return { agents: [idleAgent(spec.concurrency)], counts: () => true }
  return { agents: flowAgents(spec.concurrency), counts: (agent) => agent === 'reviewer' }
}

/** A runtime process hosting the bench agents. */
export function troupeWorker(spec: WorkerSpec): BenchWorker {
  let rt: Runtime | null = null
  const { agents, counts } = agentsFor(spec)
  return {
    async go() {
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
    async stop() {
      await rt?.stop()
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

  /** One action through the public API, as a user sends it (validation off: the registry lookup is a per-call HGETALL). */
  async send(wf: string, t: number): Promise<void> {
    await this.client.sendAction(wf, 'noop', 'tick', { t }, { validate: false })
  }

  /** One workflow of the flow, started through the public API. */
  async startFlow(t0: number): Promise<void> {
    await this.client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: 'fusion', t0 }, owner: 'bench', validate: false })
  }

  /** One idle workflow. */
  async startIdle(): Promise<void> {
    await this.client.startWorkflow({ agent: 'waiter', type: 'park', payload: { t: Date.now() }, owner: 'bench', validate: false })
  }

  async close(): Promise<void> {
    await this.client.close()
  }
}
