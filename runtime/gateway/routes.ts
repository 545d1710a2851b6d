// Which methods a concrete path takes, for answering 405 instead of 404 when a
// known path is asked with the wrong method. Fastify's router looks routes up by
// pattern only, so the patterns are kept here as they are registered.

interface Pattern {
  segments: string[]
  methods: Set<string>
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

/**
 * The segments of a path (query string ignored), %-decoded as the router
 * decodes them. Empty segments are kept: the router does not collapse `//` or
 * ignore a trailing `/`, so neither may we (`/v1/agents/` is not `/v1/agents`).
 */
export function pathSegments(url: string): string[] {
  const q = url.indexOf('?')
  return (q < 0 ? url : url.slice(0, q)).split('/').map(decodeSegment)
}

/**
 * Whether a path is under /v1 in any spelling: escaped (`/%76%31/`), or with
 * extra slashes (`//v1/`) that a proxy in front may collapse. Such a path is
 * guarded like the API, so an unmatched one answers 401, not 404 or 405.
 */
export function isApiPath(url: string): boolean {
  return pathSegments(url).find((s) => s !== '') === 'v1'
}

function matches(pattern: readonly string[], path: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i] as string
    if (p === '*') return true
    const seg = path[i]
    if (seg === undefined) return false
    // Like the router, a parameter takes an empty segment too (the schema then refuses it).
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
      p = { segments: url.split('/'), methods: new Set() }
      this.patterns.set(url, p)
    }
    for (const m of Array.isArray(method) ? method : [method]) {
      p.methods.add(m.toUpperCase())
      if (head && m.toUpperCase() === 'GET') p.methods.add('HEAD')
    }
  }

  /** The methods some route takes at `path`, sorted; empty when no route matches it. */
  methodsFor(path: string): string[] {
    const segs = pathSegments(path)
    const out = new Set<string>()
    for (const p of this.patterns.values()) if (matches(p.segments, segs)) for (const m of p.methods) out.add(m)
    return [...out].sort()
  }
}
