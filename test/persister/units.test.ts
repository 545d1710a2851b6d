// The persister's pure pieces: pointer parsing and merging, sortable stream keys,
// cutting batches into transactions, the adaptive read size, backoff, the
// causal tree (including a hostile parent cycle), and the checks of its options.
import { describe, expect, it } from 'vitest'
import { backoffMs } from '../../agents/persister.ts'
import { MAX_TIMER_MS } from '../../runtime/config.ts'
import { TroupeError } from '../../runtime/errors.ts'
import { AdaptiveSize } from '../../runtime/persister/batch.ts'
import { planTransactions, type WorkflowPart } from '../../runtime/persister/graph.ts'
import { causalTree, treeDepth, type HistoryEvent } from '../../runtime/persister/history.ts'
import { resolvePersisterOptions, type PersisterOptions } from '../../runtime/persister/options.ts'
import { coalesce, isParked, parsePointer, streamKey, type Pointer } from '../../runtime/persister/pointers.ts'
import { eventRow, workflowRows } from '../../runtime/persister/rows.ts'
import { dueForTrim, nextStreamId, trimSlack } from '../../runtime/persister/trim.ts'

describe('pointers', () => {
  it('parses good entries and names what is wrong with bad ones', () => {
    expect(parsePointer({ id: '1-0', fields: ['wf', 'abc', 'from', '5-0', 'to', '5-3'] })).toEqual({ entryId: '1-0', wf: 'abc', from: '5-0', to: '5-3' })
    const reason = (fields: string[]): string => {
      const p = parsePointer({ id: '1-1', fields })
      return isParked(p) ? p.reason : 'ok'
    }
    expect(reason(['wf', 'abc'])).toBe('missing_fields')
    expect(reason([])).toBe('missing_fields')
    expect(reason(['wf', 'a{b}', 'from', '1', 'to', '2'])).toBe('bad_workflow_id')
    expect(reason(['wf', 'abc', 'from', 'x', 'to', '2'])).toBe('bad_range')
    expect(reason(['wf', 'abc', 'from', '3-0', 'to', '2-9'])).toBe('bad_range')
  })

  it('merges the pointers of one workflow into one range', () => {
    const p = (entryId: string, wf: string, from: string, to: string): Pointer => ({ entryId, wf, from, to })
    const ranges = coalesce([p('1', 'a', '10-0', '10-2'), p('2', 'b', '11-0', '11-0'), p('3', 'a', '9-5', '9-9'), p('4', 'a', '12-0', '12-1')])
    expect(ranges.map((r) => [r.wf, r.from, r.to, r.pointers.length])).toEqual([['a', '9-5', '12-1', 3], ['b', '11-0', '11-0', 1]])
  })

  it('sorts stream keys like stream ids', () => {
    const ids = ['1700000000000-10', '1700000000000-9', '999999999999-99', '1700000000001-0']
    expect([...ids].sort((x, y) => (streamKey(x) < streamKey(y) ? -1 : 1))).toEqual(['999999999999-99', '1700000000000-9', '1700000000000-10', '1700000000001-0'])
  })
})

describe('rows and transactions', () => {
  const part = (wf: string, n: number, bytes = 10): WorkflowPart =>
    workflowRows({
      wf,
      entries: Array.from({ length: n }, (_, i) => ({ streamId: `1-${i}`, event: { id: `${wf}-${i}`, workflowId: wf, type: 't', content: 'x'.repeat(bytes), metadata: { actionId: `${wf}-a` } } })),
      status: { status: 'running' },
      lastId: `1-${n - 1}`,
      actions: new Map(),
    })

  it('keeps transactions under the event and byte limits, and spreads big batches', () => {
    const txs = planTransactions([part('a', 7), part('b', 3), part('c', 12)], 5, 1e9)
    expect(txs.map((t) => t.groups.reduce((s, g) => s + g.events.length, 0))).toEqual([5, 5, 5, 5, 2])
    for (const t of txs) for (const g of t.groups) expect(t.workflows.some((w) => w.id === g.wf)).toBe(true)
    // The actions of a split workflow go with its first piece only.
    expect(txs.flatMap((t) => t.actions.map((a) => a.id)).sort()).toEqual(['a-a', 'b-a', 'c-a'])
    expect(planTransactions([part('big', 3, 4000)], 100, 5000)).toHaveLength(2)
    expect(planTransactions([part('a', 300), part('b', 300)], 5000, 1e9, 2)).toHaveLength(2)
    expect(planTransactions([part('a', 30), part('b', 30)], 5000, 1e9, 2)).toHaveLength(1)
  })

  it('derives a stable id for events without one, and never makes an event its own parent', () => {
    const e = eventRow('wf', { streamId: '5-1', event: { id: '', workflowId: 'wf', type: 'x', content: { a: 1 }, parentId: '' } })
    expect(e.id).toBe('wf:5-1')
    expect(e.parentId).toBeNull()
    expect(eventRow('wf', { streamId: '5-2', event: { id: 'me', workflowId: 'wf', type: 'x', content: null, parentId: 'me' } }).parentId).toBeNull()
    expect(e.createdAt.toNumber()).toBe(5)
  })
})

