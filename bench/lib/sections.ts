// Section 5: the persister's and the gateway's own benchmarks live next to this
// harness (bench/persister.ts, bench/sse.ts, written with those components). The
// harness calls each one when its file exists and what it needs is reachable, and
// otherwise says why the section was skipped.
import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** A section measured by another component's benchmark: its numbers, or why it did not run. */
export interface ExternalSection {
  ran: boolean
  reason: string
  numbers: Record<string, number | string>
}

interface SectionSpec {
  /** File under bench/, e.g. `persister.ts`. */
  file: string
  /** The exported function to call with the options below. */
  exportName: string
  /** Environment variables it needs, with the hint shown when one is missing. */
  needs: Record<string, string>
}

export const PERSISTER: SectionSpec = {
  file: 'persister.ts',
  exportName: 'benchPersister',
  needs: { NEO4J_URI: 'run `npm run bench`, which starts Neo4j (or point NEO4J_URI at one)' },
}

export const SSE: SectionSpec = { file: 'sse.ts', exportName: 'benchSse', needs: {} }

/** Flattens nested numbers and strings into `a.b.c` keys for one table. */
function flatten(v: unknown, prefix: string, out: Record<string, number | string>): void {
  if (typeof v === 'number' || typeof v === 'string') out[prefix || 'value'] = v
  else if (typeof v === 'boolean') out[prefix || 'value'] = String(v)
  else if (Array.isArray(v)) v.forEach((x, i) => flatten(x, prefix ? `${prefix}.${i}` : String(i), out))
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out)
}

/** Runs the section's benchmark, or explains why it cannot. */
export async function runSection(spec: SectionSpec, opts: { redisUrl: string; quick: boolean; log: (s: string) => void }): Promise<ExternalSection> {
  const path = fileURLToPath(new URL(`../${spec.file}`, import.meta.url))
  if (!existsSync(path)) return { ran: false, reason: `bench/${spec.file} does not exist yet (it comes with its component's issue).`, numbers: {} }
  for (const [name, hint] of Object.entries(spec.needs)) {
    if (!process.env[name]) return { ran: false, reason: `${name} is not set: ${hint}.`, numbers: {} }
  }
  const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
  const fn = mod[spec.exportName]
  if (typeof fn !== 'function') return { ran: false, reason: `bench/${spec.file} does not export ${spec.exportName}().`, numbers: {} }
  const numbers: Record<string, number | string> = {}
  const result: unknown = await (fn as (o: unknown) => unknown)({ redisUrl: opts.redisUrl, neo4jUri: process.env.NEO4J_URI, quick: opts.quick, log: opts.log })
  flatten(result, '', numbers)
  return { ran: true, reason: '', numbers }
}
