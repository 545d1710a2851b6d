// `troupe tail <wf>`: replays a workflow's events and follows them live until it ends.
import { TroupeClient } from '../client.ts'
import { TroupeError } from '../errors.ts'
import { isStreamId } from '../events.ts'
import { waitReachable } from '../redis/connection.ts'
import { assertWorkflowId } from '../redis/keys.ts'
import { configFlags, EXIT, onInterrupt, parse, UsageError, type Command } from './common.ts'
import { EventRenderer } from './render.ts'

const usage = `usage: troupe tail <workflowId> [--after streamId] [--json]

Prints the workflow's events from the start (or after --after) and follows them live
until the workflow ends; exits 1 if it failed or was cancelled. Ctrl-C stops following.`

/** Follows until the final event; returns the exit code for the outcome. */
export async function followToEnd(client: TroupeClient, wf: string, after: string, json: boolean): Promise<number> {
  const renderer = new EventRenderer()
  const ctl = new AbortController()
  const offInterrupt = onInterrupt(() => ctl.abort())
  let final = ''
  try {
    for await (const e of client.follow(wf, { after, untilEnd: true, signal: ctl.signal })) {
      if (json) process.stdout.write(`${JSON.stringify(e)}\n`)
      else renderer.write(e)
      if (e.event.type.startsWith('workflow.') && ['workflow.completed', 'workflow.failed', 'workflow.cancelled'].includes(e.event.type)) final = e.event.type
    }
  } finally {
    offInterrupt()
    renderer.end()
  }
  if (!final) {
    const st = await client.getStatus(wf)
    final = st ? `workflow.${st.status}` : ''
  }
  if (!json) process.stderr.write(`workflow ${wf}: ${final.replace('workflow.', '') || 'gone'}\n`)
  // Ctrl-C stops following a workflow that goes on: that is no failure. Only an
  // end other than completed is.
  const ended = ['workflow.failed', 'workflow.cancelled'].includes(final)
  return final === 'workflow.completed' || (ctl.signal.aborted && !ended) ? EXIT.ok : EXIT.failed
}

/** The `tail` command. */
export const command: Command = {
  summary: "follow a workflow's events until it ends",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { after: { type: 'string' } })
    const [wf, ...extra] = positionals
    if (!wf || extra.length) throw new UsageError('expected exactly <workflowId>')
    assertWorkflowId(wf)
    const after = values.after ?? '0'
    if (!isStreamId(after)) throw new UsageError(`--after must be a stream id like 1700000000000-0, got ${after}`)
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      if (!(await client.getStatus(wf))) throw new TroupeError('workflow_not_found', `no workflow ${wf}`)
      return await followToEnd(client, wf, after, values.json === true)
    } finally {
      await client.close()
    }
  },
}
