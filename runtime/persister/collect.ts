// Reads from Redis what a batch writes: the events the pointers name (XRANGE of
// `workflow:events:{wf}`, one per workflow), then, in a second round trip, each
// workflow's status hash, its action records and the stream's last id (the
// position those readings are stamped with).
import { compareStreamIds, parseEntry } from '../events.ts'
import type { RedisClient } from '../redis/connection.ts'
import { execOps, type CmdOp } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
import { LuaScripts } from '../redis/scripts.ts'
import type { StreamedEvent } from '../types.ts'
import type { WorkflowPart } from './graph.ts'
import { coalesce, inRange, type Pointer } from './pointers.ts'
import { workflowRows, type WorkflowReading } from './rows.ts'

/** A range of one workflow's stream; `start` may be exclusive (`(id`) or `-`. */
export interface ReadRange {
  wf: string
  start: string
  end: string
}

/** What one {@link readEvents} call read, and what it left for the next. */
export interface EventsRead<R extends ReadRange> {
  /** The events read, per workflow, in stream order (an entry, possibly empty, for every range asked for). */
  events: Map<string, StreamedEvent[]>
  /** Their size as read: ids, field names and values. */
  bytes: number
  /** The ranges not read to their end when the byte budget ran out, each starting after its last entry read. */
  rest: R[]
}

type Reply = [Error | null, unknown]

function check(r: Reply | undefined): unknown {
  if (!r) throw new Error('missing reply in pipeline')
  if (r[0]) throw r[0]
  return r[1]
}

/** Size of a stream entry as read: its id, field names and values. */
export function entryBytes(e: [string, string[]]): number {
  let n = e[0].length
  for (const f of e[1]) n += f.length
  return n
}

// Before any entry is seen its size is unknown (one may be megabytes): the first
// round asks for a few entries, and each round after at most GROWTH times the
// one before, so a round cannot overshoot the budget by much more than what was
// already read. A range's own page grows the same way, from FIRST_PAGE.
const FIRST_ROUND = 8
const FIRST_PAGE = 4
const GROWTH = 4

/**
 * Reads `ranges` in rounds (one pipeline each on a single Redis, per node on a
 * Cluster) until they are read to their end or `maxBytes` of entries are in
 * memory. A round asks for as many entries as the rest of the budget holds at
 * the average size seen so far, so the budget is overshot only when sizes vary
 * within a batch, by at most one round. What is left is returned in `rest`, to
 * be read by another call once what was read is written.
 */
export async function readEvents<R extends ReadRange>(redis: RedisClient, keys: Keys, ranges: readonly R[], opts: { pageSize: number; maxBytes: number }): Promise<EventsRead<R>> {
  const out = new Map<string, StreamedEvent[]>()
  for (const r of ranges) out.set(r.wf, out.get(r.wf) ?? [])
  let bytes = 0
  let entries = 0
  let room = FIRST_ROUND
  let todo = ranges.map((r) => ({ range: { ...r }, page: Math.min(FIRST_PAGE, opts.pageSize) }))
  while (todo.length > 0 && bytes < opts.maxBytes) {
    if (entries > 0) room = Math.max(1, Math.min(room * GROWTH, Math.floor((opts.maxBytes - bytes) / (bytes / entries))))
    const round: { t: (typeof todo)[number]; count: number }[] = []
    let asked = 0
    for (const t of todo) {
      if (asked >= room) break
      const count = Math.min(t.page, room - asked)
      round.push({ t, count })
      asked += count
    }
    const res: Reply[] = await execOps(redis, round.map(({ t, count }) => ({ cmd: 'xrange', args: [keys.events(t.range.wf), t.range.start, t.range.end, 'COUNT', count] })))
    const done = new Set<(typeof todo)[number]>()
    round.forEach(({ t, count }, i) => {
      const got = (check(res[i]) ?? []) as [string, string[]][]
      const list = out.get(t.range.wf) as StreamedEvent[]
      for (const e of got) {
        list.push(parseEntry(t.range.wf, e))
        bytes += entryBytes(e)
        entries++
      }
      const last = got[got.length - 1]
      if (got.length < count || !last) {
        done.add(t)
        return
      }
      t.range.start = `(${last[0]}`
      if (count === t.page) t.page = Math.min(opts.pageSize, t.page * GROWTH)
    })
    todo = todo.filter((t) => !done.has(t))
  }
  return { events: out, bytes, rest: todo.map((t) => t.range) }
}

