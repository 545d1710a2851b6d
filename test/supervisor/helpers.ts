// Helpers for the supervisor tests: supervisor and worker child processes (real
// processes, so kill -9 and SIGSTOP mean what they say) and a recorder of the
// system channel that keeps events in the order Redis published them.
import { Redis } from 'ioredis'
import type { TroupeConfig } from '../../runtime/config.ts'
import { Keys } from '../../runtime/redis/keys.ts'
import { spawnRuntime, type RuntimeChild } from '../helpers/processes.ts'
import { eventually } from '../helpers/redis.ts'

/** A child process with the serviceId it announced. */
export interface Child extends RuntimeChild {
  serviceId: string
}

function withId(c: RuntimeChild): Child {
  const m = /runtime (\S+) \(/.exec(c.output())
  if (!m?.[1]) throw new Error(`no serviceId in output:\n${c.output()}`)
  return Object.assign(c, { serviceId: m[1] })
}

/** `troupe supervisor` with short timings unless `args` override them. */
export async function spawnSupervisor(cfg: TroupeConfig, args: string[] = []): Promise<Child> {
  return withId(await spawnRuntime(cfg, { command: ['supervisor', '--lease', '2s', '--tick', '200ms', '--heartbeat', '250ms', '--stuck-after', '1s', ...args] }))
}

/** `troupe start` hosting the supervisor test agents. */
export async function spawnWorker(cfg: TroupeConfig, args: string[] = []): Promise<Child> {
  return withId(await spawnRuntime(cfg, { agents: 'test/fixtures/supervisor-agents.ts', args }))
}

/** {@link eventually} for a condition that needs no I/O (events already recorded). */
export function until<T>(fn: () => T | null | undefined | false, timeoutMs: number, what: string): Promise<T> {
  return eventually(() => Promise.resolve(fn()), timeoutMs, what)
}

/** A system-channel event as received, with the local receive time. */
export interface Received {
  type: string
  term: number
  leader: string
  at: number
  receivedAt: number
  [k: string]: unknown
}

/** Records every event on the system channel, in publication order. */
export class SystemEvents {
  readonly events: Received[] = []
  private readonly sub: Redis

  private constructor(url: string) {
    this.sub = new Redis(url, { maxRetriesPerRequest: null })
  }

  static async listen(cfg: TroupeConfig): Promise<SystemEvents> {
    const s = new SystemEvents(cfg.redisUrl)
    s.sub.on('message', (_channel: string, msg: string) => {
      s.events.push({ ...(JSON.parse(msg) as Received), receivedAt: Date.now() })
    })
    await s.sub.subscribe(new Keys(cfg.namespace).systemChannel())
    return s
  }

  of(type: string): Received[] {
    return this.events.filter((e) => e.type === type)
  }

  async close(): Promise<void> {
    await this.sub.quit().catch(() => undefined)
  }
}

/** Stops every child (SIGCONT first, so paused ones can exit). */
export async function stopAll(children: RuntimeChild[]): Promise<void> {
  await Promise.all(children.splice(0).map((c) => c.stop(5000)))
}
