// The shared test agents plus `bulky`, which writes a workflow history of several
// megabytes in one action: the only cheap way to give an SSE client more than the
// loopback socket buffers hold (about 4 MB), so that a client that stops reading
// is really dropped by the gateway's backpressure handling.
import { fromPromise, setup } from 'xstate'
import { defineAgent, type ActionEvent } from '../../runtime/index.ts'

export { counter, echo, flaky, slow } from '../fixtures/agents.ts'

type SpewEvent = ActionEvent<'spew', { count?: number; bytes?: number }>

/** `spew { count, bytes }` emits `count` events of `bytes` characters each, at once. */
export const bulky = defineAgent({
  name: 'bulky',
  machine: setup({
    types: { events: {} as SpewEvent },
    actors: {
      spew: fromPromise(async ({ input, emit }: { input: { count: number; bytes: number }; emit: (e: { type: string; content: unknown }) => void }) => {
        const chunk = 'x'.repeat(input.bytes)
        for (let i = 0; i < input.count; i++) {
          emit({ type: 'chunk', content: { i, text: chunk } })
          // Let each event be flushed on its own microtask batch rather than one giant script call.
          await Promise.resolve()
        }
        return input.count
      }),
    },
  }).createMachine({
    id: 'bulky',
    initial: 'idle',
    states: {
      idle: { on: { spew: 'spewing' } },
      spewing: {
        invoke: {
          src: 'spew',
          input: ({ event }) => ({ count: Number(event.payload?.count ?? 1), bytes: Number(event.payload?.bytes ?? 1024) }),
          onDone: 'idle',
          onError: 'idle',
        },
      },
    },
  }),
})
