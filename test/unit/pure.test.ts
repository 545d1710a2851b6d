// Pure logic: no Redis needed.
import { describe, expect, it } from 'vitest'
import { setup } from 'xstate'
import { backoffDelay, defineAgent, emitEvent, compareStreamIds, encodePayload, isStreamId, parseEntry, parseLive, Keys, assertWorkflowId, TroupeError } from '../../runtime/index.ts'
import { parseDuration, parsePayload } from '../../runtime/cli/common.ts'
import { fakeText } from '../../examples/research-team/fake-model.ts'
import { advertisedHost, heartbeatFromEnv } from '../../runtime/runtime.ts'
import { gcTuningFromEnv } from '../../runtime/gc-tuning.ts'
import { loadConfig, redactUrl } from '../../runtime/config.ts'
import { handlesType } from '../../runtime/agent.ts'
import { clusterSeeds } from '../../runtime/redis/connection.ts'
import { logLevelFromEnv } from '../../runtime/log.ts'
import { isDataError, isPoolError } from '../../runtime/persister/neo4j.ts'
import { isLastStreamId } from '../../runtime/events.ts'
import { resolveSupervisorOptions } from '../../runtime/supervisor/options.ts'
import { splitWrite } from '../../runtime/supervisor/fence.ts'
import { gatewaySettings } from '../../runtime/gateway/settings.ts'
import { redisVersionProblem } from '../../scripts/services/redis.ts'
import { renderTree } from '../../runtime/cli/history.ts'

describe('backoffDelay', () => {
  const p = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 }
  it('grows exponentially up to the cap', () => {
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay(p, a, () => 1))).toEqual([100, 200, 400, 800, 1000])
  })
  it('applies at most the jitter fraction, downwards', () => {
    expect(backoffDelay(p, 3, () => 0)).toBe(200)
    expect(backoffDelay({ ...p, jitter: 0 }, 3, () => 0)).toBe(400)
  })
})

describe('keys', () => {
  it('puts every per-workflow key in the {wf} slot, with the namespace first', () => {
    const k = new Keys('ns:')
    for (const key of [k.status('w1'), k.events('w1'), k.mailbox('w1', 'a'), k.actions('w1'), k.actor('w1', 'a'), k.dead('w1'), k.seq('w1'), k.lock('w1', 'a')]) {
      expect(key.startsWith('ns:')).toBe(true)
      expect(key).toContain('{w1}')
    }
    expect(new Keys().status('x')).toBe('workflow:status:{x}')
  })
  it('rejects ids that would break key names', () => {
    for (const bad of ['', 'a}', '{a', 'a:b', 'a b', 'x'.repeat(65), 7, null]) expect(() => assertWorkflowId(bad)).toThrow(TroupeError)
    expect(() => assertWorkflowId('Ab_9-x')).not.toThrow()
  })
})

describe('stream ids', () => {
  it('orders by time then sequence', () => {
    expect(compareStreamIds('5-1', '5-0')).toBeGreaterThan(0)
    expect(compareStreamIds('10-0', '9-99')).toBeGreaterThan(0)
    expect(compareStreamIds('7-3', '7-3')).toBe(0)
  })
  it('validates', () => {
    expect(isStreamId('1700000000000-0')).toBe(true)
    expect(isStreamId('0')).toBe(true)
    expect(isStreamId('abc')).toBe(false)
    expect(isStreamId('1-2-3')).toBe(false)
    // Valid, but nothing can follow it (Redis refuses it as an exclusive start).
    expect(isStreamId('18446744073709551615-18446744073709551615')).toBe(true)
    expect(isLastStreamId('18446744073709551615-18446744073709551615')).toBe(true)
    expect(isLastStreamId('18446744073709551615-0')).toBe(false)
    expect(isLastStreamId('18446744073709551615')).toBe(false)
  })
  it('turns malformed entries and messages into something safe', () => {
    expect(parseEntry('w', ['1-0', ['e', '{oops']]).event.type).toBe('troupe.malformed')
    expect(parseEntry('w', ['1-0', ['x', 'y']]).event.type).toBe('troupe.malformed')
    expect(parseLive('nope')).toBeNull()
    expect(parseLive(JSON.stringify({ streamId: '1-0', event: { type: 't' } }))?.streamId).toBe('1-0')
  })
})

