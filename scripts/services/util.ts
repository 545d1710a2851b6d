// Small helpers shared by the local service bootstraps (Redis, Neo4j, Prometheus).
import { createServer } from 'node:net'
import { spawnSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root, so that data folders land in one git-ignored place. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** Where local services keep their data and logs (git-ignored). */
export function dataDir(...parts: string[]): string {
  const dir = join(repoRoot, '.troupe', ...parts)
  mkdirSync(dir, { recursive: true })
  return dir
}

/** A TCP port that was free on loopback a moment ago. */
export async function freePort(): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      srv.close(() => resolvePort(port))
    })
  })
}

/** True when `cmd` is on PATH. */
export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/** Error whose message names the exact command that fixes the problem. */
export class MissingPrerequisiteError extends Error {
  constructor(what: string, fix: string) {
    super(`${what}\n  fix: ${fix}`)
    this.name = 'MissingPrerequisiteError'
  }
}

/** Polls `probe` until it resolves true or `timeoutMs` passes. */
export async function waitFor(probe: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await probe().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** A service that was reused or started; `stop` only stops what we started. */
export interface LocalService {
  readonly url: string
  readonly started: boolean
  stop(): Promise<void>
}
