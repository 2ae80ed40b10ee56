import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ServerContext } from '../context.js'
import { ErrorResponses as errors } from '../../protocol/errors.js'
import { RunSchema, RunSummarySchema } from '../../protocol/views.js'

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) })

export const runRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store, runs } = ctx

  app.get(
    '/v1/runs',
    {
      schema: {
        summary: 'Runs, newest first',
        querystring: Type.Object(
          { experiment: Type.Optional(Type.String({ maxLength: 63 })), limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ runs: Type.Array(RunSummarySchema) }), ...errors },
      },
    },
    async (req) => ({
      runs: store.runs(Math.max(1, Number(req.query.limit ?? 50)), req.query.experiment).map((r) => ({
        id: r.id,
        experiment: r.experiment,
        status: r.status,
        trigger: r.trigger,
        startedBy: r.startedBy,
        startedAt: new Date(r.startedAt).toISOString(),
        ...(r.endedAt ? { endedAt: new Date(r.endedAt).toISOString() } : {}),
      })),
    }),
  )

  app.get('/v1/runs/:id', { schema: { summary: 'A run: its status and one record per host and target', params: IdParams, response: { 200: RunSchema, ...errors } } }, async (req) =>
    runs.view(req.params.id),
  )

  app.post(
    '/v1/runs/:id/abort',
    {
      schema: {
        summary: 'Abort a run: every agent of the run recovers its injections now',
        description: 'Idempotent. Agents that are offline recover through their lease; the run ends once every record is final.',
        params: IdParams,
        response: { 200: RunSchema, ...errors },
      },
    },
    async (req) => runs.abort(req.params.id, req.who),
  )
}
