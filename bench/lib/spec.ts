// The contract between the harness and its worker processes: what to host, and the
// messages they exchange over the IPC channel.
import type { WorkerReport } from './probe.ts'

export type System = 'troupe' | 'bullmq' | 'naive'

/** The flow's fan-out: each workflow is researched from this many angles, by every system. */
export const ANGLES = 3

/**
 * The flow's stages (planner, researcher, writer, reviewer): BullMQ runs one queue
 * per stage at the run's concurrency, Troupe one agent per stage (the researcher
 * stage as three agents sharing that concurrency), and the naive pattern gets as
 * many loops as the two have handler slots together: FLOW_STAGES × concurrency.
 */
export const FLOW_STAGES = 4

/**
 * What a worker process hosts:
 * - `noop`: one agent / queue whose handler does nothing but record its start;
 * - `flow`: planner → 3 researchers → writer → reviewer;
 * - `idle`: an agent that parks each workflow in a waiting state (memory of idle actors).
 */
export type Workload = 'noop' | 'flow' | 'idle'

export interface WorkerSpec {
  system: System
  workload: Workload
  redisUrl: string
  /** Key prefix of the run: Troupe namespace, BullMQ prefix, or the naive pattern's prefix. */
  prefix: string
  /**
   * Per agent / queue (Troupe, BullMQ; Troupe's three researcher agents share it)
   * or number of loops (naive: the harness passes FLOW_STAGES × the run's concurrency).
   */
  concurrency: number
  /** Troupe: feed `persistence:queue` (the default) or not. */
  persistence: boolean
  /** Write a CPU profile from `go` to `stop` (warm-up and measured window) into this folder. */
  profileDir?: string
}

/** A system's side of a worker process. */
export interface BenchWorker {
  /** Start consuming. */
  go(): Promise<void>
  /** Before the final report: wait for measurements still on their way (e.g. a completion event). */
  drain?(): Promise<void>
  /** Stop consuming and close connections. */
  stop(): Promise<void>
  /** Current values worth reporting next to the probe's (e.g. actors held in memory). */
  gauges?(): Record<string, number>
}

export type ToWorker = { t: 'go' } | { t: 'stop' } | { t: 'report' }

export type FromWorker =
  | { t: 'ready' }
  | { t: 'started' }
  | { t: 'progress'; done: number; at: number }
  | { t: 'report'; report: WorkerReport }
  | { t: 'result'; report: WorkerReport }
  | { t: 'error'; message: string }

/** Environment variable carrying the spec (JSON) to the worker process. */
export const SPEC_ENV = 'TROUPE_BENCH_WORKER'
