// Live frames coalesced per tick (sse-hub.ts Batch, written to each client's
// socket as one pre-framed HTTP chunk), driven deterministically: a fake
// subscriber delivers exactly the messages a test wants in one tick, a fake
// stream store decides what the replay sees, and real HTTP clients parse the
// chunked responses. Exactly once and in order: batches overlapping the replay,
// overlapping what a client already has, a final event inside a batch, a
// reconnect with Last-Event-ID, and a client that stops reading.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { encodeEvent } from '../../runtime/events.ts'
import { SseHub, type Batch, type FeedClient } from '../../runtime/gateway/sse-hub.ts'
import { SseStream } from '../../runtime/gateway/sse-stream.ts'
import type { SseSettings } from '../../runtime/gateway/settings.ts'
import type { RedisClient } from '../../runtime/redis/connection.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import type { Subscriber } from '../../runtime/subscriber.ts'
import { openSse, sleep, type SseMessage } from './helpers.ts'

const WF = 'wf-batch'
const keys = new Keys('batchtest:')

/** One pub/sub channel the test publishes to by hand. */
class FakeSubscriber {
  readonly handlers = new Map<string, Set<(m: string) => void>>()
  subscribe(channel: string, h: (m: string) => void): Promise<() => Promise<void>> {
    const set = this.handlers.get(channel) ?? new Set()
    set.add(h)
    this.handlers.set(channel, set)
    return Promise.resolve(() => {
      set.delete(h)
      return Promise.resolve()
    })
  }
  onResync(): () => void {
    return () => undefined
  }
  /** Delivers `msgs` synchronously, as one Redis read would. */
  publish(msgs: string[]): void {
    for (const m of msgs) for (const h of this.handlers.get(keys.channel(WF)) ?? []) h(m)
  }
}

/** The workflow's stream as the replay reads it; `gate` holds XRANGE back until opened. */
class FakeStore {
  entries: [string, string[]][] = []
  status = 'running'
  gate: Promise<void> = Promise.resolve()
  /** XRANGE calls so far: a replay that called it is held at the gate. */
  reads = 0
  xinfo(): Promise<unknown> {
    return Promise.reject(new Error('no such key'))
  }
  async xrange(_key: string, start: string, _end: string, _c: string, count: number): Promise<[string, string[]][]> {
    this.reads++
    await this.gate
    const after = start === '-' ? null : start.slice(1)
    const seq = (id: string): number => Number(id.split('-')[1])
    return this.entries.filter(([id]) => after === null || seq(id) > seq(after)).slice(0, count)
  }
  /** Runs as the status is read (a commit landing just before that read). */
  onStatus: (() => void) | null = null
  hget(): Promise<string> {
    this.onStatus?.()
    this.onStatus = null
    return Promise.resolve(this.status)
  }
}

const id = (n: number): string => `1700000000000-${n}`
const event = (n: number, type = 'token'): string => encodeEvent({ workflowId: WF, type, content: { n }, id: `e${n}` })
const live = (n: number, type?: string): string => `{"streamId":"${id(n)}","event":${event(n, type)}}`
const stored = (n: number, type?: string): [string, string[]] => [id(n), ['e', event(n, type)]]
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i)
const ids = (ms: SseMessage[]): string[] => ms.filter((m) => m.event === 'message').map((m) => m.id ?? '')

interface Rig {
  url: string
  sub: FakeSubscriber
  store: FakeStore
  hub: SseHub
  streams: SseStream[]
  drops: string[]
  server: Server
  /** Streams the hub has attached (and started) so far. */
  attached: number
  /** Responses whose socket is gone (ended and flushed, or cut). */
  released: number
}

/** Polls `cond` every few ms: waits on the rig's state, not on a guessed delay (the suite runs loaded). */
async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(2)
  }
}

let rig: Rig | null = null

