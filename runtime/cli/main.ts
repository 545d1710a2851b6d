// `troupe <command>`: dispatches to one module per command, loaded on demand.
import { redactUrl } from '../config.ts'
import { EXIT, reportError, type Command } from './common.ts'

const COMMANDS: Record<string, () => Promise<{ command: Command }>> = {
  start: () => import('./start.ts'),
  run: () => import('./run.ts'),
  send: () => import('./send.ts'),
  cancel: () => import('./cancel.ts'),
  requeue: () => import('./requeue.ts'),
  status: () => import('./status.ts'),
  tail: () => import('./tail.ts'),
  supervisor: () => import('./supervisor.ts'),
  gateway: () => import('./gateway.ts'),
  auth: () => import('./auth.ts'),
  persister: () => import('./persister.ts'),
  history: () => import('./history.ts'),
  reconcile: () => import('./reconcile.ts'),
}

/** Registers another command (used by built-in services that bring their own). */
export function addCommand(name: string, load: () => Promise<{ command: Command }>): void {
  COMMANDS[name] = load
}

const COMMON_HELP = `common options:
  --redis <url>          Redis URL (default REDIS_URL or redis://127.0.0.1:6379)
  --namespace <prefix:>  key prefix (default TROUPE_NAMESPACE or none)
  -h, --help             this text`

async function help(): Promise<string> {
  const lines = ['usage: troupe <command> [options]   (options, --redis and --namespace too, go after the command)', '', 'commands:']
  for (const [name, load] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${(await load()).command.summary}`)
  lines.push('', "run 'troupe <command> --help' for a command's options.", 'environment: REDIS_URL, TROUPE_NAMESPACE (see docs/operations.md)')
  return lines.join('\n')
}

/** Options whose value is a secret: shown as *** when a line is echoed back. */
const SECRET_OPTION = /^--[\w-]*(password|secret|token|credential)[\w-]*$/i

/** `arg` as it can be pasted back into a shell, secrets masked: a URL's password, and the value of a secret option (`after` is the word before it). */
function shellWord(given: string, before = ''): string {
  if (SECRET_OPTION.test(before)) return '***'
  const flag = /^--[\w-]+=/.exec(given)?.[0] ?? ''
  const value = given.slice(flag.length)
  const arg = SECRET_OPTION.test(flag.slice(0, -1)) ? `${flag}***` : value.includes('://') || value.includes('@') ? `${flag}${redactUrl(value)}` : given
  return /^[\w./:=@,+%*-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${await help()}\n`)
    return EXIT.ok
  }
  // Without a command the help answers a mistake (exit 2): it goes where errors go.
  if (!name) {
    process.stderr.write(`${await help()}\n`)
    return EXIT.usage
  }
  const load = COMMANDS[name]
  if (!load) {
    let why = `unknown command '${name}'`
    if (name.startsWith('-')) {
      // Said with the user's own line put right, when the command is in it.
      const at = rest.findIndex((a) => Object.hasOwn(COMMANDS, a))
      why = at < 0
        ? `${shellWord(name)} is an option: options go after the command (troupe <command> [options])`
        : `${shellWord(name)} is an option: options go after the command, as in: troupe ${[...rest.slice(at), name, ...rest.slice(0, at)].map((w, i, all) => shellWord(w, all[i - 1])).join(' ')}`
    }
    process.stderr.write(`error: ${why}\n\n${await help()}\n`)
    return EXIT.usage
  }
  const { command } = await load()
  if (rest.includes('--help') || rest.includes('-h')) {
    // Every command takes the connection flags; the usages that do not list them get them here.
    const common = command.usage.includes('--redis') ? '' : `\n\n${COMMON_HELP}`
    process.stdout.write(`${command.usage}${common}\n`)
    return EXIT.ok
  }
  try {
    return await command.run(rest)
  } catch (err) {
    return reportError(err, command.usage)
  }
}
