// The read side of the graph: one workflow's history as `troupe history` and the
// demo show it (timeline, actions, and the causal tree CHILD_OF edges form).
import neo4j, { type Driver } from 'neo4j-driver'

/** One persisted event, decoded. */
export interface HistoryEvent {
  id: string
  type: string
  content: unknown
  metadata: Record<string, unknown>
  createdAt: number
  streamId: string
  agent: string | null
  actionId: string | null
  parentId: string | null
  /**
   * Set when Neo4j refused the event (too big for its memory, say): the node is a
   * stub with the id, type and position only, and this says why (docs/graph.md).
   */
  refused?: string
}

/** One persisted action. */
export interface HistoryAction {
  id: string
  type: string | null
  agent: string | null
  status: string | null
  attempts: number
}

/** A workflow as Neo4j holds it. */
export interface WorkflowHistory {
  workflow: { id: string; status: string | null; owner: string | null; createdAt: number | null; updatedAt: number | null; lastStreamId: string | null }
  /** In stream order; the first `limit` of them when readHistory was given one. */
  events: HistoryEvent[]
  /** How many events Neo4j holds for the workflow (more than `events.length` past a limit). */
  eventCount: number
  actions: HistoryAction[]
}

/** An event with the events it caused. */
export interface TreeNode {
  event: HistoryEvent
  children: TreeNode[]
}

function num(v: unknown): number | null {
  if (v === null || v === undefined) return null
  if (neo4j.isInt(v)) return neo4j.integer.toNumber(v)
  return typeof v === 'number' ? v : null
}

function decode(text: unknown): unknown {
  if (typeof text !== 'string') return null
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}

/**
 * Reads one workflow's history from Neo4j; null when Neo4j has no such workflow.
 *
 * @example
 * ```ts
 * const h = await readHistory(driver, undefined, 'V1StGXR8_Z5jdHi6B-myT')
 * for (const e of h?.events ?? []) console.log(e.streamId, e.type)
 * ```
 */
export async function readHistory(driver: Driver, database: string | undefined, wf: string, opts: { limit?: number } = {}): Promise<WorkflowHistory | null> {
  const limit = opts.limit !== undefined && Number.isFinite(opts.limit) ? Math.max(0, Math.floor(opts.limit)) : null
  const cfg = { routing: 'READ' as const, ...(database ? { database } : {}) }
  const w = await driver.executeQuery('MATCH (w:Workflow {id: $wf}) RETURN w {.id, .status, .owner, .createdAt, .updatedAt, .lastStreamId} AS w', { wf }, cfg)
  const rec = w.records[0]?.get('w') as Record<string, unknown> | undefined
  if (!rec) return null
  const ev = await driver.executeQuery(
    `MATCH (w:Workflow {id: $wf})-[:HAS_EVENT]->(e:Event)
     OPTIONAL MATCH (e)-[:CHILD_OF]->(p:Event)
     OPTIONAL MATCH (e)-[:EMITTED_BY]->(a:Agent)
     OPTIONAL MATCH (ac:Action)-[:CAUSED]->(e)
     RETURN e {.id, .type, .content, .metadata, .createdAt, .streamId, .streamKey, .refused} AS e, p.id AS parentId, a.name AS agent, ac.id AS actionId
     ORDER BY e.streamKey${limit === null ? '' : ' LIMIT $limit'}`,
    // In the query: `troupe history --limit 20` of a long workflow read every event (content and all) to print twenty.
    limit === null ? { wf } : { wf, limit: neo4j.int(limit) },
    cfg,
  )
  const events: HistoryEvent[] = ev.records.map((r) => {
    const e = r.get('e') as Record<string, unknown>
    const meta = decode(e.metadata)
    return {
      id: String(e.id),
      type: String(e.type),
      content: decode(e.content),
      metadata: typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>) : {},
      createdAt: num(e.createdAt) ?? 0,
      streamId: String(e.streamId),
      agent: (r.get('agent') as string | null) ?? null,
      actionId: (r.get('actionId') as string | null) ?? null,
      parentId: (r.get('parentId') as string | null) ?? null,
      ...(typeof e.refused === 'string' ? { refused: e.refused } : {}),
    }
  })
  const ac = await driver.executeQuery(
    `MATCH (:Workflow {id: $wf})-[:HAS_ACTION]->(a:Action)
     OPTIONAL MATCH (a)-[:CAUSED]->(e:Event)
     WITH a, min(e.streamKey) AS first
     RETURN a {.id, .type, .agent, .status, .attempts} AS a ORDER BY first`,
    { wf },
    cfg,
  )
  const actions: HistoryAction[] = ac.records.map((r) => {
    const a = r.get('a') as Record<string, unknown>
    return { id: String(a.id), type: (a.type as string | null) ?? null, agent: (a.agent as string | null) ?? null, status: (a.status as string | null) ?? null, attempts: num(a.attempts) ?? 0 }
  })
  let eventCount = events.length
  if (limit !== null && events.length >= limit) {
    const c = await driver.executeQuery('MATCH (:Workflow {id: $wf})-[:HAS_EVENT]->(e:Event) RETURN count(e) AS n', { wf }, cfg)
    eventCount = num(c.records[0]?.get('n')) ?? events.length
  }
  return {
    workflow: { id: String(rec.id), status: (rec.status as string | null) ?? null, owner: (rec.owner as string | null) ?? null, createdAt: num(rec.createdAt), updatedAt: num(rec.updatedAt), lastStreamId: (rec.lastStreamId as string | null) ?? null },
    events,
    eventCount,
    actions,
  }
}

