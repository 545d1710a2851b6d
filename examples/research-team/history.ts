// The demo's last act: wait until the persister has written the workflow to Neo4j,
// then summarise what the graph holds and show a query to explore it further.
import neo4j, { type Integer } from 'neo4j-driver'
import type { TroupeClient } from '../../runtime/index.ts'
import { causalTree, countByType, readHistory, treeDepth } from '../../runtime/persister/history.ts'
import { createNeo4jDriver, describeError } from '../../runtime/persister/neo4j.ts'
import { resolvePersisterOptions } from '../../runtime/persister/options.ts'

const WAIT_MS = 60_000
const say = (s: string): void => void process.stdout.write(`${s}\n`)

/**
 * Waits (at most a minute, printing progress) until every event of `workflowId`
 * is in Neo4j, then prints counts of events by type, agents, actions, the causal
 * tree's depth, and an example Cypher query. Neo4j is found through NEO4J_URI,
 * NEO4J_USER and NEO4J_PASSWORD, as the persister finds it.
 *
 * @example
 * ```ts
 * const { workflowId } = await client.startWorkflow({ agent: 'planner', type: 'plan', payload: { topic: 'tides' } })
 * // ... once it has ended:
 * await showHistory(client, workflowId)
 * ```
 */
export async function showHistory(client: TroupeClient, workflowId: string): Promise<void> {
  const opts = resolvePersisterOptions()
  const driver = createNeo4jDriver(opts)
  const db = opts.database ? { database: opts.database } : {}
  try {
    say(`\n\x1b[1mhistory in Neo4j (${opts.neo4jUri})\x1b[0m`)
    const deadline = Date.now() + WAIT_MS
    let shown = ''
    let failingSince = 0
    for (;;) {
      const total = Number(await client.redis.xlen(client.keys.events(workflowId)))
      let persisted = 0
      try {
        const r = await driver.executeQuery('MATCH (:Workflow {id: $wf})-[:HAS_EVENT]->(e:Event) RETURN count(e) AS n', { wf: workflowId }, { routing: 'READ', ...db })
        persisted = neo4j.integer.toNumber((r.records[0]?.get('n') as Integer | undefined) ?? 0)
        failingSince = 0
      } catch (err) {
        // Neo4j may still be starting; unreachable for 10 s means it is not coming.
        failingSince ||= Date.now()
        if (Date.now() - failingSince > 10_000 || Date.now() > deadline) throw err
      }
      const line = `  persisted ${persisted}/${total} events`
      if (line !== shown) {
        // On a terminal the line updates in place; in a log, each change gets its own line.
        process.stdout.write(process.stdout.isTTY ? `\r${line}` : `${shown ? '\n' : ''}${line}`)
        shown = line
      }
      if (total > 0 && persisted >= total) break
      if (Date.now() > deadline) {
        process.stdout.write(`\n  the persister did not catch up within ${WAIT_MS / 1000} s (is one running? troupe persister status); showing what is there\n`)
        break
      }
      await new Promise((r) => setTimeout(r, 250))
    }
    process.stdout.write('\n')
    const h = await readHistory(driver, opts.database, workflowId)
    if (!h) {
      say('  nothing in Neo4j yet for this workflow')
      return
    }
    const byAgent = new Map<string, number>()
    for (const e of h.events) if (e.agent) byAgent.set(e.agent, (byAgent.get(e.agent) ?? 0) + 1)
    const byStatus = new Map<string, number>()
    for (const a of h.actions) byStatus.set(a.status ?? '?', (byStatus.get(a.status ?? '?') ?? 0) + 1)
    const roots = causalTree(h.events)
    say(`  ${h.events.length} events: ${countByType(h.events).map(([t, n]) => `${n} ${t}`).join(', ')}`)
    say(`  agents: ${[...byAgent].map(([a, n]) => `${a} (${n} events)`).join(', ') || 'none'}`)
    say(`  actions: ${h.actions.length} (${[...byStatus].map(([s, n]) => `${n} ${s}`).join(', ') || 'none'})`)
    say(`  causal tree: ${roots.length} root${roots.length === 1 ? '' : 's'}, depth ${treeDepth(roots)} (which event led to which, from parentId)`)
    say('  explore it, e.g. in cypher-shell or Neo4j Browser:')
    say(`    MATCH (w:Workflow {id: '${workflowId}'})-[:HAS_EVENT]->(e:Event)-[:EMITTED_BY]->(a:Agent)`)
    say('    RETURN a.name AS agent, e.type AS type, count(*) AS events ORDER BY agent, events DESC')
    say(`  or print the whole timeline and causal tree: troupe history ${workflowId}`)
  } catch (err) {
    say(`  cannot read the history from Neo4j: ${describeError(err)}`)
  } finally {
    await driver.close()
  }
}
