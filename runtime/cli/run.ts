// `troupe run <agent> <type>`: starts a workflow, optionally following its events.
import { TroupeClient } from '../client.ts'
import { waitReachable } from '../redis/connection.ts'
import { MAX_DELAY_MS } from '../types.ts'
import { configFlags, EXIT, parse, parseDuration, parsePayload, UsageError, type Command } from './common.ts'
import { followToEnd } from './tail.ts'

const usage = `usage: troupe run <agent> <type> [--payload JSON|@file] [--follow] [--json] [--owner name] [--id wf] [--deadline 10m]

Starts a workflow whose first action is <type> sent to <agent>; prints the workflow id.
  --payload     the action's payload as JSON, or @path to a JSON file (default null)
  --follow      stream the workflow's events until it ends; exit 1 if it failed or was cancelled
  --json        print {"workflowId": ..., "actionId": ...} (with --follow: one JSON event per line)
  --owner       owner (user) of the workflow (default "local")
  --id          use this workflow id instead of a random one
  --deadline    fail the workflow with reason "deadline" after this long (e.g. 30s, 10m)`

/** The `run` command. */
export const command: Command = {
  summary: 'start a workflow (and --follow its events)',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      payload: { type: 'string' },
      follow: { type: 'boolean' },
      owner: { type: 'string' },
      id: { type: 'string' },
      deadline: { type: 'string' },
    })
    const [agent, type, ...extra] = positionals
    if (!agent || !type || extra.length > 0) throw new UsageError('expected exactly <agent> <type>')
    const payload = parsePayload(values.payload)
    // Checked before connecting, so a typo is a usage error at once rather than
    // one that waits for (or is hidden behind) an unreachable Redis.
    const deadlineMs = values.deadline === undefined ? undefined : parseDuration(values.deadline)
    if (deadlineMs !== undefined && !(deadlineMs > 0 && deadlineMs <= MAX_DELAY_MS)) throw new UsageError('--deadline must be more than 0 and at most 3650d (ten years)')
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      const { workflowId, actionId } = await client.startWorkflow({
        agent, type, payload,
        ...(values.owner ? { owner: values.owner } : {}),
        ...(values.id ? { workflowId: values.id } : {}),
        ...(deadlineMs !== undefined ? { deadlineMs } : {}),
      })
      if (values.json && !values.follow) process.stdout.write(`${JSON.stringify({ workflowId, actionId })}\n`)
      else if (!values.json) process.stdout.write(`${workflowId}\n`)
      if (!values.follow) return EXIT.ok
      return await followToEnd(client, workflowId, '0', values.json === true)
    } finally {
      await client.close()
    }
  },
}