describe('control', () => {
  it('grows the read size under a backlog and shrinks it when writes get slow', () => {
    const s = new AdaptiveSize(50, 2000, 500)
    for (let i = 0; i < 10; i++) s.observe(s.value, s.value, 100)
    expect(s.value).toBe(2000)
    s.observe(2000, 2000, 1500)
    expect(s.value).toBe(1000)
    s.observe(1000, 10, 50)
    expect(s.value).toBe(1000)
  })

  it('backs off exponentially within its bounds', () => {
    expect(backoffMs(1, 200, 10_000, () => 1)).toBe(200)
    expect(backoffMs(3, 200, 10_000, () => 1)).toBe(800)
    expect(backoffMs(50, 200, 10_000, () => 1)).toBe(10_000)
    expect(backoffMs(50, 200, 10_000, () => 0)).toBe(200)
  })
})

describe('causal tree', () => {
  const ev = (id: string, parentId: string | null): HistoryEvent => ({ id, type: id, content: null, metadata: {}, createdAt: 0, streamId: '0-0', agent: null, actionId: null, parentId })

  it('nests children under parents in stream order and measures depth', () => {
    const roots = causalTree([ev('a', null), ev('b', 'a'), ev('c', 'b'), ev('d', 'a'), ev('e', 'missing')])
    expect(roots.map((r) => r.event.id)).toEqual(['a', 'e'])
    expect(roots[0]?.children.map((c) => c.event.id)).toEqual(['b', 'd'])
    expect(treeDepth(roots)).toBe(3)
  })

  it('cuts a parent cycle instead of looping', () => {
    const roots = causalTree([ev('x', 'y'), ev('y', 'x'), ev('z', null)])
    const seen: string[] = []
    const walk = (ns: typeof roots): void => ns.forEach((n) => (seen.push(n.event.id), walk(n.children)))
    walk(roots)
    expect(seen.sort()).toEqual(['x', 'y', 'z'])
    expect(treeDepth(roots)).toBe(2)
  })
})

