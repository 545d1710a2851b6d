// A small leveled logger: human-readable lines on stderr, quiet by default in tests.

/** Log levels from most to least severe. */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug'
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 }

/** Where the runtime reports what it does. */
export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  debug(msg: string, fields?: Record<string, unknown>): void
}

/** Warned about once per process: a logger is made per component. */
let warnedLevel = false

/**
 * TROUPE_LOG_LEVEL as one of `levels` (lower case), in any case; unset is
 * `info`. An unknown value says so once on stderr and means `info` (a logger
 * has no one to throw to). The gateway passes pino's levels, which its
 * request log takes (`silent`, `trace`, `fatal` too).
 */
export function logLevelFromEnv<L extends string = LogLevel>(raw: string | undefined = process.env.TROUPE_LOG_LEVEL, levels: readonly L[] = Object.keys(ORDER) as L[]): L | 'info' {
  const v = (raw ?? '').trim().toLowerCase()
  if (v === '') return 'info'
  const known = levels.find((l) => l === v)
  if (known !== undefined) return known
  if (!warnedLevel) {
    warnedLevel = true
    process.stderr.write(`TROUPE_LOG_LEVEL=${JSON.stringify(raw)} is not one of ${levels.join(', ')}: logging at info\n`)
  }
  return 'info'
}

/** pino's other levels (the gateway's request log takes them) as the nearest of ours. */
const PINO_ALIASES = { fatal: 'error', silent: 'error', trace: 'debug' } as const

/** A logger printing at `level` and above (env `TROUPE_LOG_LEVEL`, default `info`). */
export function createLogger(name: string, level: LogLevel = runtimeLevel()): Logger {
  const max = ORDER[level] ?? ORDER.info
  const out = (lvl: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] > max) return
    const extra = fields && Object.keys(fields).length > 0 ? ' ' + JSON.stringify(fields) : ''
    process.stderr.write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${name}] ${msg}${extra}\n`)
  }
  return { error: out('error'), warn: out('warn'), info: out('info'), debug: out('debug') }
}

function runtimeLevel(): LogLevel {
  const l = logLevelFromEnv(process.env.TROUPE_LOG_LEVEL, [...(Object.keys(ORDER) as LogLevel[]), ...(Object.keys(PINO_ALIASES) as (keyof typeof PINO_ALIASES)[])])
  return l in PINO_ALIASES ? PINO_ALIASES[l as keyof typeof PINO_ALIASES] : (l as LogLevel)
}
