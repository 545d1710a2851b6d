// RFC 9457 problem details: the ONE place that turns errors into HTTP statuses
// and stable `type` URIs. Clients branch on `type` (or its short `code`), never
// on `detail`, which is for people.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { TroupeError, type TroupeErrorCode } from '../errors.ts'

/** Failures that only the gateway reports (the runtime's own are TroupeErrorCode). */
export type GatewayErrorCode =
  | 'unauthorized'
  | 'invalid_credentials'
  | 'token_expired'
  | 'refresh_reused'
  | 'forbidden_origin'
  | 'not_found'
  | 'dead_letter_not_found'
  | 'rate_limited'
  | 'quota_exceeded'
  | 'too_many_streams'
  | 'validation'
  | 'bad_request'
  | 'unsupported_media_type'
  | 'body_too_large'
  | 'method_not_allowed'
  | 'malformed_request'
  | 'request_timeout'
  | 'headers_too_large'
  | 'unavailable'
  | 'internal'

/** Every code a problem can carry. */
export type ProblemCode = TroupeErrorCode | GatewayErrorCode

/** An expected gateway failure; `headers` are added to the problem response (e.g. `Retry-After`). */
export class GatewayError extends Error {
  constructor(
    readonly code: GatewayErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
    this.name = 'GatewayError'
  }
}

interface ProblemKind {
  status: number
  title: string
}