describe('Neo4j errors the persister splits a batch for (data) or retries (outage)', () => {
  const err = (code: string): unknown => ({ code })
  it('splits for what the rows or one transaction caused', () => {
    for (const code of ['Neo.ClientError.Statement.TypeError', 'Neo.ClientError.Schema.ConstraintValidationFailed', 'Neo.ClientError.General.TransactionOutOfMemoryError', 'Neo.TransientError.General.TransactionMemoryLimit']) {
      expect(isDataError(err(code)), code).toBe(true)
      expect(isPoolError(err(code)), code).toBe(false)
    }
    expect(isDataError(err('Neo.TransientError.General.MemoryPoolOutOfMemoryError'))).toBe(true)
    expect(isPoolError(err('Neo.TransientError.General.MemoryPoolOutOfMemoryError'))).toBe(true)
  })
  it('retries an outage, the server\'s heap running out included', () => {
    for (const code of ['Neo.TransientError.General.OutOfMemoryError', 'Neo.TransientError.General.DatabaseUnavailable', 'Neo.ClientError.Security.Unauthorized', 'ServiceUnavailable', '']) {
      expect(isDataError(err(code)), code).toBe(false)
    }
    expect(isDataError(new Error('out of memory'))).toBe(false)
  })
})

describe('payloads', () => {
  it('enforces JSON and the size limit', () => {
    expect(encodePayload(undefined, 10)).toBe('null')
    expect(() => encodePayload({ a: 1n }, 100)).toThrow(/JSON/)
    expect(() => encodePayload('x'.repeat(20), 10)).toThrow(/over the limit/)
  })
  it('parses CLI payloads and durations with clear errors', () => {
    expect(parsePayload('{"a":1}')).toEqual({ a: 1 })
    expect(() => parsePayload('{a')).toThrow(/not valid JSON/)
    expect(parseDuration('10m')).toBe(600_000)
    expect(parseDuration('250')).toBe(250)
    expect(() => parseDuration('soon')).toThrow(/invalid duration/)
  })
})

describe('defineAgent', () => {
  it('lists the action types a machine accepts and validates options', () => {
    const machine = setup({}).createMachine({ initial: 'a', states: { a: { on: { go: 'b' } }, b: { on: { back: 'a' } } } })
    expect(defineAgent({ name: 'x', machine }).actionTypes).toEqual(['go', 'back'])
    expect(() => defineAgent({ name: 'bad name', machine })).toThrow(TroupeError)
    expect(() => defineAgent({ name: 'x', machine, concurrency: 0 })).toThrow(/concurrency/)
    expect(() => defineAgent({ name: 'x', machine: {} as never })).toThrow(/XState/)
  })
})

describe('loadConfig', () => {
  it('refuses lock and poll periods beyond what Node can time (the timer would fire every millisecond)', () => {
    expect(() => loadConfig({ lockTtlMs: 2 ** 31 })).toThrow(/lockTtlMs must be from 1000 to 2147483647 ms/)
    expect(() => loadConfig({ lockTtlMs: 999 })).toThrow(/lockTtlMs must be from 1000/)
    expect(() => loadConfig({ idlePollMs: 2 ** 31 })).toThrow(/idlePollMs must be from 10 to 2147483647 ms/)
    expect(() => loadConfig({ lockTtlMs: Number.NaN })).toThrow(/lockTtlMs/)
    expect(loadConfig({ lockTtlMs: 2 ** 31 - 1, idlePollMs: 2 ** 31 - 1 }).lockTtlMs).toBe(2 ** 31 - 1)
  })

  it('refuses a Redis URL ioredis would not read as one, naming where it came from', () => {
    expect(() => loadConfig({ redisUrl: 'localhost:6379' })).toThrow(/REDIS_URL or --redis\) must start with redis:\/\//)
    for (const ok of ['redis://h:1', 'rediss://h:1', 'redis+cluster://h:1,h:2']) expect(loadConfig({ redisUrl: ok }).redisUrl).toBe(ok)
  })
})

