// Worker processes of a run: real child processes (bench/worker.ts) so that several
// runtimes or BullMQ workers compete for the CPU as they would in production, and
// each reports its own CPU time. The harness talks to them over IPC only, never
// through Redis, so measuring costs the measured Redis nothing.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { WorkerReport } from './probe.ts'
import { SPEC_ENV, type FromWorker, type ToWorker, type WorkerSpec } from './spec.ts'

const WORKER = fileURLToPath(new URL('../worker.ts', import.meta.url))

export interface PoolOptions {
  /** Let workers run a full GC before a memory report. */
  exposeGc?: boolean
}

interface Member {
  proc: ChildProcess
  done: number
  lastAt: number
  exited: Promise<number | null>
  waiters: ((m: FromWorker) => void)[]
}

/** A set of worker processes started together and driven in lockstep. */
export class WorkerPool {
  private failure: Error | null = null
  private onChange: (() => void) | null = null

  private constructor(private readonly members: Member[]) {}

  /** Spawns one process per spec and waits until every one is connected and ready. */
  static async start(specs: readonly WorkerSpec[], opts: PoolOptions = {}): Promise<WorkerPool> {
    const args = ['--import', 'tsx']
    if (opts.exposeGc) args.push('--expose-gc')
    const members: Member[] = specs.map((spec) => {
      const proc = spawn(process.execPath, [...args, WORKER], {
        env: { ...process.env, [SPEC_ENV]: JSON.stringify(spec), TROUPE_LOG_LEVEL: process.env.TROUPE_LOG_LEVEL ?? 'warn' },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      return { proc, done: 0, lastAt: 0, exited: new Promise((r) => proc.once('exit', (code) => r(code))), waiters: [] }
    })
    const pool = new WorkerPool(members)
    for (const m of members) pool.wire(m)
    try {
      await Promise.all(members.map((m) => pool.next(m, 'ready', 60_000)))
    } catch (err) {
      pool.kill()
      throw err
    }
    return pool
  }

  private wire(m: Member): void {
    m.proc.on('message', (msg: FromWorker) => {
      if (msg.t === 'progress') {
        m.done = msg.done
        m.lastAt = msg.at
        this.onChange?.()
      } else if (msg.t === 'error') {
        this.failure ??= new Error(`worker ${m.proc.pid ?? '?'} failed: ${msg.message}`)
        this.onChange?.()
      }
      for (const w of m.waiters.splice(0)) w(msg)
    })
    void m.exited.then((code) => {
      if (code !== 0 && code !== null) this.failure ??= new Error(`worker ${m.proc.pid ?? '?'} exited with ${code}`)
      this.onChange?.()
      for (const w of m.waiters.splice(0)) w({ t: 'error', message: `exited with ${String(code)}` })
    })
  }

  /** Resolves with the next message of type `t` from `m`. */
  private next<T extends FromWorker['t']>(m: Member, t: T, timeoutMs: number): Promise<Extract<FromWorker, { t: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${m.proc.pid ?? '?'} sent no '${t}' within ${timeoutMs} ms`)), timeoutMs)
      const wait = (msg: FromWorker): void => {
        if (msg.t === t) {
          clearTimeout(timer)
          resolve(msg as Extract<FromWorker, { t: T }>)
        } else if (msg.t === 'error') {
          clearTimeout(timer)
          reject(new Error(`worker ${m.proc.pid ?? '?'}: ${msg.message}`))
        } else {
          m.waiters.push(wait)
        }
      }
      m.waiters.push(wait)
    })
  }

  private post(m: Member, msg: ToWorker): void {
    if (m.proc.connected) m.proc.send(msg)
  }

  get size(): number {
    return this.members.length
  }

  /** Units finished across all workers. */
  get done(): number {
    return this.members.reduce((s, m) => s + m.done, 0)
  }

  /**
   * Starts every worker consuming; resolves once each has (a Troupe runtime has
   * then registered its agents, which the client's default validation reads).
   */
  async go(): Promise<void> {
    const started = this.members.map((m) => this.next(m, 'started', 60_000))
    for (const m of this.members) this.post(m, { t: 'go' })
    await Promise.all(started)
  }

  /** Resolves once the workers together finished `total` units; rejects on a failure or after `timeoutMs`. */
  async waitFor(total: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (this.failure) finish(this.failure)
        else if (this.done >= total) finish(null)
        else if (Date.now() > deadline) finish(new Error(`timed out after ${timeoutMs} ms with ${this.done}/${total} done`))
      }
      const timer = setInterval(check, 250)
      const finish = (err: Error | null): void => {
        clearInterval(timer)
        this.onChange = null
        if (err) reject(err)
        else resolve()
      }
      this.onChange = check
      check()
    })
  }

  /** A report from every worker without stopping them (after a GC when exposed). */
  async report(): Promise<WorkerReport[]> {
    const replies = this.members.map((m) => this.next(m, 'report', 30_000))
    for (const m of this.members) this.post(m, { t: 'report' })
    return (await Promise.all(replies)).map((r) => r.report)
  }

  /** Stops every worker and returns their final reports; kills any that do not exit. */
  async stop(): Promise<WorkerReport[]> {
    const replies = this.members.map((m) => this.next(m, 'result', 30_000))
    for (const m of this.members) this.post(m, { t: 'stop' })
    try {
      return (await Promise.all(replies)).map((r) => r.report)
    } finally {
      await Promise.all(this.members.map(async (m) => {
        const t = setTimeout(() => m.proc.kill('SIGKILL'), 10_000)
        await m.exited
        clearTimeout(t)
      }))
    }
  }

  kill(): void {
    for (const m of this.members) if (m.proc.exitCode === null) m.proc.kill('SIGKILL')
  }
}
