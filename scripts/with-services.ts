// Runs a command with Redis and Neo4j available: uses REDIS_URL / NEO4J_URI when set
// (stopping with the fix when one does not answer), otherwise starts private ones,
// and stops what it started afterwards.
// Usage: tsx scripts/with-services.ts [--no-neo4j] <command> [args...]
import { spawn } from 'node:child_process'
import { ensureRedis } from './services/redis.ts'
import { ensureNeo4j } from './services/neo4j.ts'
import type { LocalService } from './services/util.ts'

const argv = process.argv.slice(2)
const wantNeo4j = argv[0] !== '--no-neo4j'
const cmd = wantNeo4j ? argv : argv.slice(1)
if (cmd.length === 0) {
  console.error('usage: tsx scripts/with-services.ts [--no-neo4j] <command> [args...]')
  process.exit(2)
}

const started: LocalService[] = []
async function stopAll(): Promise<void> {
  for (const s of started.reverse()) await s.stop().catch((e: unknown) => console.error('[services] stop failed:', e))
  started.length = 0
}

// From the start: a Ctrl-C (or a CI timeout's SIGTERM) while Redis or Neo4j is
// still coming up (minutes, the first time) stops what was started instead of
// leaving it running. Once the command runs, signals go to it (below).
let child: ReturnType<typeof spawn> | null = null
let signalled = false
const onSignal = (sig: NodeJS.Signals): void => {
  if (child) {
    child.kill(sig)
    return
  }
  if (signalled) return
  signalled = true
  console.error(`[services] ${sig} while starting services: stopping them`)
  void stopAll().finally(() => process.exit(130))
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

try {
  const redis = await ensureRedis()
  started.push(redis)
  console.error(`[services] redis ${redis.started ? 'started' : 'reused'} at ${redis.url}`)
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: redis.url }
  if (wantNeo4j) {
    const neo = await ensureNeo4j({ log: (m) => console.error(`[services] ${m}`) })
    started.push(neo)
    console.error(`[services] neo4j ${neo.started ? 'started' : 'reused'} at ${neo.url}`)
    Object.assign(env, { NEO4J_URI: neo.url, NEO4J_USER: neo.user, NEO4J_PASSWORD: neo.password })
    // Tells the command that this Neo4j came from the local bootstrap (auth on), not from the user.
    if (neo.started) env.TROUPE_NEO4J_BOOTSTRAPPED = '1'
  }
  if (signalled) await new Promise(() => undefined)
  const [bin, ...args] = cmd as [string, ...string[]]
  const running = spawn(bin, args, { stdio: 'inherit', env })
  child = running
  const code = await new Promise<number>((r) => running.on('exit', (c, s) => r(c ?? (s ? 1 : 0))))
  await stopAll()
  process.exit(code)
} catch (err) {
  console.error(`[services] ${err instanceof Error ? err.message : String(err)}`)
  await stopAll()
  process.exit(1)
}
