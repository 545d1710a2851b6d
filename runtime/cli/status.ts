// `troupe status [wf]`: one workflow's status, or (without an id) the fleet.
import { TroupeClient } from '../client.ts'
import { TroupeError } from '../errors.ts'
import { waitReachable } from '../redis/connection.ts'
import { configFlags, EXIT, onInterrupt, parse, UsageError, type Command } from './common.ts'
import { fleetStatus } from './fleet.ts'
import { printable } from './render.ts'

const usage = `usage: troupe status [<workflowId>] [--json] [--watch]

With a workflow id: its status, each agent's current state, counts and dead letters.
Without: the fleet (services, leader, queues; see docs/operations.md).
  --json    machine-readable output (a workflow's JSON has a "status" field)
  --watch   refresh every 2 s (fleet view)`

/** The `status` command. */
export const command: Command = {
  summary: 'show a workflow (or, without an id, the fleet)',
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { watch: { type: 'boolean' } })
    const [wf, ...extra] = positionals
    if (extra.length) throw new UsageError('expected at most one <workflowId>')
    if (wf && values.watch === true) throw new UsageError('--watch shows the fleet: drop the <workflowId> (or follow the workflow with troupe tail <workflowId>)')
    const client = TroupeClient.connect(configFlags(values))
    try {
      await waitReachable(client.redis, client.cfg.redisUrl)
      if (!wf && values.watch !== true) return await fleetStatus(client, { json: values.json === true, watch: false })
      if (!wf) {
        // Ctrl-C ends a watch like the end of its output: exit 0, connections closed.
        const ctl = new AbortController()
        const offInterrupt = onInterrupt(() => ctl.abort())
        try {
          return await fleetStatus(client, { json: values.json === true, watch: values.watch === true, signal: ctl.signal })
        } finally {
          offInterrupt()
        }
      }
      const st = await client.getStatus(wf)
      if (!st) throw new TroupeError('workflow_not_found', `no workflow ${wf}`)
      const dead = await client.deadLetters(wf)
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ ...st, deadLetters: dead })}\n`)
        return EXIT.ok
      }
      const lines = [
        `workflow ${st.workflowId}: ${st.status}${st.error ? ` (${st.error})` : ''}`,
        `  owner ${st.owner}, entry agent ${st.entry}, created ${new Date(st.createdAt).toISOString()}, updated ${new Date(st.updatedAt).toISOString()}`,
        `  actions: ${st.counts.actions} total, ${st.counts.queued} queued or running, ${st.counts.done} done, ${st.counts.dead} dead`,
        '  agents:',
        ...Object.entries(st.agents).map(([a, s]) => `    ${a.padEnd(16)} ${s === null ? '(not started)' : JSON.stringify(s)}`),
      ]
      if (st.joins?.length) {
        lines.push('  joins holding actions:', ...st.joins.map((j) => `    ${j.agent}/${j.key}: ${j.waiting} waiting, delivered anyway at ${new Date(j.until).toISOString()}`))
      }
      if (st.result !== undefined) lines.push(`  result: ${JSON.stringify(st.result).slice(0, 500)}`)
      if (dead.length) lines.push('  dead letters:', ...dead.map((d) => `    ${d.actionId} ${d.agent}/${d.type} after ${d.attempt} attempts: ${d.error}`))
      // Errors, agent names and states come from agents' code and actions' senders.
      process.stdout.write(`${lines.map(printable).join('\n')}\n`)
      return EXIT.ok
    } finally {
      await client.close()
    }
  },
}
