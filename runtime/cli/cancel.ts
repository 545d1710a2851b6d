// `troupe cancel <wf>`: cancels a workflow (queued actions dropped, running ones aborted).
import { TroupeClient } from '../client.ts'
import { waitReachable } from '../redis/connection.ts'
import { configFlags, EXIT, parse, UsageError, type Command } from './common.ts'

const usage = `usage: troupe cancel <workflowId> [--reason text] [--json]

Ends the workflow as cancelled: queued actions are dropped, running ones aborted.`

/** The `cancel` command. */
export const command: Command = {
  summary: 'cancel a workflow',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { reason: { type: 'string' } })
    const [wf, ...extra] = positionals
    if (!wf || extra.length) throw new UsageError('expected exactly <workflowId>')
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      const { dropped } = await client.cancelWorkflow(wf, values.reason ?? 'cancelled by user')
      process.stdout.write(values.json ? `${JSON.stringify({ workflowId: wf, status: 'cancelled', dropped })}\n` : `cancelled ${wf} (${dropped} queued actions dropped)\n`)
      return EXIT.ok
    } finally {
      await client.close()
    }
  },
}
