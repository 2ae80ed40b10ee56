import compress from '@fastify/compress'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import websocket from '@fastify/websocket'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { TlsFiles } from '../common/config.js'
import { errorsPlugin } from '../common/errors-plugin.js'
import { hardenedFastifyOptions } from '../common/fastify-options.js'
import { silentLogger } from '../common/logger.js'
import { FAULTLINE_VERSION } from '../common/version.js'
import sjson from 'secure-json-parse'
import { parse as parseYaml } from 'yaml'
import { FaultlineError } from '../protocol/errors.js'
import { MAX_LINK_MESSAGE_BYTES } from '../protocol/link.js'
import type { ServerContext } from './context.js'
import { EventStreams, type LiveListener } from './event-stream.js'
import { Hub } from './hub.js'
import { createServerMetrics } from './metrics.js'
import { serverAuthPlugin } from './plugins/auth.js'
import { dashboardPlugin } from './plugins/dashboard.js'
import { adminRoutes } from './routes/admin.js'
import { experimentRoutes } from './routes/experiments.js'
import { fleetRoutes } from './routes/fleet.js'
import { metricsRoutes } from './routes/metrics.js'
import { runRoutes } from './routes/runs.js'
import { streamRoutes } from './routes/stream.js'
import { Runs } from './runs.js'
import { Scheduler } from './scheduler.js'
import { Store } from './store.js'

export interface ServerOptions {
  stateDir: string
  /** The dead-man's switch: agents recover server injections after this long without a renewal (default 30 s). */
  leaseMs?: number
  /** How often agents send a heartbeat (default a third of the lease, at most 10 s). */
  heartbeatMs?: number
  /** Bearer token with the admin role (main.ts reads it, or makes one at the first start). */
  adminToken: string
  /** Token an agent presents once to enrol; afterwards it uses the credential it was given. */
  enrolToken: string
  /** HTTPS for the API and the agent link; `ca` makes client certificates optional-but-verified. */
  tls?: TlsFiles
  logger?: Logger
  bodyLimit?: number
  /** How often an event stream sends ": ping" (default 15 s). */
  eventStreamPingMs?: number
  /** Bytes an event stream client may leave unread before it is dropped (default 1 MiB). */
  eventStreamMaxPendingBytes?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    fleet: ServerContext
  }
}

const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml']

/**
 * Builds the server as a Fastify instance that does not listen (main.ts listens): the SQLite
 * store, the agent hub behind /v1/agents/connect, runs, schedules and the API.
 */
