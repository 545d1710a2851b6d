// Inputs the public API used to take without a word (API review): a plain
// object passed as an agent, a malformed registration, a delay that is not a
// number, a fleet whose persistence settings differ from the client's, an async
// migrate(), a bad metrics port, a closed client, a fail reason that is an
// object, a fractional deadline and a cancel's final status from JS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { defineAgent, failWorkflow, sendToAgent, sendToSelf, startRuntime, TroupeClient, type ActionEvent, type Runtime, type TroupeConfig } from '../../runtime/index.ts'
import { counter, tally } from '../fixtures/agents.ts'
import { eventually, rawRedis, testConfig } from '../helpers/redis.ts'

type Ev = ActionEvent<string, Record<string, unknown>>

/** Sends itself (or counter) a ping after the delay its payload names, as read by agent code with a typo's consequences. */
const timer = defineAgent({
  name: 'timer',
  machine: setup({ types: { events: {} as Ev } }).createMachine({
    on: {
      self: { actions: sendToSelf('tick', null, { delayMs: ({ event }: { event: Ev }) => event.payload.ms as number }) },
      other: { actions: sendToAgent('counter', 'ping', { i: 'timer' }, { delayMs: ({ event }: { event: Ev }) => Number(event.payload.ms) }) },
      tick: { actions: () => undefined },
      fail: { actions: failWorkflow(({ event }: { event: Ev }) => event.payload.why as string) },
    },
  }),
})

const cfg = testConfig()
let rt: Runtime
let c: TroupeClient
beforeAll(async () => {
  rt = await startRuntime({ agents: [timer, counter], config: cfg, metricsPort: false })
  c = TroupeClient.connect(cfg)
})
afterAll(async () => {
  await c.close()
  await rt.stop()
})

const deadError = async (client: TroupeClient, wf: string, actionId: string): Promise<string> =>
  (await eventually(async () => (await client.deadLetters(wf)).find((d) => d.actionId === actionId), 10_000, 'dead-lettered')).error

/** What startRuntime did: the error it threw, or 'started' (then stopped at once). */
async function tryStart(opts: Parameters<typeof startRuntime>[0]): Promise<unknown> {
  return startRuntime(opts).then(
    async (r) => {
      await r.stop()
      return 'started'
    },
    (err: unknown) => err,
  )
}

describe('startRuntime input', () => {
  it('refuses a plain object where an agent definition belongs, before touching Redis', async () => {
    const own = testConfig()
    const raw = { name: 'raw', machine: setup({}).createMachine({ on: { t: {} } }) }
    const err = await tryStart({ agents: [raw as never], config: own, metricsPort: false })
    expect(err).toMatchObject({ name: 'TroupeError', code: 'config', message: expect.stringMatching(/agents\[0\] \("raw"\) is not an agent definition: wrap it in defineAgent/) as unknown })
    // Nothing registered: it used to write a registration without action types.
    expect(await c.redis.exists(`${own.namespace}system:agents`)).toBe(0)
  })

  it('refuses a metrics port that is not a whole number from 0 to 65535, before touching Redis', async () => {
    const own = testConfig()
    for (const metricsPort of [-1, Number.NaN, 1.5, 65536, '9464', true]) {
      const err = await tryStart({ agents: [counter], config: own, metricsPort: metricsPort as never })
      expect(err, String(metricsPort)).toMatchObject({ name: 'TroupeError', code: 'config', message: expect.stringMatching(/metricsPort/) as unknown })
    }
    expect(await c.redis.exists(`${own.namespace}system:agents`)).toBe(0)
  })

  it('serves metrics on TROUPE_METRICS_PORT when no metricsPort is given, and refuses a bad one before touching Redis', async () => {
    const before = process.env.TROUPE_METRICS_PORT
    const own = testConfig()
    try {
      // A free port to ask for: bind one, let it go.
      const probe = await startRuntime({ agents: [counter], config: own, metricsPort: 0 })
      const port = Number(new URL(probe.metricsUrl).port)
      await probe.stop()
      process.env.TROUPE_METRICS_PORT = String(port)
      const rt = await startRuntime({ agents: [counter], config: own })
      try {
        expect(rt.metricsUrl).toBe(`http://127.0.0.1:${port}/metrics`)
        expect((await fetch(rt.metricsUrl)).status).toBe(200)
      } finally {
        await rt.stop()
      }
      for (const bad of ['', ' ', '0x50', '65536', '1.5']) {
        process.env.TROUPE_METRICS_PORT = bad
        const err = await tryStart({ agents: [counter], config: testConfig() })
        expect(err, JSON.stringify(bad)).toMatchObject({ code: 'config', message: expect.stringMatching(/TROUPE_METRICS_PORT=.* must be a port number/) as unknown })
      }
    } finally {
      if (before === undefined) delete process.env.TROUPE_METRICS_PORT
      else process.env.TROUPE_METRICS_PORT = before
    }
  })
})

