// Brings up a real Neo4j 5.26 for tests and the demo on machines without Docker:
// an embedded community DBMS (scripts/neo4j) started as a plain JVM child process.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { Socket } from 'node:net'
import { join } from 'node:path'
import neo4j from 'neo4j-driver'
import { type LocalService, MissingPrerequisiteError, dataDir, freePort, hasCommand, repoRoot, waitFor } from './util.ts'

export interface Neo4jService extends LocalService {
  readonly user: string
  readonly password: string
}

export interface EnsureNeo4jOptions {
  log?: (msg: string) => void
}

const projectDir = join(repoRoot, 'scripts', 'neo4j')
const pomFile = join(projectDir, 'pom.xml')
const launcherSource = join(projectDir, 'src', 'main', 'java', 'troupe', 'Neo4jLauncher.java')
const targetDir = join(projectDir, 'target')
const classpathFile = join(targetDir, 'classpath.txt')
const classesDir = join(targetDir, 'classes')
const launcherClass = join(classesDir, 'troupe', 'Neo4jLauncher.class')
const buildLock = join(targetDir, '.build.lock')

const PREREQ_FIX = 'apt-get install -y openjdk-17-jdk-headless maven'
const READY_TIMEOUT_MS = 120_000
const STOP_GRACE_MS = 20_000
const BUILD_LOCK_TIMEOUT_MS = 15 * 60_000
const OUTPUT_TAIL_LINES = 60
const PORT_ATTEMPTS = 3
// Must match Neo4jLauncher.EXIT_PORT_IN_USE.
const EXIT_PORT_IN_USE = 3

// The JVM shares 2 cores with the test suite: a bounded heap (page cache is
// off-heap and capped at 256m by the launcher) and the serial collector, which
// needs no GC threads and is plenty for a heap this small. The add-opens are the
// ones Neo4j's own launcher passes; without java.nio its page cache falls back to
// a slower, more memory-hungry mode. After an OutOfMemoryError the JVM exits
// rather than limping on, so tests fail with a reason instead of timing out.
const JVM_FLAGS = [
  '-Xms128m',
  '-Xmx768m',
  '-XX:+UseSerialGC',
  '-XX:+ExitOnOutOfMemoryError',
  '--add-opens=java.base/java.nio=ALL-UNNAMED',
  '--add-opens=java.base/java.io=ALL-UNNAMED',
  '--add-opens=java.base/sun.nio.ch=ALL-UNNAMED',
  '-Dio.netty.tryReflectionSetAccessible=true',
]

/**
 * Reuses the Neo4j named by NEO4J_URI, or starts a private embedded one on a free
 * loopback port with a fresh data directory that `stop()` removes.
 */
export async function ensureNeo4j(opts: EnsureNeo4jOptions = {}): Promise<Neo4jService> {
  const log = opts.log ?? ((msg: string) => console.error(msg))
  const uri = process.env.NEO4J_URI
  if (uri) return await reuseExisting(uri, process.env.NEO4J_USER || 'neo4j', process.env.NEO4J_PASSWORD ?? '')

  requireCommands(['java'])
  const classpath = await buildLauncher(log)
  for (let attempt = 1; ; attempt++) {
    try {
      return await startLauncher(classpath, log)
    } catch (err) {
      // freePort() cannot reserve the port, so a parallel test may grab it first.
      if (!(err instanceof PortTakenError) || attempt >= PORT_ATTEMPTS) throw err
      log(`neo4j: port ${err.port} was taken before Neo4j could bind it; retrying on another port`)
    }
  }
}

/** True when `uri` answers a query with these credentials. */
export async function neo4jReachable(uri: string, user: string, password: string): Promise<boolean> {
  return (await probeNeo4j(uri, user, password)) === undefined
}

/** Undefined when reachable, else why not (connection refused, bad credentials...). */
async function probeNeo4j(uri: string, user: string, password: string): Promise<string | undefined> {
  let driver
  try {
    driver = neo4j.driver(uri, neo4j.auth.basic(user, password), {
      connectionTimeout: 5_000,
      connectionAcquisitionTimeout: 10_000,
    })
  } catch (err) {
    return errorMessage(err)
  }
  try {
    // An auto-commit query rather than executeQuery: the latter retries
    // "service unavailable" for 30 s, which would only delay the answer.
    const session = driver.session()
    try {
      await session.run('RETURN 1')
    } finally {
      await session.close()
    }
    return undefined
  } catch (err) {
    return errorMessage(err)
  } finally {
    await driver.close()
  }
}

async function reuseExisting(uri: string, user: string, password: string): Promise<Neo4jService> {
  const problem = await probeNeo4j(uri, user, password)
  if (problem !== undefined) {
    throw new Error(`NEO4J_URI=${uri} does not answer as user ${user}: ${problem}\n  unset NEO4J_URI to start a local Neo4j instead`)
  }
  return { url: uri, user, password, started: false, stop: () => Promise.resolve() }
}

