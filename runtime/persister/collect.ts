// Reads from Redis what a batch writes: the events the pointers name (XRANGE of
// `workflow:events:{wf}`, one per workflow), then, in a second round trip, each
// workflow's status hash, its action records and the stream's last id (the
// position those readings are stamped with).
import { compareStreamIds, parseEntry } from '../events.ts'
import type { RedisClient } from '../redis/connection.ts'
import { execOps, type CmdOp } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
import type { StreamedEvent } from '../types.ts'
import type { WorkflowPart } from './graph.ts'
import { inRange, type Parked, type WorkflowRange } from './pointers.ts'
import { workflowRows, type WorkflowReading } from './rows.ts'

/** A range of one workflow's stream; `start` may be exclusive (`(id`) or `-`. */
export interface ReadRange {
  wf: string
  start: string
  end: string
}

type Reply = [Error | null, unknown]

function check(r: Reply | undefined): unknown {
  if (!r) throw new Error('missing reply in pipeline')
  if (r[0]) throw r[0]
  return r[1]
}

/**
 * Reads each range completely, `pageSize` entries per XRANGE, all ranges at once
 * per page round (one pipeline on a single Redis, per node on a Cluster).
 */
export async function readEvents(redis: RedisClient, keys: Keys, ranges: readonly ReadRange[], pageSize: number): Promise<Map<string, StreamedEvent[]>> {
  const out = new Map<string, StreamedEvent[]>()
  let todo = ranges.map((r) => ({ ...r }))
  while (todo.length > 0) {
    const res: Reply[] = await execOps(redis, todo.map((r) => ({ cmd: 'xrange', args: [keys.events(r.wf), r.start, r.end, 'COUNT', pageSize] })))
    const next: typeof todo = []
    todo.forEach((r, i) => {
      const entries = (check(res[i]) ?? []) as [string, string[]][]
      const list = out.get(r.wf) ?? []
      out.set(r.wf, list)
      for (const e of entries) list.push(parseEntry(r.wf, e))
      const last = entries[entries.length - 1]
      if (entries.length >= pageSize && last) next.push({ ...r, start: `(${last[0]}` })
    })
    todo = next
  }
  return out
}

/**
 * Reads the status hash, the records of the actions the events mention and the
 * stream's last id of each workflow, all at once (see readEvents). The last id is read first:
 * every status change appends an event, so the hash is at least as new as it.
 */
export async function readState(redis: RedisClient, keys: Keys, events: ReadonlyMap<string, StreamedEvent[]>): Promise<WorkflowReading[]> {
  const ops: CmdOp[] = []
  const plan: { wf: string; ids: string[] }[] = []
  for (const [wf, list] of events) {
    const ids = new Set<string>()
    for (const e of list) {
      const a = e.event.metadata?.actionId
      if (typeof a === 'string' && a.length > 0 && a.length <= 512) ids.add(a)
    }
    const idList = [...ids]
    plan.push({ wf, ids: idList })
    ops.push({ cmd: 'xrevrange', args: [keys.events(wf), '+', '-', 'COUNT', 1] }, { cmd: 'hgetall', args: [keys.status(wf)] })
    if (idList.length > 0) ops.push({ cmd: 'hmget', args: [keys.actions(wf), ...idList.flatMap((id) => [id, `${id}:st`])] })
  }
  const res: Reply[] = await execOps(redis, ops)
  let i = 0
  const readings: WorkflowReading[] = []
  for (const { wf, ids } of plan) {
    const last = (check(res[i++]) ?? []) as [string, unknown][]
    const status = (check(res[i++]) ?? {}) as Record<string, string>
    const actions = new Map<string, [string | null, string | null]>()
    if (ids.length > 0) {
      const vals = (check(res[i++]) ?? []) as (string | null)[]
      ids.forEach((id, j) => actions.set(id, [vals[j * 2] ?? null, vals[j * 2 + 1] ?? null]))
    }
    readings.push({ wf, entries: events.get(wf) ?? [], status, lastId: last[0]?.[0] ?? '', actions })
  }
  return readings
}

/** True when the sorted `list` has an event within `[from, to]` (binary search: batches can be large). */
function hasEventIn(list: readonly StreamedEvent[], from: string, to: string): boolean {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (compareStreamIds((list[mid] as StreamedEvent).streamId, from) < 0) lo = mid + 1
    else hi = mid
  }
  const e = list[lo]
  return e !== undefined && inRange(e.streamId, from, to)
}

/** What a batch of pointers turned into. */
export interface CollectedBatch {
  parts: WorkflowPart[]
  readings: WorkflowReading[]
  /** Pointers whose range holds no event (the stream is gone, or they point nowhere). */
  empty: Parked[]
  events: number
}

/** Reads everything `ranges` point at and builds the rows to write. */
export async function collectBatch(redis: RedisClient, keys: Keys, ranges: readonly WorkflowRange[], pageSize = 1000): Promise<CollectedBatch> {
  const events = await readEvents(redis, keys, ranges.map((r) => ({ wf: r.wf, start: r.from, end: r.to })), pageSize)
  const empty: Parked[] = []
  for (const r of ranges) {
    const list = events.get(r.wf) ?? []
    for (const p of r.pointers) {
      if (!hasEventIn(list, p.from, p.to)) {
        empty.push({ entryId: p.entryId, fields: ['wf', p.wf, 'from', p.from, 'to', p.to], reason: 'empty_range', detail: `no event of ${p.wf} between ${p.from} and ${p.to}` })
      }
    }
    if (list.length === 0) events.delete(r.wf)
  }
  const readings = await readState(redis, keys, events)
  let n = 0
  const parts = readings.map((r) => {
    n += r.entries.length
    return workflowRows(r)
  })
  return { parts, readings, empty, events: n }
}
