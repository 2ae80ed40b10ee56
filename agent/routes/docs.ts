import type { StaticDocumentSpec } from '@fastify/swagger'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import Fastify from 'fastify'

/** Hop-by-hop and per-response headers the agent's own reply sets again. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'host'])

/**
 * The OpenAPI document and its browser UI under /docs. The document comes from @fastify/swagger
 * (registered at start, because it must see every route as it is added) and is built at the
 * first /docs/json or /docs/yaml request. The UI (@fastify/swagger-ui and @fastify/static, with
 * swagger-ui-dist's files) is loaded at the first request for it, in a small Fastify instance
 * of its own that this plugin forwards /docs and /docs/* to: an idle agent never holds it
 * (issue 18). Requests pass the agent's authentication and hooks first, as every route does;
 * what the UI does not know is the agent's usual 404.
 */
export async function docsRoutes(app: FastifyInstance) {
  app.get('/docs/json', { schema: { hide: true } }, async () => app.swagger())
  app.get('/docs/yaml', { schema: { hide: true } }, async (_req, reply) => reply.type('application/x-yaml').send(app.swagger({ yaml: true })))

  let ui: Promise<FastifyInstance> | undefined
  const loadUi = () => {
    ui ??= (async () => {
      const [{ default: swagger }, { default: swaggerUi }] = await Promise.all([import('@fastify/swagger'), import('@fastify/swagger-ui')])
      const instance = Fastify()
      // swagger-ui depends on @fastify/swagger: here it only holds the agent's document (the UI's
      // own /docs/json and /docs/yaml are never reached, the routes above answer first).
      await instance.register(swagger, { mode: 'static', specification: { document: app.swagger() as StaticDocumentSpec['document'] } })
      await instance.register(swaggerUi, { routePrefix: '/docs' })
      await instance.ready()
      return instance
    })().catch((err: unknown) => {
      ui = undefined
      throw err
    })
    return ui
  }

  app.addHook('onClose', async () => {
    const instance = await ui?.catch(() => undefined)
    await instance?.close()
  })

  async function forward(req: FastifyRequest, reply: FastifyReply) {
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !NOT_FORWARDED.has(name))) as Record<string, string | string[]>
    // Always a GET: on a HEAD, Fastify drops the body itself and keeps its length.
    const res = await (await loadUi()).inject({ method: 'GET', url: req.url, headers })
    if (res.statusCode === 404) return reply.callNotFound()
    for (const [name, value] of Object.entries(res.headers)) {
      if (!NOT_FORWARDED.has(name) && value !== undefined) reply.header(name, value)
    }
    // An empty body (a redirect, a 304) stays empty, without a content-type of its own.
    return reply.code(res.statusCode).send(res.rawPayload.length > 0 ? res.rawPayload : undefined)
  }
  app.get('/docs', { schema: { hide: true } }, forward)
  app.get('/docs/*', { schema: { hide: true } }, forward)
}