/**
 * Reads the status hash, the records of the actions the events mention and the
 * stream's last id and length of each workflow, all at once (see readEvents). The last id is read first:
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
    ops.push({ cmd: 'xrevrange', args: [keys.events(wf), '+', '-', 'COUNT', 1] }, { cmd: 'xlen', args: [keys.events(wf)] }, { cmd: 'hgetall', args: [keys.status(wf)] })
    if (idList.length > 0) ops.push({ cmd: 'hmget', args: [keys.actions(wf), ...idList.flatMap((id) => [id, `${id}:st`])] })
  }
  const res: Reply[] = await execOps(redis, ops)
  let i = 0
  const readings: WorkflowReading[] = []
  for (const { wf, ids } of plan) {
    const last = (check(res[i++]) ?? []) as [string, unknown][]
    const len = Number(check(res[i++]) ?? 0)
    const status = (check(res[i++]) ?? {}) as Record<string, string>
    const actions = new Map<string, [string | null, string | null]>()
    if (ids.length > 0) {
      const vals = (check(res[i++]) ?? []) as (string | null)[]
      ids.forEach((id, j) => actions.set(id, [vals[j * 2] ?? null, vals[j * 2 + 1] ?? null]))
    }
    readings.push({ wf, entries: events.get(wf) ?? [], status, lastId: last[0]?.[0] ?? '', len, actions })
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

/** The part of a workflow's stream a batch still has to read, and the pointers it covers. */
export interface BatchRange extends ReadRange {
  pointers: Pointer[]
}

/** The ranges to read for `pointers`: one per workflow (see coalesce). */
export function batchRanges(pointers: readonly Pointer[]): BatchRange[] {
  return coalesce(pointers).map((r) => ({ wf: r.wf, start: r.from, end: r.to, pointers: r.pointers }))
}

/** What one read of a batch turned into. */
export interface CollectedBatch {
  parts: WorkflowPart[]
  readings: WorkflowReading[]
  /** Entry ids of the pointers whose range holds an event among those read. */
  seen: string[]
  events: number
  bytes: number
  /** What is left to read (the byte budget ran out); empty when the batch is read to its end. */
  rest: BatchRange[]
}

/**
 * Reads what `ranges` point at, up to about `maxBytes` of events, and builds the
 * rows to write. A pointer whose range holds no event in any of a batch's reads
 * is the caller's to park (see `seen`).
 */
export async function collectBatch(redis: RedisClient, keys: Keys, ranges: readonly BatchRange[], maxBytes: number, pageSize = 1000): Promise<CollectedBatch> {
  const read = await readEvents(redis, keys, ranges, { pageSize, maxBytes })
  const seen: string[] = []
  for (const r of ranges) {
    const list = read.events.get(r.wf) ?? []
    for (const p of r.pointers) if (hasEventIn(list, p.from, p.to)) seen.push(p.entryId)
    if (list.length === 0) read.events.delete(r.wf)
  }
  const readings = await readState(redis, keys, read.events)
  let n = 0
  const parts = readings.map((r) => {
    n += r.entries.length
    return workflowRows(r)
  })
  return { parts, readings, seen, events: n, bytes: read.bytes, rest: read.rest }
}

const scripts = new LuaScripts<'range_ids'>(new URL('./scripts/', import.meta.url))

/** Ids of the events of `wf` from `from` to `to` (both included), without their fields (range_ids.lua). */
export async function rangeIds(redis: RedisClient, keys: Keys, wf: string, from: string, to: string): Promise<string[]> {
  const r = await scripts.run(redis, 'range_ids', [keys.events(wf)], [from, to])
  return Array.isArray(r) ? r.map(String) : []
}