/**
 * Builds the causal forest from CHILD_OF: roots are events whose parent is not in
 * the workflow; children keep stream order. Written without recursion (chains can
 * be thousands deep), and a parent cycle from hostile ids is cut, not followed.
 */
export function causalTree(events: readonly HistoryEvent[]): TreeNode[] {
  const nodes = new Map<string, TreeNode>()
  for (const e of events) if (!nodes.has(e.id)) nodes.set(e.id, { event: e, children: [] })
  const attached = new Set<string>()
  const roots: TreeNode[] = []
  const childrenOf = new Map<string, TreeNode[]>()
  for (const n of nodes.values()) {
    const p = n.event.parentId
    if (p !== null && p !== n.event.id && nodes.has(p)) {
      const list = childrenOf.get(p) ?? []
      list.push(n)
      childrenOf.set(p, list)
    } else {
      roots.push(n)
    }
  }
  const grow = (root: TreeNode): void => {
    const stack = [root]
    attached.add(root.event.id)
    while (stack.length > 0) {
      const n = stack.pop() as TreeNode
      for (const c of childrenOf.get(n.event.id) ?? []) {
        if (attached.has(c.event.id)) continue
        attached.add(c.event.id)
        n.children.push(c)
        stack.push(c)
      }
    }
  }
  for (const r of roots) grow(r)
  // Whatever is still unattached sits on a parent cycle: its first event becomes a root.
  for (const n of nodes.values()) {
    if (attached.has(n.event.id)) continue
    roots.push(n)
    grow(n)
  }
  return roots
}

/** Number of events on the longest root-to-leaf path (0 for an empty forest). */
export function treeDepth(roots: readonly TreeNode[]): number {
  let max = 0
  const stack: [TreeNode, number][] = roots.map((r) => [r, 1])
  while (stack.length > 0) {
    const [n, d] = stack.pop() as [TreeNode, number]
    if (d > max) max = d
    for (const c of n.children) stack.push([c, d + 1])
  }
  return max
}

/** Number of events each type has, most frequent first. */
export function countByType(events: readonly HistoryEvent[]): [string, number][] {
  const m = new Map<string, number>()
  for (const e of events) m.set(e.type, (m.get(e.type) ?? 0) + 1)
  return [...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
}
