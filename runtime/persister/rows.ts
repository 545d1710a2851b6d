// Turns what Redis holds about a workflow (stream entries, status hash, action
// records) into the rows the graph statements UNWIND. Pure functions: no I/O, so
// the shape of the graph is unit-testable. Every integer becomes a Neo4j integer
// (the driver would send a JS number as a float).
import neo4j, { type Integer } from 'neo4j-driver'
import type { StreamedEvent } from '../types.ts'
import { streamKey, streamMs } from './pointers.ts'

/** One event as stored on an `(:Event)` node, plus the ids of what it links to. */
export interface EventRow {
  id: string
  type: string
  /** JSON of the event's content, exactly as re-serialised from the stream. */
  content: string
  /** JSON of the event's metadata. */
  metadata: string
  createdAt: Integer
  streamId: string
  streamKey: string
  agent: string | null
  actionId: string | null
  parentId: string | null
}

/** One `(:Workflow)` update: its status as read from Redis and the newest event written. */
export interface WorkflowRow {
  id: string
  status: string | null
  owner: string | null
  createdAt: Integer | null
  updatedAt: Integer | null
  /** Sortable id of the stream's last entry when the status was read: newer reads win. */
  observedKey: string
  lastStreamId: string | null
  lastStreamKey: string | null
}

/** One `(:Action)` update. */
export interface ActionRow {
  id: string
  wf: string
  type: string | null
  agent: string | null
  status: string | null
  attempts: Integer
  observedKey: string
}

/** The events of one workflow to write, grouped so the workflow is looked up once. */
export interface EventGroup {
  wf: string
  events: EventRow[]
}

/** Everything one transaction writes. */
export interface GraphRows {
  workflows: WorkflowRow[]
  actions: ActionRow[]
  groups: EventGroup[]
}

/** What Redis returned for one workflow of a batch. */
export interface WorkflowReading {
  wf: string
  entries: StreamedEvent[]
  /** `workflow:status:{wf}` (empty when gone). */
  status: Record<string, string>
  /** Id of the stream's last entry when the status was read ('' when the stream is gone). */
  lastId: string
  /** The stream's length at that read (what decides whether it is trimmed, see trim.ts). */
  len?: number
  /** Action id → [record JSON, state JSON] from `workflow:actions:{wf}`. */
  actions: Map<string, [string | null, string | null]>
}

const MAX_ID = 512

function str(v: unknown, max = MAX_ID): string | null {
  return typeof v === 'string' && v.length > 0 && v.length <= max ? v : null
}

function intOrNull(v: string | undefined): Integer | null {
  if (v === undefined || v === '') return null
  const n = Number(v)
  return Number.isFinite(n) ? neo4j.int(Math.trunc(n)) : null
}

function json(v: unknown): string {
  try {
    return JSON.stringify(v ?? null) ?? 'null'
  } catch {
    return 'null'
  }
}

function parseObject(text: string | null | undefined): Record<string, unknown> | null {
  if (!text) return null
  try {
    const v = JSON.parse(text) as unknown
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null
  } catch {
    return null
  }
}

/** The id of the `(:Event)` node a stream entry becomes (see eventRow). */
export function eventId(wf: string, e: StreamedEvent): string {
  const ev = e.event
  const malformed = ev.type === 'troupe.malformed' && ev.id === `malformed-${e.streamId}`
  return malformed ? `malformed:${wf}:${e.streamId}` : (str(ev.id) ?? `${wf}:${e.streamId}`)
}

/**
 * The row of one stream entry. An event without a usable id gets one derived from
 * its workflow and stream id, so that rewriting it stays idempotent.
 */
