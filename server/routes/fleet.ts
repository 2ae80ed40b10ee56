import type {} from '@fastify/websocket'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'
import type { LinkIdentity } from '../hub.js'
import { AgentViewSchema, HaltResultSchema } from '../../protocol/views.js'

export const fleetRoutes: FastifyPluginAsyncTypebox<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const { store, hub, runs } = ctx
  const identities = new WeakMap<object, LinkIdentity>()

  app.get(
    '/v1/agents/connect',
    {
      websocket: true,
      config: { ownAuth: true },
      schema: { hide: true },
      // Authenticated in the upgrade request: a refused agent gets a plain 401, never a socket.
      onRequest: async (req) => {
        identities.set(req.raw, hub.authenticate(req))
      },
    },
    (socket, req) => {
      const identity = identities.get(req.raw)
      if (!identity) return void socket.close(1008, 'not authenticated')
      hub.accept(socket, identity, req.ip)
    },
  )

  app.get('/v1/agents', { schema: { summary: 'Known agents: labels, connected, last seen, capabilities', response: { 200: Type.Object({ agents: Type.Array(AgentViewSchema) }), ...errors } } }, async () => ({
    agents: store.agents().map((a) => {
      const conn = hub.connection(a.id)
      const caps = a.capabilities as { kinds?: Record<string, { available: boolean }> } | null
      return {
        id: a.id,
        hostname: a.hostname,
        labels: a.labels,
        version: a.version,
        connected: hub.isReady(a.id),
        ...(conn ? { connectedAt: new Date(conn.connectedAt).toISOString(), address: conn.address } : {}),
        ...(a.lastSeen ? { lastSeen: new Date(a.lastSeen).toISOString() } : {}),
        enrolledAt: new Date(a.enrolledAt).toISOString(),
        kinds: Object.entries(caps?.kinds ?? {})
          .filter(([, k]) => k.available)
          .map(([name]) => name),
        targets: a.targets.length,
        open: hub.openOf(a.id).length,
        invalidMessages: conn?.violations ?? 0,
      }
    }),
  }))

  app.delete(
    '/v1/agents/:id',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Forget an agent: its credential stops working and its connection is closed',
        description: 'Its lease then recovers whatever server injections it still has. To come back it must enrol again.',
        params: Type.Object({ id: Type.String({ maxLength: 128 }) }),
        response: { 200: Type.Object({ deleted: Type.String() }), ...errors },
      },
    },
    async (req) => {
      if (!store.deleteAgent(req.params.id)) throw new FaultlineError('FAULTLINE_ERR_AGENT_NOT_FOUND', `no agent "${req.params.id}"`)
      hub.disconnect(req.params.id)
      ctx.event('agent.removed', `agent ${req.params.id} removed by ${req.who}`, { agentId: req.params.id })
      return { deleted: req.params.id }
    },
  )

  app.post(
    '/v1/halt',
    {
      schema: {
        summary: 'Halt everything: every connected agent recovers every injection now; running runs are aborted',
        description: 'Answers once every connected agent acknowledged (or failed to). Offline agents recover through their lease.',
        response: { 200: HaltResultSchema, ...errors },
      },
    },
    async (req) => runs.halt(req.who),
  )
}
