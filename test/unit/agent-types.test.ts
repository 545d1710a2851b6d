// The agent helpers' functions get the machine's types: `event` was `any` in
// every `({ event }) => ...` given to emitEvent, sendToAgent and the rest, so a
// typo in `event.payload.topic` compiled. These are type-level checks: the
// typecheck (`npx tsc --noEmit -p .`, which compiles test/) fails on a wrong
// type or on an `@ts-expect-error` that no longer finds an error (as with
// `any`); at run time the machines are only built.
import { describe, expect, expectTypeOf, it } from 'vitest'
import { fromPromise, setup, type ActionFunction } from 'xstate'
import { completeWorkflow, emitEvent, failWorkflow, sendToAgent, sendToSelf, type ActionEvent, type JoinOptions, type TroupeAction } from '../../runtime/index.ts'

type Plan = ActionEvent<'plan', { topic: string }>
type Tick = ActionEvent<'tick', { n: number }>
type Ctx = { topic: string; ticks: number }

describe('agent helper types', () => {
  it('give a function inside a machine its context and the event of its transition', () => {
    const m = setup({
      types: { context: {} as Ctx, events: {} as Plan | Tick },
      actors: { work: fromPromise(() => Promise.resolve({ words: 3 })) },
    }).createMachine({
      context: { topic: '', ticks: 0 },
      initial: 'idle',
      entry: emitEvent('started', ({ context }) => {
        expectTypeOf(context).toEqualTypeOf<Ctx>()
        return null
      }),
      states: {
        idle: {
          on: {
            plan: {
              target: 'working',
              actions: [
                emitEvent('plan', ({ event }) => {
                  expectTypeOf(event).toEqualTypeOf<Plan>()
                  // @ts-expect-error the topic is a string
                  const n: number = event.payload.topic
                  return n
                }),
                sendToAgent('researcher', 'research', ({ event }) => ({ topic: event.payload.topic }), {
                  delayMs: ({ event }) => event.payload.topic.length,
                  join: ({ context, event }): JoinOptions => ({ key: `${context.topic}:${event.payload.topic}`, of: 2 }),
                }),
                // @ts-expect-error a plan's topic is no number
                sendToSelf('tick', ({ event }): { n: number } => ({ n: event.payload.topic })),
              ],
            },
            tick: [
              { guard: ({ event }) => event.payload.n > 3, actions: failWorkflow(({ event }) => `too many: ${event.payload.n.toFixed(0)}`) },
              { actions: sendToSelf('tick', ({ event }) => ({ n: event.payload.n + 1 }), { delayMs: ({ event }) => event.payload.n * 1000 }) },
            ],
          },
        },
        working: {
          invoke: {
            src: 'work',
            onDone: {
              target: 'done',
              actions: completeWorkflow(({ context, event }) => {
                expectTypeOf(event.output).toEqualTypeOf<{ words: number }>()
                return { topic: context.topic, words: event.output.words }
              }),
            },
          },
        },
        done: { type: 'final' },
      },
    })
    expect(m.events).toContain('plan')
  })

  it('leave both open outside a machine, so lists of actions built apart still fit any machine', () => {
    const actions: TroupeAction[] = [
      emitEvent('plan', ({ context, event }) => {
        expectTypeOf(context).toBeAny()
        expectTypeOf(event).toBeAny()
        return null
      }),
      sendToAgent('researcher', 'research', ({ context }: { context: { topic: string } }) => ({ topic: context.topic })),
    ]
    // A narrower annotation than the machine's context still fits inside one.
    const m = setup({ types: { context: {} as Ctx, events: {} as Plan } }).createMachine({
      context: { topic: '', ticks: 0 },
      on: { plan: { actions: [...actions, completeWorkflow(({ context }: { context: { topic: string } }) => context.topic)] } },
    })
    expect(m.events).toEqual(['plan'])
  })
  it('fit an action typed by hand as emitting nothing, as they did when everything was any', () => {
    // A helper typed with XState's own ActionFunction, emitted events `never`:
    // the helpers' troupe.* events are the runtime's, not the machine's.
    const announce: ActionFunction<Ctx, Plan, Plan | Tick, undefined, never, never, never, never, never> = emitEvent('announced', ({ event }) => ({ topic: event.payload.topic }))
    const m = setup({ types: { context: {} as Ctx, events: {} as Plan | Tick } }).createMachine({
      context: { topic: '', ticks: 0 },
      on: { plan: { actions: announce } },
    })
    expect(m.events).toContain('plan')
  })
})