describe('agent options and helpers (client/agent review)', () => {
  const machine = setup({}).createMachine({ on: { go: {} } })
  it('checks every backoff field, and an undefined one keeps its default', () => {
    // NaN reached the commit script as a delay cjson could not encode, stranding the action.
    expect(() => defineAgent({ name: 'x', machine, backoff: { initialMs: Number('') + Number.NaN } })).toThrow(/backoff.initialMs/)
    expect(() => defineAgent({ name: 'x', machine, backoff: { factor: 0.5 } })).toThrow(/backoff.factor/)
    expect(() => defineAgent({ name: 'x', machine, backoff: { initialMs: 10, maxMs: 5 } })).toThrow(/backoff.maxMs/)
    expect(defineAgent({ name: 'x', machine, backoff: { maxMs: undefined, jitter: undefined } }).backoff).toEqual({ initialMs: 500, maxMs: 60_000, factor: 2, jitter: 0.5 })
    const p = { initialMs: 1, maxMs: 1000, factor: 10, jitter: 0 }
    expect(backoffDelay(p, 10_000)).toBe(1000)
    // One bound alone moves the other's default: these loaded before the checks.
    expect(defineAgent({ name: 'x', machine, backoff: { maxMs: 200 } }).backoff).toMatchObject({ initialMs: 200, maxMs: 200 })
    expect(defineAgent({ name: 'x', machine, backoff: { initialMs: 120_000 } }).backoff).toMatchObject({ initialMs: 120_000, maxMs: 120_000 })
  })

  it('refuses the runtime\'s own event types in emitEvent', () => {
    for (const t of ['workflow.completed', 'action.done', 'agent.transition', 'troupe.send', 'system.x']) expect(() => emitEvent(t)).toThrow(/reserved/)
    expect(() => emitEvent('progress')).not.toThrow()
  })

  it('matches wildcard transitions as XState does', () => {
    expect(handlesType(['*'], 'anything')).toBe(true)
    expect(handlesType(['research.*'], 'research.start')).toBe(true)
    expect(handlesType(['research.*'], 'researchx')).toBe(false)
    expect(handlesType(['research.*'], 'research')).toBe(true)
    const noop = { actions: () => undefined }
    const wild = defineAgent({ name: 'w', machine: setup({}).createMachine({ on: { '*': noop, 'a.*': noop, go: noop } }) })
    // Apart from actionTypes, which the UI and /v1/agents offer as sendable types.
    expect(wild.actionTypes).toEqual(['go'])
    expect([...wild.actionPatterns].sort()).toEqual(['*', 'a.*'])
    expect(handlesType(['go'], 'go')).toBe(true)
    expect(handlesType(['go'], 'gone')).toBe(false)
  })

  it('ignores config overrides given as undefined', () => {
    // { namespace: undefined } silently meant no namespace, { persistence: undefined } persistence off.
    const saved = process.env.TROUPE_NAMESPACE
    process.env.TROUPE_NAMESPACE = 'env:'
    try {
      const cfg = loadConfig({ namespace: undefined, persistence: undefined, redisUrl: undefined })
      expect(cfg.namespace).toBe('env:')
      expect(cfg.persistence).toBe(true)
      expect(cfg.redisUrl).toBe(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
    } finally {
      if (saved === undefined) delete process.env.TROUPE_NAMESPACE
      else process.env.TROUPE_NAMESPACE = saved
    }
  })
})

describe('settings from the environment', () => {
  const withEnv = <T>(env: Record<string, string>, fn: () => T): T => {
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
    Object.assign(process.env, env)
    try {
      return fn()
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  }

  it('takes whole numbers only: a blank, a fraction or a sign is refused by name', () => {
    // ' ' was read as 0 and 2500.5 reached SET PX, which Redis refuses inside every activation.
    for (const bad of [' ', '2500.5', '-1', '1e4', '0x10']) {
      expect(() => withEnv({ TROUPE_LOCK_TTL_MS: bad }, () => loadConfig())).toThrow(/TROUPE_LOCK_TTL_MS=.* must be a whole number/)
    }
    expect(withEnv({ TROUPE_LOCK_TTL_MS: '2500' }, () => loadConfig()).lockTtlMs).toBe(2500)
  })

  it('refuses a retention or payload limit of 0 and fractional overrides', () => {
    // Retention 0 meant "no TTL" to the scripts and "expired" to the owner index.
    expect(() => withEnv({ TROUPE_RETENTION_MS: '0' }, () => loadConfig())).toThrow(/retentionMs \(TROUPE_RETENTION_MS\) must be a whole number, at least 1000/)
    expect(() => withEnv({ TROUPE_MAX_PAYLOAD_BYTES: '0' }, () => loadConfig())).toThrow(/maxPayloadBytes/)
    expect(() => loadConfig({ lockTtlMs: 2500.5 })).toThrow(/lockTtlMs/)
    expect(() => loadConfig({ streamMaxLen: 1.5 })).toThrow(/streamMaxLen/)
    expect(withEnv({ TROUPE_STREAM_MAXLEN: '0' }, () => loadConfig()).streamMaxLen).toBe(0)
  })

  it('reads TROUPE_PERSISTENCE as on or off, and refuses anything else (disabled used to mean on)', () => {
    expect(withEnv({ TROUPE_PERSISTENCE: 'OFF' }, () => loadConfig()).persistence).toBe(false)
    expect(withEnv({ TROUPE_PERSISTENCE: 'on' }, () => loadConfig()).persistence).toBe(true)
    for (const bad of ['disabled', 'none', 'nope']) {
      expect(() => withEnv({ TROUPE_PERSISTENCE: bad }, () => loadConfig())).toThrow(/TROUPE_PERSISTENCE=.* must be on or off/)
    }
    // An explicit override wins over a bad environment value.
    expect(withEnv({ TROUPE_PERSISTENCE: 'disabled' }, () => loadConfig({ persistence: false })).persistence).toBe(false)
  })

  it('reads the log level in any case', () => {
    expect(logLevelFromEnv('DEBUG')).toBe('debug')
    expect(logLevelFromEnv(undefined)).toBe('info')
    expect(logLevelFromEnv('Warn')).toBe('warn')
    // The gateway's request log (pino) takes its own levels too.
    expect(logLevelFromEnv('SILENT', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])).toBe('silent')
  })

  it('keeps a Redis password out of messages', () => {
    expect(redactUrl('redis://default:s3cret@h:6379/0')).toBe('redis://default:***@h:6379/0')
    expect(redactUrl('rediss://s3cret@h')).toBe('rediss://***@h')
    expect(redactUrl('redis://h:6379')).toBe('redis://h:6379')
    // A raw @ in the password: WHATWG URL (and ioredis) take the last @ as the end of it.
    expect(redactUrl('redis://u:p@ss@h:6379')).toBe('redis://u:***@h:6379')
    expect(() => loadConfig({ redisUrl: 'http://u:s3cret@h' })).toThrow(/u:\*\*\*@h/)
    expect(() => loadConfig({ redisUrl: 'http://u:s3cret@h' })).not.toThrow(/s3cret/)
  })
})

describe('Redis Cluster URLs', () => {
  it('reads credentials, TLS and every seed; a password is never taken for a host', () => {
    // redis+cluster://default:pw@h:6379 was split on ':' into host "default" and port NaN.
    expect(clusterSeeds('redis+cluster://default:p%40ss@h1:7000,h2:7001,[::1]:7002')).toEqual({
      hosts: [{ host: 'h1', port: 7000 }, { host: 'h2', port: 7001 }, { host: '::1', port: 7002 }],
      auth: { username: 'default', password: 'p@ss' },
      tls: false,
    })
    expect(clusterSeeds('rediss+cluster://:pw@h')).toEqual({ hosts: [{ host: 'h', port: 6379 }], auth: { password: 'pw' }, tls: true })
    expect(clusterSeeds('redis+cluster://u:p@ss@redis_node_1:7000,redis_node_2:7001/').hosts).toEqual([{ host: 'redis_node_1', port: 7000 }, { host: 'redis_node_2', port: 7001 }])
    expect(clusterSeeds('redis+cluster://u:p@ss@h:1').auth).toEqual({ username: 'u', password: 'p@ss' })
    expect(loadConfig({ redisUrl: 'rediss+cluster://h:1' }).redisUrl).toBe('rediss+cluster://h:1')
  })

  it('refuses a seed that is not host:port, without showing the password', () => {
    for (const bad of ['redis+cluster://h:6379/0', 'redis+cluster://h:port', 'redis+cluster://h:70000', 'redis+cluster://u:pw@h:1,', 'redis+cluster://']) {
      expect(() => clusterSeeds(bad)).toThrow(TroupeError)
    }
    expect(() => clusterSeeds('redis+cluster://u:pw@h:x')).toThrow(/u:\*\*\*@h:x/)
  })
})

describe('fake model', () => {
  it('is deterministic', () => {
    expect(fakeText('p', 5)).toBe(fakeText('p', 5))
    expect(fakeText('p', 5)).not.toBe(fakeText('q', 5))
    expect(fakeText('p', 5).split(' ')).toHaveLength(5)
  })
})

describe('advertisedHost (the metrics address service discovery hands out)', () => {
  it('names the bind address, this host when bound to every interface, or the override', () => {
    expect(advertisedHost('127.0.0.1', {}, 'box')).toBe('127.0.0.1')
    expect(advertisedHost('10.0.0.7', {}, 'box')).toBe('10.0.0.7')
    expect(advertisedHost('0.0.0.0', {}, 'worker-1')).toBe('worker-1')
    expect(advertisedHost('::', {}, 'worker-1')).toBe('worker-1')
    expect(advertisedHost('0.0.0.0', { TROUPE_METRICS_ADVERTISE_HOST: 'w1.internal' }, 'box')).toBe('w1.internal')
    expect(advertisedHost('::1', {}, 'box')).toBe('[::1]')
  })
})

describe('heartbeatFromEnv', () => {
  it('defaults to 2 s and refuses what is not a sane interval', () => {
    expect(heartbeatFromEnv(undefined)).toBe(2000)
    expect(heartbeatFromEnv('500')).toBe(500)
    // 3e9 ms is past what Node can time: setInterval would fire every millisecond.
    for (const bad of ['2s', '-1', '49', 'NaN', '3000000000', '2000.5']) expect(() => heartbeatFromEnv(bad)).toThrow(/TROUPE_HEARTBEAT_MS/)
  })
})

describe('gcTuningFromEnv', () => {
  it('is on unless TROUPE_GC_TUNING says off, and refuses anything else', () => {
    expect(gcTuningFromEnv(undefined)).toBe(true)
    expect(gcTuningFromEnv('on')).toBe(true)
    expect(gcTuningFromEnv(' OFF ')).toBe(false)
    expect(gcTuningFromEnv('0')).toBe(false)
    for (const bad of ['maybe', 'of', '2']) expect(() => gcTuningFromEnv(bad)).toThrow(/TROUPE_GC_TUNING/)
  })
})

describe('supervisor options and fenced writes', () => {
  it('refuses intervals past Node\'s timer limit, which would fire after 1 ms', () => {
    expect(() => resolveSupervisorOptions({ tickMs: 3_000_000_000 })).toThrow(/tickMs must be at most 2147483647/)
    expect(() => resolveSupervisorOptions({ leaseMs: 2 ** 31 })).toThrow(/leaseMs must be at most/)
    expect(() => resolveSupervisorOptions({ stuckAfterMs: 2 ** 31 })).toThrow(/stuckAfterMs must be at most/)
    expect(resolveSupervisorOptions({ tickMs: 2 ** 31 - 1, leaseMs: 2 ** 31 - 1 }).tickMs).toBe(2 ** 31 - 1)
  })

  it('takes whole numbers only from the environment, as every other numeric setting', () => {
    const names = ['TROUPE_SUPERVISOR_TICK_MS', 'TROUPE_SD_PORT'] as const
    const before = names.map((n) => process.env[n])
    try {
      for (const name of names) {
        for (const bad of ['1500.5', ' ', '0x50', '-1', '1e4']) {
          process.env[name] = bad
          expect(() => resolveSupervisorOptions(), `${name}=${bad}`).toThrow(new RegExp(`${name}=.* must be a whole number`))
        }
        delete process.env[name]
      }
      process.env.TROUPE_SUPERVISOR_TICK_MS = '1500'
      process.env.TROUPE_SD_PORT = '9465'
      const o = resolveSupervisorOptions()
      expect([o.tickMs, o.sdPort]).toEqual([1500, 9465])
    } finally {
      names.forEach((n, i) => {
        if (before[i] === undefined) delete process.env[n]
        else process.env[n] = before[i]
      })
    }
  })

  it('splits a long member list into commands of the same effect, pairs kept together, flagged ZADDs whole', () => {
    const ids = Array.from({ length: 2500 }, (_, i) => `m${i}`)
    const rem = splitWrite({ cmd: 'ZREM', key: 'k', args: ids })
    expect(rem.map((w) => w.args.length)).toEqual([1000, 1000, 500])
    expect(rem.flatMap((w) => w.args)).toEqual(ids)
    const pairs = ids.flatMap((id, i) => [i, id])
    const add = splitWrite({ cmd: 'ZADD', key: 'k', args: pairs })
    expect(add.every((w) => w.args.length % 2 === 0 && w.args.length <= 1000)).toBe(true)
    expect(add.flatMap((w) => w.args)).toEqual(pairs)
    expect(splitWrite({ cmd: 'ZADD', key: 'k', args: ['NX', ...pairs] })).toHaveLength(1)
    expect(splitWrite({ cmd: 'PUBLISH', args: ['ch', 'x'.repeat(5000)] })).toHaveLength(1)
  })
})

describe('gateway settings from the environment', () => {
  it('takes plain decimal numbers only (a blank port meant any free port, 0x50 meant 80)', () => {
    const before = process.env.TROUPE_GATEWAY_PORT
    try {
      for (const bad of [' ', '0x50', '8080 ', '1e3', '-1']) {
        process.env.TROUPE_GATEWAY_PORT = bad
        expect(() => gatewaySettings()).toThrow(/TROUPE_GATEWAY_PORT=.* must be a plain decimal number/)
      }
      process.env.TROUPE_GATEWAY_PORT = '8181'
      expect(gatewaySettings().port).toBe(8181)
    } finally {
      if (before === undefined) delete process.env.TROUPE_GATEWAY_PORT
      else process.env.TROUPE_GATEWAY_PORT = before
    }
  })

  it('takes on or off for trusting a proxy, and refuses anything else (on was read as off)', () => {
    const before = process.env.TROUPE_GATEWAY_TRUST_PROXY
    try {
      for (const [raw, want] of [['on', true], ['ON', true], ['1', true], ['yes', true], ['off', false], ['0', false], ['', false]] as const) {
        process.env.TROUPE_GATEWAY_TRUST_PROXY = raw
        expect(gatewaySettings().trustProxy, raw).toBe(want)
      }
      for (const bad of ['enabled', 'y', '2']) {
        process.env.TROUPE_GATEWAY_TRUST_PROXY = bad
        expect(() => gatewaySettings()).toThrow(/TROUPE_GATEWAY_TRUST_PROXY=.* must be on or off/)
      }
    } finally {
      if (before === undefined) delete process.env.TROUPE_GATEWAY_TRUST_PROXY
      else process.env.TROUPE_GATEWAY_TRUST_PROXY = before
    }
  })
})

describe('the Redis the bootstrap accepts', () => {
  it('refuses a Redis older than 7.0, whose Lua cannot compile our scripts, with why', () => {
    expect(redisVersionProblem('# Server\r\nredis_version:6.0.16\r\nredis_mode:standalone\r\n')).toMatch(/Redis 6\.0\.16 is too old: Troupe needs Redis 7\.0 or later/)
    expect(redisVersionProblem('# Server\r\nredis_version:7.0.15\r\n')).toBeNull()
    expect(redisVersionProblem('# Server\r\nredis_version:7.4.1\r\n')).toBeNull()
    expect(redisVersionProblem('# Server\r\nredis_version:8.0.0\r\n')).toBeNull()
    // Nothing to judge by (a proxy that hides INFO): left to the scripts' own errors.
    expect(redisVersionProblem('')).toBeNull()
  })
})

describe('troupe history rendering', () => {
  const event = (over: object) => ({ id: 'e1', type: 'token', content: null, metadata: {}, createdAt: 0, streamId: '1-0', agent: 'writer', actionId: null, parentId: null, ...over })

  it('says why a refused event has no content instead of printing null', () => {
    const [line] = renderTree([{ event: event({ refused: 'unwritable: too big' }), children: [] }])
    expect(line).toContain('not stored: Neo4j refused it: unwritable: too big')
    expect(line).not.toContain('null')
    expect(renderTree([{ event: event({ content: { text: 'hi' } }), children: [] }])[0]).toContain('{"text":"hi"}')
  })
})
