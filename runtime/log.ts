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
 * TROUPE_LOG_LEVEL as a level, in any case; unset is `info`. An unknown value
 * says so once on stderr and means `info` (a logger has no one to throw to).
 */
export function logLevelFromEnv(raw: string | undefined = process.env.TROUPE_LOG_LEVEL): LogLevel {
  const v = (raw ?? '').trim().toLowerCase()
  if (v === '') return 'info'
  if (v in ORDER) return v as LogLevel
  if (!warnedLevel) {
    warnedLevel = true
    process.stderr.write(`TROUPE_LOG_LEVEL=${JSON.stringify(raw)} is not one of error, warn, info, debug: logging at info\n`)
  }
  return 'info'
}

/** A logger printing at `level` and above (env `TROUPE_LOG_LEVEL`, default `info`). */
export function createLogger(name: string, level: LogLevel = logLevelFromEnv()): Logger {
  const max = ORDER[level] ?? ORDER.info
  const out = (lvl: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] > max) return
    const extra = fields && Object.keys(fields).length > 0 ? ' ' + JSON.stringify(fields) : ''
    process.stderr.write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${name}] ${msg}${extra}\n`)
  }
  return { error: out('error'), warn: out('warn'), info: out('info'), debug: out('debug') }
}
