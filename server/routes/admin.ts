import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { newSecret } from '../../common/tokens.js'
import { FAULTLINE_VERSION } from '../../common/version.js'
import { Type } from 'typebox'
import { DURATION_PATTERN, formatDuration, parseDuration } from '../../protocol/duration.js'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'
import { newId } from '../../protocol/id.js'
import { ApiTokenSchema as TokenSchema, AuditEntrySchema, FleetEventSchema, RoleSchema, WhoamiSchema } from '../../protocol/views.js'
import type { TokenRow } from '../store.js'
import { auditEntryView, fleetEventView, iso } from '../views.js'

const after = Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'Only rows with a larger id' }))
const limit = Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: 'At most this many (default 100)' }))

/** The longest an API token may live. */
const MAX_TOKEN_LIFE_MS = 365 * 24 * 3_600_000

const outcomes = ['ok', 'error', 'forbidden', 'unauthenticated'] as const

const tokenView = (t: TokenRow) => ({
  id: t.id,
  name: t.name,
  role: t.role,
  createdAt: iso(t.createdAt),
  createdBy: t.createdBy,
  ...(t.lastUsedAt ? { lastUsedAt: iso(t.lastUsedAt) } : {}),
  ...(t.expiresAt !== null ? { expiresAt: iso(t.expiresAt) } : {}),
})