// Exhaustive on purpose: a new TroupeErrorCode fails the type check here until
// someone decides which status it deserves.
const KINDS: Record<ProblemCode, ProblemKind> = {
  bad_id: { status: 400, title: 'Invalid identifier' },
  bad_agent: { status: 400, title: 'Invalid agent name' },
  bad_type: { status: 400, title: 'Invalid action type' },
  bad_payload: { status: 400, title: 'Invalid payload' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unknown_agent: { status: 422, title: 'Unknown agent' },
  unknown_action: { status: 422, title: 'Unknown action type' },
  workflow_exists: { status: 409, title: 'Workflow already exists' },
  workflow_not_found: { status: 404, title: 'Workflow not found' },
  workflow_ended: { status: 409, title: 'Workflow has ended' },
  duplicate_action: { status: 409, title: 'Duplicate action' },
  fence_rejected: { status: 500, title: 'Internal protocol error' },
  stale_action: { status: 500, title: 'Internal protocol error' },
  not_locked: { status: 500, title: 'Internal protocol error' },
  redis_oom: { status: 503, title: 'Storage full' },
  eviction_policy: { status: 503, title: 'Storage misconfigured' },
  config: { status: 500, title: 'Server misconfigured' },
  unauthorized: { status: 401, title: 'Authentication required' },
  invalid_credentials: { status: 401, title: 'Invalid credentials' },
  token_expired: { status: 401, title: 'Token expired' },
  refresh_reused: { status: 401, title: 'Refresh token reused' },
  forbidden_origin: { status: 403, title: 'Cross-origin request refused' },
  not_found: { status: 404, title: 'Not found' },
  dead_letter_not_found: { status: 404, title: 'Dead letter not found' },
  rate_limited: { status: 429, title: 'Too many requests' },
  quota_exceeded: { status: 429, title: 'Daily quota exceeded' },
  too_many_streams: { status: 429, title: 'Too many open event streams' },
  validation: { status: 400, title: 'Request does not match the schema' },
  bad_request: { status: 400, title: 'Bad request' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  body_too_large: { status: 413, title: 'Request body too large' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  malformed_request: { status: 400, title: 'Malformed HTTP request' },
  request_timeout: { status: 408, title: 'Request timeout' },
  headers_too_large: { status: 431, title: 'Request headers too large' },
  unavailable: { status: 503, title: 'Service unavailable' },
  internal: { status: 500, title: 'Internal error' },
}

/** The stable `type` URI of a problem code, e.g. `urn:troupe:problem:rate-limited`. */
export function problemType(code: ProblemCode): string {
  return `urn:troupe:problem:${code.replace(/_/g, '-')}`
}

/** Every problem code with its status and title (for docs and tests). */
export function problemCatalog(): { code: ProblemCode; type: string; status: number; title: string }[] {
  return (Object.entries(KINDS) as [ProblemCode, ProblemKind][]).map(([code, k]) => ({ code, type: problemType(code), ...k }))
}

/** A problem document as sent. */
export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  instance: string
  code: ProblemCode
  requestId: string
  errors?: { path: string; message: string }[]
}

interface Resolved {
  code: ProblemCode
  detail: string
  headers: Record<string, string>
  errors?: { path: string; message: string }[]
}

// Fastify's own errors carry FST_* codes and an HTTP status; name the ones a
// client can cause, anything else 4xx becomes a plain bad_request.
function fromFastify(err: FastifyError): Resolved | null {
  if (err.validation) {
    const errors = err.validation.map((v) => ({ path: `${err.validationContext ?? ''}${v.instancePath}`, message: v.message ?? 'invalid' }))
    return { code: 'validation', detail: err.message, headers: {}, errors }
  }
  const byCode: Record<string, ProblemCode> = {
    FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
    FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
    FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
    FST_ERR_CTP_EMPTY_JSON_BODY: 'bad_request',
    FST_ERR_CTP_INVALID_JSON_BODY: 'bad_request',
  }
  const code = byCode[err.code]
  if (code) return { code, detail: err.message, headers: {} }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { code: err.statusCode === 404 ? 'not_found' : 'bad_request', detail: err.message, headers: {} }
  }
  return null
}

function resolve(err: unknown): Resolved {
  if (err instanceof GatewayError) return { code: err.code, detail: err.message, headers: err.headers }
  if (err instanceof TroupeError) return { code: err.code, detail: err.message, headers: err.code === 'redis_oom' ? { 'retry-after': '5' } : {} }
  if (err instanceof SyntaxError) return { code: 'bad_request', detail: err.message, headers: {} }
  if (err && typeof err === 'object' && 'code' in err) {
    const f = fromFastify(err as FastifyError)
    if (f) return f
  }
  return { code: 'internal', detail: 'an unexpected error occurred; the request id identifies it in the logs', headers: {} }
}

/** Builds the problem document for `err` (and its extra headers) without sending it. */
export function toProblem(err: unknown, request: FastifyRequest): { problem: Problem; headers: Record<string, string> } {
  const r = resolve(err)
  const kind = KINDS[r.code]
  const problem: Problem = {
    type: problemType(r.code),
    title: kind.title,
    status: kind.status,
    detail: r.detail,
    instance: request.url.split('?')[0] ?? request.url,
    code: r.code,
    requestId: String(request.id),
    ...(r.errors ? { errors: r.errors } : {}),
  }
  return { problem, headers: r.headers }
}

/**
 * Sends `err` as `application/problem+json`. Server errors are logged at error
 * with the request id the body names; client errors only at debug.
 */
export function sendProblem(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { problem, headers } = toProblem(err, request)
  // A Redis outage answers every request 503: one error line each would bury the cause.
  if (problem.code === 'unavailable') request.log.warn({ code: problem.code }, problem.detail)
  else if (problem.status >= 500) request.log.error({ err }, problem.detail)
  // Anyone can cause a 4xx (a probe, a client without a token): one info line
  // each let them fill the log. The answer itself says what was wrong.
  else request.log.debug({ code: problem.code }, problem.detail)
  if (problem.status === 401) headers['www-authenticate'] ??= 'Bearer realm="troupe"'
  return reply.code(problem.status).headers(headers).type('application/problem+json').send(problem)
}

/** A problem for a connection Node's HTTP parser gave up on: no route, so no `instance`. */
export type ConnectionProblem = Omit<Problem, 'instance' | 'errors'>

/**
 * The problem for a `'clientError'` (the parser failed or a request timer fired
 * before Fastify saw a request), or null when there is nobody left to answer
 * (the peer reset the connection).
 */
export function connectionProblem(err: { code?: string }, requestId: string): ConnectionProblem | null {
  const nodeCode = err.code ?? ''
  if (nodeCode === 'ECONNRESET' || nodeCode === 'EPIPE') return null
  let code: ProblemCode
  let detail: string
  if (nodeCode === 'ERR_HTTP_REQUEST_TIMEOUT') {
    code = 'request_timeout'
    detail = 'the request was not received in time; the connection is closed'
  } else if (nodeCode === 'HPE_HEADER_OVERFLOW') {
    code = 'headers_too_large'
    detail = 'the request line and headers exceed the size limit'
  } else {
    code = 'malformed_request'
    // Only the parser's own error name: its message can quote the client's bytes.
    detail = /^HPE_[A-Z_]+$/.test(nodeCode) ? `the request is not valid HTTP/1.1 (${nodeCode})` : 'the request is not valid HTTP/1.1'
  }
  const kind = KINDS[code]
  return { type: problemType(code), title: kind.title, status: kind.status, detail, code, requestId }
}
