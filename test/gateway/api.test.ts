// The /v1 API against a real runtime and Redis: happy paths, problem+json errors,
// 401 on every route without credentials, 404 (never 403) for other users' workflows.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { problemCatalog } from '../../runtime/gateway/problem.ts'
import { MAX_DELAY_MS } from '../../runtime/types.ts'
import { eventually } from '../helpers/redis.ts'
import { call, listAll, openSse, startNamed, startStack, type Reply, type Stack } from './helpers.ts'

let s: Stack
let alice: string
let bob: string

beforeAll(async () => {
  s = await startStack()
  alice = (await s.login('alice')).access_token
  bob = (await s.login('bob')).access_token
})
afterAll(async () => {
  await s?.stop()
})

function expectProblem(r: Reply, status: number, code: string): void {
  expect(r.status, r.text).toBe(status)
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
  const p = r.json as { type: string; status: number; code: string; title: string; requestId: string; instance: string }
  expect(p.status).toBe(status)
  expect(p.code).toBe(code)
  expect(p.type).toBe(`urn:troupe:problem:${code.replace(/_/g, '-')}`)
  expect(p.title).toBeTruthy()
  expect(p.requestId).toBe(r.headers.get('x-request-id'))
}

const ROUTES: [string, string, unknown?][] = [
  ['GET', '/v1/workflows'],
  ['POST', '/v1/workflows', { agent: 'counter', type: 'ping' }],
  ['GET', '/v1/workflows/WF'],
  ['POST', '/v1/workflows/WF/actions', { agent: 'counter', type: 'ping' }],
  ['POST', '/v1/workflows/WF/cancel', {}],
  ['GET', '/v1/workflows/WF/dead-letters'],
  ['POST', '/v1/workflows/WF/dead-letters/AID/retry'],
  ['GET', '/v1/workflows/WF/events'],
  ['GET', '/v1/agents'],
  ['GET', '/v1/me'],
]

