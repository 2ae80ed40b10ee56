import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors } from '../../protocol/errors.js'
import {
  CreateInjectionBodySchema,
  CreateInjectionReplySchema,
  InjectionListSchema,
  InjectionSchema,
  InjectionStatusSchema,
} from '../../protocol/injection.js'
import { checkRequest } from '../../protocol/explain.js'
import type { Injector } from '../lifecycle/injector.js'


const IdParams = Type.Object({ id: Type.String({ maxLength: 80 }) })

export const injectionRoutes: FastifyPluginAsyncTypebox<{ injector: Injector }> = async (app, { injector }) => {
  app.post(
    '/v1/injections',
    {
      schema: {
        summary: 'Inject a fault',
        description:
          'Resolves the target, journals the plan, applies it and answers with the active injection (201), or with ' +
          '{ injections: [...] } when the selector matched several targets. Posting the same id with the same spec again ' +
          'answers 200 with the existing injection; the same id with a different spec is 409. dryRun answers 200 with ' +
          'the plan and changes nothing.',
        body: CreateInjectionBodySchema,
        response: { 200: CreateInjectionReplySchema, 201: CreateInjectionReplySchema, ...errors },
      },
      preValidation: async (req) => checkRequest(req.body, 'agent'),
    },
    async (req, reply) => {
      const { created, injections } = await injector.create(req.body, { who: req.who, address: req.ip })
      reply.status(created && !req.body.dryRun ? 201 : 200)
      return injections.length === 1 ? injections[0]! : { injections }
    },
  )

  app.get(
    '/v1/injections',
    {
      schema: {
        summary: 'List injections, newest first',
        querystring: Type.Object(
          {
            status: Type.Optional(InjectionStatusSchema),
            limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$', description: 'At most this many (default 1000)' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: InjectionListSchema, ...errors },
      },
    },
    async (req) => ({
      injections: injector.list(req.query.status, req.query.limit ? Math.max(1, Number(req.query.limit)) : undefined),
    }),
  )

  app.get(
    '/v1/injections/:id',
    { schema: { summary: 'One injection', params: IdParams, response: { 200: InjectionSchema, ...errors } } },
    async (req) => injector.get(req.params.id),
  )

  app.delete(
    '/v1/injections/:id',
    {
      schema: {
        summary: 'Recover one injection (idempotent)',
        params: IdParams,
        response: { 200: InjectionSchema, ...errors },
      },
    },
    async (req) => injector.recover(req.params.id, 'api'),
  )

  app.delete(
    '/v1/injections',
    {
      schema: {
        summary: 'Recover every injection on this host (halt)',
        response: {
          200: Type.Object({
            injections: Type.Array(InjectionSchema),
            failed: Type.Array(Type.Object({ id: Type.String(), error: Type.String() })),
          }),
          ...errors,
        },
      },
    },
    async () => injector.recoverAll('halt'),
  )
}
