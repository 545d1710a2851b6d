// /v1/workflows: start, list (mine, newest first, keyset-paged), status, send an
// action, cancel, dead letters and their retry. A workflow that belongs to
// someone else answers exactly like one that does not exist (404), so ids leak
// nothing.
import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { TroupeError } from '../errors.ts'
import { dropFromOwnerIndex } from '../owner-index.ts'
import { execOps, throwFirst } from '../redis/batch.ts'
import type { ActionRecord } from '../types.ts'
import { caller } from './authenticate.ts'
import type { GatewayDeps } from './deps.ts'
import { GatewayError } from './problem.ts'
import { cancelBody, deadLetterParams, emptyBody, listQuery, noQuery, sendBody, startBody, workflowParams } from './schemas.ts'

interface StartBody {
  agent: string
  type: string
  payload?: unknown
  workflowId?: string
  deadlineMs?: number
}
interface SendBody {
  agent: string
  type: string
  payload?: unknown
  delayMs?: number
  actionId?: string
}
type IdParams = { id: string }

/** A row of `GET /v1/workflows`. */
export interface WorkflowSummary {
  workflowId: string
  status: string
  entry: string
  createdAt: number
  updatedAt: number
  endedAt?: number
}

function notFound(wf: string): TroupeError {
  return new TroupeError('workflow_not_found', `no workflow ${wf}`)
}

