import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'

export const metricsRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { registry } = ctx.metrics
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics of the server (viewer role)',
        description: 'faultline_server_*: agents connected and known, runs and records by status, link messages in/out and rejected, halt duration, event stream clients, and the process.',
        response: { 200: Type.String({ description: 'Prometheus text exposition format' }), ...errors },
      },
    },
    async (_req, reply) => {
      reply.type(registry.contentType)
      return registry.metrics()
    },
  )
}
