import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses } from '../../protocol/errors.js'
import { ResolvedTargetSchema, targetTypes } from '../../protocol/target.js'
import { discoverTargets } from '../targets/registry.js'
import type { TargetContext } from '../targets/types.js'

export const targetRoutes: FastifyPluginAsyncTypebox<{ targets: TargetContext }> = async (app, { targets }) => {
  app.get(
    '/v1/targets',
    {
      schema: {
        summary: 'Targets this agent can see (processes exclude PID 1, kernel threads and the agent)',
        querystring: Type.Object({ type: Type.Optional(Type.Enum(targetTypes)) }, { additionalProperties: false }),
        response: { 200: Type.Object({ targets: Type.Array(ResolvedTargetSchema) }), ...ErrorResponses },
      },
    },
    async (req) => {
      const types = req.query.type ? [req.query.type] : targetTypes
      const lists = await Promise.all(types.map((type) => discoverTargets(type, targets)))
      return { targets: lists.flat() }
    },
  )
}
