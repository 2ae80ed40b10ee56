import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import { ExperimentSchema, type Experiment } from '../../protocol/experiment.js'
import { checkExperimentRequest } from '../../protocol/explain.js'
import type { ServerContext } from '../context.js'
import { checkExperiment } from '../experiment-checks.js'
import { checkExperimentYaml, type CompiledValidator } from '../experiment-yaml.js'
import { ExperimentCheckSchema, ExperimentPlanSchema, ExperimentViewSchema, type ExperimentView } from '../../protocol/views.js'
import type { ExperimentRow } from '../store.js'

const NameParams = Type.Object({ name: Type.String({ maxLength: 63 }) })

/** The largest experiment POST /v1/experiments/check reads. */
const MAX_CHECK_BYTES = 64 * 1024

export const experimentRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store, runs, scheduler } = ctx
  const view = (row: ExperimentRow): ExperimentView => {
    const next = scheduler.nextRun(row.name)
    const last = store.runs(1, row.name)[0]
    return {
      name: row.name,
      spec: row.spec,
      createdAt: new Date(row.createdAt).toISOString(),
      updatedAt: new Date(row.updatedAt).toISOString(),
      updatedBy: row.updatedBy,
      ...(next ? { nextRunAt: next.toISOString() } : {}),
      ...(last
        ? {
            lastRun: {
              id: last.id,
              experiment: last.experiment,
              status: last.status,
              trigger: last.trigger,
              startedBy: last.startedBy,
              startedAt: new Date(last.startedAt).toISOString(),
              ...(last.endedAt ? { endedAt: new Date(last.endedAt).toISOString() } : {}),
            },
          }
        : {}),
    }
  }

  app.post(
    '/v1/experiments',
    {
      schema: {
        summary: 'Create or replace an experiment (JSON, or YAML with content-type application/yaml)',
        body: ExperimentSchema,
        response: { 200: ExperimentViewSchema, 201: ExperimentViewSchema, ...errors },
      },
      preValidation: async (req) => checkExperimentRequest(req.body),
    },
    async (req, reply) => {
      const spec = req.body
      const warnings = checkExperiment(spec, store.agents())
      const created = store.putExperiment(spec, req.who)
      scheduler.set(spec.name, spec.schedule)
      ctx.event('experiment.applied', `experiment ${spec.name} ${created ? 'created' : 'replaced'} by ${req.who}`, { data: { name: spec.name } })
      reply.status(created ? 201 : 200)
      return { ...view(store.getExperiment(spec.name)!), ...(warnings.length > 0 ? { warnings } : {}) }
    },
  )

  app.post(
    '/v1/experiments/check',
    {
      config: { role: 'operator', audit: false },
      schema: {
        summary: 'Check an experiment written in YAML, with the position of every problem; stores nothing',
        description:
          'As POST /v1/experiments checks it (field explanations, the schema, the checks made at apply), without storing it or asking an agent. ' +
          'Answers 200 { valid: true, experiment, warnings } or 200 { valid: false, issues: [{ path, message, line, column, endLine, endColumn }] } ' +
          '(1-based, of the YAML node the issue is about: the key of an unknown field, the nearest existing parent of a missing one). ' +
          'Not written to the audit log.',
        body: Type.Object({ yaml: Type.String({ maxLength: MAX_CHECK_BYTES, description: 'The experiment, as YAML (or JSON, which is YAML too); at most 64 KiB' }) }, { additionalProperties: false }),
        response: { 200: ExperimentCheckSchema, ...errors },
      },
    },
    async (req) => {
      if (Buffer.byteLength(req.body.yaml) > MAX_CHECK_BYTES) throw new FaultlineError('FAULTLINE_ERR_PAYLOAD_TOO_LARGE', `the experiment is larger than ${MAX_CHECK_BYTES / 1024} KiB`)
      // The validator Fastify compiles for the body of POST /v1/experiments: the same Ajv and options (defaults applied).
      const validate = req.compileValidationSchema(ExperimentSchema, 'body') as CompiledValidator
      return checkExperimentYaml(req.body.yaml, validate, store.agents())
    },
  )

  app.get('/v1/experiments', { schema: { summary: 'Every experiment', response: { 200: Type.Object({ experiments: Type.Array(ExperimentViewSchema) }), ...errors } } }, async () => ({
    experiments: store.experiments().map(view),
  }))

  app.get('/v1/experiments/:name', { schema: { summary: 'One experiment, with its last run and next scheduled run', params: NameParams, response: { 200: ExperimentViewSchema, ...errors } } }, async (req) => {
    const row = store.getExperiment(req.params.name)
    if (!row) throw new FaultlineError('FAULTLINE_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${req.params.name}"`)
    return view(row)
  })

  app.delete(
    '/v1/experiments/:name',
    {
      schema: {
        summary: 'Delete an experiment (its runs are kept; a run in progress goes on until it ends or is aborted)',
        params: NameParams,
        response: { 200: Type.Object({ deleted: Type.String() }), ...errors },
      },
    },
    async (req) => {
      if (!store.deleteExperiment(req.params.name)) throw new FaultlineError('FAULTLINE_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${req.params.name}"`)
      scheduler.set(req.params.name, undefined)
      ctx.event('experiment.deleted', `experiment ${req.params.name} deleted by ${req.who}`, { data: { name: req.params.name } })
      return { deleted: req.params.name }
    },
  )

  app.post(
    '/v1/plans',
    {
      schema: {
        summary: 'What an experiment would do, per host, without applying it or storing it',
        description:
          'Checks the experiment as apply does, then asks every connected agent it selects to plan the fault as a dry run ' +
          '(resolve the target, compute the plan, change nothing) and answers with each host\'s outcome. `faultline exp apply --dry-run`.',
        body: ExperimentSchema,
        response: { 200: ExperimentPlanSchema, ...errors },
      },
      preValidation: async (req) => checkExperimentRequest(req.body),
    },
    async (req) => runs.plan(req.body, checkExperiment(req.body, store.agents())),
  )

  app.post(
    '/v1/experiments/:name/plan',
    {
      schema: {
        summary: 'What a run of a stored experiment would do now, per host, without applying anything',
        description: 'As POST /v1/plans, for the experiment as stored. `faultline exp plan NAME`.',
        params: NameParams,
        response: { 200: ExperimentPlanSchema, ...errors },
      },
    },
    async (req) => {
      const row = store.getExperiment(req.params.name)
      if (!row) throw new FaultlineError('FAULTLINE_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${req.params.name}"; list them with "faultline exp ls"`)
      return runs.plan(row.spec, checkExperiment(row.spec, store.agents()))
    },
  )

  app.post(
    '/v1/experiments/:name/runs',
    {
      schema: {
        summary: 'Start a run now',
        description: 'Picks the hosts (mode among the connected matching agents), sends the injection to each and answers at once; follow it with GET /v1/runs/:id.',
        params: NameParams,
        response: { 201: Type.Object({ id: Type.String() }), ...errors },
      },
    },
    async (req, reply) => {
      const run = runs.start(req.params.name, req.who, 'api')
      reply.status(201)
      return { id: run.id }
    },
  )
}
