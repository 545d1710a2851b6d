// Racing sends for the `tally` fixture: workflows started in rounds, each getting
// ticks 0..n-1 and a finish from the client, many workflows at once. Used by the
// tests that check no action loses its ready hint.
import type { TroupeClient } from '../../runtime/index.ts'

/** Starts `rounds` x `perRound` tally workflows with `ticks` ticks each; returns their ids. */
export async function tallyWorkflows(client: TroupeClient, rounds: number, perRound: number, ticks: number): Promise<string[]> {
  const ids: string[] = []
  for (let round = 0; round < rounds; round++) {
    await Promise.all(
      Array.from({ length: perRound }, async () => {
        const { workflowId } = await client.startWorkflow({ agent: 'tally', type: 'tick', payload: { i: 0 }, validate: false })
        for (let i = 1; i < ticks; i++) await client.sendAction(workflowId, 'tally', 'tick', { i }, { validate: false })
        await client.sendAction(workflowId, 'tally', 'finish', null, { validate: false })
        ids.push(workflowId)
      }),
    )
  }
  return ids
}

/** The workflows of `ids` that have not completed. */
export async function notCompleted(client: TroupeClient, ids: readonly string[]): Promise<string[]> {
  const left: string[] = []
  for (const wf of ids) if ((await client.getStatus(wf))?.status !== 'completed') left.push(wf)
  return left
}