export const adminRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store } = ctx

  app.post(
    '/v1/tokens',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Create an API token; the secret is in this answer only',
        body: Type.Object(
          {
            name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$', description: 'Who or what uses it: appears in the audit log' }),
            role: RoleSchema,
            expiresIn: Type.Optional(Type.String({ pattern: DURATION_PATTERN, maxLength: 32, description: 'The token stops working after this long (at most 1 year, written 8760h), e.g. "8h"; default: never' })),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Intersect([TokenSchema, Type.Object({ token: Type.String({ description: 'The secret: shown once, stored hashed' }) })]), ...errors },
      },
    },
    async (req, reply) => {
      let expiresAt: number | null = null
      if (req.body.expiresIn !== undefined) {
        const lifeMs = parseDuration(req.body.expiresIn)
        if (lifeMs < 1_000 || lifeMs > MAX_TOKEN_LIFE_MS) {
          throw new FaultlineError('FAULTLINE_ERR_BAD_DURATION', `expiresIn ${req.body.expiresIn} is out of range: from 1s to 1 year (8760h)`)
        }
        expiresAt = Date.now() + lifeMs
      }
      const token = newSecret('flt_')
      const row = store.insertToken(newId(), req.body.name, req.body.role, token, req.who, expiresAt)
      const until = expiresAt !== null ? `, expires in ${formatDuration(expiresAt - row.createdAt)}` : ''
      ctx.event('token.created', `API token ${row.name} (${row.role}${until}) created by ${req.who}`, { data: { id: row.id } })
      reply.status(201)
      return { ...tokenView(row), token }
    },
  )

  app.get('/v1/tokens', { config: { role: 'admin' }, schema: { summary: 'API tokens (never their secrets)', response: { 200: Type.Object({ tokens: Type.Array(TokenSchema) }), ...errors } } }, async () => ({
    tokens: store.tokens().map(tokenView),
  }))

  app.delete(
    '/v1/tokens/:id',
    {
      config: { role: 'admin' },
      schema: { summary: 'Revoke an API token', params: Type.Object({ id: Type.String({ maxLength: 64 }) }), response: { 200: Type.Object({ deleted: Type.String() }), ...errors } },
    },
    async (req) => {
      const token = store.getToken(req.params.id)
      if (!token || !store.deleteToken(token.id)) throw new FaultlineError('FAULTLINE_ERR_TOKEN_NOT_FOUND', `no API token "${req.params.id}"`)
      ctx.event('token.revoked', `API token ${token.id} (${token.name}) revoked by ${req.who}`, { data: { id: token.id } })
      ctx.streams.signOut(token.id, 'revoked', `the API token ${token.name} was revoked by ${req.who}; ask an admin for a new one`)
      return { deleted: req.params.id }
    },
  )

  app.get(
    '/v1/whoami',
    { schema: { summary: 'Who the bearer token is: its role, its expiry, and the server version', response: { 200: WhoamiSchema, ...errors } } },
    async (req) => ({
      who: req.who,
      role: req.role === 'none' ? 'viewer' : req.role,
      ...(req.tokenId !== undefined ? { tokenId: req.tokenId } : {}),
      ...(req.tokenExpiresAt !== undefined ? { expiresAt: iso(req.tokenExpiresAt) } : {}),
      version: FAULTLINE_VERSION,
    }),
  )

  app.get(
    '/v1/audit',
    {
      schema: {
        summary: 'The audit log: every mutating call (and every refused one), oldest first, or newest first with order=desc',
        description:
          'Oldest first (default): the rows after "after" (the newest "limit" of them). order=desc: newest first, the rows before "before" ' +
          '(page on with before=<the last id>). who matches a substring of who; outcome and method match exactly.',
        querystring: Type.Object(
          {
            after,
            limit,
            order: Type.Optional(Type.Enum(['asc', 'desc'] as const, { description: 'asc (default) or desc' })),
            before: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'With order=desc: only rows with a smaller id' })),
            who: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Rows whose who contains this' })),
            outcome: Type.Optional(Type.Enum(outcomes)),
            method: Type.Optional(Type.String({ pattern: '^[A-Z]{3,7}$', description: 'POST, DELETE, GET, ...' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            entries: Type.Array(AuditEntrySchema),
          }),
          ...errors,
        },
      },
    },
    async (req) => {
      const q = req.query
      if (q.before !== undefined && q.order !== 'desc') throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'before pages newest first: send it with order=desc (oldest first pages with after)')
      if (q.after !== undefined && q.order === 'desc') throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'after pages oldest first: with order=desc, page with before')
      return {
        entries: store
          .auditLog({
            limit: Math.max(1, Number(q.limit ?? 100)),
            ...(q.after !== undefined ? { after: Number(q.after) } : {}),
            ...(q.before !== undefined ? { before: Number(q.before) } : {}),
            ...(q.order ? { order: q.order } : {}),
            ...(q.who !== undefined ? { who: q.who } : {}),
            ...(q.outcome !== undefined ? { outcome: q.outcome } : {}),
            ...(q.method !== undefined ? { method: q.method } : {}),
          })
          .map(auditEntryView),
      }
    },
  )

  app.get(
    '/v1/events',
    {
      schema: {
        summary: 'Fleet events, oldest first: agents connecting, runs starting and ending, records changing, guards, halts',
        description: 'Without "after", the latest events; poll with after=<last id> to follow (or GET /v1/events/stream). runId, agentId and type (a prefix, e.g. "record.") filter.',
        querystring: Type.Object(
          {
            after,
            limit,
            runId: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
            agentId: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
            type: Type.Optional(Type.String({ pattern: '^[a-z0-9.-]{1,64}$', description: 'Events whose type starts with this, e.g. "record." or "run.ended"' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            events: Type.Array(FleetEventSchema),
          }),
          ...errors,
        },
      },
    },
    async (req) => {
      const q = req.query
      const filter = {
        ...(q.runId !== undefined ? { runId: q.runId } : {}),
        ...(q.agentId !== undefined ? { agentId: q.agentId } : {}),
        ...(q.type !== undefined ? { typePrefix: q.type } : {}),
        // token.* events are for admins only, as on the stream and GET /v1/tokens.
        ...(req.role !== 'admin' ? { withoutTypePrefix: 'token.' } : {}),
      }
      return { events: store.events(q.after === undefined ? undefined : Number(q.after), Math.max(1, Number(q.limit ?? 100)), filter).map(fleetEventView) }
    },
  )
}
