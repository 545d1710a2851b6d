// JSON schemas of every body, parameter and query string of the /v1 API. The
// patterns mirror runtime/redis/keys.ts (which still re-checks everything), so
// bad input is a 400 problem with a JSON pointer before any Redis round trip.
import { MAX_DELAY_MS } from '../types.ts'

const workflowId = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } as const
const agent = { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' } as const
const actionType = { type: 'string', pattern: '^[A-Za-z0-9_./-]{1,128}$' } as const
const streamId = { type: 'string', pattern: '^[0-9]{1,20}(-[0-9]{1,20})?$' } as const
const token = { type: 'string', minLength: 1, maxLength: 512 } as const

/** `:id` of a workflow. */
export const workflowParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: workflowId },
} as const

/** `:id` and `:actionId` of a dead letter. */
export const deadLetterParams = {
  type: 'object',
  required: ['id', 'actionId'],
  additionalProperties: false,
  properties: { id: workflowId, actionId: workflowId },
} as const

/** POST /v1/workflows */
export const startBody = {
  type: 'object',
  required: ['agent', 'type'],
  additionalProperties: false,
  properties: {
    agent,
    type: actionType,
    payload: {},
    workflowId,
    deadlineMs: { type: 'integer', minimum: 1, maximum: MAX_DELAY_MS },
  },
} as const

/** POST /v1/workflows/:id/actions */
export const sendBody = {
  type: 'object',
  required: ['agent', 'type'],
  additionalProperties: false,
  properties: {
    agent,
    type: actionType,
    payload: {},
    delayMs: { type: 'integer', minimum: 0, maximum: MAX_DELAY_MS },
    // Chosen by the caller, the send is idempotent: a retry after an answer that
    // never came (a 503 while Redis was away, a dropped connection) queues nothing twice.
    actionId: workflowId,
  },
} as const

/** POST /v1/workflows/:id/cancel (the body is optional). */
export const cancelBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 200 } },
} as const

/** POST /v1/workflows/:id/dead-letters/:actionId/retry takes no body, or an empty object. */
export const emptyBody = { type: ['object', 'null'], additionalProperties: false, properties: {} } as const

/** GET /v1/workflows */
export const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
    cursor: { type: 'string', pattern: '^[0-9]{1,16}:[A-Za-z0-9_-]{1,64}$' },
  },
} as const

/** GET /v1/workflows/:id/events */
export const eventsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { after: streamId },
} as const

/** POST /v1/auth/token and /v1/auth/session */
export const credentialBody = {
  type: 'object',
  required: ['credential'],
  additionalProperties: false,
  properties: { credential: token },
} as const

/** POST /v1/auth/refresh */
export const refreshBody = {
  type: 'object',
  required: ['refresh_token'],
  additionalProperties: false,
  properties: { refresh_token: token },
} as const

/** POST /v1/auth/logout (the body is optional). */
export const logoutBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { refresh_token: token, all: { type: 'boolean' } },
} as const

/** Routes without parameters still declare that they take none. */
export const noQuery = { type: 'object', additionalProperties: false, properties: {} } as const
