// Property-based fuzzing of bodies, ids, query strings and headers: whatever a
// client sends, the gateway answers a 2xx or a 4xx problem+json, never a 5xx,
// and keeps serving.
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { call, startStack, type Reply, type Stack } from './helpers.ts'

let s: Stack
let token: string
let wf: string
const RUNS = Number(process.env.FUZZ_RUNS ?? 60)

beforeAll(async () => {
  s = await startStack({ gateway: { limits: { ratePerSec: 100_000, burst: 100_000, dailyStarts: 0 } } })
  token = (await s.login('fuzz')).access_token
  const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping' } })
  wf = (r.json as { workflowId: string }).workflowId
})
afterAll(async () => {
  await s?.stop()
})

function wellBehaved(r: Reply, what: string): void {
  expect(r.status, `${what} -> ${r.status} ${r.text.slice(0, 300)}`).toBeLessThan(500)
  if (r.status >= 400) {
    expect(r.headers.get('content-type'), what).toMatch(/^application\/problem\+json/)
    expect((r.json as { status: number }).status).toBe(r.status)
  }
}

const anyJson = fc.jsonValue({ maxDepth: 3 })
const field = fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('counter', 'echo', 'ping', 'relay', 'finish', '../x', '{wf}', 'a:b', ''), fc.integer(), fc.constant(null))
const bodyArb = fc.oneof(
  anyJson,
  fc.record({ agent: field, type: field, payload: anyJson, workflowId: field, deadlineMs: fc.oneof(fc.integer(), fc.double(), fc.string()) }, { requiredKeys: [] }),
  fc.record({ credential: field, refresh_token: field, all: fc.oneof(fc.boolean(), field) }, { requiredKeys: [] }),
)
const idArb = (): fc.Arbitrary<string> => fc.oneof(fc.string({ maxLength: 100 }), fc.string({ unit: 'binary', maxLength: 30 }), fc.constantFrom('..', '%', '%2F', 'a/b', ' ', '{x}', 'x'.repeat(65), wf))

describe('gateway fuzzing', () => {
  it('answers any JSON body on any write route with 2xx or a 4xx problem', async () => {
    const routes = ['/v1/workflows', `/v1/workflows/${wf}/actions`, `/v1/workflows/${wf}/cancel`, '/v1/auth/token', '/v1/auth/refresh', '/v1/auth/session', '/v1/auth/logout']
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), bodyArb, fc.boolean(), async (route, body, withToken) => {
        // Never cancel the shared workflow or sign the fuzzer out: those would end the run early.
        if (route.endsWith('/cancel') || route.endsWith('/logout')) withToken = false
        const r = await call(s, 'POST', route, withToken ? { token, body } : { body })
        wellBehaved(r, `POST ${route} ${JSON.stringify(body).slice(0, 200)}`)
      }),
      { numRuns: RUNS * 3 },
    )
  })

  it('answers any id, query or Last-Event-ID with 2xx or a 4xx problem', async () => {
    const paths = ['/v1/workflows/ID', '/v1/workflows/ID/dead-letters', '/v1/workflows/ID/dead-letters/ID/retry', '/v1/workflows/ID/actions', '/v1/workflows?cursor=ID&limit=Q', '/v1/workflows/ID/events?after=ID']
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), idArb(), fc.oneof(fc.string({ maxLength: 10 }), fc.integer().map(String)), fc.string({ maxLength: 40 }), async (p, id, q, lastId) => {
        const path = p.replace(/ID/g, encodeURIComponent(id)).replace('Q', encodeURIComponent(q))
        const method = path.endsWith('/retry') || path.endsWith('/actions') ? 'POST' : 'GET'
        const headers: Record<string, string> = {}
        // Header values must be ByteStrings without line breaks to be sendable at all.
        if (path.includes('/events') && /^[\x20-\x7e]*$/.test(lastId)) headers['last-event-id'] = lastId
        if (path.includes('/events')) {
          // A valid request opens a stream that never ends by itself: read the status, then hang up.
          const ctl = new AbortController()
          const res = await fetch(s.url + path, { headers: { ...headers, authorization: `Bearer ${token}` }, signal: ctl.signal })
          if (res.status >= 400) {
            const text = await res.text()
            wellBehaved({ status: res.status, headers: res.headers, text, json: JSON.parse(text) as unknown }, `GET ${path}`)
          } else {
            expect([200, 204]).toContain(res.status)
            ctl.abort()
          }
          return
        }
        const r = await call(s, method, path, { token, headers, ...(method === 'POST' ? { body: { agent: 'counter', type: 'ping' } } : {}) })
        wellBehaved(r, `${method} ${path}`)
      }),
      { numRuns: RUNS * 2 },
    )
  })

  it('answers garbage authorization headers and cookies with 401 problems', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 120 }), fc.boolean(), async (junk, asCookie) => {
        const printable = junk.replace(/[^\x20-\x7e]/g, '')
        const r = await call(s, 'GET', '/v1/me', { headers: asCookie ? { cookie: `troupe_session=${printable}` } : { authorization: `Bearer ${printable}` } })
        wellBehaved(r, `junk ${JSON.stringify(printable)}`)
        expect(r.status).toBe(401)
      }),
      { numRuns: RUNS * 2 },
    )
    // Still healthy after all that.
    expect((await call(s, 'GET', `/v1/workflows/${wf}`, { token })).status).toBe(200)
  })
})
