import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { ServerContext } from '../context.js'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import { RunSchema, RunSummarySchema } from '../../protocol/views.js'

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) })

export const runRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store, runs } = ctx

  app.get(
    '/v1/runs',
    {
      schema: {
        summary: 'Runs, newest first',
        description:
          'status=open: pending or running; status=finished: completed, aborted or failed. Page with before=<the id of the last run of the previous page>: ' +
          'the runs that come after it (newest first, by start time).',
        querystring: Type.Object(
          {
            experiment: Type.Optional(Type.String({ maxLength: 63 })),
            limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
            status: Type.Optional(Type.Enum(['open', 'finished'] as const)),
            before: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'A run id: only runs started before it' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ runs: Type.Array(RunSummarySchema) }), ...errors },
      },
    },
    async (req) => {
      const q = req.query
      const before = q.before !== undefined ? store.getRun(q.before) : undefined
      if (q.before !== undefined && !before) throw new FaultlineError('FAULTLINE_ERR_RUN_NOT_FOUND', `no run "${q.before}" to page from; before takes the id of a run of the previous page`)
      return {
        runs: store.runs(Math.max(1, Number(q.limit ?? 50)), q.experiment, { ...(q.status ? { status: q.status } : {}), ...(before ? { before } : {}) }).map((r) => ({
          id: r.id,
          experiment: r.experiment,
          status: r.status,
          trigger: r.trigger,
          startedBy: r.startedBy,
          startedAt: new Date(r.startedAt).toISOString(),
          ...(r.endedAt ? { endedAt: new Date(r.endedAt).toISOString() } : {}),
        })),
      }
    },
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

  app.post(
    '/v1/runs/:id/rerun',
    {
      schema: {
        summary: 'Run again: a new run with the experiment as this run had it',
        description:
          'The spec kept with the run is used, even when the experiment was changed or deleted since; the hosts are picked anew among the connected ones. ' +
          'Trigger api; the run.started event says which run it repeats. One run of an experiment at a time (409 FAULTLINE_ERR_RUN_ACTIVE).',
        params: IdParams,
        response: { 201: Type.Object({ id: Type.String() }), ...errors },
      },
    },
    async (req, reply) => {
      const run = runs.rerun(req.params.id, req.who)
      reply.status(201)
      return { id: run.id }
    },
  )
}
