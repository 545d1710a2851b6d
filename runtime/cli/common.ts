// Shared CLI plumbing: argument parsing with clear usage errors, exit codes, and
// turning errors into one readable line.
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { TroupeError } from '../errors.ts'
import { MAX_TIMER_MS, redactUrl, userinfoEnd } from '../config.ts'
import { startRuntime, type HostedService, type Runtime } from '../runtime.ts'

/** Exit codes of every command. */
export const EXIT = { ok: 0, failed: 1, usage: 2, input: 3, unavailable: 4, interrupted: 130 } as const

/** A subcommand of `troupe`. */
export interface Command {
  readonly summary: string
  readonly usage: string
  run(argv: string[]): Promise<number>
}

/** Thrown for bad command lines; printed with the command's usage. */
export class UsageError extends Error {}

/** Flags every command accepts. */
export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  redis: { type: 'string' },
  namespace: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options']

/**
 * `--name value` as `--name=value` where `name` takes a value and the value
 * starts with a dash. Ids are nanoids, and about one in 64 starts with `-`:
 * parseArgs refused `--action -Xb3…` as ambiguous. A value that is itself one
 * of the options (`--json`, `-h`) is left alone, so a forgotten value is still
 * a usage error. Positionals starting with a dash keep parseArgs' own answer
 * (put them after `--`), which also catches a mistyped option.
 */
export function joinDashValues(argv: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const flags = new Set(Object.entries(options).flatMap(([name, o]) => [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]))
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string
    if (a === '--') return [...out, ...argv.slice(i)]
    const next = argv[i + 1]
    const name = a.startsWith('--') ? a.slice(2) : ''
    if (name && options[name]?.type === 'string' && next !== undefined && next.startsWith('-') && next !== '--' && !flags.has(next.split('=')[0] as string)) {
      out.push(`${a}=${next}`)
      i++
    } else {
      out.push(a)
    }
  }
  return out
}

/** parseArgs with strict checking; unknown flags become a UsageError. */
export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O) {
  try {
    const all = { ...COMMON_OPTIONS, ...options }
    return parseArgs({ args: joinDashValues(argv, all), options: all, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err))
  }
}

/** Config overrides from `--redis` and `--namespace`; refuses a Redis URL that cannot be read as meant. */
export function configFlags(values: { redis?: string | boolean; namespace?: string | boolean }): { redisUrl?: string; namespace?: string } {
  const out: { redisUrl?: string; namespace?: string } = {}
  if (typeof values.redis === 'string') out.redisUrl = values.redis
  checkRedisUrl(out.redisUrl ?? process.env.REDIS_URL)
  if (typeof values.namespace === 'string') out.namespace = values.namespace
  return out
}

/**
 * Refuses a Redis URL whose password holds an unencoded / ? or #: a URL parser
 * ends the host there, so it failed with a bare "Invalid URL" (no hint which
 * part, or what to do) or took part of the password for a host or a database.
 * Likewise a % that is no escape, which failed with "URI malformed".
 * Without a redis scheme the config's own check says what is wrong.
 */
