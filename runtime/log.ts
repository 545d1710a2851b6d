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

/** A logger printing at `level` and above (env `TROUPE_LOG_LEVEL`, default `info`). */
export function createLogger(name: string, level: LogLevel = (process.env.TROUPE_LOG_LEVEL as LogLevel | undefined) ?? 'info'): Logger {
  const max = ORDER[level] ?? ORDER.info
  const out = (lvl: LogLevel) => (msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] > max) return
    const extra = fields && Object.keys(fields).length > 0 ? ' ' + JSON.stringify(fields) : ''
    process.stderr.write(`${new Date().toISOString()} ${lvl.padEnd(5)} [${name}] ${msg}${extra}\n`)
  }
  return { error: out('error'), warn: out('warn'), info: out('info'), debug: out('debug') }
}
