// Loads agent definitions from a user's module (TypeScript or JavaScript).
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { isAgentDefinition, type AgentDefinition } from '../agent.ts'
import { TroupeError } from '../errors.ts'

/**
 * Every agent a module exports: named exports, a default export, arrays of
 * them, and the values of a plain object exported as default
 * (`export default { planner, writer }`, or a module loaded as CommonJS, whose
 * exports arrive as the default). The same definition exported twice counts
 * once; two different ones with the same name are refused, since only one of
 * them could be hosted under that name.
 */
export async function loadAgents(file: string): Promise<AgentDefinition[]> {
  const path = resolve(file)
  if (!existsSync(path)) throw new TroupeError('config', `agents module not found: ${path}`)
  let mod: Record<string, unknown>
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
  } catch (err) {
    throw new TroupeError('config', loadFailure(path, err), { cause: err })
  }
  const found = new Map<string, { def: AgentDefinition; where: string }>()
  const visit = (v: unknown, where: string, depth: number): void => {
    if (isAgentDefinition(v)) {
      const seen = found.get(v.name)
      if (!seen) found.set(v.name, { def: v, where })
      else if (seen.def !== v) throw new TroupeError('config', `${path} exports two different agents named '${v.name}' (${seen.where} and ${where}): give each its own name, or export one of them`)
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => visit(item, `${where}[${i}]`, depth))
    } else if (depth > 0 && isPlainObject(v)) {
      // Only under the default export (and its own default, CommonJS's
      // `exports.default`): a named export that is some other object is not
      // a collection of agents.
      for (const [k, item] of Object.entries(v)) visit(item, `${where}.${k}`, k === 'default' ? depth : depth - 1)
    }
  }
  for (const [k, v] of Object.entries(mod)) visit(v, k, k === 'default' ? 1 : 0)
  if (found.size === 0) throw new TroupeError('config', `${path} exports no agents (export the values returned by defineAgent)`)
  return [...found.values()].map((f) => f.def)
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false
  const proto = Object.getPrototypeOf(v) as unknown
  return proto === Object.prototype || proto === null
}

/**
 * The message for a module that failed to load: the error, where it was thrown
 * (the message alone rarely says which line of the module), and for what Node
 * refuses in a CommonJS package, the fix.
 */
export function loadFailure(path: string, err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err)
  // A syntax error's message already has the line (its stack is the compiler's).
  const frame = err instanceof Error && !msg.includes(`${path}:`) ? topFrame(err.stack ?? '', path) : undefined
  let text = `cannot load agents module ${path}: ${msg}${frame ? ` (at ${frame})` : ''}`
  const code = (err as { code?: unknown } | null)?.code
  // What a CommonJS package still cannot do: require an ES module in a cycle,
  // or (compiled to CommonJS) await at the top level.
  if (code === 'ERR_REQUIRE_CYCLE_MODULE' || code === 'ERR_REQUIRE_ESM' || /require\(\) (of )?ES Module|Top-level await is currently not supported with the "cjs" output format/i.test(msg)) {
    const pkg = nearestPackageJson(dirname(path))
    const fix = pkg ? `add "type": "module" to ${pkg}` : 'add a package.json with "type": "module" beside it'
    text += `\nhint: ${path} is a CommonJS module (${pkg ? `${pkg} does not say "type": "module"` : 'no package.json says "type": "module"'}) and what failed needs an ES module: ${fix}, or name the file .mts (.mjs for JavaScript)`
  }
  return text
}

/** The package.json that decides whether a module in `dir` is CommonJS (as Node looks for it). */
function nearestPackageJson(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    const p = join(d, 'package.json')
    if (existsSync(p)) return p
    if (dirname(d) === d) return undefined
  }
}

/**
 * The first stack frame in the module itself, else the first outside Node's
 * internals and the TypeScript loader and compiler, as file:line:column.
 */
function topFrame(stack: string, path: string): string | undefined {
  const frames: string[] = []
  for (const line of stack.split('\n')) {
    const m = /^\s+at (?:.*? \()?(.+?:\d+:\d+)\)?$/.exec(line)
    if (!m?.[1]) continue
    let loc = m[1]
    if (loc.startsWith('file://')) {
      const pos = /:\d+:\d+$/.exec(loc)?.[0] ?? ''
      try {
        loc = fileURLToPath(loc.slice(0, loc.length - pos.length)) + pos
      } catch {
        // Not a file URL after all: shown as it is.
      }
    }
    if (loc.startsWith('node:') || loc.startsWith('data:') || /[/\\]node_modules[/\\](tsx|esbuild)[/\\]/.test(loc)) continue
    frames.push(loc)
  }
  return frames.find((f) => f.startsWith(`${path}:`)) ?? frames[0]
}
