// Gateway test harness: a real runtime (counter, echo and a failing agent) hosting
// the gateway on a free loopback port, a fake clock the tests can move, an HTTP
// helper and a small SSE client over node:http (so a test controls exactly when
// it disconnects and what Last-Event-ID it sends).
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import type { Redis } from 'ioredis'
import { setup } from 'xstate'
import { defineAgent, startRuntime, type AgentDefinition, type Runtime, type TroupeConfig } from '../../runtime/index.ts'
import type { TokenPair } from '../../runtime/gateway/auth-store.ts'
import type { Gateway } from '../../runtime/gateway/server.ts'
import { gatewayService, type GatewayService, type GatewayServiceOptions } from '../../runtime/gateway/service.ts'
import { counter, echo } from '../fixtures/agents.ts'
import { rawRedis, testConfig } from '../helpers/redis.ts'

/** Always throws on `explode`: its actions end up dead-lettered after one attempt. */
export const fragile = defineAgent({
  name: 'fragile',
  maxAttempts: 1,
  machine: setup({}).createMachine({
    id: 'fragile',
    initial: 'ready',
    states: {
      ready: {
        on: {
          explode: {
            actions: () => {
              throw new Error('boom')
            },
          },
          calm: {},
        },
      },
    },
  }),
})

/** A started runtime + gateway for one test file. */
export interface Stack {
  rt: Runtime
  /** The hosted service (stop/start it to restart the gateway). */
  service: GatewayService
  /** The gateway as first started. */
  gw: Gateway
  url: string
  cfg: TroupeConfig
  redis: Redis
  /** Moves the gateway's clock (token expiry, rate limits) forward. */
  advance(ms: number): void
  /** Stops the gateway's clock (timing-sensitive tests), or lets it run again with `false`. */
  freeze(frozen?: boolean): void
  /** Issues a credential for `user` through the auth store (as `troupe auth issue` does). */
  issue(user: string): Promise<string>
  /** Issues a credential and exchanges it for tokens. */
  login(user: string): Promise<TokenPair>
  /** Signs in for a browser session; returns the `Cookie` header value. */
  session(user: string): Promise<string>
  stop(): Promise<void>
}

