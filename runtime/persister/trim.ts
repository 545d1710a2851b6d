// Trimming: with persistence on, the runtime's scripts append to
// `workflow:events:{wf}` without a cap (the persister still has to read the
// stream), and retention expires a workflow only once it has ended. A workflow
// that never ends (a periodic timer) grew its stream forever. So after writing a
// batch the persister trims the streams of the batch's workflows that are longer
// than the cap (TROUPE_STREAM_MAXLEN) by more than a tenth of it, back to the cap,
// but never past an entry Neo4j does not hold: the oldest entries are read back,
// looked up in Neo4j by event id (a unique-index seek each), and the trim
// (`XTRIM MINID`) stops before the first one missing, whoever was to write it
// (a pointer still queued or held by another persister, or lost and waiting for
// reconciliation). Neo4j's count of a workflow's events from the stream's first
// id on then still matches the stream (see lacksEvents), so reconciliation and
// retention see a trimmed stream as complete. The records of the actions whose
// completion went with the trimmed entries go too (forget_done.lua): Neo4j
// holds them, and a workflow that never ends kept every one.
import type { Driver } from 'neo4j-driver'
import { parseEntry } from '../events.ts'
import type { RedisClient } from '../redis/connection.ts'
import { execOps } from '../redis/batch.ts'
import type { Keys } from '../redis/keys.ts'
import { LuaScripts } from '../redis/scripts.ts'
import { entryBytes } from './collect.ts'
import { eventId } from './rows.ts'

/** Dependencies of {@link trimStreams}. */
export interface TrimDeps {
  redis: RedisClient
  keys: Keys
  driver: Driver
  database: string | undefined
  /** About the most bytes of entries read back in one call (maxBytesPerRead). */
  maxBytes: number
}

/** What one {@link trimStreams} call did. */
export interface TrimReport {
  /** Entries removed, per workflow trimmed. */
  removed: Map<string, number>
  /** Workflows whose oldest entry is not in Neo4j yet: nothing of them could be trimmed. */
  blocked: string[]
  /** Records of finished actions removed with the trimmed entries, per workflow. */
  forgotten: Map<string, number>
}

const scripts = new LuaScripts<'forget_done'>(new URL('./scripts/', import.meta.url))

/**
 * How long a finished action's record stays at least, trimmed or not: a send
 * with a caller's own action id is idempotent while the first one's record
 * exists (docs/architecture.md, "Sends are idempotent by action id").
 */
export const FORGET_DONE_AFTER_MS = 3600_000

const U64_MAX = 18446744073709551615n
// The first page is small (an entry may be megabytes), later ones grow to MAX_PAGE.
const FIRST_PAGE = 16
const GROWTH = 8
const MAX_PAGE = 1000

/**
 * Entries a stream may exceed the cap by before it is trimmed: trimming each time
 * one entry passes the cap would cost a read back and a Neo4j lookup per batch.
 */
export function trimSlack(cap: number): number {
  return Math.max(1, Math.floor(cap / 10))
}

/** True when a stream of `len` entries is due for trimming to `cap` (0: never trimmed). */
export function dueForTrim(len: number, cap: number): boolean {
  return cap > 0 && len > cap + trimSlack(cap)
}

/**
 * The smallest stream id after `id`: `XTRIM MINID` of it removes `id` and every
 * entry before it, nothing after.
 *
 * @example
 * ```ts
 * nextStreamId('1700000000000-4') // '1700000000000-5'
 * ```
 */
export function nextStreamId(id: string): string {
  const [ms = '0', seq = '0'] = id.split('-')
  const s = BigInt(seq)
  return s >= U64_MAX ? `${(BigInt(ms) + 1n).toString()}-0` : `${ms}-${(s + 1n).toString()}`
}

interface Todo {
  wf: string
  /** Entries still to remove to reach the cap. */
  want: number
  start: string
  page: number
  /** `XTRIM MINID` threshold: every entry before it was found in Neo4j. */
  cut: string | null
  /** Actions completed by the entries before `cut` (their records go with them). */
  completed: string[]
  done: boolean
  blocked: boolean
}