describe('agent registry', () => {
  it('skips a registration whose action types are not a list of strings, and sends to the others', async () => {
    const bad = ['{"updatedAt":1}', '{"actionTypes":"ping"}', '{"actionTypes":[1]}', '{"actionTypes":["ping"],"actionPatterns":5}', 'null', '[]']
    await c.redis.hset(c.keys.agents(), ...bad.flatMap((json, i) => [`bad${i}`, json]))
    try {
      // A fresh client: c may trust counter from its cache without reading the registry.
      const own = TroupeClient.connect(cfg)
      try {
        const { workflowId } = await own.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 } })
        await own.sendAction(workflowId, 'timer', 'tick')
        expect([...(await own.agents()).keys()].sort()).toEqual(['counter', 'timer'])
        await expect(own.startWorkflow({ agent: 'bad0', type: 'ping' })).rejects.toMatchObject({ code: 'unknown_agent' })
      } finally {
        await own.close()
      }
    } finally {
      await c.redis.hdel(c.keys.agents(), ...bad.map((_, i) => `bad${i}`))
    }
  })
})

describe('agent-side delays', () => {
  it('fails a send whose delay is not a finite number of ms, instead of sending it now', async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['self', {}, /sendToSelf delayMs must be a finite number of ms \(at most \d+\), not undefined/],
      ['self', { ms: '100' }, /sendToSelf delayMs must be .*, not "100"/],
      ['self', { ms: null }, /sendToSelf delayMs must be .*, not null/],
      ['other', { ms: 'soon' }, /sendToAgent delayMs must be .*, not NaN/],
    ]
    for (const [type, payload, error] of cases) {
      const { workflowId, actionId } = await c.startWorkflow({ agent: 'timer', type, payload })
      expect(await deadError(c, workflowId, actionId), JSON.stringify(payload)).toMatch(error)
      // At once, and nothing sent: a rejected effect is not retried.
      const st = await c.getStatus(workflowId)
      expect(st?.counts).toMatchObject({ actions: 1, dead: 1, queued: 0 })
    }
  })

  it('still takes a delay of 0, a fraction, and a due time already past (a negative delay means now)', async () => {
    for (const ms of [0, 0.4, 30.6, -1, -5000.5]) {
      const { workflowId } = await c.startWorkflow({ agent: 'timer', type: 'self', payload: { ms } })
      await eventually(async () => (await c.getStatus(workflowId))?.counts.done === 2, 10_000, `delay ${ms}`)
      expect(await c.deadLetters(workflowId)).toEqual([])
    }
  })
})

describe('failWorkflow', () => {
  it('stores a reason that is an object as JSON, not "[object Object]"', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'timer', type: 'fail', payload: { why: { code: 'E42', detail: 'no quorum' } } })
    const st = await eventually(async () => {
      const s = await c.getStatus(workflowId)
      return s?.status === 'failed' ? s : null
    }, 10_000, 'failed')
    expect(st.error).toBe('{"code":"E42","detail":"no quorum"}')
    const ev = (await c.readEvents(workflowId)).find((e) => e.event.type === 'workflow.failed')
    expect(ev?.event.content).toEqual({ error: '{"code":"E42","detail":"no quorum"}' })

    const plain = await c.startWorkflow({ agent: 'timer', type: 'fail', payload: { why: 'plain words' } })
    await eventually(async () => (await c.getStatus(plain.workflowId))?.error === 'plain words', 10_000, 'a string reason as it is')
  })
})

