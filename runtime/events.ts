// Building, reading and following workflow events (DESIGN §5).
import { nanoid } from 'nanoid'
import type { StreamedEvent, WorkflowEvent } from './types.ts'

/** Encodes a WorkflowEvent of the seed's shape, as the scripts store and publish it. */
export function encodeEvent(e: { workflowId: string; type: string; content: unknown; agent?: string; actionId?: string; attempt?: number; parentId?: string; id?: string }): string {
  const ev: WorkflowEvent = {
    id: e.id ?? nanoid(),
    workflowId: e.workflowId,
    type: e.type,
    content: e.content ?? null,
    metadata: { at: Date.now(), ...(e.agent ? { agent: e.agent } : {}), ...(e.actionId ? { actionId: e.actionId } : {}), ...(e.attempt ? { attempt: e.attempt } : {}) },
    ...(e.parentId ? { parentId: e.parentId } : {}),
  }
  return JSON.stringify(ev)
}

/** Orders two stream ids (`ms-seq`): negative when a < b. */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-')
  const [bm = '0', bs = '0'] = b.split('-')
  const d = Number(am) - Number(bm)
  return d !== 0 ? d : Number(as) - Number(bs)
}

const U64_MAX = '18446744073709551615'
/** True for valid stream ids (`0`, `ms`, `ms-seq`; each part at most 2^64 - 1, as Redis requires). */
export function isStreamId(s: string): boolean {
  if (!/^\d{1,20}(-\d{1,20})?$/.test(s)) return false
  // Each part is an unsigned 64-bit number: Redis refuses a larger one.
  return s.split('-').every((part) => part.length < 20 || part <= U64_MAX)
}

/**
 * True for the largest possible stream id: nothing can follow it, and Redis
 * refuses it as an exclusive start (`(id` has no next id).
 */
export function isLastStreamId(s: string): boolean {
  return s === `${U64_MAX}-${U64_MAX}`
}

/** Parses one XRANGE/XREAD entry; a malformed entry becomes a `troupe.malformed` event rather than an exception. */
export function parseEntry(wf: string, entry: [string, string[]]): StreamedEvent {
  const [streamId, fields] = entry
  const idx = fields.indexOf('e')
  const raw = idx >= 0 ? fields[idx + 1] : undefined
  try {
    const event = JSON.parse(raw ?? '') as WorkflowEvent
    if (typeof event !== 'object' || event === null || typeof event.type !== 'string') throw new Error('not an event')
    return { streamId, event }
  } catch {
    return { streamId, event: { id: `malformed-${streamId}`, workflowId: wf, type: 'troupe.malformed', content: { raw: (raw ?? '').slice(0, 200) } } }
  }
}

/** Parses a pub/sub message `{ streamId, event }`; null when malformed. */
export function parseLive(message: string): StreamedEvent | null {
  try {
    const v = JSON.parse(message) as StreamedEvent
    return typeof v?.streamId === 'string' && typeof v.event?.type === 'string' ? v : null
  } catch {
    return null
  }
}

/** Event types after which a workflow produces nothing more. */
export const FINAL_EVENT_TYPES: ReadonlySet<string> = new Set(['workflow.completed', 'workflow.failed', 'workflow.cancelled'])