describe('options', () => {
  const VARS = ['TROUPE_PERSISTER_CLAIM_IDLE_MS', 'TROUPE_RECONCILE_MS', 'TROUPE_RETENTION_MS'] as const
  /** The config error `resolvePersisterOptions` throws with `env` set (and the others of VARS unset), or null. */
  const refusal = (env: Partial<Record<(typeof VARS)[number], string>>, opts: PersisterOptions = {}): string | null => {
    const saved = VARS.map((k) => [k, process.env[k]] as const)
    for (const k of VARS) delete process.env[k]
    Object.assign(process.env, env)
    try {
      resolvePersisterOptions(opts)
      return null
    } catch (err) {
      expect(err).toBeInstanceOf(TroupeError)
      expect((err as TroupeError).code).toBe('config')
      return (err as Error).message
    } finally {
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  }

  it('takes durations only as whole milliseconds that Node can time, naming the variable or flag', () => {
    // Accepted as before.
    expect(refusal({ TROUPE_PERSISTER_CLAIM_IDLE_MS: '1500', TROUPE_RECONCILE_MS: '0' })).toBeNull()
    expect(refusal({}, { claimIdleMs: MAX_TIMER_MS, reconcileMs: MAX_TIMER_MS, backoffMaxMs: MAX_TIMER_MS })).toBeNull()
    // A fraction made every claim fail in Redis; past MAX_TIMER_MS Node fires a timer after 1 ms.
    expect(refusal({ TROUPE_PERSISTER_CLAIM_IDLE_MS: '1500.5' })).toMatch(/^TROUPE_PERSISTER_CLAIM_IDLE_MS=1500\.5 must be a whole number of milliseconds/)
    expect(refusal({ TROUPE_RECONCILE_MS: '2.5' })).toMatch(/^TROUPE_RECONCILE_MS=2\.5 must be a whole number/)
    expect(refusal({ TROUPE_RECONCILE_MS: String(MAX_TIMER_MS + 1) })).toMatch(/^TROUPE_RECONCILE_MS=2147483648 must be .* to 2147483647/)
    expect(refusal({ TROUPE_PERSISTER_CLAIM_IDLE_MS: '-5' })).toMatch(/^TROUPE_PERSISTER_CLAIM_IDLE_MS=-5 /)
    expect(refusal({ TROUPE_PERSISTER_CLAIM_IDLE_MS: '0' })).toMatch(/claimIdleMs \(--claim-idle \/ --persister-claim-idle, TROUPE_PERSISTER_CLAIM_IDLE_MS\) must be a whole number of milliseconds, from 1/)
    expect(refusal({ TROUPE_RETENTION_MS: '1.5' })).toMatch(/^TROUPE_RETENTION_MS=1\.5 /)
    // From code or a flag (`--claim-idle 30d` is past the limit).
    expect(refusal({}, { claimIdleMs: 1500.5 })).toMatch(/claimIdleMs \(--claim-idle \/ --persister-claim-idle, TROUPE_PERSISTER_CLAIM_IDLE_MS\) .* \(got 1500\.5\)/)
    expect(refusal({}, { claimIdleMs: 30 * 86_400_000 })).toMatch(/claimIdleMs .* to 2147483647 \(got 2592000000\)/)
    expect(refusal({}, { reconcileMs: MAX_TIMER_MS + 1 })).toMatch(/reconcileMs \(--reconcile-every \/ --persister-reconcile-every, TROUPE_RECONCILE_MS\) must be a whole number of milliseconds, from 0 \(off\)/)
    for (const opts of [{ blockMs: 0.5 }, { backoffMinMs: 10.5 }, { backoffMaxMs: 2 ** 31 }, { reconcileSettleMs: -1 }, { targetWriteMs: Number.NaN }]) {
      expect(refusal({}, opts), JSON.stringify(opts)).toMatch(new RegExp(`^persister option ${Object.keys(opts)[0] ?? ''} must be a whole number of milliseconds`))
    }
    // Counts go to Redis as COUNT and MAXLEN, which refuse fractions.
    expect(refusal({}, { maxBatch: 2.5 })).toMatch(/maxBatch \(--batch \/ --persister-batch\) must be a positive whole number/)
    expect(refusal({}, { maxBytesPerRead: 0 })).toMatch(/maxBytesPerRead must be a positive whole number/)
  })

  it('holds about four transactions of events in memory per read unless told otherwise', () => {
    expect(resolvePersisterOptions({ maxBytesPerTx: 1000 }).maxBytesPerRead).toBe(4000)
    expect(resolvePersisterOptions({ maxBytesPerTx: 1000, maxBytesPerRead: 10 }).maxBytesPerRead).toBe(10)
  })
})

describe('trimming', () => {
  it('trims a stream once it passes the cap by a tenth, never with no cap', () => {
    expect(dueForTrim(11_000, 10_000)).toBe(false)
    expect(dueForTrim(11_001, 10_000)).toBe(true)
    expect(dueForTrim(22, 20)).toBe(false)
    expect(dueForTrim(23, 20)).toBe(true)
    expect(dueForTrim(3, 1)).toBe(true)
    expect(dueForTrim(1_000_000, 0)).toBe(false)
    // test/persister/trim.test.ts counts on a cap of 20 being trimmed past 22.
    expect(trimSlack(20)).toBe(2)
  })

  it('cuts right after the last entry to remove', () => {
    expect(nextStreamId('1700000000000-4')).toBe('1700000000000-5')
    expect(nextStreamId('5-18446744073709551614')).toBe('5-18446744073709551615')
    expect(nextStreamId('5-18446744073709551615')).toBe('6-0')
  })

  it('defaults the idle time that prunes a consumer to 20 claim times, at least 10 minutes', () => {
    expect(resolvePersisterOptions({}).pruneIdleMs).toBe(600_000)
    expect(resolvePersisterOptions({ claimIdleMs: 60_000 }).pruneIdleMs).toBe(1_200_000)
    expect(resolvePersisterOptions({ pruneIdleMs: 1000 }).pruneIdleMs).toBe(1000)
    expect(() => resolvePersisterOptions({ pruneIdleMs: 0 })).toThrow(/pruneIdleMs/)
  })
})