/** Registers the /v1/workflows and /v1/agents routes. */
export function registerWorkflowRoutes(app: FastifyInstance, deps: GatewayDeps): void {
  const { client, redis, keys } = deps

  async function assertOwner(wf: string, user: string): Promise<void> {
    const owner = await redis.hget(keys.status(wf), 'owner')
    if (owner !== user) throw notFound(wf)
  }

  app.post<{ Body: StartBody }>('/v1/workflows', { schema: { body: startBody, querystring: noQuery }, config: { start: true } }, async (request, reply) => {
    const { user } = caller(request)
    const b = request.body
    const r = await client.startWorkflow({
      agent: b.agent, type: b.type, payload: b.payload ?? null, owner: user,
      ...(b.workflowId ? { workflowId: b.workflowId } : {}),
      ...(b.deadlineMs ? { deadlineMs: b.deadlineMs } : {}),
    })
    return reply.code(201).header('location', `/v1/workflows/${r.workflowId}`).send(r)
  })

  app.get<{ Querystring: { limit: number; cursor?: string } }>('/v1/workflows', { schema: { querystring: listQuery } }, async (request) => {
    const { user } = caller(request)
    const { limit, cursor } = request.query
    const key = keys.byOwner(user)
    let rows: string[]
    if (cursor) {
      // Keyset paging on (score desc, member desc): the ties at the cursor's score
      // that sort after it, then everything strictly older.
      const sep = cursor.indexOf(':')
      const score = cursor.slice(0, sep)
      const member = cursor.slice(sep + 1)
      const [tied, older] = throwFirst(await execOps(redis, [
        { cmd: 'zrange', args: [key, score, score, 'BYSCORE', 'REV'] },
        { cmd: 'zrange', args: [key, `(${score}`, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit + 1, 'WITHSCORES'] },
      ])) as [string[], string[]]
      const ties = tied.filter((m) => m < member).flatMap((m) => [m, score])
      rows = [...ties, ...older]
    } else {
      rows = await redis.zrange(key, '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit + 1, 'WITHSCORES')
    }
    const page: { wf: string; score: string }[] = []
    for (let i = 0; i + 1 < rows.length && page.length < limit + 1; i += 2) page.push({ wf: rows[i] as string, score: rows[i + 1] as string })
    const more = page.length > limit
    const shown = page.slice(0, limit)
    // One status hash per workflow, each in its own slot: execOps pipelines them on
    // one Redis and sends each to its node on a Cluster.
    // A failed read throws rather than passing for an expired workflow (which leaves the listing).
    const statuses = throwFirst(await execOps(redis, shown.map((p) => ({ cmd: 'hmget', args: [keys.status(p.wf), 'status', 'entry', 'createdAt', 'updatedAt', 'endedAt', 'owner'] }))))
    const items: WorkflowSummary[] = []
    const gone: string[] = []
    shown.forEach((p, i) => {
      const [status, entry, createdAt, updatedAt, endedAt, owner] = (statuses[i] ?? []) as (string | null)[]
      // Someone else's: this user's workflow expired and its id was started again.
      if (!status || owner !== user) {
        gone.push(p.wf)
        return
      }
      items.push({ workflowId: p.wf, status, entry: entry ?? '', createdAt: Number(createdAt ?? p.score), updatedAt: Number(updatedAt ?? p.score), ...(endedAt ? { endedAt: Number(endedAt) } : {}) })
    })
    // Workflows whose keys expired after retention (or whose id is now another
    // user's) leave the listing for good; one this user started again since
    // the HMGET above is put back. Best effort: the listing is built, and the
    // next one meets the same ids and tries again.
    await dropFromOwnerIndex(redis, keys, user, gone).catch((err: unknown) => {
      request.log.warn({ err }, 'dropping gone workflows from an owner index failed; the next listing tries again')
    })
    const lastShown = shown[shown.length - 1]
    return { items, nextCursor: more && lastShown ? `${lastShown.score}:${lastShown.wf}` : null }
  })

  app.get<{ Params: IdParams }>('/v1/workflows/:id', { schema: { params: workflowParams, querystring: noQuery } }, async (request) => {
    const { user } = caller(request)
    const st = await client.getStatus(request.params.id)
    if (!st || st.owner !== user) throw notFound(request.params.id)
    return st
  })

  app.post<{ Params: IdParams; Body: SendBody }>('/v1/workflows/:id/actions', { schema: { params: workflowParams, body: sendBody, querystring: noQuery } }, async (request, reply) => {
    const { user } = caller(request)
    const wf = request.params.id
    await assertOwner(wf, user)
    const b = request.body
    const r = await client.sendAction(wf, b.agent, b.type, b.payload ?? null, { ...(b.delayMs ? { delayMs: b.delayMs } : {}), ...(b.actionId ? { actionId: b.actionId } : {}) })
    return reply.code(202).send({ workflowId: wf, actionId: r.actionId })
  })

  app.post<{ Params: IdParams; Body: { reason?: string } | null }>('/v1/workflows/:id/cancel', { schema: { params: workflowParams, body: cancelBody, querystring: noQuery } }, async (request) => {
    const { user } = caller(request)
    const wf = request.params.id
    await assertOwner(wf, user)
    const r = await client.cancelWorkflow(wf, request.body?.reason ?? `cancelled by ${user}`)
    return { workflowId: wf, status: 'cancelled', dropped: r.dropped }
  })

  app.get<{ Params: IdParams }>('/v1/workflows/:id/dead-letters', { schema: { params: workflowParams, querystring: noQuery } }, async (request) => {
    const { user } = caller(request)
    await assertOwner(request.params.id, user)
    return { items: await client.deadLetters(request.params.id) }
  })

  app.post<{ Params: { id: string; actionId: string } }>('/v1/workflows/:id/dead-letters/:actionId/retry', { schema: { params: deadLetterParams, body: emptyBody, querystring: noQuery } }, async (request, reply) => {
    const { user } = caller(request)
    const { id: wf, actionId } = request.params
    await assertOwner(wf, user)
    const [score, raw] = await Promise.all([redis.zscore(keys.dead(wf), actionId), redis.hget(keys.actions(wf), actionId)])
    if (score === null) throw new GatewayError('dead_letter_not_found', `no dead letter ${actionId} in workflow ${wf} (already retried?)`)
    let rec: ActionRecord
    try {
      rec = JSON.parse(raw ?? '') as ActionRecord
    } catch {
      throw new GatewayError('dead_letter_not_found', `dead letter ${actionId} has no readable action record`)
    }
    // The retry's id comes from the dead letter (its id and when it died), so
    // sending it again is a replay the enqueue script answers without queueing
    // anything: a retry whose reply was lost (the client sees an error, the
    // action is queued) or two retries at once queue the action once. Queued
    // first, removed from the dead letters after: a gateway stopped in between
    // leaves it listed, and retrying it again is that same replay.
    const retryId = createHash('sha256').update(`${actionId}:${score}`).digest('base64url').slice(0, 22)
    const { actionId: retried } = await client.sendAction(wf, rec.agent, rec.type, rec.payload, { actionId: retryId })
    await redis.zrem(keys.dead(wf), actionId)
    return reply.code(202).send({ workflowId: wf, actionId: retried, retryOf: actionId })
  })

  app.get('/v1/agents', { schema: { querystring: noQuery } }, async (request) => {
    caller(request)
    const reg = await client.agents()
    return { items: [...reg.values()].sort((a, b) => a.name.localeCompare(b.name)).map((a) => ({ name: a.name, actionTypes: a.actionTypes, version: a.version })) }
  })
}
