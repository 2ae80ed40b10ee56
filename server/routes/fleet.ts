import type {} from '@fastify/websocket'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorResponses as errors, FaultlineError } from '../../protocol/errors.js'
import type { ServerContext } from '../context.js'
import { Hub, type LinkIdentity } from '../hub.js'
import { AgentViewSchema, HaltResultSchema, RemovedAgentViewSchema } from '../../protocol/views.js'

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
        req.who = Hub.claimOf(req)
        identities.set(req.raw, hub.authenticate(req))
      },
    },
    (socket, req) => {
      const identity = identities.get(req.raw)
      if (!identity) return void socket.close(1008, 'not authenticated')
      hub.accept(socket, identity, req.ip)
    },
  )

  app.get(
    '/v1/agents',
    { schema: { summary: 'Known agents: labels, connected, last seen, capabilities, open injections', response: { 200: Type.Object({ agents: Type.Array(AgentViewSchema) }), ...errors } } },
    async () => {
      const open = store.openRecordsByAgent()
      return {
        agents: store.agents().map((a) => {
          const conn = hub.connection(a.id)
          const caps = a.capabilities as { kinds?: Record<string, { available: boolean; reason?: string }> } | null
          const kinds = Object.entries(caps?.kinds ?? {})
          return {
            id: a.id,
            hostname: a.hostname,
            labels: a.labels,
            version: a.version,
            connected: hub.isReady(a.id),
            ...(conn ? { connectedAt: new Date(conn.connectedAt).toISOString(), address: conn.address } : {}),
            ...(a.lastSeen ? { lastSeen: new Date(a.lastSeen).toISOString() } : {}),
            enrolledAt: new Date(a.enrolledAt).toISOString(),
            kinds: kinds.filter(([, k]) => k.available).map(([name]) => name),
            unavailable: Object.fromEntries(kinds.filter(([, k]) => !k.available).map(([name, k]) => [name, k.reason ?? 'not available on this host'])),
            targets: a.targets.length,
            open: hub.openOf(a.id).length,
            invalidMessages: conn?.violations ?? 0,
            injections: open.get(a.id) ?? [],
          }
        }),
      }
    },
  )

  app.delete(
    '/v1/agents/:id',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Remove an agent: its credential stops working, its connection is closed, and it may not enrol again until re-admitted',
        description:
          'Its lease then recovers whatever server injections it still has. The name it enrolled under (and its id) is refused from now on, ' +
          'even with the enrolment token, until POST /v1/agents/:name/admit (faultline agents admit NAME).',
        params: Type.Object({ id: Type.String({ maxLength: 128 }) }),
        response: { 200: Type.Object({ deleted: Type.String(), refused: Type.Array(Type.String()) }), ...errors },
      },
    },
    async (req) => {
      const refused = store.removeAgent(req.params.id, req.who)
      if (!refused) throw new FaultlineError('FAULTLINE_ERR_AGENT_NOT_FOUND', `no agent "${req.params.id}"; see "faultline agents ls"`)
      hub.disconnect(req.params.id)
      ctx.event('agent.removed', `agent ${req.params.id} removed by ${req.who}; ${refused.join(', ')} refused until re-admitted`, { agentId: req.params.id, data: { refused } })
      return { deleted: req.params.id, refused }
    },
  )

  app.get(
    '/v1/agents/removed',
    {
      schema: {
        summary: 'Names refused because an admin removed their agent',
        response: { 200: Type.Object({ removed: Type.Array(RemovedAgentViewSchema) }), ...errors },
      },
    },
    async () => ({
      removed: store.removedAgents().map((r) => ({ name: r.name, agentId: r.agentId, removedAt: new Date(r.removedAt).toISOString(), removedBy: r.removedBy })),
    }),
  )

  app.post(
    '/v1/agents/:name/admit',
    {
      config: { role: 'admin' },
      schema: {
        summary: 'Let a removed agent enrol again (with the enrolment token)',
        params: Type.Object({ name: Type.String({ maxLength: 128 }) }),
        response: { 200: Type.Object({ admitted: Type.Array(Type.String()) }), ...errors },
      },
    },
    async (req) => {
      const admitted = store.admitAgent(req.params.name)
      if (admitted.length === 0) throw new FaultlineError('FAULTLINE_ERR_AGENT_NOT_FOUND', `no removed agent "${req.params.name}"; see "faultline agents ls --removed"`)
      ctx.event('agent.admitted', `${admitted.join(', ')} admitted again by ${req.who}`, { data: { admitted } })
      return { admitted }
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
    async (req) => {
      const stop = ctx.metrics.haltSeconds.startTimer()
      try {
        return await runs.halt(req.who)
      } finally {
        stop()
      }
    },
  )
}
