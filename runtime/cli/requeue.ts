// `troupe requeue <wf>`: sends a workflow's dead-lettered actions back to their agents.
import { TroupeClient } from '../client.ts'
import { waitReachable } from '../redis/connection.ts'
import { configFlags, EXIT, parse, UsageError, type Command } from './common.ts'

const usage = `usage: troupe requeue <workflowId> [--action <actionId>]... [--json]

Sends the workflow's dead-lettered actions (every one, or each --action given)
back to their agents as fresh deliveries: attempt 0, due now, same payload.
An id that is not dead-lettered there is reported as skipped, so running it
again is harmless. Refused for a workflow that does not exist or has ended.`

/** The `requeue` command. */
export const command: Command = {
  summary: 'send dead-lettered actions of a workflow again',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { action: { type: 'string', multiple: true } })
    const [wf, ...extra] = positionals
    if (!wf || extra.length) throw new UsageError('expected exactly <workflowId>')
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      const { requeued, skipped } = await client.requeueDead(wf, values.action ? { actionIds: values.action } : {})
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ workflowId: wf, requeued, skipped })}\n`)
      } else {
        process.stdout.write(`requeued ${requeued.length} action${requeued.length === 1 ? '' : 's'} of ${wf}${requeued.length ? `: ${requeued.join(' ')}` : ''}\n`)
        if (skipped.length) process.stdout.write(`skipped ${skipped.length} (not dead-lettered there, or without a record to send): ${skipped.join(' ')}\n`)
      }
      return EXIT.ok
    } finally {
      await client.close()
    }
  },
}
