// Which methods a concrete path takes, for answering 405 instead of 404 when a
// known path is asked with the wrong method. Fastify's router looks routes up by
// pattern only, so the patterns are kept here as they are registered.

interface Pattern {
  segments: string[]
  methods: Set<string>
}

function split(path: string): string[] {
  return path.split('/').filter((s) => s !== '')
}

function matches(pattern: readonly string[], path: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i] as string
    if (p === '*') return true
    const seg = path[i]
    if (seg === undefined) return false
    if (!p.startsWith(':') && p !== seg) return false
  }
  return pattern.length === path.length
}

/** Route patterns (`/v1/workflows/:id`, `/ui/*`) and their methods, as registered. */
export class RouteTable {
  private readonly patterns = new Map<string, Pattern>()

  /** `head`: Fastify also answers HEAD for a GET (unless the route set `exposeHeadRoute: false`). */
  add(method: string | string[], url: string, head = true): void {
    let p = this.patterns.get(url)
    if (!p) {
      p = { segments: split(url), methods: new Set() }
      this.patterns.set(url, p)
    }
    for (const m of Array.isArray(method) ? method : [method]) {
      p.methods.add(m.toUpperCase())
      if (head && m.toUpperCase() === 'GET') p.methods.add('HEAD')
    }
  }

  /** The methods some route takes at `path`, sorted; empty when no route matches it. */
  methodsFor(path: string): string[] {
    const segs = split(path)
    const out = new Set<string>()
    for (const p of this.patterns.values()) if (matches(p.segments, segs)) for (const m of p.methods) out.add(m)
    return [...out].sort()
  }
}
