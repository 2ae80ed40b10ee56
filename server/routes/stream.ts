import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'
import { parseCursor } from '../event-stream.js'

export const streamRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store, streams } = ctx

  app.get(
    '/v1/events/stream',
    {
      schema: {
        summary: 'Live fleet events and audit rows (Server-Sent Events), resumable without a gap',
        description:
          'text/event-stream. Every message has "id: <event id>.<audit id>" (the cursor) and "event:" hello (always first: ' +
          '{ cursor, role, who }), fleet (a FleetEvent as GET /v1/events gives it; token.* to admins only), audit (an AuditEntry as ' +
          'GET /v1/audit gives it) or signed-out ({ reason: revoked | expired, message }, then the stream ends); ": ping" every 15 s. ' +
          'Resume with the Last-Event-ID header (it wins) or ?after=<cursor>: every row after the cursor comes first, oldest first, ' +
          'then the live ones, each once. Without a cursor the stream starts at the current end.',
        querystring: Type.Object(
          { after: Type.Optional(Type.String({ maxLength: 40, description: 'Cursor "<event id>.<audit id>" to resume after' })) },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 40, description: 'Cursor to resume after (wins over ?after)' })) }),
        response: { 200: Type.String({ description: 'text/event-stream' }), ...errors },
      },
    },
    async (req, reply) => {
      const header = req.headers['last-event-id']
      const text = typeof header === 'string' && header.trim() !== '' ? header : req.query.after
      const cursor = text === undefined ? undefined : parseCursor(text)
      // (Fastify answers HEAD with the GET route: no stream to keep open for it.)
      if (req.method === 'HEAD') return reply.type('text/event-stream').send('')
      const token = req.tokenId !== undefined ? store.getToken(req.tokenId) : undefined
      reply.hijack()
      streams.open(
        reply.raw,
        {
          who: req.who,
          role: req.role === 'none' ? 'viewer' : req.role,
          ...(req.tokenId !== undefined ? { tokenId: req.tokenId } : {}),
          ...(token ? { tokenName: token.name } : {}),
          ...(req.tokenExpiresAt !== undefined ? { expiresAt: req.tokenExpiresAt } : {}),
        },
        cursor,
      )
    },
  )
}
