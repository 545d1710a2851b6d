// `troupe history <wf>`: a workflow's history as Neo4j holds it: the timeline, the
// actions, and the causal tree of its events (CHILD_OF: which event led to which).
import type { Driver } from 'neo4j-driver'
import { TroupeError } from '../errors.ts'
import { assertWorkflowId } from '../redis/keys.ts'
import { causalTree, readHistory, treeDepth, type HistoryEvent, type TreeNode, type WorkflowHistory } from '../persister/history.ts'
import { createNeo4jDriver, describeError } from '../persister/neo4j.ts'
import { resolvePersisterOptions } from '../persister/options.ts'
import { EXIT, parse, UsageError, type Command } from './common.ts'
import { printable } from './render.ts'
import { NEO4J_FLAGS, persisterFlags } from './persister.ts'

const usage = `usage: troupe history <workflowId> [--json] [--limit <n>]

Reads the workflow's history from Neo4j (written by the persister) and prints its
timeline, its actions and the causal tree of its events.
  --json                   the history as JSON: workflow, events, actions, tree
  --limit <n>              print at most n events in the timeline and the tree (default all)
  --neo4j-uri <uri>        default NEO4J_URI or bolt://127.0.0.1:7687
  --neo4j-user <name>      default NEO4J_USER or neo4j
  --neo4j-password <pw>    default NEO4J_PASSWORD
  --neo4j-database <name>  default NEO4J_DATABASE`

const useColor = process.stdout.isTTY && !process.env.NO_COLOR
const dim = (s: string): string => (useColor ? `\x1b[90m${s}\x1b[0m` : s)

function short(v: unknown, max = 80): string {
  const s = typeof v === 'string' ? v : (JSON.stringify(v) ?? '')
  // Event text is whatever agents wrote: no terminal escapes from it.
  const line = printable(s.replace(/\s+/g, ' '))
  return line.length > max ? `${line.slice(0, max - 1)}…` : line
}

function time(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString().slice(11, 23) : '--:--:--.---'
}

function label(e: HistoryEvent): string {
  // A refused event is a stub without content: say why instead of printing null.
  const body = e.refused !== undefined ? `(not stored: Neo4j refused it: ${short(e.refused, 60)})` : short(e.content, 60)
  return `${printable(e.type)}${e.agent ? ` [${printable(e.agent)}]` : ''} ${dim(body)}`
}

/** Renders the forest with box-drawing guides; at most `limit` lines. */
export function renderTree(roots: readonly TreeNode[], limit = Infinity): string[] {
  const out: string[] = []
  const stack: { n: TreeNode; prefix: string; last: boolean; root: boolean }[] = []
  for (let i = roots.length - 1; i >= 0; i--) stack.push({ n: roots[i] as TreeNode, prefix: '', last: true, root: true })
  while (stack.length > 0 && out.length < limit) {
    const { n, prefix, last, root } = stack.pop() as (typeof stack)[number]
    out.push(root ? label(n.event) : `${prefix}${last ? '└─ ' : '├─ '}${label(n.event)}`)
    const childPrefix = root ? '' : `${prefix}${last ? '   ' : '│  '}`
    for (let i = n.children.length - 1; i >= 0; i--) stack.push({ n: n.children[i] as TreeNode, prefix: childPrefix, last: i === n.children.length - 1, root: false })
  }
  if (stack.length > 0) out.push(dim('…'))
  return out
}

/** The text view of a history. */
export function renderHistory(h: WorkflowHistory, limit = Infinity): string {
  const w = h.workflow
  const roots = causalTree(h.events)
  const lines = [
    `workflow ${w.id}: ${w.status ?? '?'} (owner ${w.owner ?? '?'}, created ${w.createdAt ? new Date(w.createdAt).toISOString() : '?'})`,
    `  ${h.eventCount} events, ${h.actions.length} actions, causal depth ${treeDepth(roots)}${h.events.length < h.eventCount ? ` (of the first ${h.events.length})` : ''}, last stream id ${w.lastStreamId ?? '-'}`,
    '',
    'timeline:',
    ...h.events.slice(0, limit).map((e) => `  ${dim(time(e.createdAt))}  ${printable(e.agent ?? '').padEnd(12)} ${printable(e.type).padEnd(20)} ${short(e.content)}`),
  ]
  const shown = Math.min(limit, h.events.length)
  if (h.eventCount > shown) lines.push(dim(`  … ${h.eventCount - shown} more`))
  lines.push('', 'actions:')
  for (const a of h.actions) lines.push(`  ${printable(a.id)}  ${printable(`${a.agent ?? '?'}/${a.type ?? '?'}`).padEnd(28)} ${printable(a.status ?? '?').padEnd(9)} ${a.attempts} attempt${a.attempts === 1 ? '' : 's'}`)
  lines.push('', 'causal tree:', ...renderTree(roots, limit).map((l) => `  ${l}`))
  return lines.join('\n')
}

interface JsonNode {
  id: string
  type: string
  agent: string | null
  children: JsonNode[]
}

function toJson(roots: readonly TreeNode[]): JsonNode[] {
  const map = new Map<TreeNode, JsonNode>()
  const make = (n: TreeNode): JsonNode => {
    const j: JsonNode = { id: n.event.id, type: n.event.type, agent: n.event.agent, children: [] }
    map.set(n, j)
    return j
  }
  const out = roots.map(make)
  const stack = [...roots]
  while (stack.length > 0) {
    const n = stack.pop() as TreeNode
    const j = map.get(n) as JsonNode
    for (const c of n.children) {
      j.children.push(make(c))
      stack.push(c)
    }
  }
  return out
}

/** What to set when Neo4j cannot be reached. */
export const NEO4J_FIX = 'set NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD (or --neo4j-uri ...)'

/** Opens a driver from the Neo4j flags (or NEO4J_* variables). */
export function neo4jFromFlags(v: Record<string, string | boolean | undefined>): { driver: Driver; database: string | undefined; uri: string } {
  const o = resolvePersisterOptions(persisterFlags(v))
  return { driver: createNeo4jDriver(o), database: o.database, uri: o.neo4jUri }
}

/** The `history` command. */
export const command: Command = {
  summary: "print a workflow's history from Neo4j (timeline and causal tree)",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...NEO4J_FLAGS, limit: { type: 'string' } })
    const [wf, ...extra] = positionals
    if (!wf || extra.length) throw new UsageError('expected exactly one <workflowId>')
    // Before any connection: a bad id is the caller's mistake, not an unreachable Neo4j.
    assertWorkflowId(wf)
    const limit = values.limit === undefined ? Infinity : /^\d+$/.test(values.limit) ? Number(values.limit) : NaN
    if (!(limit > 0)) throw new UsageError('--limit must be a positive whole number')
    const { driver, database, uri } = neo4jFromFlags(values)
    try {
      let h: WorkflowHistory | null
      try {
        h = await readHistory(driver, database, wf, { limit })
      } catch (err) {
        process.stderr.write(`error: cannot read Neo4j at ${uri}: ${describeError(err)}\n  ${NEO4J_FIX}\n`)
        return EXIT.unavailable
      }
      if (!h) throw new TroupeError('workflow_not_found', `Neo4j has no workflow ${wf} (not persisted yet? is a persister running? try: troupe reconcile ${wf})`)
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ ...h, tree: toJson(causalTree(h.events)) })}\n`)
      } else {
        process.stdout.write(`${renderHistory(h, limit)}\n`)
      }
      return EXIT.ok
    } finally {
      await driver.close()
    }
  },
}
