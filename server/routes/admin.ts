import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { newSecret } from '../../common/tokens.js'
import { Type } from 'typebox'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'
import { newId } from '../../protocol/id.js'
import { ApiTokenSchema as TokenSchema, AuditEntrySchema, FleetEventSchema, RoleSchema } from '../../protocol/views.js'

const Cursor = Type.Object(
  {
    after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'Only rows with a larger id' })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: 'At most this many (default 100)' })),
  },
  { additionalProperties: false },
)

const iso = (ms: number) => new Date(ms).toISOString()

export const adminRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store } = ctx

  app.post(
    '/v1/tokens',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Create an API token; the secret is in this answer only',
        body: Type.Object(
          { name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$', description: 'Who or what uses it: appears in the audit log' }), role: RoleSchema },
          { additionalProperties: false },
        ),
        response: { 201: Type.Intersect([TokenSchema, Type.Object({ token: Type.String({ description: 'The secret: shown once, stored hashed' }) })]), ...errors },
      },
    },
    async (req, reply) => {
      const token = newSecret('flt_')
      const row = store.insertToken(newId(), req.body.name, req.body.role, token, req.who)
      ctx.event('token.created', `API token ${row.name} (${row.role}) created by ${req.who}`)
      reply.status(201)
      return { id: row.id, name: row.name, role: row.role, createdAt: iso(row.createdAt), createdBy: row.createdBy, token }
    },
  )

  app.get('/v1/tokens', { config: { role: 'admin' }, schema: { summary: 'API tokens (never their secrets)', response: { 200: Type.Object({ tokens: Type.Array(TokenSchema) }), ...errors } } }, async () => ({
    tokens: store.tokens().map((t) => ({
      id: t.id,
      name: t.name,
      role: t.role,
      createdAt: iso(t.createdAt),
      createdBy: t.createdBy,
      ...(t.lastUsedAt ? { lastUsedAt: iso(t.lastUsedAt) } : {}),
    })),
  }))

  app.delete(
    '/v1/tokens/:id',
    {
      config: { role: 'admin' },
      schema: { summary: 'Revoke an API token', params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: { 200: Type.Object({ deleted: Type.String() }), ...errors } },
    },
    async (req) => {
      if (!store.deleteToken(req.params.id)) throw new FaultlineError('FAULTLINE_ERR_TOKEN_NOT_FOUND', `no API token "${req.params.id}"`)
      ctx.event('token.revoked', `API token ${req.params.id} revoked by ${req.who}`)
      return { deleted: req.params.id }
    },
  )

  app.get(
    '/v1/audit',
    {
      schema: {
        summary: 'The audit log: every mutating call (and every refused one), oldest first',
        querystring: Cursor,
        response: {
          200: Type.Object({
            entries: Type.Array(AuditEntrySchema),
          }),
          ...errors,
        },
      },
    },
    async (req) => ({
      entries: store.auditLog(Number(req.query.after ?? 0), Math.max(1, Number(req.query.limit ?? 100))).map((e) => ({ ...e, at: iso(e.at) })),
    }),
  )

  app.get(
    '/v1/events',
    {
      schema: {
        summary: 'Fleet events, oldest first: agents connecting, runs starting and ending, records changing, guards, halts',
        description: 'Without "after", the latest events; poll with after=<last id> to follow.',
        querystring: Cursor,
        response: {
          200: Type.Object({
            events: Type.Array(FleetEventSchema),
          }),
          ...errors,
        },
      },
    },
    async (req) => ({
      events: store.events(req.query.after === undefined ? undefined : Number(req.query.after), Math.max(1, Number(req.query.limit ?? 100))).map((e) => ({
        id: e.id,
        at: iso(e.at),
        type: e.type,
        ...(e.agentId ? { agentId: e.agentId } : {}),
        ...(e.runId ? { runId: e.runId } : {}),
        message: e.message,
        ...(e.data !== null ? { data: e.data } : {}),
      })),
    }),
  )
}