describe('client input', () => {
  it('refuses a deadline that is not a whole number of ms, writing nothing', async () => {
    for (const deadlineMs of [0.3, 1.5, 0, -5]) {
      const workflowId = `dl-${String(deadlineMs).replace(/\W/g, '_')}`
      await expect(c.startWorkflow({ workflowId, agent: 'counter', type: 'ping', deadlineMs }), String(deadlineMs)).rejects.toMatchObject({ code: 'config' })
      expect(await c.getStatus(workflowId)).toBeNull()
      expect(await c.redis.zscore(c.keys.deadlines(), workflowId)).toBeNull()
    }
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping', deadlineMs: 600_000 })
    expect((await c.getStatus(workflowId))?.deadline).toBeGreaterThan(Date.now())
    await c.cancelWorkflow(workflowId)
  })

  it('refuses a cancel whose final status is neither cancelled nor failed', async () => {
    const { workflowId } = await c.startWorkflow({ agent: 'counter', type: 'ping' })
    await expect(c.cancelWorkflow(workflowId, 'done', 'completed' as never)).rejects.toMatchObject({ code: 'config' })
    expect((await c.getStatus(workflowId))?.status).not.toBe('completed')
    await c.cancelWorkflow(workflowId, 'by test', 'failed')
    expect((await c.getStatus(workflowId))?.status).toBe('failed')
  })

  it('rejects every call after close() with the closed-client error', async () => {
    const own = TroupeClient.connect(cfg)
    const { workflowId } = await own.startWorkflow({ agent: 'counter', type: 'ping' })
    await own.close()
    const closed = { name: 'TroupeError', code: 'config', message: 'this client is closed' }
    await expect(own.agents()).rejects.toMatchObject(closed)
    await expect(own.startWorkflow({ agent: 'counter', type: 'ping' })).rejects.toMatchObject(closed)
    await expect(own.sendAction(workflowId, 'counter', 'ping')).rejects.toMatchObject(closed)
    await expect(own.cancelWorkflow(workflowId)).rejects.toMatchObject(closed)
    await expect(own.getStatus(workflowId)).rejects.toMatchObject(closed)
    await expect(own.deadLetters(workflowId)).rejects.toMatchObject(closed)
    await expect(own.readEvents(workflowId)).rejects.toMatchObject(closed)
    await expect(own.follow(workflowId).next()).rejects.toMatchObject(closed)
    expect(() => own.subscriber()).toThrow('this client is closed')
    // Not so for a client sharing a connection it does not own: that one stays usable.
    const shared = new TroupeClient(c.redis, c.cfg)
    await shared.close()
    await expect(shared.getStatus(workflowId)).rejects.toMatchObject(closed)
    expect((await c.getStatus(workflowId))?.workflowId).toBe(workflowId)
  })
})

describe('async migrate', () => {
  it('refuses a migrate() that returns a promise, keeping the stored snapshot', async () => {
    const own = testConfig()
    const client = TroupeClient.connect(own)
    try {
      let r = await startRuntime({ agents: [tally(1)], config: own, metricsPort: false })
      const { workflowId } = await client.startWorkflow({ agent: 'tally', type: 'add', payload: { n: 2 } })
      await eventually(async () => (await client.getStatus(workflowId))?.counts.done === 1, 10_000, 'v1 add')
      await r.stop()
      const stored = async (): Promise<(string | null | undefined)[]> => client.redis.hmget(client.keys.actor(workflowId, 'tally'), 'snapshot', 'version')
      const before = await stored()

      const migrations: ((s: unknown) => unknown)[] = [
        async (s: unknown) => {
          await Promise.resolve()
          return s
        },
        // Its rejection must not surface as an unhandled one (vitest fails the run on those).
        async () => {
          await Promise.resolve()
          throw new Error('migration exploded')
        },
      ]
      for (const migrate of migrations) {
        r = await startRuntime({ agents: [tally(2, migrate)], config: own, metricsPort: false })
        try {
          const { actionId } = await client.sendAction(workflowId, 'tally', 'add', { n: 3 })
          expect(await deadError(client, workflowId, actionId)).toMatch(/migrating tally snapshot from version 1 failed: migrate\(\) must return the snapshot synchronously/)
        } finally {
          await r.stop()
        }
        expect(await stored()).toEqual(before)
      }
    } finally {
      await client.close()
    }
  })
})

