// Small workloads that make a fleet produce every kind of series the dashboard
// shows, each through the real mechanism (no counter is bumped by hand): retries
// and dead letters from failing actions, lock contention from a held actor, a
// fence rejection from a paused zombie, stuck actors from saturated workers, auth
// failures and 429s at the gateway, and an SSE client dropped for not reading.
import { request as httpRequest } from 'node:http'
import { AuthStore, type UserLimits } from '../../runtime/gateway/auth-store.ts'
import { gatewaySettings } from '../../runtime/gateway/settings.ts'
import { eventually } from '../helpers/redis.ts'
import { scrapeCounter } from '../helpers/processes.ts'
import type { Fleet, FleetProcess } from './fleet.ts'

/** An HTTP reply from the gateway. */
export interface Reply {
  status: number
  json: unknown
}

/** One call to the gateway's API. */
export async function api(fleet: Fleet, method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<Reply> {
  const headers: Record<string, string> = {}
  if (opts.token) headers.authorization = `Bearer ${opts.token}`
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(fleet.gatewayUrl + path, { method, headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) })
  const text = await res.text()
  let json: unknown = null
  try {
    json = text ? (JSON.parse(text) as unknown) : null
  } catch {
    json = text
  }
  return { status: res.status, json }
}

/** Issues `user` a credential (as `troupe auth issue` does), optionally with limits, and signs in; returns an access token. */
export async function signIn(fleet: Fleet, user: string, limits?: UserLimits): Promise<string> {
  const store = new AuthStore(fleet.client.redis, fleet.client.keys, gatewaySettings().auth)
  const { credential } = await store.issueCredential(user, { rotate: true })
  if (limits) await store.setLimits(user, limits)
  const r = await api(fleet, 'POST', '/v1/auth/token', { body: { credential } })
  if (r.status !== 200) throw new Error(`sign-in of ${user} failed: ${r.status} ${JSON.stringify(r.json)}`)
  return (r.json as { access_token: string }).access_token
}

/** Starts a workflow through the gateway as the token's user. */
export async function startVia(fleet: Fleet, token: string, agent: string, type: string, payload: unknown): Promise<string> {
  const r = await api(fleet, 'POST', '/v1/workflows', { token, body: { agent, type, payload } })
  if (r.status !== 201) throw new Error(`start ${agent}/${type} failed: ${r.status} ${JSON.stringify(r.json)}`)
  return (r.json as { workflowId: string }).workflowId
}

/** Waits until `wf` has finished `done` actions (dead letters included when `dead` is given). */
export async function waitActions(fleet: Fleet, wf: string, done: number, dead = 0, timeoutMs = 20_000): Promise<void> {
  await eventually(async () => {
    const c = (await fleet.client.getStatus(wf))?.counts
    return c !== undefined && c.done >= done && c.dead >= dead
  }, timeoutMs, `${done} done / ${dead} dead actions in ${wf}`)
}

/** Everyday traffic through the gateway: counters pinged, relays to echo, status reads. */
export async function routine(fleet: Fleet, token: string, workflows = 6): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < workflows; i++) {
    const wf = await startVia(fleet, token, 'counter', 'ping', { i })
    await api(fleet, 'POST', `/v1/workflows/${wf}/actions`, { token, body: { agent: 'counter', type: 'relay', payload: { text: `hello ${i}` } } })
    await api(fleet, 'POST', `/v1/workflows/${wf}/actions`, { token, body: { agent: 'counter', type: 'finish', payload: {} } })
    ids.push(wf)
  }
  for (const wf of ids) {
    await eventually(async () => (await fleet.client.getStatus(wf))?.status === 'completed', 20_000, `routine workflow ${wf}`)
    await api(fleet, 'GET', `/v1/workflows/${wf}`, { token })
  }
  return ids
}

/** A flaky action that succeeds on its second attempt, and one that always throws (retried, then dead-lettered). */
export async function failures(fleet: Fleet): Promise<void> {
  const { workflowId: ok } = await fleet.client.startWorkflow({ agent: 'flaky', type: 'flaky', payload: { failTimes: 1 } })
  const { workflowId: bad } = await fleet.client.startWorkflow({ agent: 'flaky', type: 'throw', payload: {} })
  await waitActions(fleet, ok, 1)
  await waitActions(fleet, bad, 0, 1)
}

/** Bad credentials, a bogus bearer token, and a user sent over their rate limit. */
export async function authNoise(fleet: Fleet): Promise<void> {
  await api(fleet, 'POST', '/v1/auth/token', { body: { credential: 'not-a-credential' } })
  await api(fleet, 'GET', '/v1/me', { token: 'tat.nobody.bogus' })
  await api(fleet, 'GET', '/v1/me')
  const limited = await signIn(fleet, 'obs-limited', { rate: 0.5, burst: 1 })
  let throttled = 0
  for (let i = 0; i < 6; i++) if ((await api(fleet, 'GET', '/v1/me', { token: limited })).status === 429) throttled++
  if (throttled === 0) throw new Error('the rate limit never answered 429')
}

