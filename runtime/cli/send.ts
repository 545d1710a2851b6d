// `troupe send <wf> <agent> <type>`: sends an action into a running workflow.
import { TroupeClient } from '../client.ts'
import { waitReachable } from '../redis/connection.ts'
import { MAX_DELAY_MS } from '../types.ts'
import { configFlags, EXIT, parse, parseDuration, parsePayload, UsageError, type Command } from './common.ts'

const usage = `usage: troupe send <workflowId> <agent> <type> [--payload JSON|@file] [--delay 30s] [--json]

Sends an action to <agent> in an existing workflow; prints the action id.`

/** The `send` command. */
export const command: Command = {
  summary: 'send an action to an agent in a workflow',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { payload: { type: 'string' }, delay: { type: 'string' } })
    const [wf, agent, type, ...extra] = positionals
    if (!wf || !agent || !type || extra.length) throw new UsageError('expected exactly <workflowId> <agent> <type>')
    const payload = parsePayload(values.payload)
    // Checked before connecting, so a typo is a usage error at once rather than
    // one that waits for (or is hidden behind) an unreachable Redis.
    const delayMs = values.delay === undefined ? undefined : parseDuration(values.delay)
    if (delayMs !== undefined && delayMs > MAX_DELAY_MS) throw new UsageError('--delay must be at most 3650d (ten years)')
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      const { actionId } = await client.sendAction(wf, agent, type, payload, delayMs !== undefined ? { delayMs } : {})
      process.stdout.write(values.json ? `${JSON.stringify({ workflowId: wf, actionId })}\n` : `${actionId}\n`)
      return EXIT.ok
    } finally {
      await client.close()
    }
  },
}