export function eventRow(wf: string, e: StreamedEvent): EventRow {
  const ev = e.event
  const id = eventId(wf, e)
  const meta = typeof ev.metadata === 'object' && ev.metadata !== null ? ev.metadata : {}
  const at = typeof meta.at === 'number' && Number.isFinite(meta.at) ? Math.trunc(meta.at) : streamMs(e.streamId)
  const parent = str(ev.parentId)
  return {
    id,
    type: typeof ev.type === 'string' ? ev.type : 'troupe.malformed',
    content: json(ev.content),
    metadata: json(meta),
    createdAt: neo4j.int(at),
    streamId: e.streamId,
    streamKey: streamKey(e.streamId),
    agent: str(meta.agent),
    actionId: str(meta.actionId),
    parentId: parent === id ? null : parent,
  }
}

/** Status an action.* event implies when the action record is gone from Redis. */
const STATUS_BY_EVENT: Record<string, string> = {
  'action.enqueued': 'queued',
  'action.redelivered': 'running',
  'action.completed': 'done',
  'action.failed': 'retry',
  'action.dead': 'dead',
  // Sent back to its mailbox (TroupeClient.requeueDead): queued again, not dead.
  'action.requeued': 'queued',
}

function actionRows(r: WorkflowReading, events: readonly EventRow[], observedKey: string): ActionRow[] {
  const seen = new Map<string, { agent: string | null; type: string | null; status: string | null; attempts: number }>()
  for (const e of events) {
    if (!e.actionId) continue
    const a = seen.get(e.actionId) ?? { agent: null, type: null, status: null, attempts: 0 }
    seen.set(e.actionId, a)
    const meta = parseObject(e.metadata)
    const attempt = typeof meta?.attempt === 'number' ? meta.attempt : 0
    if (attempt > a.attempts) a.attempts = attempt
    const implied = STATUS_BY_EVENT[e.type]
    if (implied) {
      a.status = implied
      const content = parseObject(e.content)
      a.agent = str(content?.agent) ?? a.agent ?? e.agent
      a.type = str(content?.type) ?? a.type
    }
  }
  const rows: ActionRow[] = []
  for (const [id, a] of seen) {
    const [recJson, stJson] = r.actions.get(id) ?? [null, null]
    const rec = parseObject(recJson)
    const st = parseObject(stJson)
    const attempt = typeof st?.attempt === 'number' && st.attempt > a.attempts ? st.attempt : a.attempts
    rows.push({
      id,
      wf: r.wf,
      type: str(rec?.type) ?? a.type,
      agent: str(rec?.agent) ?? a.agent,
      status: str(st?.status) ?? a.status,
      attempts: neo4j.int(Math.max(0, Math.trunc(attempt))),
      observedKey,
    })
  }
  return rows
}

/**
 * Builds the rows for one workflow. The status and action states come from Redis
 * at read time (newer than every event read), stamped with the stream position of
 * that read so a slower, older write never overwrites a newer one.
 */
export function workflowRows(r: WorkflowReading): { workflow: WorkflowRow; actions: ActionRow[]; events: EventRow[] } {
  const events = r.entries.map((e) => eventRow(r.wf, e))
  let last: EventRow | null = null
  for (const e of events) if (!last || e.streamKey > last.streamKey) last = e
  const lastId = r.lastId || last?.streamId || '0-0'
  const observedKey = streamKey(lastId)
  const s = r.status
  return {
    workflow: {
      id: r.wf,
      status: str(s.status, 64),
      owner: str(s.owner, 256),
      createdAt: intOrNull(s.createdAt),
      updatedAt: intOrNull(s.updatedAt),
      observedKey,
      lastStreamId: last?.streamId ?? null,
      lastStreamKey: last?.streamKey ?? null,
    },
    actions: actionRows(r, events, observedKey),
    events,
  }
}

/** Bytes an event adds to a transaction (its two JSON strings dominate). */
export function eventBytes(e: EventRow): number {
  return e.content.length + e.metadata.length + e.id.length + 64
}

/** Agent names a status hash lists (`agent:<name>` fields). */
export function agentsOf(status: Record<string, string>): string[] {
  return Object.keys(status).filter((k) => k.startsWith('agent:') && k.length > 6).map((k) => k.slice(6))
}