/**
 * Another holder of an actor's lock (as a second process would be): the workers
 * that pick its hint find the lock taken and count contention until it expires.
 */
export async function contention(fleet: Fleet, holdMs = 1500): Promise<void> {
  const { workflowId } = await fleet.client.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 'before' } })
  await waitActions(fleet, workflowId, 1)
  const lock = fleet.client.keys.lock(workflowId, 'counter')
  if ((await fleet.client.redis.set(lock, 'held-by-the-observability-test', 'PX', holdMs, 'NX')) !== 'OK') throw new Error('actor lock unexpectedly held')
  await fleet.client.sendAction(workflowId, 'counter', 'ping', { i: 'contended' })
  await waitActions(fleet, workflowId, 2, 0, holdMs + 15_000)
}

/**
 * More slow work than the workers can take at once (they run with
 * `--concurrency 1`): the last action waits past the supervisor's stuck
 * threshold, so it is reported stuck (`unpicked`) and shows up as queue wait.
 */
export async function saturate(fleet: Fleet, actions = 3, ms = 2000): Promise<void> {
  const ids = await Promise.all(Array.from({ length: actions }, (_, i) => fleet.client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms, i } })))
  for (const { workflowId } of ids) await waitActions(fleet, workflowId, 2, 0, actions * ms + 15_000)
}

async function holderOf(fleet: Fleet, agent: string): Promise<FleetProcess> {
  return await eventually(async () => {
    for (const w of fleet.workers) if ((await scrapeCounter(w.metricsUrl, 'troupe_active_actors', { agent })) >= 1) return w
    return null
  }, 10_000, `a worker running ${agent}`)
}

/**
 * A zombie: the worker running an action is paused (SIGSTOP) past its lock, the
 * other worker redelivers and commits it, and when the zombie wakes up its commit
 * is rejected by the fence. Returns the zombie.
 */
export async function zombie(fleet: Fleet, ms = 2000): Promise<FleetProcess> {
  const { workflowId } = await fleet.client.startWorkflow({ agent: 'slow', type: 'work', payload: { ms, i: 'zombie' } })
  const holder = await holderOf(fleet, 'slow')
  holder.signal('SIGSTOP')
  try {
    await waitActions(fleet, workflowId, 2, 0, ms + 20_000)
  } finally {
    holder.signal('SIGCONT')
  }
  await eventually(async () => (await scrapeCounter(holder.metricsUrl, 'troupe_fence_rejections_total', { agent: 'slow' })) >= 1, 15_000, 'fence rejection on the zombie')
  return holder
}

/**
 * A client that stops reading a long stream: `bulky` writes more history than the
 * loopback socket buffers hold, the gateway's writes back up, and it drops the
 * client after TROUPE_SSE_SLOW_MS.
 */
export async function slowSseClient(fleet: Fleet, token: string, mb = 6): Promise<void> {
  const bytes = 128 * 1024
  const wf = await startVia(fleet, token, 'bulky', 'spew', { count: Math.ceil((mb * 1024 * 1024) / bytes), bytes })
  await waitActions(fleet, wf, 1)
  const req = httpRequest(`${fleet.gatewayUrl}/v1/workflows/${wf}/events?after=0`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } })
  req.on('response', (res) => res.pause())
  req.on('error', () => undefined)
  req.end()
  try {
    await eventually(async () => (await scrapeCounter(fleet.gateway.metricsUrl, 'troupe_sse_dropped_total')) >= 1, 20_000, 'the gateway dropping the slow SSE client')
  } finally {
    req.destroy()
  }
}

/** Follows a workflow over SSE, reading everything, until it ends (a well-behaved client). */
export async function follow(fleet: Fleet, token: string, wf: string, timeoutMs = 30_000): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    let frames = 0
    const req = httpRequest(`${fleet.gatewayUrl}/v1/workflows/${wf}/events`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } })
    const t = setTimeout(() => {
      req.destroy()
      reject(new Error(`SSE stream of ${wf} did not end within ${timeoutMs} ms`))
    }, timeoutMs)
    req.on('response', (res) => {
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (frames += chunk.split('\n\n').length - 1))
      res.on('end', () => {
        clearTimeout(t)
        resolve(frames)
      })
    })
    req.on('error', (err) => {
      clearTimeout(t)
      reject(err)
    })
    req.end()
  })
}
