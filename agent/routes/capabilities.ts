import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { CapabilitiesSchema } from '../../protocol/capabilities.js'
import { ErrorResponses } from '../../protocol/errors.js'
import type { CapabilityStore } from '../capabilities/store.js'

export const capabilitiesRoutes: FastifyPluginAsyncTypebox<{ capabilities: CapabilityStore }> = async (app, { capabilities }) => {
  app.get(
    '/v1/capabilities',
    {
      schema: {
        summary: 'Host facts, probed kernel and tool features, and per-kind availability with reasons',
        querystring: Type.Object(
          { refresh: Type.Optional(Type.Enum(['true', 'false'], { description: 'Probe again instead of using the cached result' })) },
          { additionalProperties: false },
        ),
        response: { 200: CapabilitiesSchema, ...ErrorResponses },
      },
    },
    async (req) => (req.query.refresh === 'true' ? capabilities.refresh() : capabilities.get()),
  )
}