describe('fleet settings', () => {
  const idle = defineAgent({ name: 'idle', machine: setup({}).createMachine({ on: { t: { actions: () => undefined } } }) })

  /** A runtime hosting `idle` with `fleet`, a client with `mine`, and a workflow started by a client that matches the runtime. */
  async function fleetOf(fleet: Partial<TroupeConfig>, mine: Partial<TroupeConfig>): Promise<{ r: Runtime; client: TroupeClient; matching: TroupeClient; workflowId: string; own: TroupeConfig }> {
    const own = testConfig(fleet)
    const r = await startRuntime({ agents: [idle], config: own, metricsPort: false })
    const matching = TroupeClient.connect(own)
    const { workflowId } = await matching.startWorkflow({ agent: 'idle', type: 't' })
    const client = TroupeClient.connect({ ...own, persistence: true, streamMaxLen: 10_000, retentionMs: 7 * 24 * 3600_000, ...mine })
    return { r, client, matching, workflowId, own }
  }

  async function done(f: { r: Runtime; client: TroupeClient; matching: TroupeClient }): Promise<void> {
    await f.client.close()
    await f.matching.close()
    await f.r.stop()
  }

  it('registers the runtime\'s persistence settings with its agents', async () => {
    const reg = JSON.parse((await c.redis.hget(c.keys.agents(), 'timer')) ?? '{}') as Record<string, unknown>
    expect(reg).toMatchObject({ persistence: cfg.persistence, streamMaxLen: cfg.streamMaxLen, retentionMs: cfg.retentionMs })
    expect((await c.agents()).get('timer')).toMatchObject({ persistence: cfg.persistence, streamMaxLen: cfg.streamMaxLen, retentionMs: cfg.retentionMs })
  })

  it('refuses to send or cancel for runtimes with persistence off from a client with it on, and writes nothing', async () => {
    const f = await fleetOf({ persistence: false }, { persistence: true })
    try {
      const mismatch = { name: 'TroupeError', code: 'config', message: expect.stringMatching(/agent 'idle' run with TROUPE_PERSISTENCE=off TROUPE_STREAM_MAXLEN=10000 TROUPE_RETENTION_MS=604800000, this client with TROUPE_PERSISTENCE=on .*every process and client of a namespace must share/) as unknown }
      await expect(f.client.startWorkflow({ workflowId: 'never', agent: 'idle', type: 't' })).rejects.toMatchObject(mismatch)
      expect(await f.client.getStatus('never')).toBeNull()
      await expect(f.client.sendAction(f.workflowId, 'idle', 't')).rejects.toMatchObject(mismatch)
      await expect(f.client.cancelWorkflow(f.workflowId)).rejects.toMatchObject(mismatch)
      // The cancel left the workflow alone, and nothing fed a persister that does not exist.
      expect((await f.client.getStatus(f.workflowId))?.status).not.toBe('cancelled')
      expect(await f.client.redis.exists(f.client.keys.persistence())).toBe(0)
      // The matching client still works, and its cancel puts the retention TTL on the keys.
      await f.matching.cancelWorkflow(f.workflowId)
      expect(await f.matching.redis.pttl(f.matching.keys.status(f.workflowId))).toBeGreaterThan(0)
    } finally {
      await done(f)
    }
  })

  it('enforces a deadline cancel from a supervisor configured apart from the runtimes, with the runtimes\' settings', async () => {
    // The supervisor's deadline cancels adopt the fleet's settings: refused, the
    // deadline went unenforced over a supervisor missing TROUPE_PERSISTENCE=off.
    const f = await fleetOf({ persistence: false, retentionMs: 90_000 }, { persistence: true })
    try {
      const r = await f.client.cancelWorkflow(f.workflowId, 'deadline', 'failed', { adoptFleet: true })
      expect(r.adoptedFleet).toMatchObject({ persistence: false, retentionMs: 90_000 })
      expect((await f.client.getStatus(f.workflowId))?.status).toBe('failed')
      // As the runtimes would have: the retention TTL on the keys, nothing fed to a persister that does not exist.
      const ttl = await f.client.redis.pttl(f.client.keys.status(f.workflowId))
      expect(ttl).toBeGreaterThan(60_000)
      expect(ttl).toBeLessThanOrEqual(90_000)
      expect(await f.client.redis.exists(f.client.keys.persistence())).toBe(0)
      // A client whose settings match adopts nothing.
      const { workflowId } = await f.matching.startWorkflow({ agent: 'idle', type: 't' })
      expect((await f.matching.cancelWorkflow(workflowId, 'deadline', 'failed', { adoptFleet: true })).adoptedFleet).toBeUndefined()
    } finally {
      await done(f)
    }
  })

  it('refuses a client with persistence off whose stream cap would trim what the persister has not read', async () => {
    const f = await fleetOf({}, { persistence: false, streamMaxLen: 100 })
    try {
      await expect(f.client.sendAction(f.workflowId, 'idle', 't')).rejects.toMatchObject({ code: 'config', message: expect.stringMatching(/TROUPE_PERSISTENCE=on .* this client with TROUPE_PERSISTENCE=off TROUPE_STREAM_MAXLEN=100 /) as unknown })
      await expect(f.client.cancelWorkflow(f.workflowId)).rejects.toMatchObject({ code: 'config' })
    } finally {
      await done(f)
    }
  })

  it('compares the cap and the retention only when persistence is off', async () => {
    const off = await fleetOf({ persistence: false, retentionMs: 600_000 }, { persistence: false, retentionMs: 60_000 })
    try {
      await expect(off.client.sendAction(off.workflowId, 'idle', 't')).rejects.toMatchObject({ code: 'config', message: expect.stringMatching(/TROUPE_RETENTION_MS=600000, this client .*TROUPE_RETENTION_MS=60000:/) as unknown })
      await expect(off.client.cancelWorkflow(off.workflowId)).rejects.toMatchObject({ code: 'config' })
    } finally {
      await done(off)
    }
    // With persistence on the scripts neither trim nor expire: these settings do not matter to them.
    const on = await fleetOf({ retentionMs: 600_000, streamMaxLen: 50 }, {})
    try {
      await on.client.sendAction(on.workflowId, 'idle', 't')
      await on.client.cancelWorkflow(on.workflowId)
    } finally {
      await done(on)
    }
  })

  it('accepts a registration without settings (a runtime from before them)', async () => {
    const f = await fleetOf({ persistence: false }, { persistence: true })
    try {
      await f.client.redis.hset(f.client.keys.agents(), 'idle', JSON.stringify({ version: 1, actionTypes: ['t'], actionPatterns: [], updatedAt: Date.now() }))
      await f.client.sendAction(f.workflowId, 'idle', 't')
      await f.client.cancelWorkflow(f.workflowId)
    } finally {
      await done(f)
    }
  })

  it('reads the registry for cancels at most once per 5 s', async () => {
    const f = await fleetOf({}, {})
    const monitor = rawRedis()
    try {
      const ids = [f.workflowId]
      for (let i = 0; i < 3; i++) ids.push((await f.matching.startWorkflow({ agent: 'idle', type: 't', validate: false })).workflowId)
      const agentsKey = f.client.keys.agents()
      let reads = 0
      const m = await monitor.monitor()
      m.on('monitor', (_time: string, args: string[]) => {
        if (args[0]?.toLowerCase() === 'hgetall' && args[1] === agentsKey) reads++
      })
      // MONITOR sees commands from the moment it answers; one PING makes sure it is listening.
      await f.client.redis.ping()
      for (const wf of ids) await f.client.cancelWorkflow(wf)
      await f.client.redis.ping()
      await new Promise((r) => setTimeout(r, 100))
      m.disconnect()
      expect(reads).toBe(1)
    } finally {
      monitor.disconnect()
      await done(f)
    }
  })
})
