// A commit that sends work to a free actor must leave that actor a due ready
// hint, whatever another process does between the commit's pre-hint and the
// commit itself. Another client's command can land there when a pipelined write
// reaches Redis in pieces: a pick leases the pre-hint, activates the actor, finds
// its mailbox empty and deletes its lease on release. The soak found it as
// stranded workflows once work was handed to the local worker's pick (which
// writes no hint of its own). Here the write is cut in two at the commit, and
// the other process's pick, activate and release run in the gap.
import { afterAll, describe, expect, it } from 'vitest'
import type { Redis } from 'ioredis'
import { nanoid } from 'nanoid'
import { TroupeClient } from '../../runtime/index.ts'
import { activateOp, commit, parseActivation, pickActivate, releaseHintOp, type CommitArgs, type ProtocolContext } from '../../runtime/claims.ts'
import { execOps } from '../../runtime/redis/batch.ts'
import { runScript } from '../../runtime/redis/scripts.ts'
import { testConfig } from '../helpers/redis.ts'

const cfg = testConfig()
const sender = TroupeClient.connect(cfg)
const other = TroupeClient.connect(cfg)
const ctx: ProtocolContext = { redis: sender.redis, keys: sender.keys, cfg }
const otherCtx: ProtocolContext = { redis: other.redis, keys: other.keys, cfg }
const k = sender.keys
const LOCK = 'h'.repeat(32)

afterAll(async () => {
  await sender.close()
  await other.close()
})

/** Holds back the part of the next write on `ctx.redis` from the commit's EVALSHA on, until `release()`. */
function splitNextWriteAtCommit(): { firstPartSent: Promise<void>; release: () => void } {
  const socket = (ctx.redis as Redis).stream
  const write = socket.write.bind(socket) as (...a: unknown[]) => boolean
  let release: () => void = () => undefined
  let sent: () => void = () => undefined
  const firstPartSent = new Promise<void>((r) => (sent = r))
  const held = new Promise<void>((r) => (release = r))
  socket.write = ((...a: unknown[]) => {
    socket.write = write
    const data = a[0]
    const text = typeof data === 'string' ? data : String(data)
    // The pre-hint ZADD (and any SCRIPT LOAD) comes before the commit's EVALSHA; cut at the first EVALSHA command.
    const at = text.lastIndexOf('*', text.indexOf('$7\r\nevalsha\r\n'))
    if (at <= 0) throw new Error('expected a pre-hint before the commit in one write')
    write(text.slice(0, at))
    sent()
    void held.then(() => write(text.slice(at)))
    return true
  })
  return { firstPartSent, release: () => release() }
}

describe('the hint of work a commit sends', () => {
  it('stays due when a pick took and released the pre-hint before the commit ran', async () => {
    const { workflowId: wf } = await sender.startWorkflow({ agent: 'counter', type: 'ping', payload: { i: 1 }, validate: false })
    // The sender's actor, activated as a worker would (its hint leased far ahead).
    const lease = Date.now() + 60_000
    await sender.redis.zadd(k.ready('counter'), lease, wf)
    const op = activateOp(ctx, wf, 'counter', LOCK, 16)
    const act = parseActivation(await runScript(ctx.redis, op.script, op.keys, op.args))
    if (act.code !== 'ok') throw new Error(`not activated: ${act.code}`)
    const claimed = act.batch[0]
    if (!claimed) throw new Error('nothing claimed')
    const sentId = nanoid()
    const record = JSON.stringify({ id: sentId, workflowId: wf, agent: 'echo', type: 'echo', payload: { text: 'x' }, from: 'counter', parentId: claimed.actionId, eventId: nanoid(), enqueuedAt: Date.now() })
    const args: CommitArgs = {
      wf, agent: 'counter', fence: act.fence, lockValue: LOCK, snapshot: '', stateValue: '', version: 1, op: '', opPayload: '', release: false, batch: 1, eventBase: 'ph.0',
      results: [{
        actionId: claimed.actionId, outcome: 'ok', error: '', retryDelayMs: 0, parentEventId: '', durationMs: 1, attempt: 1, events: [],
        outbox: [{ to: 'echo', actionId: sentId, record, delayMs: 0, eventId: nanoid() }],
      }],
      settle: { lease, rerunLease: null },
    }
    const split = splitNextWriteAtCommit()
    const committing = commit(ctx, args)
    await split.firstPartSent
    // The pre-hint has landed: another process's pick takes it and activates echo, whose mailbox is still empty.
    const until = Date.now() + 2000
    while (Number(await other.redis.zscore(k.ready('echo'), wf)) === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5))
    const picked = await pickActivate(otherCtx, 'echo', 10, 'p'.repeat(28), 16, [])
    const mine = picked.picked.find((p) => p.wf === wf)
    expect(mine?.activation).toMatchObject({ code: 'idle' })
    // Its release deletes its lease: the pre-hint is gone.
    const [[err, changed] = [null, null]] = await execOps(other.redis, [releaseHintOp(otherCtx, 'echo', wf, mine?.lease ?? 0, null)])
    expect(err).toBeNull()
    expect(Number(changed)).toBe(1)
    expect(await other.redis.zscore(k.ready('echo'), wf)).toBeNull()
    // Now the commit runs: it adds the work, and the actor is free.
    split.release()
    const res = await committing
    expect(res.hints.map((h) => h.agent)).toEqual(['echo'])
    expect((await (other.redis as Redis).zrange(k.mailbox(wf, 'echo'), '0', '-1')).some((m) => m.endsWith(`:${sentId}`))).toBe(true)
    // Whatever the caller does next (a hand-off writes no hint), the work has a due hint.
    const score = await other.redis.zscore(k.ready('echo'), wf)
    expect(score).not.toBeNull()
    expect(Number(score)).toBeLessThanOrEqual(Date.now())
  })
})