export async function buildServer(opts: ServerOptions): Promise<FastifyInstance> {
  const log = opts.logger ?? silentLogger()
  const leaseMs = opts.leaseMs ?? 30_000
  const heartbeatMs = opts.heartbeatMs ?? Math.min(10_000, Math.max(500, Math.floor(leaseMs / 3)))
  const store = new Store(opts.stateDir, { onError: (err) => log.error({ err }, 'committing the link writes of one turn failed; they were rolled back') })

  const app = Fastify(
    hardenedFastifyOptions({ log, bodyLimit: opts.bodyLimit ?? 256 * 1024, clientCerts: 'request', ...(opts.tls ? { tls: opts.tls } : {}) }),
  ).withTypeProvider<TypeBoxTypeProvider>()

  // Rows reach live listeners in the turn they are written: the event streams rely on it.
  const listeners = new Set<LiveListener>()
  const publish: LiveListener = (item) => {
    for (const listener of listeners) listener(item)
  }
  const event: ServerContext['event'] = (type, message, refs) => {
    const row = store.addEvent(type, message, refs)
    publish({ kind: 'fleet', row })
    return row
  }
  const audit: ServerContext['audit'] = (entry) => {
    const row = store.audit(entry)
    publish({ kind: 'audit', row })
    return row
  }
  const streams = new EventStreams({
    store,
    log: log.child({ component: 'event-stream' }),
    subscribe: (listener) => {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    ...(opts.eventStreamPingMs !== undefined ? { pingMs: opts.eventStreamPingMs } : {}),
    ...(opts.eventStreamMaxPendingBytes !== undefined ? { maxPendingBytes: opts.eventStreamMaxPendingBytes } : {}),
  })
  const metrics = createServerMetrics({
    // (called at scrape time, once the hub exists)
    agentsConnected: () => hub.readyIds().length,
    agentsKnown: () => store.agentCount(),
    runCounts: () => store.runCounts(),
    recordCounts: () => store.recordCounts(),
    eventStreamClients: () => streams.size,
  })
  const linkIn = metrics.linkMessages.labels({ direction: 'in' })
  const linkOut = metrics.linkMessages.labels({ direction: 'out' })
  const hub = new Hub({
    store,
    log: log.child({ component: 'hub' }),
    leaseMs,
    heartbeatMs,
    event,
    enrolToken: opts.enrolToken,
    // Label children resolved once: a fan-out counts thousands of messages per second.
    counters: {
      messageIn: linkIn.inc.bind(linkIn, 1),
      messageOut: linkOut.inc.bind(linkOut, 1),
      rejected: () => metrics.linkRejected.inc(),
    },
  })
  const runs = new Runs({ store, hub, log: log.child({ component: 'runs' }), leaseMs, event })
  const scheduler = new Scheduler((name) => {
    try {
      runs.start(name, 'schedule', 'schedule')
    } catch (err) {
      event('schedule.skipped', `scheduled run of ${name} skipped: ${(err as Error).message}`, { data: { name } })
    }
  }, log.child({ component: 'scheduler' }))
  for (const exp of store.experiments()) if (exp.spec.schedule) scheduler.set(exp.name, exp.spec.schedule)
  const ctx: ServerContext = { store, hub, runs, scheduler, streams, metrics, event, audit }
  app.decorate('fleet', ctx)

  // What the link batched in this turn is committed before any answer leaves (Store.batchTurn).
  app.addHook('onSend', (_req, _reply, payload, done) => {
    store.flush()
    done(null, payload)
  })
  // Open streams keep their responses open: end them before the HTTP server waits for them.
  app.addHook('preClose', async () => streams.closeAll())
  app.addHook('onClose', async () => {
    streams.closeAll()
    scheduler.stop()
    runs.close()
    hub.close()
    store.close()
  })

  try {
    await registerAll(app as unknown as FastifyInstance, ctx, opts)
  } catch (err) {
    // A server that failed to build must not keep timers or the database open.
    scheduler.stop()
    runs.close()
    hub.close()
    store.close()
    throw err
  }
  return app as unknown as FastifyInstance
}

async function registerAll(app: FastifyInstance, ctx: ServerContext, opts: ServerOptions): Promise<void> {
  const { hub, store } = ctx
  await app.register(errorsPlugin)
  app.addContentTypeParser(YAML_TYPES, { parseAs: 'string' }, (_req, body, done) => {
    try {
      const doc: unknown = parseYaml(String(body), { maxAliasCount: 50 })
      // Through JSON once more, so YAML can smuggle no __proto__ key JSON could not.
      done(null, sjson.parse(JSON.stringify(doc ?? null), undefined, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      const forbidden = /prototype/i.test((err as Error).message)
      done(
        forbidden
          ? new FaultlineError('FAULTLINE_ERR_FORBIDDEN_KEY', 'the body contains a __proto__ or constructor.prototype key, which is refused')
          : new FaultlineError('FAULTLINE_ERR_BAD_YAML', `the body is not valid YAML: ${(err as Error).message.split('\n')[0]}`),
        undefined,
      )
    }
  })
  await app.register(swagger, {
    openapi: {
      info: { title: 'Faultline server API', version: FAULTLINE_VERSION, description: 'Experiments across a fleet of Faultline agents; halt-all; audit.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  await app.register(websocket, {
    // Between MAX_LINK_MESSAGE_BYTES and this, a message is refused with an error and the
    // connection kept; beyond it the ws library closes the connection (1009): that is abuse.
    options: { maxPayload: 4 * MAX_LINK_MESSAGE_BYTES, perMessageDeflate: false },
    // Upgraded sockets are not tracked by the HTTP server: close them here, or close() hangs.
    preClose: (done) => {
      hub.close()
      done()
    },
  })
  await app.register(serverAuthPlugin, { store, adminToken: opts.adminToken, audit: ctx.audit })
  app.get('/healthz', { config: { public: true }, schema: { summary: 'Liveness (no authentication)', hide: false } }, async () => ({ ok: true, agents: hub.readyIds().length }))
  // The JSON API, compressed for clients that ask (GET /v1/agents for 1000 agents is about 1 MiB
  // of JSON; see docs/benchmarks.md). Only here: the event stream is written to the raw socket
  // and must reach the reader at once, and the dashboard sends its own precompressed files.
  // Request bodies are not decompressed: bodyLimit keeps meaning the bytes that are parsed.
  await app.register(async (api) => {
    await api.register(compress, { globalDecompression: false, threshold: 1024 })
    await api.register(fleetRoutes, { ctx })
    await api.register(experimentRoutes, { ctx })
    await api.register(runRoutes, { ctx })
    await api.register(adminRoutes, { ctx })
  })
  await app.register(dashboardPlugin)
  await app.register(streamRoutes, { ctx })
  await app.register(metricsRoutes, { ctx })
}
