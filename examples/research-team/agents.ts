// The research team: a planner fans a topic out to three research actions, the
// writer fans the findings back in and streams a draft token by token, and the
// reviewer sends it back once before approving it, which completes the workflow.
import { assign, fromPromise, setup } from 'xstate'
import { completeWorkflow, defineAgent, emitEvent, sendToAgent, type ActionEvent } from '../../runtime/index.ts'
import { fakeText, streamCompletion } from './fake-model.ts'

/** Angles every topic is researched from. */
export const ANGLES = ['physics', 'engineering', 'economics'] as const

type Emit = (e: { type: string; content: unknown }) => void

export const planner = defineAgent({
  name: 'planner',
  machine: setup({
    types: { context: {} as { topic: string }, events: {} as ActionEvent<'plan', { topic?: unknown }> },
  }).createMachine({
    id: 'planner',
    context: { topic: '' },
    initial: 'idle',
    states: {
      idle: {
        on: {
          plan: {
            target: 'delegated',
            actions: [
              assign({ topic: ({ event }) => (typeof event.payload?.topic === 'string' ? event.payload.topic : 'untitled') }),
              emitEvent('plan', ({ context }: { context: { topic: string } }) => ({ topic: context.topic, angles: ANGLES })),
              ...ANGLES.map((angle) => sendToAgent('researcher', 'research', ({ context }: { context: { topic: string } }) => ({ topic: context.topic, angle }))),
            ],
          },
        },
      },
      delegated: { type: 'final' },
    },
  }),
})

export const researcher = defineAgent({
  name: 'researcher',
  actionTimeoutMs: 60_000,
  machine: setup({
    types: { context: {} as { done: number }, events: {} as ActionEvent<'research', { topic: string; angle: string }> },
    actors: {
      research: fromPromise(async ({ input, emit, signal }: { input: { topic: string; angle: string }; emit: Emit; signal: AbortSignal }) => {
        emit({ type: 'progress', content: `researching ${input.topic} from the ${input.angle} angle` })
        const text = await streamCompletion(`${input.topic}/${input.angle}`, 12, () => undefined, signal)
        return { angle: input.angle, text }
      }),
    },
  }).createMachine({
    id: 'researcher',
    context: { done: 0 },
    initial: 'idle',
    states: {
      idle: { on: { research: 'working' } },
      working: {
        invoke: {
          src: 'research',
          input: ({ event }) => ({ topic: (event as ActionEvent<'research', { topic: string; angle: string }>).payload.topic, angle: (event as ActionEvent<'research', { topic: string; angle: string }>).payload.angle }),
          onDone: {
            target: 'idle',
            actions: [assign({ done: ({ context }) => context.done + 1 }), sendToAgent('writer', 'findings', ({ event }: { event: { output: unknown } }) => event.output)],
          },
        },
      },
    },
  }),
})

type Finding = { angle: string; text: string }
type WriterCtx = { findings: Finding[]; draft: string; revision: number; notes: string }
type WriterEvent = ActionEvent<'findings', Finding> | ActionEvent<'revise', { notes: string }>

export const writer = defineAgent({
  name: 'writer',
  actionTimeoutMs: 120_000,
  machine: setup({
    types: { context: {} as WriterCtx, events: {} as WriterEvent },
    actors: {
      draft: fromPromise(async ({ input, emit, signal }: { input: { findings: Finding[]; notes: string; revision: number }; emit: Emit; signal: AbortSignal }) => {
        const prompt = `${input.findings.map((f) => f.angle).join('+')}#${input.revision}#${input.notes}`
        return await streamCompletion(prompt, 24, (t) => emit({ type: 'token', content: t }), signal)
      }),
    },
    guards: { allIn: ({ context }) => context.findings.length + 1 >= ANGLES.length },
  }).createMachine({
    id: 'writer',
    context: { findings: [], draft: '', revision: 0, notes: '' },
    initial: 'collecting',
    states: {
      collecting: {
        on: {
          findings: [
            { guard: 'allIn', target: 'drafting', actions: assign({ findings: ({ context, event }) => [...context.findings, event.payload] }) },
            { actions: assign({ findings: ({ context, event }) => [...context.findings, event.payload] }) },
          ],
        },
      },
      drafting: {
        invoke: {
          src: 'draft',
          input: ({ context }) => ({ findings: context.findings, notes: context.notes, revision: context.revision }),
          onDone: {
            target: 'awaitingReview',
            actions: [
              assign({ draft: ({ event }) => event.output }),
              sendToAgent('reviewer', 'review', ({ context, event }: { context: WriterCtx; event: { output: string } }) => ({ draft: event.output, revision: context.revision })),
            ],
          },
        },
      },
      awaitingReview: {
        on: {
          revise: {
            target: 'drafting',
            actions: assign({ revision: ({ context }) => context.revision + 1, notes: ({ event }) => (event.payload).notes }),
          },
        },
      },
    },
  }),
})

type ReviewEvent = ActionEvent<'review', { draft: string; revision: number }>

export const reviewer = defineAgent({
  name: 'reviewer',
  machine: setup({
    types: { context: {} as { reviews: number }, events: {} as ReviewEvent },
    guards: { firstDraft: ({ event }) => (event as ActionEvent<'review', { revision: number }>).payload.revision === 0 },
  }).createMachine({
    id: 'reviewer',
    context: { reviews: 0 },
    initial: 'reviewing',
    states: {
      reviewing: {
        on: {
          review: [
            {
              guard: 'firstDraft',
              actions: [
                assign({ reviews: ({ context }) => context.reviews + 1 }),
                emitEvent('review', { verdict: 'revise' }),
                sendToAgent('writer', 'revise', { notes: fakeText('notes', 6) }),
              ],
            },
            {
              target: 'approved',
              actions: [
                assign({ reviews: ({ context }) => context.reviews + 1 }),
                emitEvent('review', { verdict: 'approved' }),
                completeWorkflow(({ event }: { event: ActionEvent<'review', { draft: string; revision: number }> }) => ({ report: event.payload.draft, revisions: event.payload.revision })),
              ],
            },
          ],
        },
      },
      approved: { type: 'final' },
    },
  }),
})

/** Every agent of the example, in pipeline order. */
export const researchTeam = [planner, researcher, writer, reviewer]
