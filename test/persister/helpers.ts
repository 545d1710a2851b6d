// Shared by the persister tests: the suite's Neo4j (from `npm test`), cleanup of
// the nodes a test wrote, graph counts, and a Neo4j of a test's own that can be
// stopped and started again on the same port and data directory.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import neo4j, { type Driver } from 'neo4j-driver'
import { nanoid } from 'nanoid'
import { dataDir, freePort, repoRoot } from '../../scripts/services/util.ts'

/** NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD as `npm test` sets them. */
export function neo4jEnv(): { uri: string; user: string; password: string } {
  const uri = process.env.NEO4J_URI
  if (!uri) throw new Error('NEO4J_URI is not set: run the suite via npm test, which starts Redis and Neo4j first')
  return { uri, user: process.env.NEO4J_USER || 'neo4j', password: process.env.NEO4J_PASSWORD ?? '' }
}

/** A driver to the suite's Neo4j. */
export function openDriver(env = neo4jEnv()): Driver {
  return neo4j.driver(env.uri, env.password ? neo4j.auth.basic(env.user, env.password) : undefined, { logging: { level: 'error', logger: () => undefined } })
}

/** A workflow id prefix unique to one test file; every id it makes starts with it. */
export function idPrefix(): string {
  return `pt${nanoid(6).replace(/[^A-Za-z0-9]/g, 'x')}`
}

/** Deletes the workflows whose id starts with `prefix`, their events, actions and parent placeholders. */
export async function cleanGraph(driver: Driver, prefix: string): Promise<void> {
  // CALL ... IN TRANSACTIONS (bounded memory for big tests) needs an auto-commit transaction.
  const session = driver.session()
  try {
    await session.run('MATCH (e:Event) WHERE e.workflowId STARTS WITH $prefix OR e.id STARTS WITH $prefix CALL (e) { DETACH DELETE e } IN TRANSACTIONS OF 2000 ROWS', { prefix })
    await session.run('MATCH (x:Action|Workflow) WHERE x.id STARTS WITH $prefix OR x.workflowId STARTS WITH $prefix CALL (x) { DETACH DELETE x } IN TRANSACTIONS OF 2000 ROWS', { prefix })
  } finally {
    await session.close()
  }
}

const n = (v: unknown): number => (neo4j.isInt(v) ? neo4j.integer.toNumber(v) : Number(v))

/**
 * Per workflow: events linked to it, distinct events, and the largest number of
 * HAS_EVENT / EMITTED_BY / CHILD_OF / CAUSED edges any one event has (all 1 when
 * nothing was written twice).
 */
export async function graphCounts(driver: Driver, ids: readonly string[]): Promise<Map<string, { events: number; distinct: number; maxHas: number; maxEmitted: number; maxChild: number; maxCaused: number }>> {
  const res = await driver.executeQuery(
    `UNWIND $ids AS id
     MATCH (w:Workflow {id: id})-[r:HAS_EVENT]->(e:Event)
     WITH id, e, count(r) AS has
     RETURN id, count(e) AS events, count(DISTINCT e.id) AS distinct, max(has) AS maxHas,
       max(COUNT { (e)-[:EMITTED_BY]->() }) AS maxEmitted, max(COUNT { (e)-[:CHILD_OF]->() }) AS maxChild,
       max(COUNT { ()-[:CAUSED]->(e) }) AS maxCaused`,
    { ids },
  )
  const out = new Map<string, { events: number; distinct: number; maxHas: number; maxEmitted: number; maxChild: number; maxCaused: number }>()
  for (const r of res.records) {
    out.set(r.get('id') as string, { events: n(r.get('events')), distinct: n(r.get('distinct')), maxHas: n(r.get('maxHas')), maxEmitted: n(r.get('maxEmitted')), maxChild: n(r.get('maxChild')), maxCaused: n(r.get('maxCaused')) })
  }
  return out
}

/** Total events Neo4j links to these workflows. */
export async function persistedEvents(driver: Driver, ids: readonly string[]): Promise<number> {
  const res = await driver.executeQuery('UNWIND $ids AS id MATCH (:Workflow {id: id})-[:HAS_EVENT]->(e:Event) RETURN count(e) AS n', { ids })
  return n(res.records[0]?.get('n'))
}

/** A Neo4j this test owns: same port and data directory across stop/start. */
export interface OwnNeo4j {
  readonly uri: string
  readonly user: string
  readonly password: string
  stop(): Promise<void>
  start(): Promise<void>
  /** Stops it and removes its data. */
  destroy(): Promise<void>
}

const targetDir = join(repoRoot, 'scripts', 'neo4j', 'target')

function launcherClasspath(): string {
  const cp = join(targetDir, 'classpath.txt')
  const cls = join(targetDir, 'classes', 'troupe', 'Neo4jLauncher.class')
  if (!existsSync(cp) || !existsSync(cls)) {
    throw new Error('the Neo4j launcher is not built: run the suite via npm test (scripts/with-services.ts builds it on its first local start)')
  }
  return `${join(targetDir, 'classes')}:${readFileSync(cp, 'utf8').trim()}`
}

/**
 * Starts an embedded Neo4j through the same launcher scripts/services/neo4j.ts
 * uses, but restartable: `stop()` ends the JVM (SIGTERM, a clean shutdown) and
 * `start()` brings it back on the same port and data directory. It runs without
 * auth (loopback only), see the comment at the spawn. `txPoolMb` caps the memory
 * all its transactions may hold at once (256 MB otherwise).
 */
export async function startOwnNeo4j(opts: { txPoolMb?: number } = {}): Promise<OwnNeo4j> {
  const classpath = launcherClasspath()
  const port = await freePort()
  const home = dataDir('neo4j', `run-${process.pid}-${Date.now().toString(36)}-own`)
  let child: ChildProcess | null = null
  const launch = async (): Promise<void> => {
    const c = spawn('java', ['-Xms128m', '-Xmx512m', '-XX:+UseSerialGC', '--add-opens=java.base/java.nio=ALL-UNNAMED', '--add-opens=java.base/java.io=ALL-UNNAMED', '--add-opens=java.base/sun.nio.ch=ALL-UNNAMED', 'troupe.Neo4jLauncher', '--port', String(port), '--home', home, ...(opts.txPoolMb ? ['--tx-pool-mb', String(opts.txPoolMb)] : [])], {
      cwd: home,
      // No password, so auth is off: the launcher sets the initial password on every
      // start, and Neo4j refuses to "change" it to the same value on a reused home.
      env: { ...process.env, CLASSPATH: classpath, NEO4J_PASSWORD: '' },
      // stdin stays open: the launcher exits when it closes, so a killed test leaves no JVM.
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    child = c
    let out = ''
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`own Neo4j did not start within 120 s:\n${out.slice(-3000)}`)), 120_000)
      c.stdout?.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('NEO4J_READY')) {
          clearTimeout(timer)
          resolve()
        }
      })
      c.stderr?.on('data', (d: Buffer) => (out += d.toString()))
      c.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`own Neo4j exited with ${code}:\n${out.slice(-3000)}`))
      })
    })
  }
  const stop = async (): Promise<void> => {
    const c = child
    child = null
    if (!c || c.exitCode !== null) return
    const exited = new Promise((r) => c.once('exit', r))
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000)
    await exited
    clearTimeout(t)
  }
  await launch()
  return {
    uri: `bolt://127.0.0.1:${port}`,
    user: 'neo4j',
    password: '',
    stop,
    start: launch,
    async destroy() {
      await stop()
      rmSync(home, { recursive: true, force: true })
    },
  }
}
