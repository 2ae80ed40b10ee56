import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync } from 'fastify'

export interface DashboardOptions {
  /** The built dashboard (index.html, assets/); default dist/web of this package. */
  root?: string
}

/**
 * Only the server's own files and API: no inline script or style, no other origin, no framing.
 * (CodeMirror's styles arrive as constructed stylesheets, which style-src does not govern.)
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

/**
 * From the sources (server/plugins/) the repo's dist/web; compiled (dist/server/plugins/) the
 * dist/web beside it. A build is known by its build.json: the sources' web/ has an index.html
 * too, which is only the template.
 */
export function defaultWebRoot(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url))
  return [join(here, '..', '..', 'dist', 'web'), join(here, '..', '..', 'web')].find((dir) => existsSync(join(dir, 'build.json')))
}

/**
 * The dashboard at /: the files `npm run build` puts in dist/web, public (the page asks for a
 * token and sends it to the API; the files hold no secret). Hashed assets are cached for good,
 * index.html never without asking, and .gz copies are sent to browsers that take gzip. Without a
 * build the server still starts and / says how to make one.
 */
export const dashboardPlugin: FastifyPluginAsync<DashboardOptions> = async (app, opts) => {
  // Every route of this (encapsulated) plugin is public; the API's routes are not touched.
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), public: true }
  })
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('content-security-policy', DASHBOARD_CSP)
    reply.header('x-frame-options', 'DENY')
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
    return payload
  })

  const root = opts.root ?? defaultWebRoot()
  if (!root || !existsSync(join(root, 'index.html')) || !existsSync(join(root, 'assets'))) {
    app.log.warn({ root }, 'the dashboard is not built: / answers 404 until `npm run build` makes dist/web')
    app.get('/', { schema: { hide: true } }, async (_req, reply) =>
      reply.status(404).send({
        statusCode: 404,
        code: 'FAULTLINE_ERR_ROUTE_NOT_FOUND',
        error: 'Not Found',
        message: 'the dashboard is not built into dist/web: run npm run build (the API under /v1/ works without it)',
      }),
    )
    return
  }
  await app.register(fastifyStatic, {
    root,
    prefix: '/',
    // One route per file found at start, rather than a catch-all: unknown paths stay the API's 404.
    wildcard: false,
    index: ['index.html'],
    preCompressed: true,
    globIgnore: ['**/*.gz', 'build.json'],
    cacheControl: false,
    setHeaders(reply, path) {
      // Names under assets/ carry a hash of their content: a new build has new names.
      reply.header('cache-control', path.includes('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache')
    },
  })
}
