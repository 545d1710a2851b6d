// Workflow deadlines (`troupe run --deadline 10m`): the leader leases passed entries
// of `system:deadlines`, fails each workflow with reason `deadline` through the
// same path as a cancel (queued actions dropped, running ones aborted over the
// control channel), then removes the entry. The cancel script refuses to end a
// workflow twice, so a deadline fires exactly once even when a deposed leader or
// a retry races the current one.
import type { TroupeClient } from '../client.ts'
import { describeFleetSettings } from '../config.ts'
import { TroupeError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { TERMINAL_STATUSES, type WorkflowStatusValue } from '../types.ts'
import type { LeaderFence } from './fence.ts'

/** Options of {@link deadlineDuty}. */
export interface DeadlineOptions {
  /** Entries handled per pass (the rest wait for the next tick). */
  batch: number
  /** How long a claimed entry stays hidden before it is retried (a leader died mid-way). */
  leaseMs: number
  /** While a pass claims a full batch, more passes follow until this long has gone (default 1 s). */
  maxMs?: number
}

/** One deadline handled in a pass. */
export interface DeadlineOutcome {
  wf: string
  due: number
  /**
   * `fired`: this pass failed the workflow; `ended`: it had already ended;
   * `missing`: no such workflow; `stale`: the id belongs to a later workflow
   * without a deadline (the first one's keys expired and the id was started
   * again); `rescheduled`: that later workflow's own deadline is still ahead;
   * `error`: retried later.
   */
  result: 'fired' | 'ended' | 'missing' | 'stale' | 'rescheduled' | 'error'
  dropped: number
}

/**
 * Fails every workflow whose deadline passed; returns what happened to each.
 * Passes of `batch` entries follow one another while they come back full, up
 * to `maxMs`: one pass per tick handled at most 50 entries a second at the
 * default tick, fewer than a busy fleet's workflows with deadlines end, and
 * a deadline that really passed waited behind the backlog.
 */
export async function deadlineDuty(fence: LeaderFence, client: TroupeClient, opts: DeadlineOptions, log: Logger, signal?: AbortSignal): Promise<DeadlineOutcome[]> {
  const until = Date.now() + (opts.maxMs ?? 1000)
  const out: DeadlineOutcome[] = []
  for (;;) {
    const { claimed, outcomes } = await deadlinePass(fence, client, opts, log, signal)
    out.push(...outcomes)
    if (claimed < opts.batch || signal?.aborted || Date.now() >= until) return out
  }
}

async function deadlinePass(fence: LeaderFence, client: TroupeClient, opts: DeadlineOptions, log: Logger, signal?: AbortSignal): Promise<{ claimed: number; outcomes: DeadlineOutcome[] }> {
  const claimed = await fence.claimDeadlines(opts.batch, opts.leaseMs)
  const out: DeadlineOutcome[] = []
  const done: string[] = []
  const later: { wf: string; at: number }[] = []
  // The status hash's deadline is Redis's clock (the enqueue script's TIME): compare with that, not ours.
  const [secs, micros] = claimed.length > 0 ? await client.redis.time() : [0, 0]
  const now = Number(secs) * 1000 + Math.floor(Number(micros) / 1000)
  for (const { wf, due } of claimed) {
    if (signal?.aborted) break
    let result: DeadlineOutcome['result'] = 'fired'
    let dropped = 0
    try {
      // The entry names a workflow id, and an id can be started again once the
      // first workflow's keys expired: the status says which deadline is live.
      const [status, deadline, error] = await client.redis.hmget(client.keys.status(wf), 'status', 'deadline', 'error')
      const at = Number(deadline)
      if (status === null) result = 'missing'
      else if (status === 'failed' && error === 'deadline') {
        result = 'ended'
        await abortAgain(client, wf)
      }
      // Ended by its own agents or a cancel before the deadline: nothing to enforce
      // (their entries are removed as they end, but one may have been missed).
      else if (TERMINAL_STATUSES.has(status as WorkflowStatusValue)) result = 'ended'
      else if (deadline === null || !Number.isFinite(at)) result = 'stale'
      else if (at > now) {
        // Its ZADD may have landed before this pass leased the entry away: put it back at its own due time.
        result = 'rescheduled'
        later.push({ wf, at })
      } else {
        // With the runtimes' persistence settings, should this supervisor's own differ
        // (refused, the deadline went unenforced); said, as the misconfiguration it is.
        const r = await client.cancelWorkflow(wf, 'deadline', 'failed', { adoptFleet: true })
        dropped = r.dropped
        if (r.adoptedFleet) {
          log.warn(`deadline of ${wf} enforced with the runtimes' settings (${describeFleetSettings(r.adoptedFleet)}), not this supervisor's: every process of a namespace must share TROUPE_PERSISTENCE, TROUPE_STREAM_MAXLEN and TROUPE_RETENTION_MS`)
        }
      }
    } catch (err) {
      // cancelWorkflow publishes the abort on "ended" too: it may answer our own cancel, run with its reply lost.
      if (err instanceof TroupeError && err.code === 'workflow_ended') result = 'ended'
      else if (err instanceof TroupeError && (err.code === 'workflow_not_found' || err.code === 'bad_id')) result = 'missing'
      else {
        result = 'error'
        log.warn(`deadline of ${wf} not enforced yet; retrying after ${opts.leaseMs} ms`, { error: err instanceof Error ? err.message : String(err) })
      }
    }
    if (result === 'fired') {
      await fence.publish({ type: 'system.deadline.fired', at: Date.now(), term: fence.term, leader: fence.serviceId, workflowId: wf, due, dropped })
    }
    if (result !== 'error' && result !== 'rescheduled') done.push(wf)
    out.push({ wf, due, result, dropped })
  }
  // Removed last: an entry still present means its workflow may not have been handled yet.
  if (done.length > 0) await fence.write([{ cmd: 'ZREM', key: fence.keys.deadlines(), args: done }])
  if (later.length > 0) await fence.write([{ cmd: 'ZADD', key: fence.keys.deadlines(), args: later.flatMap((l) => [l.at, l.wf]) }])
  return { claimed: claimed.length, outcomes: out }
}

/**
 * Publishes the abort of a workflow a deadline failed. The cancel that failed
 * it publishes its abort only after the cancel script: one whose reply was lost,
 * or whose follow-up writes failed, left the actions still running to run on
 * past the deadline. Runtimes abort what they run of an ended workflow, so a
 * repeat is harmless.
 */
async function abortAgain(client: TroupeClient, wf: string): Promise<void> {
  await client.redis.publish(client.keys.control(), JSON.stringify({ op: 'abort', wf, reason: 'deadline' }))
}
