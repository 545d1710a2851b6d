// The research team: a planner fans a topic out to three research actions, the
// writer fans the findings back in (a join: it gets them together) and streams a
// draft token by token, and the reviewer sends it back once before approving it,
// which completes the workflow.
// Started with `{ signOff: true }`, the approved report also waits for a person
// to send `approve` to the reviewer (from the web UI, `troupe send` or the API).
import { assign, fromPromise, setup } from 'xstate'
import { completeWorkflow, defineAgent, emitEvent, sendToAgent, type ActionEvent, type TroupeAction } from '../../runtime/index.ts'
import { fakeText, streamCompletion } from './fake-model.ts'

/** Angles every topic is researched from. */
export const ANGLES = ['physics', 'engineering', 'economics'] as const

type Emit = (e: { type: string; content: unknown }) => void

type PlanEvent = ActionEvent<'plan', { topic?: unknown; signOff?: unknown }>
const topicOf = (e: PlanEvent): string => (typeof e.payload?.topic === 'string' ? e.payload.topic : 'untitled')

/** The planner's sends on `plan`: announce the plan, one research action per angle. */
function delegate(): TroupeAction[] {
  return [
    emitEvent('plan', ({ context }: { context: { topic: string } }) => ({ topic: context.topic, angles: ANGLES })),
    ...ANGLES.map((angle) => sendToAgent('researcher', 'research', ({ context }: { context: { topic: string } }) => ({ topic: context.topic, angle }))),
  ]
}

export const planner = defineAgent({
  name: 'planner',
  machine: setup({
    types: { context: {} as { topic: string }, events: {} as PlanEvent },
    guards: { signOff: ({ event }) => event.payload?.signOff === true },
  }).createMachine({
    id: 'planner',
    context: { topic: '' },
    initial: 'idle',
    states: {
      idle: {
        on: {
          plan: [
            // The reviewer learns now that a person signs the report off; the brief
            // reaches its mailbox long before the first draft does.
            { guard: 'signOff', target: 'delegated', actions: [assign({ topic: ({ event }) => topicOf(event) }), ...delegate(), sendToAgent('reviewer', 'brief', { signOff: true })] },
            { target: 'delegated', actions: [assign({ topic: ({ event }) => topicOf(event) }), ...delegate()] },
          ],
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
            actions: [
              assign({ done: ({ context }) => context.done + 1 }),
              // A join: the writer gets the findings together, once the last angle is in.
              sendToAgent('writer', 'findings', ({ event }: { event: { output: unknown } }) => event.output, { join: { key: 'findings', of: ANGLES.length } }),
            ],
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
type ReviewerEvent = ReviewEvent | ActionEvent<'brief', { signOff?: boolean }> | ActionEvent<'approve', { note?: unknown }>
type ReviewerCtx = { reviews: number; signOff: boolean; report: string; revisions: number }

export const reviewer = defineAgent({
  name: 'reviewer',
  machine: setup({
    types: { context: {} as ReviewerCtx, events: {} as ReviewerEvent },
    guards: {
      firstDraft: ({ event }) => (event as ReviewEvent).payload.revision === 0,
      signOff: ({ context }) => context.signOff,
    },
  }).createMachine({
    id: 'reviewer',
    context: { reviews: 0, signOff: false, report: '', revisions: 0 },
    initial: 'reviewing',
    states: {
      reviewing: {
        on: {
          brief: { actions: assign({ signOff: ({ event }) => (event as ActionEvent<'brief', { signOff?: boolean }>).payload?.signOff === true }) },
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
              guard: 'signOff',
              target: 'awaitingSignOff',
              actions: [
                assign({
                  reviews: ({ context }) => context.reviews + 1,
                  report: ({ event }) => event.payload.draft,
                  revisions: ({ event }) => event.payload.revision,
                }),
                emitEvent('review', { verdict: 'approved', waitingFor: 'approve' }),
              ],
            },
            {
              target: 'approved',
              actions: [
                assign({ reviews: ({ context }) => context.reviews + 1 }),
                emitEvent('review', { verdict: 'approved' }),
                completeWorkflow(({ event }: { event: ReviewEvent }) => ({ report: event.payload.draft, revisions: event.payload.revision })),
              ],
            },
          ],
        },
      },
      // Only `approve` is accepted here: anything else becomes a dead letter that says so.
      awaitingSignOff: {
        on: {
          approve: {
            target: 'approved',
            actions: [
              emitEvent('sign-off', ({ event }: { event: ActionEvent<'approve', { note?: unknown }> }) => ({ note: typeof event.payload?.note === 'string' ? event.payload.note : '' })),
              completeWorkflow(({ context }: { context: ReviewerCtx }) => ({ report: context.report, revisions: context.revisions, signedOff: true })),
            ],
          },
        },
      },
      approved: { type: 'final' },
    },
  }),
})

/** Every agent of the example, in pipeline order. */
export const researchTeam = [planner, researcher, writer, reviewer]