/** Starts a runtime hosting the test agents and the gateway (port 0, quiet logs). */
export async function startStack(opts: { config?: Partial<TroupeConfig>; gateway?: GatewayServiceOptions; agents?: AgentDefinition[] } = {}): Promise<Stack> {
  const cfg = testConfig(opts.config)
  let offset = 0
  let frozenAt: number | null = null
  const svc = gatewayService({ port: 0, logLevel: 'warn', ...opts.gateway, now: () => (frozenAt ?? Date.now()) + offset })
  const rt = await startRuntime({ agents: [counter, echo, fragile, ...(opts.agents ?? [])], services: [svc], config: cfg, metricsPort: false })
  const gw = svc.gateway
  if (!gw) throw new Error('gateway did not start')
  const redis = rawRedis()
  const credentials = new Map<string, string>()
  const stack: Stack = {
    rt, service: svc, gw, url: gw.url, cfg, redis,
    advance: (ms) => {
      offset += ms
    },
    freeze: (frozen = true) => {
      frozenAt = frozen ? Date.now() : null
    },
    async issue(user) {
      const { credential } = await gw.deps.store.issueCredential(user, { rotate: true })
      credentials.set(user, credential)
      return credential
    },
    async login(user) {
      const credential = credentials.get(user) ?? (await stack.issue(user))
      const r = await call(stack, 'POST', '/v1/auth/token', { body: { credential } })
      if (r.status !== 200) throw new Error(`login failed: ${r.status} ${r.text}`)
      return r.json as TokenPair
    },
    async session(user) {
      const credential = credentials.get(user) ?? (await stack.issue(user))
      const r = await call(stack, 'POST', '/v1/auth/session', { body: { credential } })
      const set = r.headers.get('set-cookie') ?? ''
      if (r.status !== 200 || !set) throw new Error(`session failed: ${r.status} ${r.text}`)
      return set.split(';')[0] ?? ''
    },
    async stop() {
      await rt.stop()
      // Leave the shared Redis as we found it: this file's namespace goes away.
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${cfg.namespace}*`, 'COUNT', 1000)
        cursor = next
        if (keys.length) await redis.unlink(...keys)
      } while (cursor !== '0')
      await redis.quit()
    },
  }
  return stack
}

/** A response with its body read. */
export interface Reply {
  status: number
  headers: Headers
  text: string
  json: unknown
}

/** One HTTP call to the gateway. */
export async function call(
  s: { url: string },
  method: string,
  path: string,
  opts: { token?: string; cookie?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers }
  if (opts.token) headers.authorization = `Bearer ${opts.token}`
  if (opts.cookie) headers.cookie = opts.cookie
  let body: string | undefined
  if (opts.rawBody !== undefined) body = opts.rawBody
  else if (opts.body !== undefined) {
    headers['content-type'] ??= 'application/json'
    body = JSON.stringify(opts.body)
  }
  const res = await fetch(s.url + path, { method, headers, ...(body !== undefined ? { body } : {}) })
  const text = await res.text()
  let json: unknown = null
  try {
    json = text ? (JSON.parse(text) as unknown) : null
  } catch {
    json = null
  }
  return { status: res.status, headers: res.headers, text, json }
}

/** Starts `n` counter workflows named `<prefix>-0..n-1` through the API; returns their ids. */
export async function startNamed(s: { url: string }, token: string, prefix: string, n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent: 'counter', type: 'ping', workflowId: `${prefix}-${i}` } })
    if (r.status !== 201) throw new Error(`start ${prefix}-${i}: ${r.status} ${r.text}`)
    ids.push(`${prefix}-${i}`)
  }
  return ids
}

/** Pages through GET /v1/workflows `limit` at a time (at most 10 pages); returns the ids seen and the page count. */
export async function listAll(s: { url: string }, token: string, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const q: string = cursor ? `?limit=${limit}&cursor=${encodeURIComponent(cursor)}` : `?limit=${limit}`
    const r = await call(s, 'GET', `/v1/workflows${q}`, { token })
    if (r.status !== 200) throw new Error(`list: ${r.status} ${r.text}`)
    const b = r.json as { items: { workflowId: string }[]; nextCursor: string | null }
    ids.push(...b.items.map((i) => i.workflowId))
    cursor = b.nextCursor
    pages++
  } while (cursor && pages < 10)
  return { ids, pages }
}

/** One parsed SSE message. */
export interface SseMessage {
  id?: string
  event: string
  data: string
  /** performance.now() when the message was complete. */
  at: number
}

/** A streaming SSE client. */
export interface SseClient {
  status: Promise<number>
  messages: SseMessage[]
  comments: string[]
  retry: number | null
  /** Resolves when the server ends the stream (or the socket closes). */
  closed: Promise<void>
  /** Waits until `pred` holds for the messages so far. */
  until(pred: (m: SseMessage[]) => boolean, timeoutMs?: number): Promise<void>
  close(): void
  /** Stops reading from the socket (a slow client) without closing it. */
  pause(): void
  res: Promise<IncomingMessage>
  req: ClientRequest
}

/** Opens `path` as an event stream; parses messages as they arrive. */
export function openSse(s: { url: string }, path: string, headers: Record<string, string> = {}): SseClient {
  const messages: SseMessage[] = []
  const comments: string[] = []
  const waiters = new Set<() => void>()
  const notify = (): void => {
    for (const w of [...waiters]) w()
  }
  let resolveClosed!: () => void
  const closed = new Promise<void>((r) => (resolveClosed = r))
  let resolveRes!: (r: IncomingMessage) => void
  const resP = new Promise<IncomingMessage>((r) => (resolveRes = r))
  const client: SseClient = {
    status: resP.then((r) => r.statusCode ?? 0),
    messages,
    comments,
    retry: null,
    closed,
    res: resP,
    req: httpRequest(s.url + path, { headers: { accept: 'text/event-stream', ...headers } }),
    until(pred, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (pred(messages)) {
            waiters.delete(check)
            clearTimeout(t)
            resolve()
          }
        }
        const t = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`SSE: condition not met in ${timeoutMs} ms (${messages.length} messages)`))
        }, timeoutMs)
        waiters.add(check)
        check()
      })
    },
    close() {
      client.req.destroy()
    },
    pause() {
      void resP.then((r) => r.pause())
    },
  }
  let buf = ''
  let cur: { id?: string; event?: string; data?: string } = {}
  client.req.on('response', (res) => {
    resolveRes(res)
    res.setEncoding('utf8')
    res.on('data', (chunk: string) => {
      buf += chunk
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '')
        buf = buf.slice(nl + 1)
        if (line === '') {
          if (cur.data !== undefined) messages.push({ ...(cur.id !== undefined ? { id: cur.id } : {}), event: cur.event ?? 'message', data: cur.data, at: performance.now() })
          cur = {}
          continue
        }
        if (line.startsWith(':')) {
          comments.push(line.slice(1).trim())
          continue
        }
        const colon = line.indexOf(':')
        const field = colon < 0 ? line : line.slice(0, colon)
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'data') cur.data = cur.data === undefined ? value : `${cur.data}\n${value}`
        else if (field === 'id') cur.id = value
        else if (field === 'event') cur.event = value
        else if (field === 'retry') client.retry = Number(value)
      }
      notify()
    })
    res.on('close', () => {
      resolveClosed()
      notify()
    })
  })
  client.req.on('error', () => {
    resolveClosed()
    notify()
  })
  client.req.end()
  return client
}

/** The stream ids and event types of a workflow's stream, straight from Redis. */
export async function xrangeIds(s: Stack, wf: string): Promise<string[]> {
  const entries = await s.redis.xrange(s.gw.deps.keys.events(wf), '-', '+')
  return entries.map(([id]) => id)
}

/** Waits `ms` of real time. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
