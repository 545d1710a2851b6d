// The graph side: the schema (named uniqueness constraints) and the three
// statements a batch runs in one transaction, one UNWIND per kind of node. Every
// value travels as a parameter; no Cypher is ever built from data. docs/graph.md
// describes the model these statements produce.
import type { Driver, ManagedTransaction } from 'neo4j-driver'
import { eventBytes, type ActionRow, type EventGroup, type EventRow, type GraphRows, type WorkflowRow } from './rows.ts'

/** The constraints the persister creates at start (each also backs an index for MERGE). */
export const CONSTRAINTS: readonly string[] = [
  'CREATE CONSTRAINT troupe_workflow_id IF NOT EXISTS FOR (w:Workflow) REQUIRE w.id IS UNIQUE',
  'CREATE CONSTRAINT troupe_event_id IF NOT EXISTS FOR (e:Event) REQUIRE e.id IS UNIQUE',
  'CREATE CONSTRAINT troupe_agent_name IF NOT EXISTS FOR (a:Agent) REQUIRE a.name IS UNIQUE',
  'CREATE CONSTRAINT troupe_action_id IF NOT EXISTS FOR (a:Action) REQUIRE a.id IS UNIQUE',
]

// A status read from Redis is stamped with the stream position at the time of the
// read (observedKey); writes from several persisters can commit in any order, so
// an older reading never overwrites a newer one. lastStreamId only moves forward.
const WRITE_WORKFLOWS = `
UNWIND $workflows AS row
MERGE (w:Workflow {id: row.id})
WITH w, row,
  (w.observedKey IS NULL OR row.observedKey >= w.observedKey) AS fresher,
  (row.lastStreamKey IS NOT NULL AND (w.lastStreamKey IS NULL OR row.lastStreamKey > w.lastStreamKey)) AS later
SET w.status = CASE WHEN fresher AND row.status IS NOT NULL THEN row.status ELSE w.status END,
    w.updatedAt = CASE WHEN fresher AND row.updatedAt IS NOT NULL THEN row.updatedAt ELSE w.updatedAt END,
    w.observedKey = CASE WHEN fresher THEN row.observedKey ELSE w.observedKey END,
    w.owner = coalesce(w.owner, row.owner),
    w.createdAt = coalesce(w.createdAt, row.createdAt),
    w.lastStreamId = CASE WHEN later THEN row.lastStreamId ELSE w.lastStreamId END,
    w.lastStreamKey = CASE WHEN later THEN row.lastStreamKey ELSE w.lastStreamKey END`

const WRITE_ACTIONS = `
UNWIND $actions AS row
MERGE (a:Action {id: row.id})
WITH a, row, (a.observedKey IS NULL OR row.observedKey >= a.observedKey) AS fresher
SET a.type = coalesce(row.type, a.type),
    a.agent = coalesce(row.agent, a.agent),
    a.workflowId = row.wf,
    a.status = CASE WHEN fresher AND row.status IS NOT NULL THEN row.status ELSE a.status END,
    a.attempts = CASE WHEN a.attempts IS NULL OR row.attempts > a.attempts THEN row.attempts ELSE a.attempts END,
    a.observedKey = CASE WHEN fresher THEN row.observedKey ELSE a.observedKey END
WITH a, row
MATCH (w:Workflow {id: row.wf})
MERGE (w)-[:HAS_ACTION]->(a)
FOREACH (name IN CASE WHEN row.agent IS NULL THEN [] ELSE [row.agent] END |
  MERGE (ag:Agent {name: name})
  MERGE (a)-[:ASSIGNED_TO]->(ag))`

// A parent that has not arrived yet is merged as a placeholder (only its id); when
// it arrives, the same MERGE finds it, fills it in and drops the mark.
const WRITE_EVENTS = `
UNWIND $groups AS g
MATCH (w:Workflow {id: g.wf})
UNWIND g.events AS row
MERGE (e:Event {id: row.id})
SET e.type = row.type, e.content = row.content, e.metadata = row.metadata, e.createdAt = row.createdAt,
    e.streamId = row.streamId, e.streamKey = row.streamKey, e.workflowId = g.wf
REMOVE e.placeholder, e.refused
MERGE (w)-[:HAS_EVENT]->(e)
FOREACH (name IN CASE WHEN row.agent IS NULL THEN [] ELSE [row.agent] END |
  MERGE (ag:Agent {name: name})
  MERGE (e)-[:EMITTED_BY]->(ag))
FOREACH (pid IN CASE WHEN row.parentId IS NULL THEN [] ELSE [row.parentId] END |
  MERGE (p:Event {id: pid})
  ON CREATE SET p.placeholder = true
  MERGE (e)-[:CHILD_OF]->(p))
FOREACH (aid IN CASE WHEN row.actionId IS NULL THEN [] ELSE [row.actionId] END |
  MERGE (a:Action {id: aid})
  MERGE (a)-[:CAUSED]->(e))`

