// Shapes shared by the runtime, the client, the gateway and the persister.

/** Workflow lifecycle: `pending → running ⇄ waiting → completed | failed | cancelled`. */
export type WorkflowStatusValue = 'pending' | 'running' | 'waiting' | 'completed' | 'failed' | 'cancelled'

/**
 * Longest delay of an action and longest workflow deadline (ten years). Due
 * times are whole milliseconds in the scripts; far beyond this they overflow
 * there and would come due at once.
 */
export const MAX_DELAY_MS = 10 * 365 * 24 * 3600_000

/** Statuses after which nothing more happens in a workflow. */
export const TERMINAL_STATUSES: ReadonlySet<WorkflowStatusValue> = new Set(['completed', 'failed', 'cancelled'])

/** The seed's event shape: published on every transition and by agent code. */
export interface WorkflowEvent {
  id: string
  workflowId: string
  type: string
  content: unknown
  metadata?: { agent?: string; actionId?: string; attempt?: number; at?: number; [k: string]: unknown }
  parentId?: string
}

/** An event with the id of its entry in `workflow:events:{wf}` (the SSE `id:`). */
export interface StreamedEvent {
  streamId: string
  event: WorkflowEvent
}

/** What agent code sees about the action being delivered, in `event.meta`. */
export interface ActionMeta {
  actionId: string
  workflowId: string
  agent: string
  /** 1 on first delivery; grows on retries and on redelivery after a crash. */
  attempt: number
  /** Stable across attempts: use it to make external effects idempotent. */
  idempotencyKey: string
  /** The agent that sent this action, absent when it came from outside. */
  from?: string
  /** The action whose handling sent this one. */
  parentId?: string
}

/** The machine event an action arrives as: `{ type, payload, meta }`. */
export interface ActionEvent<TType extends string = string, TPayload = unknown> {
  type: TType
  payload: TPayload
  meta: ActionMeta
}

/** The immutable part of an action record, as stored in `workflow:actions:{wf}`. */
export interface ActionRecord {
  id: string
  workflowId: string
  agent: string
  type: string
  payload: unknown
  from?: string
  parentId?: string
  /** Id of this action's `action.enqueued` event; the parent of the events it causes. */
  eventId: string
  enqueuedAt: number
}

/** Mutable delivery state of an action (`<id>:st` in `workflow:actions:{wf}`). */
export interface ActionState {
  status: 'queued' | 'running' | 'retry' | 'done' | 'dead' | 'cancelled'
  attempt: number
  seq: number
  availableAt: number
  error?: string
  finishedAt?: number
}

/** A workflow's status as `troupe status --json` and the API report it. */
export interface WorkflowStatus {
  workflowId: string
  status: WorkflowStatusValue
  owner: string
  entry: string
  createdAt: number
  updatedAt: number
  endedAt?: number
  deadline?: number
  error?: string
  result?: unknown
  /** Each agent's current state value (as XState reports it). */
  agents: Record<string, unknown>
  counts: { actions: number; queued: number; done: number; dead: number; malformed: number }
  /**
   * Joins still holding actions (sendToAgent's `join`): the receiving agent, the
   * key, how many actions wait, and when they go all the same (ms). Held actions
   * count as queued.
   */
  joins?: { agent: string; key: string; waiting: number; until: number }[]
}