/** Indexes of `rows` whose event Neo4j holds for that workflow (a stub of a refused event counts). */
async function held(driver: Driver, database: string | undefined, rows: readonly { wf: string; id: string }[]): Promise<Set<number>> {
  if (rows.length === 0) return new Set()
  // A placeholder (a parent known only by a child's link) is not the event.
  const res = await driver.executeQuery(
    `UNWIND $rows AS row MATCH (e:Event {id: row.id})
     WHERE e.placeholder IS NULL AND e.workflowId = row.wf
     RETURN row.i AS i`,
    { rows: rows.map((r, i) => ({ ...r, i })) },
    { routing: 'READ', ...(database ? { database } : {}) },
  )
  return new Set(res.records.map((r) => Number(r.get('i'))))
}

/**
 * Trims the streams of `lengths` (workflow → stream length as last read) that are
 * due (see dueForTrim) to `cap` entries, keeping every entry Neo4j lacks and all
 * after it. Entries appended meanwhile are only ever newer, so the threshold
 * never reaches them; two persisters trimming the same stream at once remove
 * entries both found in Neo4j.
 */
export async function trimStreams(d: TrimDeps, cap: number, lengths: ReadonlyMap<string, number>): Promise<TrimReport> {
  const all: Todo[] = []
  for (const [wf, len] of lengths) {
    if (dueForTrim(len, cap)) all.push({ wf, want: len - cap, start: '-', page: FIRST_PAGE, cut: null, completed: [], done: false, blocked: false })
  }
  let todo = all
  let bytes = 0
  while (todo.length > 0 && bytes < d.maxBytes) {
    const round = todo.map((t) => ({ t, count: Math.min(t.page, t.want) }))
    const res = await execOps(d.redis, round.map(({ t, count }) => ({ cmd: 'xrange', args: [d.keys.events(t.wf), t.start, '+', 'COUNT', count] })))
    const read: { t: Todo; count: number; entries: { sid: string; row: number; completed: string | null }[] }[] = []
    const rows: { wf: string; id: string }[] = []
    round.forEach(({ t, count }, i) => {
      const [err, v] = res[i] ?? [new Error('no reply'), null]
      if (err) throw err
      const entries = ((v ?? []) as [string, string[]][]).map((e) => {
        bytes += entryBytes(e)
        const { event } = parseEntry(t.wf, e)
        rows.push({ wf: t.wf, id: eventId(t.wf, { streamId: e[0], event }) })
        const action = event.type === 'action.completed' ? event.metadata?.actionId : undefined
        return { sid: e[0], row: rows.length - 1, completed: typeof action === 'string' ? action : null }
      })
      read.push({ t, count, entries })
    })
    const ok = await held(d.driver, d.database, rows)
    for (const { t, count, entries } of read) {
      for (const e of entries) {
        if (!ok.has(e.row)) {
          t.blocked = true
          break
        }
        t.cut = nextStreamId(e.sid)
        if (e.completed) t.completed.push(e.completed)
        t.want--
      }
      const last = entries[entries.length - 1]
      // Fewer than asked: the stream is shorter than it was (another persister trimmed it).
      if (t.blocked || t.want <= 0 || entries.length < count || !last) t.done = true
      else {
        t.start = `(${last.sid}`
        t.page = Math.min(MAX_PAGE, t.page * GROWTH)
      }
    }
    todo = todo.filter((t) => !t.done)
  }
  const cut = all.filter((t) => t.cut !== null)
  const removed = new Map<string, number>()
  const res = await execOps(d.redis, cut.map((t) => ({ cmd: 'xtrim', args: [d.keys.events(t.wf), 'MINID', t.cut as string] })))
  cut.forEach((t, i) => {
    const [err, n] = res[i] ?? [new Error('no reply'), 0]
    if (err) throw err
    removed.set(t.wf, Number(n))
  })
  // After the trim: an entry it kept (a failed XTRIM threw above) keeps its records.
  const forgotten = new Map<string, number>()
  for (const t of cut) {
    if (t.completed.length > 0) forgotten.set(t.wf, Number(await scripts.run(d.redis, 'forget_done', [d.keys.actions(t.wf)], [FORGET_DONE_AFTER_MS, ...t.completed])))
  }
  return { removed, blocked: all.filter((t) => t.blocked && t.cut === null).map((t) => t.wf), forgotten }
}