// An event Neo4j refused (parked `unwritable`) is recorded as a stub: its id,
// type and stream position with the refusal, no content. Counted like any event,
// it lets the completeness checks (retention, reconciliation, trimming) account
// for it instead of waiting forever for an event that can never arrive. An event
// written meanwhile (by another persister, the pool having room there) is left
// as it is; a later successful write of the stub's event fills it in and drops
// the mark (WRITE_EVENTS).
const WRITE_REFUSED = `
MATCH (w:Workflow {id: $wf})
UNWIND $events AS row
MERGE (e:Event {id: row.id})
WITH w, e, row WHERE e.content IS NULL
SET e.type = row.type, e.createdAt = row.createdAt, e.streamId = row.streamId, e.streamKey = row.streamKey,
    e.workflowId = $wf, e.refused = row.refused
REMOVE e.placeholder
MERGE (w)-[:HAS_EVENT]->(e)`

/** One refused event as its stub records it (see WRITE_REFUSED). */
export interface RefusedRow {
  id: string
  type: string
  createdAt: EventRow['createdAt']
  streamId: string
  streamKey: string
  /** Why Neo4j refused it. */
  refused: string
}

/** The stubs of `events`, refused for `why`. */
export function refusedRows(events: readonly EventRow[], why: string): RefusedRow[] {
  // Short: the stub must fit wherever the event did not (a type may be any length).
  return events.map((e) => ({ id: e.id, type: e.type.slice(0, 256), createdAt: e.createdAt, streamId: e.streamId, streamKey: e.streamKey, refused: why.slice(0, 500) }))
}

/**
 * Records events of one workflow Neo4j refused, as stubs, with the workflow's row
 * (which moves lastStreamId past them), in one transaction.
 */
export async function writeRefused(driver: Driver, database: string | undefined, workflow: WorkflowRow, events: readonly RefusedRow[]): Promise<void> {
  if (events.length === 0) return
  const session = driver.session({ ...(database ? { database } : {}), defaultAccessMode: 'WRITE' })
  try {
    await session.executeWrite(async (tx) => {
      await tx.run(WRITE_WORKFLOWS, { workflows: [workflow] })
      await tx.run(WRITE_REFUSED, { wf: workflow.id, events })
    })
  } finally {
    await session.close()
  }
}

/** Creates the constraints (idempotent: `IF NOT EXISTS`). */
export async function ensureSchema(driver: Driver, database: string | undefined): Promise<void> {
  const session = driver.session({ ...(database ? { database } : {}), defaultAccessMode: 'WRITE' })
  try {
    for (const c of CONSTRAINTS) await session.run(c)
  } finally {
    await session.close()
  }
}

/** Runs the three statements of one batch inside `tx` (workflows first: the others MATCH them). */
export async function runBatch(tx: ManagedTransaction, rows: GraphRows): Promise<void> {
  // Queued back to back: the server runs them in order, the client waits once.
  const pending = [tx.run(WRITE_WORKFLOWS, { workflows: rows.workflows })]
  if (rows.actions.length > 0) pending.push(tx.run(WRITE_ACTIONS, { actions: rows.actions }))
  if (rows.groups.length > 0) pending.push(tx.run(WRITE_EVENTS, { groups: rows.groups }))
  await Promise.all(pending)
}

/** Writes `rows` in one managed write transaction (retried by the driver on transient errors). */
export async function writeRows(driver: Driver, database: string | undefined, rows: GraphRows): Promise<void> {
  const session = driver.session({ ...(database ? { database } : {}), defaultAccessMode: 'WRITE' })
  try {
    await session.executeWrite((tx) => runBatch(tx, rows))
  } finally {
    await session.close()
  }
}

/** What one workflow contributes to a batch before it is cut into transactions. */
export interface WorkflowPart {
  workflow: WorkflowRow
  actions: ActionRow[]
  events: EventRow[]
}

/**
 * Cuts a batch into transactions of at most `maxEvents` events and about
 * `maxBytes` bytes, and into at least `spread` transactions when the batch is big
 * enough to be worth writing in parallel (each at least `minEvents`). A workflow
 * with more events than fit is split across transactions; its workflow row goes
 * with each piece (writes are idempotent and lastStreamId only moves forward),
 * its actions with the first.
 */
export function planTransactions(parts: readonly WorkflowPart[], maxEvents: number, maxBytes: number, spread = 1, minEvents = 250): GraphRows[] {
  let total = 0
  for (const p of parts) total += p.events.length
  const share = Math.ceil(total / Math.max(1, spread))
  if (spread > 1 && share >= minEvents) maxEvents = Math.min(maxEvents, share)
  const txs: GraphRows[] = []
  let cur: GraphRows = { workflows: [], actions: [], groups: [] }
  let events = 0
  let bytes = 0
  const flush = (): void => {
    if (cur.workflows.length > 0) txs.push(cur)
    cur = { workflows: [], actions: [], groups: [] }
    events = 0
    bytes = 0
  }
  for (const p of parts) {
    let first = true
    let i = 0
    do {
      if (events >= maxEvents || bytes >= maxBytes) flush()
      const group: EventGroup = { wf: p.workflow.id, events: [] }
      while (i < p.events.length && events < maxEvents && (bytes < maxBytes || group.events.length === 0)) {
        const e = p.events[i++] as EventRow
        group.events.push(e)
        events++
        bytes += eventBytes(e)
      }
      cur.workflows.push(p.workflow)
      if (first) cur.actions.push(...p.actions)
      if (group.events.length > 0) cur.groups.push(group)
      first = false
    } while (i < p.events.length)
  }
  flush()
  return txs
}

/** Events in a set of rows. */
export function countEvents(rows: GraphRows): number {
  let n = 0
  for (const g of rows.groups) n += g.events.length
  return n
}
