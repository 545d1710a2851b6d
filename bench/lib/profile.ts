// Reads the V8 CPU profiles that `--profile` makes the worker processes write and
// answers "where does the time go": self time per function and per module (a
// package under node_modules, or a file of ours), as a share of all samples.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}
interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface ProfileSummary {
  dir: string
  totalMs: number
  functions: { name: string; pct: number }[]
  modules: { name: string; pct: number }[]
  /** Our own functions (runtime/, agents/) by inclusive time: what they and their callees cost. */
  ours: { name: string; pct: number }[]
  /** Packages by inclusive time: e.g. everything under ioredis, whoever called it. */
  packages: { name: string; pct: number }[]
}

function moduleOf(url: string): string {
  if (!url) return '(native / idle / gc)'
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (nm) return nm[1] ?? url
  if (url.startsWith('node:')) return url
  const ours = /\/(runtime|bench|agents)\/(.+)$/.exec(url)
  return ours ? `${ours[1]}/${ours[2]}` : url
}

/** Summarises every `.cpuprofile` in `dir` together (one scenario's worker processes). */
export function summarizeProfiles(dir: string, top = 15): ProfileSummary {
  const selfUs = new Map<string, number>()
  const perModule = new Map<string, number>()
  const inclusive = new Map<string, number>()
  const packages = new Map<string, number>()
  let total = 0
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.cpuprofile')) continue
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile
    const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]))
    const parent = new Map<number, number>()
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    p.samples.forEach((id, i) => {
      const dt = p.timeDeltas[i] ?? 0
      const cf = byId.get(id)
      if (!cf) return
      // The idle node is the event loop waiting: not work, leave it out of the shares.
      if (cf.functionName === '(idle)') return
      total += dt
      const file = cf.url.replace(/^file:\/\//, '')
      const name = `${cf.functionName || '(anonymous)'} ${moduleOf(file)}:${cf.lineNumber + 1}`
      selfUs.set(name, (selfUs.get(name) ?? 0) + dt)
      const m = moduleOf(file)
      perModule.set(m, (perModule.get(m) ?? 0) + dt)
      const onStack = new Set<string>()
      const pkgs = new Set<string>()
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const f = byId.get(at)
        if (!f) continue
        if (f.url.includes('node_modules')) pkgs.add(moduleOf(f.url))
        else if (/\/(runtime|agents)\//.test(f.url)) onStack.add(`${f.functionName || '(anonymous)'} ${moduleOf(f.url.replace(/^file:\/\//, ''))}`)
      }
      for (const k of onStack) inclusive.set(k, (inclusive.get(k) ?? 0) + dt)
      for (const k of pkgs) packages.set(k, (packages.get(k) ?? 0) + dt)
    })
  }
  const rank = (m: Map<string, number>): { name: string; pct: number }[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({ name, pct: total > 0 ? (us / total) * 100 : 0 }))
  return { dir, totalMs: total / 1000, functions: rank(selfUs), modules: rank(perModule), ours: rank(inclusive), packages: rank(packages) }
}

/** Sub-directories of `root` holding profiles, one per profiled run. */
export function profileDirs(root: string): string[] {
  // Sections that profile nothing (an --only without workers) leave no directory.
  if (!existsSync(root)) return []
  return readdirSync(root).map((d) => join(root, d)).filter((d) => statSync(d).isDirectory()).sort()
}
