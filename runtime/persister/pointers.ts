// Entries of `persistence:queue` are pointers `{wf, from, to}` into
// `workflow:events:{wf}` (docs/keys.md). This file parses them, rejects the
// malformed ones with a reason (they are parked, never retried), and merges the
// pointers of one workflow into one range to read.
import { compareStreamIds, isStreamId } from '../events.ts'
import { isWorkflowId } from '../redis/keys.ts'
import type { ParkReason } from './metrics.ts'

/** One entry as read from the queue: its id and its raw field list. */
export interface Delivery {
  id: string
  fields: string[]
}

/** A well-formed pointer. */
export interface Pointer {
  entryId: string
  wf: string
  from: string
  to: string
}

/** An entry that cannot be persisted, with why; it goes to `persistence:parked`. */
export interface Parked {
  entryId: string
  fields: string[]
  reason: ParkReason
  detail: string
  /** For `unwritable`: the range Neo4j refused, whose events are then recorded as refused (see graph.ts). */
  refused?: Pointer
}

/** The range of one workflow's stream to read for a batch, and the pointers it covers. */
export interface WorkflowRange {
  wf: string
  from: string
  to: string
  pointers: Pointer[]
}

function field(fields: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]
  return undefined
}

/**
 * Parses one queue entry into a pointer, or says why it is malformed.
 *
 * @example
 * ```ts
 * parsePointer({ id: '1-0', fields: ['wf', 'abc', 'from', '5-0', 'to', '5-3'] }) // { entryId: '1-0', wf: 'abc', from: '5-0', to: '5-3' }
 * parsePointer({ id: '1-1', fields: ['wf', 'abc'] }) // { reason: 'missing_fields', ... }
 * ```
 */
export function parsePointer(d: Delivery): Pointer | Parked {
  const fields = Array.isArray(d.fields) ? d.fields.map(String) : []
  const park = (reason: ParkReason, detail: string): Parked => ({ entryId: d.id, fields, reason, detail })
  const wf = field(fields, 'wf')
  const from = field(fields, 'from')
  const to = field(fields, 'to')
  const missing = [wf === undefined ? 'wf' : '', from === undefined ? 'from' : '', to === undefined ? 'to' : ''].filter(Boolean)
  if (wf === undefined || from === undefined || to === undefined) return park('missing_fields', `missing ${missing.join(', ')}`)
  if (!isWorkflowId(wf)) return park('bad_workflow_id', `${JSON.stringify(wf.slice(0, 80))} is not a workflow id`)
  if (!isStreamId(from) || !isStreamId(to)) return park('bad_range', `${JSON.stringify(from.slice(0, 40))}..${JSON.stringify(to.slice(0, 40))} are not stream ids`)
  if (compareStreamIds(from, to) > 0) return park('bad_range', `from ${from} is after to ${to}`)
  return { entryId: d.id, wf, from, to }
}

/** True when a parse result is a parked entry. */
export function isParked(p: Pointer | Parked): p is Parked {
  return 'reason' in p
}

/**
 * Merges the pointers of each workflow into one range from the smallest `from` to
 * the largest `to`. Reading across the gaps between them costs little (they are
 * usually events of neighbouring pointers) and heals gaps whose pointer was lost.
 */
export function coalesce(pointers: readonly Pointer[]): WorkflowRange[] {
  const byWf = new Map<string, WorkflowRange>()
  for (const p of pointers) {
    const r = byWf.get(p.wf)
    if (!r) {
      byWf.set(p.wf, { wf: p.wf, from: p.from, to: p.to, pointers: [p] })
      continue
    }
    if (compareStreamIds(p.from, r.from) < 0) r.from = p.from
    if (compareStreamIds(p.to, r.to) > 0) r.to = p.to
    r.pointers.push(p)
  }
  return [...byWf.values()]
}

/**
 * A stream id as a string that sorts like the id (`ms-seq`, both parts padded to
 * 20 digits), so Cypher can compare ids with `<` and order by them.
 *
 * @example
 * ```ts
 * streamKey('1700000000000-12') // '00000001700000000000-00000000000000000012'
 * ```
 */
export function streamKey(id: string): string {
  const [ms = '0', seq = '0'] = id.split('-')
  return `${ms.padStart(20, '0')}-${seq.padStart(20, '0')}`
}

/** Server time (ms) encoded in a stream id. */
export function streamMs(id: string): number {
  return Number(id.split('-')[0] ?? 0)
}

/** True when stream id `id` lies within `[from, to]`. */
export function inRange(id: string, from: string, to: string): boolean {
  return compareStreamIds(id, from) >= 0 && compareStreamIds(id, to) <= 0
}
