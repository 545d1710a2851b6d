// Brings up a Redis for the demo and the tests: reuse REDIS_URL when it answers,
// else start redis-server from PATH on a free loopback port with AOF on.
import { spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { Redis } from 'ioredis'
import { redactUrl } from '../../runtime/config.ts'
import { dataDir, freePort, hasCommand, MissingPrerequisiteError, waitFor, type LocalService } from './util.ts'

/** True when a Redis at `url` answers PING within a second. */
export async function redisReachable(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

export interface StartRedisOptions {
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '2mb']` for exhaustion tests. */
  args?: string[]
  /** Fixed port (restart tests reuse it); a free one otherwise. */
  port?: number
  /** Data folder to reuse across restarts; a fresh one otherwise. */
  dir?: string
  /** Keep the data folder on stop (restart tests). */
  keepData?: boolean
}

/** A redis-server child process we own. */
export interface RedisProcess extends LocalService {
  readonly port: number
  readonly dir: string
  /** SIGKILL, no chance to flush: for crash tests. */
  kill(): void
  /** SIGSTOP / SIGCONT: a server that stops answering for a while (a stalled node) without losing anything. */
  pause(): void
  resume(): void
}

/** Starts a private redis-server (AOF on, `noeviction`) on loopback. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisProcess> {
  if (!hasCommand('redis-server')) {
    throw new MissingPrerequisiteError('redis-server is not on PATH and REDIS_URL is not set.', 'apt-get install -y redis-server   (or export REDIS_URL=redis://host:6379)')
  }
  const port = opts.port ?? (await freePort())
  const dir = opts.dir ?? dataDir('redis', `${port}-${process.pid}`)
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--logfile', 'redis.log', ...(opts.args ?? [])],
    { stdio: 'ignore' },
  )
  let exited = false
  child.on('exit', () => {
    exited = true
  })
  const url = `redis://127.0.0.1:${port}`
  await waitFor(async () => !exited && (await redisReachable(url)), 15_000, `redis-server on port ${port} (log: ${dir}/redis.log)`)
  return {
    url,
    port,
    dir,
    started: true,
    kill() {
      if (!exited) child.kill('SIGKILL')
    },
    pause() {
      if (!exited) child.kill('SIGSTOP')
    },
    resume() {
      if (!exited) child.kill('SIGCONT')
    },
    async stop() {
      if (!exited) {
        const done = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        await done
      }
      if (!opts.keepData) rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Oldest Redis Troupe runs on: its Lua scripts start with 7.0's `#!lua` flags line. */
export const MIN_REDIS_MAJOR = 7

/** Why the Redis whose `INFO server` text is `info` cannot serve Troupe, or null when it can. */
export function redisVersionProblem(info: string): string | null {
  const v = /^redis_version:(\S+)/m.exec(info)?.[1]
  if (v === undefined) return null
  const major = Number(v.split('.')[0])
  return Number.isInteger(major) && major < MIN_REDIS_MAJOR ? `Redis ${v} is too old: Troupe needs Redis ${MIN_REDIS_MAJOR}.0 or later (its Lua scripts use 7.0's #! flags; on ${v} every script fails to compile)` : null
}

async function redisInfo(url: string): Promise<string> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return await client.info('server')
  } catch {
    return ''
  } finally {
    client.disconnect()
  }
}

const OLD_REDIS_FIX = 'install Redis 7 (Debian 12 / Ubuntu 24.04: apt-get install -y redis-server; elsewhere packages.redis.io, or docker run -d -p 6379:6379 redis:7) and put it first on PATH, or export REDIS_URL=redis://<a Redis 7>:6379'

/**
 * Reuses `REDIS_URL` when set (and fails loudly if it does not answer), else
 * starts one; either way refuses a Redis older than 7.0 with the fix, which
 * would otherwise pass and then fail every script with a Lua syntax error.
 */
export async function ensureRedis(): Promise<LocalService> {
  const fromEnv = process.env.REDIS_URL
  if (fromEnv) {
    if (!(await redisReachable(fromEnv))) {
      throw new MissingPrerequisiteError(`REDIS_URL=${redactUrl(fromEnv)} does not answer PING.`, 'start that Redis, or unset REDIS_URL to let Troupe start a private redis-server')
    }
    const old = redisVersionProblem(await redisInfo(fromEnv))
    if (old) throw new MissingPrerequisiteError(`REDIS_URL=${redactUrl(fromEnv)}: ${old}.`, OLD_REDIS_FIX)
    return { url: fromEnv, started: false, stop: () => Promise.resolve() }
  }
  const started = await startRedis()
  const old = redisVersionProblem(await redisInfo(started.url))
  if (old) {
    await started.stop()
    throw new MissingPrerequisiteError(`redis-server on PATH: ${old}.`, OLD_REDIS_FIX)
  }
  return started
}
