// Loads agent definitions from a user's module (TypeScript or JavaScript).
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { isAgentDefinition, type AgentDefinition } from '../agent.ts'
import { TroupeError } from '../errors.ts'

/** Every agent a module exports (named exports, a default export, or arrays of them). */
export async function loadAgents(file: string): Promise<AgentDefinition[]> {
  const path = resolve(file)
  if (!existsSync(path)) throw new TroupeError('config', `agents module not found: ${path}`)
  let mod: Record<string, unknown>
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
  } catch (err) {
    throw new TroupeError('config', `cannot load agents module ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const found = new Map<string, AgentDefinition>()
  const visit = (v: unknown): void => {
    if (isAgentDefinition(v)) found.set(v.name, v)
    else if (Array.isArray(v)) v.forEach(visit)
  }
  Object.values(mod).forEach(visit)
  if (found.size === 0) throw new TroupeError('config', `${path} exports no agents (export the values returned by defineAgent)`)
  return [...found.values()]
}
