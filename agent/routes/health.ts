import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Registry } from 'prom-client'
import { Type } from 'typebox'
import { FAULTLINE_VERSION } from '../../common/version.js'

export const healthRoutes: FastifyPluginAsyncTypebox<{ registry: Registry }> = async (app, { registry }) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness: answers once the journal has been reconciled',
        response: { 200: Type.Object({ status: Type.Literal('ok'), version: Type.String(), pid: Type.Integer() }) },
      },
    },
    async () => ({ status: 'ok' as const, version: FAULTLINE_VERSION, pid: process.pid }),
  )

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: false } }, async (_req, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}