export function checkRedisUrl(url: string | undefined): void {
  if (url === undefined || !/^rediss?(\+cluster)?:\/\//i.test(url)) return
  const at = userinfoEnd(url)
  const userinfo = at < 0 ? '' : url.slice(url.indexOf('//') + 2, at)
  let readable = !/[/?#]/.test(userinfo)
  try {
    // A % that starts no %XX: the client's decoding threw "URI malformed".
    decodeURIComponent(userinfo)
  } catch {
    readable = false
  }
  if (readable && !/\+cluster:/i.test(url)) {
    try {
      new URL(url)
    } catch {
      readable = false
    }
  }
  if (!readable) {
    throw new TroupeError('config', `cannot parse the Redis URL ${JSON.stringify(redactUrl(url))} (REDIS_URL or --redis): percent-encode special characters in the password (/ as %2F, ? as %3F, # as %23, @ as %40, % as %25)`)
  }
}

/** Parses `--payload` text: JSON, or `@file.json`. */
export function parsePayload(text: string | undefined): unknown {
  if (text === undefined) return null
  let src = text
  if (text.startsWith('@')) {
    try {
      src = readFileSync(text.slice(1), 'utf8')
    } catch (err) {
      throw new TroupeError('bad_payload', `cannot read payload file ${text.slice(1)}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  try {
    return JSON.parse(src) as unknown
  } catch (err) {
    throw new TroupeError('bad_payload', `payload is not valid JSON (${err instanceof Error ? err.message : String(err)}); e.g. --payload '{"topic":"fusion"}'`)
  }
}

/** Parses a duration like `500ms`, `30s`, `10m`, `2h` (a bare number is milliseconds). */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim())
  if (!m) throw new UsageError(`invalid duration ${JSON.stringify(text)}: use e.g. 500ms, 30s, 10m, 2h`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms']
  return Math.round(Number(m[1]) * unit)
}

/** Prints an error as one clear line and returns the exit code for it. */
export function reportError(err: unknown, usage?: string): number {
  if (err instanceof UsageError) {
    process.stderr.write(`error: ${err.message}\n${usage ? `\n${usage}\n` : ''}`)
    return EXIT.usage
  }
  if (err instanceof TroupeError) {
    process.stderr.write(`error (${err.code}): ${err.message}\n`)
    return err.code === 'redis_oom' ? EXIT.unavailable : EXIT.input
  }
  const msg = err instanceof Error ? err.message : String(err)
  process.stderr.write(`error: ${msg}\n`)
  return /cannot reach Redis|ECONNREFUSED/.test(msg) ? EXIT.unavailable : EXIT.failed
}

/** Parses a port flag; undefined when absent. */
export function portFlag(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined
  // Digits only: Number('') and Number(' ') are 0, which would quietly mean "any free port".
  const p = /^\d{1,5}$/.test(text) ? Number(text) : NaN
  if (!(p >= 0 && p <= 65535)) throw new UsageError(`${name} must be a port number (0-65535), got ${JSON.stringify(text)}`)
  return p
}

/** The metrics server port: `--metrics-port`, else `TROUPE_METRICS_PORT`, else 0 (a free one). */
export function metricsPortFlag(values: Record<string, string | boolean | undefined>): number {
  if (typeof values['metrics-port'] === 'string') return portFlag(values['metrics-port'], '--metrics-port') ?? 0
  return portFlag(process.env.TROUPE_METRICS_PORT, 'TROUPE_METRICS_PORT') ?? 0
}

/**
 * A repeat of the stopping signal this soon after the first is the same stop:
 * one Ctrl-C reaches the process twice under npm/npx (from the terminal to the
 * process group, and forwarded by npm), as does a kill of the whole group.
 */
export const SIGNAL_REPEAT_MS = 1000

/**
 * Calls `stop` at the first SIGINT (Ctrl-C) and returns the function that
 * removes the handler. A repeat within SIGNAL_REPEAT_MS is the same Ctrl-C and
 * is ignored (under npx a once-handler let the second copy kill the process
 * with 130); a later one exits at once with 130, for a stop that hangs.
 */
export function onInterrupt(stop: () => void): () => void {
  let firstAt = 0
  const onInt = (): void => {
    if (firstAt === 0) {
      firstAt = Date.now()
      return stop()
    }
    if (Date.now() - firstAt >= SIGNAL_REPEAT_MS) process.exit(EXIT.interrupted)
  }
  process.on('SIGINT', onInt)
  return () => offAfterRepeatWindow(firstAt, [['SIGINT', onInt]])
}

/**
 * Removes signal handlers once the repeat window of a signal taken at `firstAt`
 * (0: none taken) is over. The forwarded copy can arrive after the command is
 * done, so the handlers stay for the rest of the window and keep the process up
 * until then: a process let go at once was killed by that copy while it exited
 * (Node drops its signal handlers on the way out), and a quick command stopped
 * by one Ctrl-C under npx died of SIGINT instead of exiting 0.
 */
function offAfterRepeatWindow(firstAt: number, handlers: [NodeJS.Signals, () => void][]): void {
  const off = (): void => {
    for (const [sig, h] of handlers) process.off(sig, h)
  }
  const left = firstAt === 0 ? 0 : firstAt + SIGNAL_REPEAT_MS - Date.now()
  if (left <= 0) off()
  else setTimeout(off, left)
}

/**
 * Serves until SIGTERM or SIGINT, then stops the runtime (draining it) and
 * returns the exit code. A later signal, past SIGNAL_REPEAT_MS, exits at once
 * with 130.
 */
export async function serveUntilSignal(rt: Runtime, doing = 'stopping'): Promise<number> {
  let firstAt = 0
  let stopFor: (name: string) => void = () => undefined
  const signalled = new Promise<string>((resolve) => (stopFor = resolve))
  // One handler for the whole run, so no copy of the signal ever meets the
  // default action (which kills the process mid-drain, or, for a container's
  // PID 1, ignores it).
  const onSignal = (name: string): void => {
    if (firstAt === 0) {
      firstAt = Date.now()
      return stopFor(name)
    }
    if (Date.now() - firstAt < SIGNAL_REPEAT_MS) return rt.log.info(`${name} again at once: the same stop`)
    rt.log.warn(`${name} again: exiting without finishing the drain; running actions are redelivered after their lock runs out`)
    process.exit(EXIT.interrupted)
  }
  const onTerm = (): void => onSignal('SIGTERM')
  const onInt = (): void => onSignal('SIGINT')
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  const sig = await signalled
  rt.log.info(`${sig}: ${doing} (another signal after a second exits at once)`)
  try {
    await rt.stop()
  } finally {
    offAfterRepeatWindow(firstAt, [['SIGTERM', onTerm], ['SIGINT', onInt]])
  }
  rt.log.info('stopped')
  return EXIT.ok
}

/**
 * Runs one built-in service alone (`troupe supervisor`, `troupe persister`) with the
 * flags they share (`--heartbeat`, `--metrics-port`, `--allow-eviction`, Redis), until a signal.
 */
export async function serveAlone(service: HostedService, values: Record<string, string | boolean | undefined>): Promise<number> {
  const heartbeatMs = typeof values.heartbeat === 'string' ? parseDuration(values.heartbeat) : undefined
  if (heartbeatMs !== undefined && !(heartbeatMs >= 50 && heartbeatMs <= MAX_TIMER_MS)) throw new UsageError('--heartbeat must be from 50ms to 24d (Node cannot time longer)')
  const rt = await startRuntime({
    agents: [], services: [service], config: configFlags(values), allowEviction: values['allow-eviction'] === true, metricsPort: metricsPortFlag(values),
    ...(heartbeatMs ? { heartbeatMs } : {}),
  })
  return await serveUntilSignal(rt, 'stopping')
}
