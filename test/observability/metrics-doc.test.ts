// docs/metrics.md against the code that registers the metrics: the generated
// tables must be current, and every troupe_* name the page mentions (the
// hand-written checklist included) must be a metric some component registers.
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { generatedPart, metricGroups, METRICS_DOC, renderedDoc } from '../../scripts/metrics-doc.ts'

const doc = readFileSync(METRICS_DOC, 'utf8')
const registered = new Set(metricGroups().flatMap((g) => g.families.map((f) => f.name)))

describe('docs/metrics.md', () => {
  it('has the tables the code generates (run npx tsx scripts/metrics-doc.ts when this fails)', () => {
    expect(renderedDoc(doc)).toBe(doc)
    expect(doc).toContain(generatedPart())
  })

  it('names only metrics that exist, with base-unit and _total conventions', () => {
    // Names ending in "_" are prefixes (`troupe_cluster_*`), not metrics.
    const mentioned = new Set([...doc.matchAll(/\btroupe_[a-z0-9_]*[a-z0-9]\b/g)].map((m) => m[0]))
    expect([...mentioned].filter((n) => !registered.has(n)).sort()).toEqual([])
    for (const g of metricGroups()) {
      for (const f of g.families) {
        if (!f.name.startsWith('troupe_')) continue
        if (f.type === 'counter') expect(f.name, 'counters end in _total').toMatch(/_total$/)
        else expect(f.name, 'only counters end in _total').not.toMatch(/_total$/)
        expect(f.name, 'base units').not.toMatch(/_(ms|milliseconds|kb|mb)$/)
        expect(f.type, 'histograms, not summaries').not.toBe('summary')
        // Ids in labels would make every workflow or user a new series.
        expect(f.labels.filter((l) => /(^|_)(id|wf|workflow|user|action)$/.test(l)), `${f.name} labels`).toEqual([])
      }
    }
  })

  it('covers every item of DESIGN §8', () => {
    const required = [
      'troupe_actions_total', 'troupe_action_duration_seconds', 'troupe_queue_wait_seconds', 'troupe_activations_total',
      'troupe_lock_contention_total', 'troupe_fence_rejections_total', 'troupe_transitions_total', 'troupe_active_actors',
      'troupe_cluster_queue_depth', 'troupe_events_published_total', 'troupe_persister_batch_size', 'troupe_persister_write_seconds',
      'troupe_persister_lag_seconds', 'troupe_sse_connections', 'troupe_sse_dropped_total', 'troupe_auth_failures_total',
      'troupe_rate_limited_total', 'troupe_cluster_services', 'troupe_build_info', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_p99_seconds',
    ]
    expect(required.filter((n) => !registered.has(n))).toEqual([])
  })
})
