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

/**
 * The workflows of `ids` that have not completed, each with what a lost hint
 * would leave behind (its status, the tally actor's mailbox, ready hint, lock and
 * in-flight record), so a failure says which piece went missing.
 */
export async function stuckReport(client: TroupeClient, ids: readonly string[], agent = 'tally'): Promise<string[]> {
  const out: string[] = []
  const k = client.keys
  for (const wf of await notCompleted(client, ids)) {
    const r = client.redis
    const [st, mailbox, hint, lockTtl, actor, time] = await Promise.all([
      r.hmget(k.status(wf), 'status', 'queued', 'done'),
      r.zrange(k.mailbox(wf, agent), '0', '-1', 'WITHSCORES'),
      r.zscore(k.ready(agent), wf),
      r.pttl(k.lock(wf, agent)),
      r.hmget(k.actor(wf, agent), 'fence', 'inflight', 'committed'),
      r.time(),
    ])
    const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000)
    out.push(`${wf}: status ${st[0]} queued ${st[1]} done ${st[2]}; mailbox [${mailbox.join(' ')}]; ` +
      `hint ${hint === null ? 'none' : `${Math.round(Number(hint) - now)} ms from now`}; lock pttl ${lockTtl}; ` +
      `actor fence ${actor[0]} inflight ${actor[1]} committed ${actor[2]}`)
  }
  return out
}
