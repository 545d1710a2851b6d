// Spawns real `troupe start` child processes for tests where a crash is the point.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { TroupeConfig } from '../../runtime/config.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))

/** A runtime child process and what it printed. */
export interface RuntimeChild {
  readonly child: ChildProcess
  readonly pid: number
  readonly metricsUrl: string
  output(): string
  signal(sig: NodeJS.Signals): void
  /** Resolves with the exit code once the process has exited. */
  exited(): Promise<number | null>
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>
}

/** Starts `troupe start --agents <module>` with the test's namespace; resolves once it is serving. */
export async function spawnRuntime(cfg: TroupeConfig, opts: { agents?: string; args?: string[]; env?: Record<string, string>; command?: string[] } = {}): Promise<RuntimeChild> {
  const args = opts.command ?? ['start', '--agents', opts.agents ?? 'test/fixtures/agents.ts', ...(opts.args ?? [])]
  const child = spawn(process.execPath, ['bin/troupe.mjs', ...args], {
    cwd: root,
    env: {
      ...process.env,
      REDIS_URL: cfg.redisUrl,
      TROUPE_NAMESPACE: cfg.namespace,
      TROUPE_LOCK_TTL_MS: String(cfg.lockTtlMs),
      TROUPE_PERSISTENCE: cfg.persistence ? 'on' : 'off',
      TROUPE_LOG_LEVEL: 'info',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()))
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  const deadline = Date.now() + 30_000
  let metricsUrl = ''
  for (;;) {
    const m = /runtime \S+ .*?(?:\(metrics (\S+)\))?$/m.exec(out)
    if (m) {
      metricsUrl = m[1] ?? ''
      break
    }
    if (child.exitCode !== null) throw new Error(`runtime exited with ${child.exitCode} before serving:\n${out}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`runtime did not start within 30 s:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    child,
    pid: child.pid ?? -1,
    metricsUrl,
    output: () => out,
    signal: (sig) => {
      if (child.exitCode === null) child.kill(sig)
    },
    exited: () => exit,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill('SIGCONT')
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
      const code = await exit
      clearTimeout(t)
      return code
    },
  }
}

/** Reads one counter (summed over labels matching `labels`) from a Prometheus text page. */
export async function scrapeCounter(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(url)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const lbl = m[2] ?? ''
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3])
  }
  return sum
}

/** Children started by {@link runNode} and not yet exited, killed by {@link killStragglers}. */
const running = new Set<ChildProcess>()

/**
 * Runs `node <args>` from the repository root with `env` added, collecting its
 * output; the child is killed by {@link killStragglers} if the test gives up on it.
 */
export async function runNode(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  running.delete(child)
  return { code, out, err }
}

/** Kills what {@link runNode} started and is still running (a test that timed out leaves it behind). */
export function killStragglers(): void {
  for (const c of running) c.kill('SIGKILL')
  running.clear()
}
