// V8's allocation-site pretenuring misjudges a runtime process. It watches how
// many objects of each allocation site survive a young-generation GC and, for
// sites where nearly all do, allocates later objects straight into the old
// generation. An activation's XState actor is made, used and dropped within
// milliseconds, yet some of its sites were judged long-lived early on (the
// first pick activates dozens of actors at once); from then on those objects
// were born old, died old, and kept every young object they pointed to alive
// through each scavenge, which then copied it into the old generation too. A
// cold action had 8 KB of its 66 KB promoted, and scavenge pauses were a fifth
// of the process's CPU. With pretenuring off: 3.5 KB promoted, and 15-25% less
// CPU per cold action and per workflow (`npm run bench:gc`; docs/benchmarks.md,
// 2026-12-06). Turning it off only changes where V8 first places objects.
import { setFlagsFromString } from 'node:v8'
import { TroupeError } from './errors.ts'

let tuned = false

/**
 * Whether a runtime process should turn pretenuring off: `TROUPE_GC_TUNING`
 * (`on`, the default, or `off`), unless the caller decided already.
 */
export function gcTuningFromEnv(raw: string | undefined): boolean {
  const v = (raw ?? 'on').trim().toLowerCase()
  if (['on', '1', 'true', 'yes', ''].includes(v)) return true
  if (['off', '0', 'false', 'no'].includes(v)) return false
  throw new TroupeError('config', `TROUPE_GC_TUNING=${raw ?? ''} must be on or off`)
}

/**
 * Turns V8's allocation-site pretenuring off for this whole process, once
 * (see the module comment for why). Returns true when this call changed it.
 * Call it before the process creates many actors: sites already judged
 * long-lived stay so.
 */
export function tuneGarbageCollector(): boolean {
  if (tuned) return false
  setFlagsFromString('--no-allocation-site-pretenuring')
  tuned = true
  return true
}
