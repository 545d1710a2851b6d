// Serves the web UI: a few static files from ./ui, read once at start, with ETags
// and a strict Content-Security-Policy (no inline script or style: a cookie
// session must not be reachable by injected markup).
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, sendProblem } from './problem.ts'

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
}

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

interface Asset {
  body: Buffer
  type: string
  etag: string
}

function loadAssets(): Map<string, Asset> {
  const dir = new URL('./ui/', import.meta.url)
  const out = new Map<string, Asset>()
  for (const name of readdirSync(dir)) {
    const type = TYPES[name.slice(name.lastIndexOf('.') + 1)]
    if (!type) continue
    const body = readFileSync(new URL(name, dir))
    out.set(name, { body, type, etag: `"${createHash('sha1').update(body).digest('base64url').slice(0, 20)}"` })
  }
  return out
}

/** Registers `/` (the single page) and `/ui/<file>` (its script, styles, icon). */
export function registerUi(app: FastifyInstance): void {
  const assets = loadAssets()
  const serve = (name: string) => async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const a = assets.get(name)
    // Answered here: the not-found handler would see that /ui/:file is a route
    // and answer 405 (wrong method) for a file that simply is not there.
    if (!a) return sendProblem(new GatewayError('not_found', `no file ${request.url.split('?')[0] ?? ''}`), request, reply)
    void reply.headers({
      'content-type': a.type,
      etag: a.etag,
      // Revalidate every time: a 304 costs one round trip and deploys show at once.
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      ...(a.type.startsWith('text/html') ? { 'content-security-policy': CSP, 'x-frame-options': 'DENY' } : {}),
    })
    if (request.headers['if-none-match'] === a.etag) return reply.code(304).send()
    return reply.send(a.body)
  }
  app.get('/', { config: { public: true } }, serve('index.html'))
  app.get<{ Params: { file: string } }>('/ui/:file', { config: { public: true }, schema: { params: { type: 'object', properties: { file: { type: 'string', pattern: '^[a-z0-9-]+\\.(js|css|svg|html)$' } } } } }, (request, reply) =>
    serve(request.params.file)(request, reply),
  )
}