describe('gateway API', () => {
  it('starts, lists, reads, sends to and cancels a workflow', async () => {
    const start = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', payload: { i: 1 } } })
    expect(start.status, start.text).toBe(201)
    const { workflowId } = start.json as { workflowId: string; actionId: string }
    expect(start.headers.get('location')).toBe(`/v1/workflows/${workflowId}`)

    // With a chosen actionId a send is idempotent: the retry of one whose answer was lost queues nothing twice.
    const sent = await call(s, 'POST', `/v1/workflows/${workflowId}/actions`, { token: alice, body: { agent: 'counter', type: 'ping', payload: { i: 2 }, actionId: 'ping-2' } })
    expect(sent.status, sent.text).toBe(202)
    const resent = await call(s, 'POST', `/v1/workflows/${workflowId}/actions`, { token: alice, body: { agent: 'counter', type: 'ping', payload: { i: 2 }, actionId: 'ping-2' } })
    expect(resent.status, resent.text).toBe(202)
    expect(resent.json).toEqual({ workflowId, actionId: 'ping-2' })
    expectProblem(await call(s, 'POST', `/v1/workflows/${workflowId}/actions`, { token: alice, body: { agent: 'counter', type: 'relay', actionId: 'ping-2' } }), 409, 'duplicate_action')
    expectProblem(await call(s, 'POST', `/v1/workflows/${workflowId}/actions`, { token: alice, body: { agent: 'counter', type: 'ping', actionId: 'bad id!' } }), 400, 'validation')
    await eventually(async () => {
      const st = await call(s, 'GET', `/v1/workflows/${workflowId}`, { token: alice })
      const b = st.json as { counts: { done: number }; agents: Record<string, unknown>; owner: string }
      return b.counts.done === 2 && b.agents.counter === 'counting' && b.owner === 'alice'
    }, 10_000, 'two pings done')
    expect(((await call(s, 'GET', `/v1/workflows/${workflowId}`, { token: alice })).json as { counts: { actions: number } }).counts.actions).toBe(2)

    const list = await call(s, 'GET', '/v1/workflows', { token: alice })
    expect(list.status).toBe(200)
    expect((list.json as { items: { workflowId: string }[] }).items.map((i) => i.workflowId)).toContain(workflowId)

    const cancel = await call(s, 'POST', `/v1/workflows/${workflowId}/cancel`, { token: alice, body: { reason: 'test over' } })
    expect(cancel.status, cancel.text).toBe(200)
    const again = await call(s, 'POST', `/v1/workflows/${workflowId}/cancel`, { token: alice })
    expectProblem(again, 409, 'workflow_ended')
    const late = await call(s, 'POST', `/v1/workflows/${workflowId}/actions`, { token: alice, body: { agent: 'counter', type: 'ping' } })
    expectProblem(late, 409, 'workflow_ended')
  })

  it("leaves out of my list a workflow id that expired and is now someone else's", async () => {
    const wf = `reused-${Date.now().toString(36)}`
    const mine = await call(s, 'POST', '/v1/workflows', { token: alice, body: { workflowId: wf, agent: 'counter', type: 'ping' } })
    expect(mine.status, mine.text).toBe(201)
    // Its keys expire (retention); alice's index still names it until she lists.
    const keys = await s.redis.keys(`${s.gw.deps.keys.ns}*{${wf}}*`)
    await s.redis.del(...keys)
    const theirs = await call(s, 'POST', '/v1/workflows', { token: bob, body: { workflowId: wf, agent: 'counter', type: 'ping' } })
    expect(theirs.status, theirs.text).toBe(201)
    const list = await call(s, 'GET', '/v1/workflows?limit=100', { token: alice })
    expect((list.json as { items: { workflowId: string }[] }).items.map((i) => i.workflowId)).not.toContain(wf)
    expect(await s.redis.zscore(s.gw.deps.keys.byOwner('alice'), wf)).toBeNull()
    const bobs = await call(s, 'GET', '/v1/workflows?limit=100', { token: bob })
    expect((bobs.json as { items: { workflowId: string }[] }).items.map((i) => i.workflowId)).toContain(wf)
  })

  it('answers 400, not 500, for a stream id beyond what Redis accepts', async () => {
    const r = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping' } })
    const wf = (r.json as { workflowId: string }).workflowId
    await call(s, 'POST', `/v1/workflows/${wf}/cancel`, { token: alice })
    // The last one is within range, but Redis has no id after it to start from.
    for (const id of ['99999999999999999999', '1-99999999999999999999', '18446744073709551615-18446744073709551615']) {
      expectProblem(await call(s, 'GET', `/v1/workflows/${wf}/events`, { token: alice, headers: { 'last-event-id': id } }), 400, 'validation')
      expectProblem(await call(s, 'GET', `/v1/workflows/${wf}/events?after=${id}`, { token: alice }), 400, 'validation')
    }
    // Ended or not: a running workflow answered 200 and then cut the stream.
    const running = ((await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping' } })).json as { workflowId: string }).workflowId
    expectProblem(await call(s, 'GET', `/v1/workflows/${running}/events?after=18446744073709551615-18446744073709551615`, { token: alice }), 400, 'validation')
  })

  it('pages my workflows newest first with a stable cursor', async () => {
    const carol = (await s.login('carol')).access_token
    const ids = await startNamed(s, carol, 'carol', 7)
    const { ids: seen, pages } = await listAll(s, carol, 3)
    expect(pages).toBe(3)
    expect(seen.sort()).toEqual([...ids].sort())
    expect(new Set(seen).size).toBe(7)
  })

  it('lists and retries dead letters with the same agent, type and payload', async () => {
    const r = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'fragile', type: 'explode', payload: { n: 42 } } })
    const { workflowId } = r.json as { workflowId: string }
    const first = await eventually(async () => {
      const d = await call(s, 'GET', `/v1/workflows/${workflowId}/dead-letters`, { token: alice })
      return (d.json as { items: { actionId: string; agent: string; type: string; error: string }[] }).items[0]
    }, 15_000, 'dead letter')
    expect(first.agent).toBe('fragile')
    expect(first.type).toBe('explode')
    expect(first.error).toMatch(/boom/)

    const retry = await call(s, 'POST', `/v1/workflows/${workflowId}/dead-letters/${first.actionId}/retry`, { token: alice })
    expect(retry.status, retry.text).toBe(202)
    const { actionId, retryOf } = retry.json as { actionId: string; retryOf: string }
    expect(retryOf).toBe(first.actionId)
    const twice = await call(s, 'POST', `/v1/workflows/${workflowId}/dead-letters/${first.actionId}/retry`, { token: alice })
    expectProblem(twice, 404, 'dead_letter_not_found')
    const rec = JSON.parse((await s.redis.hget(s.gw.deps.keys.actions(workflowId), actionId)) ?? '{}') as { agent: string; type: string; payload: unknown }
    expect(rec).toMatchObject({ agent: 'fragile', type: 'explode', payload: { n: 42 } })
    // The retry dies the same way and comes back as a new dead letter.
    await eventually(async () => {
      const d = await call(s, 'GET', `/v1/workflows/${workflowId}/dead-letters`, { token: alice })
      return (d.json as { items: { actionId: string }[] }).items.some((i) => i.actionId === actionId)
    }, 15_000, 'retried action dead again')
  })

  it('queues a retried dead letter once when a retry fails after its enqueue landed', async () => {
    const start = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'fragile', type: 'explode', payload: { n: 7 } } })
    const wf = (start.json as { workflowId: string }).workflowId
    const dead = await eventually(async () => {
      const d = await call(s, 'GET', `/v1/workflows/${wf}/dead-letters`, { token: alice })
      return (d.json as { items: { actionId: string }[] }).items[0]
    }, 15_000, 'dead letter')
    // The enqueue lands but its reply is lost (a dropped connection): the caller sees an error.
    const { client } = s.gw.deps
    const send = client.sendAction.bind(client)
    const spy = vi.spyOn(client, 'sendAction').mockImplementationOnce(async (...args) => {
      await send(...args)
      throw new Error('Connection is closed.')
    })
    try {
      const lost = await call(s, 'POST', `/v1/workflows/${wf}/dead-letters/${dead.actionId}/retry`, { token: alice })
      expect(lost.status).toBe(500)
      const again = await call(s, 'POST', `/v1/workflows/${wf}/dead-letters/${dead.actionId}/retry`, { token: alice })
      expect(again.status, again.text).toBe(202)
    } finally {
      spy.mockRestore()
    }
    const records = Object.entries(await s.redis.hgetall(s.gw.deps.keys.actions(wf))).filter(([k]) => !k.includes(':'))
    expect(records.length).toBe(2) // the original and one retry
    expect(await s.redis.zscore(s.gw.deps.keys.dead(wf), dead.actionId)).toBeNull()
  })

  it('answers problem+json for bad input, unknown routes and unknown agents', async () => {
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter' } }), 400, 'validation')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', extra: 1 } }), 400, 'validation')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'no{pe', type: 'ping' } }), 400, 'validation')
    // Deadlines and delays go as far as the client and the CLI take them (ten years), and no further.
    const twoYears = 2 * 365 * 24 * 3600_000
    const long = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', deadlineMs: twoYears } })
    expect(long.status, long.text).toBe(201)
    const longWf = (JSON.parse(long.text) as { workflowId: string }).workflowId
    const later = await call(s, 'POST', `/v1/workflows/${longWf}/actions`, { token: alice, body: { agent: 'counter', type: 'ping', delayMs: twoYears } })
    expect(later.status, later.text).toBe(202)
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', deadlineMs: MAX_DELAY_MS + 1 } }), 400, 'validation')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, rawBody: '{"agent":', headers: { 'content-type': 'application/json' } }), 400, 'bad_request')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, rawBody: 'agent=counter', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'ghost', type: 'ping' } }), 422, 'unknown_agent')
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'fly' } }), 422, 'unknown_action')
    const big = 'x'.repeat(s.cfg.maxPayloadBytes + 70 * 1024)
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', payload: big } }), 413, 'body_too_large')
    expectProblem(await call(s, 'GET', '/v1/workflows/bad%20id', { token: alice }), 400, 'validation')
    expectProblem(await call(s, 'GET', '/v1/workflows/nope', { token: alice }), 404, 'workflow_not_found')
    expectProblem(await call(s, 'GET', '/v1/nothing-here', { token: alice }), 404, 'not_found')
    // A known path with the wrong method: 405 naming the methods it takes.
    const wrong = await call(s, 'DELETE', '/v1/workflows/some-id', { token: alice })
    expectProblem(wrong, 405, 'method_not_allowed')
    expect(wrong.headers.get('allow')).toBe('GET, HEAD')
    expect((await call(s, 'PUT', '/v1/workflows', { token: alice, body: {} })).headers.get('allow')).toBe('GET, HEAD, POST')
    // The event stream takes no HEAD (it would open a stream), and says so.
    const head = await call(s, 'HEAD', '/v1/workflows/some-id/events', { token: alice })
    expect(head.status).toBe(405)
    expect(head.headers.get('allow')).toBe('GET')
    // The retry of a dead letter takes no body (or an empty object).
    expectProblem(await call(s, 'POST', '/v1/workflows/some-id/dead-letters/aid/retry', { token: alice, body: { force: true } }), 400, 'validation')
    expectProblem(await call(s, 'GET', '/v1/workflows?limit=1000', { token: alice }), 400, 'validation')
    const dup = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', workflowId: 'dup-1' } })
    expect(dup.status).toBe(201)
    expectProblem(await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'counter', type: 'ping', workflowId: 'dup-1' } }), 409, 'workflow_exists')
  })

  it('answers 404, not 405, for paths a route only resembles, and 401 without a token however /v1 is spelt', async () => {
    // The router does not collapse empty segments, so these are no route's paths.
    for (const [method, path] of [['GET', '/v1/agents/'], ['DELETE', '//v1/agents'], ['POST', '/v1//workflows']]) {
      const r = await call(s, method as string, path as string, { token: alice })
      expect(r.status, `${method} ${path}`).toBe(404)
      expect(r.headers.get('allow'), `${method} ${path}`).toBeNull()
    }
    // A path under /v1 in any spelling is guarded: no 405 (nor its Allow) tells a caller without a token what exists.
    for (const path of ['//v1/workflows/x/events', '//v1/agents', '/%76%31//agents']) {
      const r = await call(s, 'GET', path)
      expectProblem(r, 401, 'unauthorized')
      expect(r.headers.get('allow')).toBeNull()
    }
    // The real routes are unchanged.
    expect((await call(s, 'GET', '/v1/agents', { token: alice })).status).toBe(200)
    expect((await call(s, 'DELETE', '/v1/agents', { token: alice })).headers.get('allow')).toBe('GET, HEAD')
  })

  it('honours a tame X-Request-Id and mints one otherwise', async () => {
    const r = await call(s, 'GET', '/v1/me', { token: alice, headers: { 'x-request-id': 'trace-123' } })
    expect(r.headers.get('x-request-id')).toBe('trace-123')
    const r2 = await call(s, 'GET', '/v1/me', { token: alice, headers: { 'x-request-id': 'no spaces\tallowed' } })
    expect(r2.headers.get('x-request-id')).toMatch(/^[A-Za-z0-9_-]{12}$/)
  })

  it('answers 401 problem+json on every /v1 route without credentials', async () => {
    for (const [method, path, body] of ROUTES) {
      const r = await call(s, method, path.replace('WF', 'some-wf').replace('AID', 'some-action'), body === undefined ? {} : { body })
      expectProblem(r, 401, 'unauthorized')
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/)
      // The router decodes %-escapes before it matches: /%76%31/ is /v1/, and must be guarded as such.
      const escaped = await call(s, method, path.replace('/v1/', '/%76%31/').replace('WF', 'some-wf').replace('AID', 'some-action'), body === undefined ? {} : { body })
      expectProblem(escaped, 401, 'unauthorized')
    }
  })

  it("answers 404 for another user's workflow on every route, exactly like a missing one", async () => {
    const r = await call(s, 'POST', '/v1/workflows', { token: alice, body: { agent: 'fragile', type: 'explode' } })
    const wf = (r.json as { workflowId: string }).workflowId
    const dead = await eventually(async () => {
      const d = await call(s, 'GET', `/v1/workflows/${wf}/dead-letters`, { token: alice })
      return (d.json as { items: { actionId: string }[] }).items[0]
    }, 15_000, 'dead letter')
    for (const [method, path, body] of ROUTES) {
      if (!path.includes('WF')) continue
      const p = path.replace('WF', wf).replace('AID', dead.actionId)
      const theirs = await call(s, method, p, body === undefined ? { token: bob } : { token: bob, body })
      const missing = await call(s, method, path.replace('WF', 'no-such-wf').replace('AID', dead.actionId), body === undefined ? { token: bob } : { token: bob, body })
      expectProblem(theirs, 404, 'workflow_not_found')
      expect(missing.status).toBe(404)
      expect((theirs.json as { title: string }).title).toBe((missing.json as { title: string }).title)
    }
    const mine = await call(s, 'GET', '/v1/workflows', { token: bob })
    expect((mine.json as { items: { workflowId: string }[] }).items.map((i) => i.workflowId)).not.toContain(wf)
    // Alice's dead letter is untouched by Bob's attempts.
    const still = await call(s, 'GET', `/v1/workflows/${wf}/dead-letters`, { token: alice })
    expect((still.json as { items: { actionId: string }[] }).items.map((i) => i.actionId)).toContain(dead.actionId)
  })

  it('maps every problem code to a stable urn type and a real HTTP status', () => {
    const cat = problemCatalog()
    expect(cat.find((p) => p.code === 'redis_oom')?.status).toBe(503)
    for (const p of cat) {
      expect(p.type).toMatch(/^urn:troupe:problem:[a-z-]+$/)
      expect(p.status).toBeGreaterThanOrEqual(400)
    }
  })

  it('marks every /v1 answer no-store and nosniff, keeping a route\'s own Cache-Control', async () => {
    // A user of its own: the tests above used up much of alice's request bucket.
    const nora = (await s.login('nora')).access_token
    const wf = ((await call(s, 'POST', '/v1/workflows', { token: nora, body: { agent: 'counter', type: 'ping' } })).json as { workflowId: string }).workflowId
    const answers: [string, Reply][] = [
      ['me', await call(s, 'GET', '/v1/me', { token: nora })],
      ['list', await call(s, 'GET', '/v1/workflows', { token: nora })],
      ['status', await call(s, 'GET', `/v1/workflows/${wf}`, { token: nora })],
      ['agents', await call(s, 'GET', '/v1/agents', { token: nora })],
      ['dead letters', await call(s, 'GET', `/v1/workflows/${wf}/dead-letters`, { token: nora })],
      ['start', await call(s, 'POST', '/v1/workflows', { token: nora, body: { agent: 'counter', type: 'ping' } })],
      ['not found', await call(s, 'GET', '/v1/workflows/no-such-workflow', { token: nora })],
      ['unauthorized', await call(s, 'GET', '/v1/me')],
      ['bad input', await call(s, 'POST', '/v1/workflows', { token: nora, body: { agent: 'counter' } })],
      ['no route', await call(s, 'GET', '/v1/nothing-here', { token: nora })],
    ]
    for (const [what, r] of answers) {
      expect(r.status, what).toBeLessThan(500)
      expect(r.headers.get('cache-control'), what).toBe('no-store')
      expect(r.headers.get('x-content-type-options'), what).toBe('nosniff')
    }
    // Token answers keep their own (with Pragma); the event stream keeps its own.
    const tokens = await call(s, 'POST', '/v1/auth/token', { body: { credential: await s.issue('carol') } })
    expect(tokens.headers.get('cache-control')).toBe('no-store')
    expect(tokens.headers.get('pragma')).toBe('no-cache')
    expect(tokens.headers.get('x-content-type-options')).toBe('nosniff')
    const sse = openSse(s, `/v1/workflows/${wf}/events`, { authorization: `Bearer ${nora}` })
    expect(await sse.status).toBe(200)
    expect((await sse.res).headers['cache-control']).toBe('no-cache, no-transform')
    expect((await sse.res).headers['x-content-type-options']).toBe('nosniff')
    sse.close()
    // The UI's files are revalidated, not forbidden to caches.
    expect((await call(s, 'GET', '/ui/app.js')).headers.get('cache-control')).toBe('no-cache')
  })

  it('serves the web UI with a strict CSP and exports request metrics by route pattern', async () => {
    const page = await call(s, 'GET', '/')
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/text\/html/)
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'")
    const etag = page.headers.get('etag') ?? ''
    expect((await call(s, 'GET', '/', { headers: { 'if-none-match': etag } })).status).toBe(304)
    expect((await call(s, 'GET', '/ui/app.js')).headers.get('content-type')).toMatch(/javascript/)
    expect((await call(s, 'GET', '/ui/../server.ts')).status).toBe(404)
    // A file that is not there is a 404, not the 405 of a known path asked with the wrong method.
    for (const missing of ['/ui/missing.js', '/ui/nope.css']) {
      const r = await call(s, 'GET', missing)
      expectProblem(r, 404, 'not_found')
      expect(r.headers.get('allow')).toBeNull()
    }
    expectProblem(await call(s, 'POST', '/ui/app.js'), 405, 'method_not_allowed')
    const text = await s.rt.metrics.registry.metrics()
    expect(text).toMatch(/troupe_http_requests_total\{route="\/v1\/workflows\/:id",status="200"\} \d+/)
    expect(text).toMatch(/troupe_http_request_duration_seconds_count\{route="\/v1\/workflows"\} \d+/)
    expect(text).not.toMatch(/route="\/v1\/workflows\/[A-Za-z0-9_-]{10,}"/)
    expect(text).toMatch(/troupe_auth_failures_total\{reason="missing"\} \d+/)
  })
})