/**
 * Returns the dependency classpath and makes sure the launcher is compiled.
 * Maven runs only when pom.xml changed (or the jars vanished from ~/.m2), so a
 * warm start costs a few file stats.
 */
async function buildLauncher(log: (msg: string) => void): Promise<string> {
  const cached = readCachedClasspath()
  if (cached !== undefined && launcherCompiled()) return cached

  requireCommands(['javac', 'mvn'])
  mkdirSync(targetDir, { recursive: true })
  // Two test files may start Neo4j at once on a cold cache; only one of them
  // should run Maven and javac while the other waits for the result.
  const release = await acquireLock(buildLock, log)
  try {
    let classpath = readCachedClasspath()
    if (classpath === undefined) {
      log('neo4j: resolving Neo4j 5.26 from Maven Central (first run only)...')
      const started = Date.now()
      const tmp = `${classpathFile}.${process.pid}.tmp`
      const mvn = await run('mvn', ['-B', '-q', '-f', pomFile, 'dependency:build-classpath', `-Dmdep.outputFile=${tmp}`])
      if (mvn.code !== 0 || !existsSync(tmp)) {
        rmSync(tmp, { force: true })
        throw new Error(`mvn could not resolve the Neo4j dependencies (exit ${mvn.code}):\n${mvn.output}`)
      }
      classpath = readFileSync(tmp, 'utf8').trim()
      rmSync(tmp)
      writeFileSync(classpathFile, classpath)
      log(`neo4j: dependencies resolved in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    }
    if (!launcherCompiled()) {
      assertJava17()
      const javac = await run('javac', ['--release', '17', '-cp', classpath, '-d', classesDir, launcherSource])
      if (javac.code !== 0) throw new Error(`javac failed to compile ${launcherSource}:\n${javac.output}`)
    }
    return classpath
  } finally {
    release()
  }
}

function requireCommands(cmds: string[]): void {
  for (const cmd of cmds) {
    if (!hasCommand(cmd)) throw new MissingPrerequisiteError(`Neo4j needs ${cmd} (JDK 17+ and Maven) on PATH`, PREREQ_FIX)
  }
}

/** Compiled after the last edit of the source and against the current classpath. */
function launcherCompiled(): boolean {
  return isNewer(launcherClass, launcherSource) && isNewer(launcherClass, classpathFile)
}

function readCachedClasspath(): string | undefined {
  if (!isNewer(classpathFile, pomFile)) return undefined
  const classpath = readFileSync(classpathFile, 'utf8').trim()
  if (!classpath) return undefined
  // A cleaned ~/.m2 leaves a stale list behind; resolve again rather than fail
  // later with a ClassNotFoundException.
  return classpath.split(':').every((jar) => existsSync(jar)) ? classpath : undefined
}

/** True when `file` exists and is at least as new as `than`. */
function isNewer(file: string, than: string): boolean {
  try {
    return statSync(file).mtimeMs >= statSync(than).mtimeMs
  } catch {
    return false
  }
}

function assertJava17(): void {
  const probe = spawnSyncOutput('java', ['-version'])
  const match = /version "(\d+)(?:\.(\d+))?/.exec(probe)
  const major = match?.[1] === '1' ? Number(match[2]) : Number(match?.[1])
  if (!Number.isFinite(major) || major < 17) {
    throw new MissingPrerequisiteError(`Neo4j 5.26 needs Java 17 or newer; java -version says: ${probe.split('\n')[0] ?? probe}`, PREREQ_FIX)
  }
}

async function startLauncher(classpath: string, log: (msg: string) => void): Promise<Neo4jService> {
  const root = dataDir('neo4j')
  removeStaleRuns(root)
  const port = await freePort()
  const home = dataDir('neo4j', `run-${process.pid}-${Date.now().toString(36)}`)
  const user = 'neo4j'
  const password = `troupe-${randomBytes(12).toString('hex')}`

  const child = spawn('java', [...JVM_FLAGS, 'troupe.Neo4jLauncher', '--port', String(port), '--home', home], {
    cwd: home,
    // Via the environment so that neither the password nor the 20 kB classpath
    // show up in `ps`.
    env: { ...process.env, CLASSPATH: `${classesDir}:${classpath}`, NEO4J_PASSWORD: password },
    // stdin stays an open pipe we never write to: the launcher exits when it
    // closes, so a parent killed with SIGKILL does not leave a JVM behind.
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  if (child.pid !== undefined) writeFileSync(join(home, 'jvm.pid'), String(child.pid))

  const tail = new OutputTail(OUTPUT_TAIL_LINES)
  let exited = false
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true
      resolve()
    })
  })

  try {
    await waitForReady(child, tail, port)
  } catch (err) {
    await terminate(child, exit, () => exited)
    rmSync(home, { recursive: true, force: true })
    throw err
  }

  let stopping = false
  child.once('close', (code, signal) => {
    if (!stopping) log(`neo4j: exited unexpectedly (${signal ?? `code ${code}`}); last output:\n${tail.text()}`)
  })
  // Once running, the JVM must not keep a script that forgot stop() alive; if
  // the script just ends, the closed stdin pipe shuts the JVM down.
  unrefChild(child)

  const url = `bolt://127.0.0.1:${port}`
  return {
    url,
    user,
    password,
    started: true,
    stop: async () => {
      stopping = true
      await terminate(child, exit, () => exited)
      rmSync(home, { recursive: true, force: true })
    },
  }
}

/** Resolves on the launcher's NEO4J_READY line; rejects with its output if it dies or stalls. */
async function waitForReady(child: ChildProcess, tail: OutputTail, port: number): Promise<void> {
  const expected = `NEO4J_READY bolt://127.0.0.1:${port}`
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer)
      reject(new Error(`Neo4j did not start: ${why}; last output:\n${tail.text() || '(none)'}`))
    }
    const timer = setTimeout(() => fail(`no ${expected} within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS)
    child.once('error', (err) => fail(`could not run java: ${err.message}`))
    // 'close', not 'exit': only then has all of its stderr (the reason) arrived.
    child.once('close', (code, signal) => {
      if (code === EXIT_PORT_IN_USE) {
        clearTimeout(timer)
        reject(new PortTakenError(port))
      } else fail(`java exited (${signal ?? `code ${code}`})`)
    })
    tail.follow(child.stderr)
    tail.follow(child.stdout, (line) => {
      if (line.trim() === expected) {
        clearTimeout(timer)
        resolve()
      }
    })
  })
}

/** SIGTERM lets the launcher close the store cleanly; SIGKILL only if it hangs. */
async function terminate(child: ChildProcess, exit: Promise<void>, hasExited: () => boolean): Promise<void> {
  if (hasExited() || child.pid === undefined) return
  child.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      child.kill('SIGKILL')
      resolve()
    }, STOP_GRACE_MS)
  })
  await Promise.race([exit, killed])
  clearTimeout(timer)
  await exit
}

/**
 * Deletes data directories of earlier runs whose test process and JVM are both
 * gone, e.g. after a parent that was killed before it could call stop().
 */
function removeStaleRuns(root: string): void {
  for (const name of readdirSync(root)) {
    const owner = /^run-(\d+)-/.exec(name)?.[1]
    if (owner === undefined) continue
    const dir = join(root, name)
    let jvm: string | undefined
    try {
      jvm = readFileSync(join(dir, 'jvm.pid'), 'utf8').trim()
    } catch {
      jvm = undefined
    }
    if (pidAlive(Number(owner)) || (jvm !== undefined && pidAlive(Number(jvm)))) continue
    rmSync(dir, { recursive: true, force: true })
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: alive, just not ours.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * An exclusive lock file holding our pid; a lock whose holder died is taken
 * over, so a build interrupted by Ctrl-C does not block later runs.
 */
async function acquireLock(path: string, log: (msg: string) => void): Promise<() => void> {
  let announced = false
  const tryTake = (): Promise<boolean> => {
    try {
      const fd = openSync(path, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return Promise.resolve(true)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    let holder = NaN
    try {
      holder = Number(readFileSync(path, 'utf8').trim())
    } catch {
      // Released between our open and read: try again on the next poll.
    }
    // An empty file is a holder that has not written its pid yet.
    if (Number.isInteger(holder) && holder > 0 && !pidAlive(holder)) rmSync(path, { force: true })
    else if (!announced) {
      announced = true
      log(`neo4j: waiting for another process (pid ${holder}) that is building the launcher...`)
    }
    return Promise.resolve(false)
  }
  await waitFor(tryTake, BUILD_LOCK_TIMEOUT_MS, `the Neo4j launcher build lock ${path}`)
  return () => rmSync(path, { force: true })
}

class PortTakenError extends Error {
  constructor(readonly port: number) {
    super(`port ${port} is already in use`)
    this.name = 'PortTakenError'
  }
}

/** Keeps the last lines of a child's output for error messages. */
class OutputTail {
  private readonly lines: string[] = []
  constructor(private readonly max: number) {}

  follow(stream: NodeJS.ReadableStream | null, onLine?: (line: string) => void): void {
    if (!stream) return
    let partial = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop() ?? ''
      for (const line of parts) {
        this.push(line)
        onLine?.(line)
      }
    })
  }

  text(): string {
    return this.lines.join('\n')
  }

  private push(line: string): void {
    this.lines.push(line)
    if (this.lines.length > this.max) this.lines.shift()
  }
}

function unrefChild(child: ChildProcess): void {
  child.unref()
  for (const stream of [child.stdin, child.stdout, child.stderr]) {
    if (stream instanceof Socket) stream.unref()
  }
}

/** Runs a command to completion, capturing stdout and stderr together. */
async function run(cmd: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const collect = (chunk: Buffer) => {
      output += chunk.toString('utf8')
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, output: output.trim() }))
  })
}

function spawnSyncOutput(cmd: string, args: string[]): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8' })
  // `java -version` writes to stderr.
  return `${res.stdout ?? ''}${res.stderr ?? ''}`.trim()
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