async function startRig(settings: Partial<SseSettings> = {}): Promise<Rig> {
  const sub = new FakeSubscriber()
  const store = new FakeStore()
  const hub = new SseHub(sub as unknown as Subscriber, keys, 60_000)
  const streams: SseStream[] = []
  const drops: string[] = []
  const sse: SseSettings = { heartbeatMs: 60_000, retryMs: 1000, slowClientMs: 300, maxQueueBytes: 8 * 1024 * 1024, maxStreamsPerUser: 64, ...settings }
  const server = createServer((req, res) => {
    const header = req.headers['last-event-id']
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.on('close', () => r.released++)
    const stream: SseStream = new SseStream(WF, res, typeof header === 'string' ? header : '0', {
      redis: store as unknown as RedisClient,
      keys,
      settings: sse,
      status: () => Promise.resolve({}),
      onDrop: (reason) => drops.push(reason),
      onClose: () => hub.detach(WF, stream),
    })
    streams.push(stream)
    void hub.attach(WF, stream).then(() => {
      r.attached++
      return stream.start()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const r: Rig = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sub, store, hub, streams, drops, server, attached: 0, released: 0 }
  rig = r
  return r
}

afterEach(async () => {
  if (!rig) return
  rig.hub.close()
  rig.server.closeAllConnections()
  await new Promise((r) => rig?.server.close(r))
  rig = null
})

/**
 * Two clients on `r`, one of which stops reading, and 400 events of 32 KB
 * published in batches: the reading one has all of them when this returns.
 */
async function floodPastSlowClient(r: Awaited<ReturnType<typeof startRig>>): Promise<{ fast: ReturnType<typeof openSse>; slow: ReturnType<typeof openSse> }> {
  const fast = openSse(r, '/events')
  const slow = openSse(r, '/events')
  await until(() => r.attached === 2, 'both attached')
  slow.pause()
  const big = 'x'.repeat(32 * 1024)
  const bigLive = (n: number): string => `{"streamId":"${id(n)}","event":${encodeEvent({ workflowId: WF, type: 'blob', content: { big }, id: `e${n}` })}}`
  for (let t = 0; t < 40; t++) {
    r.sub.publish(range(t * 10 + 1, t * 10 + 10).map(bigLive))
    await sleep(5)
  }
  await fast.until((m) => ids(m).length >= 400, 20_000)
  return { fast, slow }
}

describe('SSE live frames coalesced per tick', () => {
  it('hands every client one batch per tick, its bytes concatenated once', async () => {
    const sub = new FakeSubscriber()
    const hub = new SseHub(sub as unknown as Subscriber, keys, 60_000)
    const seen: Batch[][] = [[], []]
    const client = (i: number): FeedClient => ({ push: (b) => seen[i]?.push(b), resync: () => undefined, heartbeat: () => undefined, shutdown: () => undefined })
    await hub.attach(WF, client(0))
    await hub.attach(WF, client(1))
    sub.publish(range(1, 10).map((n) => live(n)))
    expect(seen[0]).toHaveLength(0) // delivered once the read is done
    await sleep(0)
    sub.publish(range(11, 12).map((n) => live(n)))
    await sleep(0)
    const [a, b] = seen as [Batch[], Batch[]]
    expect(a.map((x) => x.frames.map((f) => f.id))).toEqual([range(1, 10).map(id), range(11, 12).map(id)])
    expect(b[0]).toBe(a[0]) // one object for every client
    const first = a[0] as Batch
    expect(first.whole).toBe(true)
    expect(first.bytes.toString()).toBe(first.frames.map((f) => f.bytes.toString()).join(''))
    expect(first.chunk.toString()).toBe(`${first.bytes.length.toString(16)}\r\n${first.bytes.toString()}\r\n`)
    hub.close()
  })

  it('writes a batch overlapping the replay from its first new frame, then live batches whole, exactly once', async () => {
    const r = await startRig()
    r.store.entries = range(1, 5).map((n) => stored(n))
    let open!: () => void
    r.store.gate = new Promise((g) => (open = g))
    const a = openSse(r, '/events')
    const b = openSse(r, '/events')
    await until(() => r.store.reads === 2, 'both replays held at XRANGE')
    // Published while the replays wait; they will read up to 5, so this batch
    // overlaps them and only 6..8 of it are new.
    r.sub.publish(range(4, 8).map((n) => live(n)))
    await sleep(10)
    open()
    await a.until((m) => ids(m).length >= 8)
    await b.until((m) => ids(m).length >= 8)
    r.store.entries.push(...range(6, 8).map((n) => stored(n)))
    // Live: a batch repeating the last frame a client has, then a clean one.
    r.sub.publish(range(8, 10).map((n) => live(n)))
    await sleep(5)
    r.sub.publish(range(11, 15).map((n) => live(n)))
    for (const c of [a, b]) {
      await c.until((m) => ids(m).length >= 15)
      await sleep(20)
      expect(ids(c.messages)).toEqual(range(1, 15).map(id))
      for (const m of c.messages) expect((JSON.parse(m.data) as { streamId: string }).streamId).toBe(m.id)
    }

    // A reconnect resumes after its Last-Event-ID while batches keep coming.
    a.close()
    r.store.entries.push(...range(9, 15).map((n) => stored(n)))
    r.store.gate = new Promise((g) => (open = g))
    const reads = r.store.reads
    const again = openSse(r, '/events', { 'last-event-id': id(12) })
    await until(() => r.store.reads > reads, 'the replay held at XRANGE')
    // Published while this replay waits, and read by it too: skipped whole.
    r.store.entries.push(...range(16, 18).map((n) => stored(n)))
    r.sub.publish(range(16, 18).map((n) => live(n)))
    open()
    await again.until((m) => ids(m).length >= 6)
    r.sub.publish(range(19, 20).map((n) => live(n)))
    await again.until((m) => ids(m).length >= 8)
    await b.until((m) => ids(m).length >= 20)
    await sleep(20)
    expect(ids(again.messages)).toEqual(range(13, 20).map(id))
    expect(ids(b.messages)).toEqual(range(1, 20).map(id))
    again.close()
    b.close()
  })

  it('ends after a final event inside a batch, without the frames behind it', async () => {
    const r = await startRig()
    const c = openSse(r, '/events')
    await until(() => r.attached === 1, 'attached')
    r.sub.publish([live(1), live(2, 'workflow.completed'), live(3)])
    await c.until((m) => m.some((x) => x.event === 'end'), 5000)
    await c.closed
    expect(ids(c.messages)).toEqual([id(1), id(2)])
    expect(c.messages.at(-1)?.event).toBe('end')
    expect(JSON.parse(c.messages.at(-1)?.data ?? '{}')).toEqual({ status: 'completed' })

    // A batch ending with the final event goes out whole, then the end.
    const d = openSse(r, '/events', { 'last-event-id': id(3) })
    await until(() => r.attached === 2, 'attached')
    r.sub.publish([live(4), live(5), live(6, 'workflow.failed')])
    await d.until((m) => m.some((x) => x.event === 'end'), 5000)
    await d.closed
    expect(ids(d.messages)).toEqual([id(4), id(5), id(6)])
    expect(JSON.parse(d.messages.at(-1)?.data ?? '{}')).toEqual({ status: 'failed' })
  })

  it('sends everything up to the final event when one commit appended more than a page before its live copies came', async () => {
    const r = await startRig()
    r.store.entries = range(1, 3).map((n) => stored(n))
    // Between the replay's last read and the status read, a commit appends 450
    // events, the last one final; none of their live copies has arrived yet.
    r.store.onStatus = () => {
      r.store.entries.push(...range(4, 452).map((n) => stored(n)), stored(453, 'workflow.completed'))
      r.store.status = 'completed'
    }
    const c = openSse(r, '/events')
    await c.closed
    expect(ids(c.messages)).toEqual(range(1, 453).map(id))
    expect(c.messages.at(-1)?.event).toBe('end')
  })

  it('lets go of the socket of a client that stopped reading when the gateway stops', async () => {
    // Never dropped for being slow: only the shutdown can free this socket.
    const r = await startRig({ slowClientMs: 60_000, maxQueueBytes: 64 * 1024 * 1024 })
    const { fast, slow } = await floodPastSlowClient(r)
    const t0 = performance.now()
    r.hub.close()
    // The reading client gets a clean end; the other's socket is cut after a grace period at most.
    await fast.closed
    await until(() => r.released === 2, 'both sockets released', 5000)
    expect(performance.now() - t0).toBeLessThan(5000)
    expect(r.streams.map((x) => x.state)).toEqual(['closed', 'closed'])
    expect(r.drops).toEqual([])
    slow.close()
  })

  it('ends at once a stream that attaches after the hub closed', async () => {
    const r = await startRig()
    r.hub.close()
    const late = openSse(r, '/events')
    expect(await late.status).toBe(200)
    await until(() => r.released === 1, 'its socket released', 5000)
    expect(r.streams[0]?.state).toBe('closed')
  })

  it('drops a client that stops reading while batches go straight to its socket, and keeps the others live', async () => {
    const r = await startRig({ slowClientMs: 200 })
    const { fast, slow } = await floodPastSlowClient(r)
    expect(ids(fast.messages)).toEqual(range(1, 400).map(id))
    await until(() => r.drops.length >= 1, 'the slow client dropped')
    // Only the slow one: the fast one is still live and gets what comes next.
    r.sub.publish([live(401)])
    await fast.until((m) => ids(m).includes(id(401)), 5000)
    expect(r.drops.length).toBe(1)
    expect(r.streams.map((x) => x.state).sort()).toEqual(['closed', 'live'])
    expect(ids(fast.messages)).toEqual(range(1, 401).map(id))
    fast.close()
    slow.close()
  })
})
