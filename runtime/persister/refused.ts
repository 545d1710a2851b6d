// Events Neo4j refuses for good (parked `unwritable`) are recorded in the graph
// as stubs (graph.ts, WRITE_REFUSED), so that the workflow counts as complete:
// retention can expire it, reconciliation stops rewriting it every sweep, and a
// running workflow's stream can be trimmed past them.
import type { Driver } from 'neo4j-driver'
import type { RedisClient } from '../redis/connection.ts'
import type { Keys } from '../redis/keys.ts'
import type { StreamedEvent } from '../types.ts'
import { readEvents, readState, type ReadRange } from './collect.ts'
import { refusedRows, writeRefused } from './graph.ts'
import type { Pointer } from './pointers.ts'
import type { RetentionCandidate } from './retention.ts'
import { workflowRows } from './rows.ts'

/**
 * Records the events of `range` as refused for `why`: reads them again (their
 * ids and stream positions; at most `maxBytes` at a time) and writes their stubs
 * with the workflow's current row. Returns the workflow's status as read, for
 * retention, or null when the range holds no event any more. Rejects as the
 * writes do: the caller tells a refusal (the stub too is refused) from an outage.
 */
export async function recordRefused(
  d: { redis: RedisClient; keys: Keys; driver: Driver; database: string | undefined; maxBytes: number },
  range: Pointer,
  why: string,
): Promise<RetentionCandidate | null> {
  let ranges: ReadRange[] = [{ wf: range.wf, start: range.from, end: range.to }]
  const events: StreamedEvent[] = []
  do {
    const read = await readEvents(d.redis, d.keys, ranges, { pageSize: 1000, maxBytes: d.maxBytes })
    // Content and metadata dropped at once (either may be what Neo4j refused):
    // only ids, types, positions and times stay for the stubs.
    for (const e of read.events.get(range.wf) ?? []) {
      const at = e.event.metadata?.at
      events.push({ streamId: e.streamId, event: { ...e.event, content: null, metadata: typeof at === 'number' ? { at } : {} } })
    }
    ranges = read.rest
  } while (ranges.length > 0)
  if (events.length === 0) return null
  const [reading] = await readState(d.redis, d.keys, new Map([[range.wf, events]]))
  if (!reading) return null
  const part = workflowRows(reading)
  await writeRefused(d.driver, d.database, part.workflow, refusedRows(part.events, why))
  return { wf: range.wf, status: reading.status }
}
