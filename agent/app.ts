import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import { statSync } from 'node:fs'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { TlsFiles } from '../common/config.js'
import { errorsPlugin } from '../common/errors-plugin.js'
import { hardenedFastifyOptions } from '../common/fastify-options.js'
import { silentLogger } from '../common/logger.js'
import { FAULTLINE_VERSION } from '../common/version.js'
import type { ProbeOptions } from './capabilities/probe.js'
import { CapabilityStore } from './capabilities/store.js'
import { OWN_NETNS, defaultRuntimeSockets, hostPaths, type HostPaths } from './host-paths.js'
import type { HostPolicyCheck } from './policy.js'
import { StateDirLock } from './state-lock.js'
import { Journal } from './journal/journal.js'
import { DEFAULT_MIN_DURATION_MS, Injector } from './lifecycle/injector.js'
import { formatDuration } from '../protocol/duration.js'
import type { AgentLink, AgentLinkOptions } from './link/link.js'
import { createMetrics } from './metrics.js'
import { authPlugin, type AuthOptions } from './plugins/auth.js'
import { capabilitiesRoutes } from './routes/capabilities.js'
import { docsRoutes } from './routes/docs.js'
import { healthRoutes } from './routes/health.js'
import { injectionRoutes } from './routes/injections.js'
import { targetRoutes } from './routes/targets.js'
import { discoverTargets } from './targets/registry.js'

export interface AgentOptions {
  stateDir: string
  maxDurationMs: number
  /** Shortest accepted duration (default 1 s). */
  minDurationMs?: number
  logger?: Logger
  /** Bearer token every request except /healthz must carry. */
  token?: string
  tls?: TlsFiles
  paths?: Partial<HostPaths>
  runtimeSockets?: ProbeOptions['runtimeSockets']
  /** Largest accepted request body, in bytes. */
  bodyLimit?: number
  /** The API port, when known before listening (default: the port the agent listens on, once it does). */
  apiPort?: number
  /** The host policy (--policy), enforced on every request whoever sends it. */
  policy?: HostPolicyCheck
  /** TCP ports network faults never cut unless a spec opts out (default [22], SSH). */
  protectTcpPorts?: number[]
  /**
   * The link to a Faultline server (agent/link). Built here, before the journal is reconciled,
   * so recoveries at start are reported; main.ts starts it (it dials out) once the API listens.
   */
  link?: Pick<AgentLinkOptions, 'server' | 'enrolToken' | 'name' | 'labels' | 'ca' | 'backoff'>
}

declare module 'fastify' {
  interface FastifyInstance {
    injector: Injector
    /** Present when the agent was given a server (--server). */
    link: AgentLink | undefined
  }
}

/**
 * Builds the agent as a Fastify instance that does not listen (main.ts listens). Before it
 * returns, every injection the journal says may still be on the host has been recovered, so no
 * request is ever answered by an agent that has not reconciled.
 */
export async function buildAgent(opts: AgentOptions): Promise<FastifyInstance> {
  const log = opts.logger ?? silentLogger()
  const paths = hostPaths(opts.paths)
  const runtimeSockets = opts.runtimeSockets ?? defaultRuntimeSockets
  const targets = { paths, selfPid: process.pid, hostname: hostname(), runtimeSockets }
  // One agent per state dir, decided before the journal is read (see state-lock.ts).
  const lock = StateDirLock.acquire(opts.stateDir)
  let journal: Journal
  try {
    journal = new Journal(opts.stateDir)
  } catch (err) {
    lock.release()
    throw err
  }
  const capabilities = new CapabilityStore(
    {
      procRoot: paths.procRoot,
      devDir: paths.devDir,
      runtimeSockets,
      limits: { minDuration: formatDuration(opts.minDurationMs ?? DEFAULT_MIN_DURATION_MS), maxDuration: formatDuration(opts.maxDurationMs) },
      ...(opts.policy ? { policy: opts.policy } : {}),
    },
    log.child({ component: 'capabilities' }),
  )
  // The API port network faults exempt: known once main.ts listens (none on a Unix socket).
  let listening: Pick<FastifyInstance, 'server'> | undefined
  const apiPort = () => opts.apiPort ?? tcpPortOf(listening)
  const metrics = createMetrics(() => journal.countOpenByKind())
  const injector = new Injector({
    journal,
    stateDir: opts.stateDir,
    log: log.child({ component: 'injector' }),
    paths,
    targets,
    metrics,
    capabilities: () => capabilities.get(),
    maxDurationMs: opts.maxDurationMs,
    control: { agentNetnsInode: statSync(OWN_NETNS).ino, tcpPorts: opts.protectTcpPorts ?? [22], apiPort },
    ...(opts.minDurationMs !== undefined ? { minDurationMs: opts.minDurationMs } : {}),
    ...(opts.policy ? { policy: opts.policy } : {}),
  })

  // The link (and ws, its WebSocket client) is loaded only for an agent given a server.
  const link = opts.link
    ? new (await import('./link/link.js')).AgentLink({
        ...opts.link,
        stateDir: opts.stateDir,
        hostname: targets.hostname,
        version: FAULTLINE_VERSION,
        injector,
        capabilities: () => capabilities.get(),
        // Containers and named netns: processes change too fast to be worth sending.
        discoverTargets: async () => (await Promise.all((['container', 'netns'] as const).map((type) => discoverTargets(type, targets).catch(() => [])))).flat(),
        log: log.child({ component: 'link' }),
      })
    : undefined

  try {
    await injector.reconcile()
  } catch (err) {
    journal.close()
    lock.release()
    throw err
  }
  // Probe in the background; the first injection or capabilities request waits for it.
  capabilities.get().catch((err) => log.error({ err }, 'capability probe failed'))

  const app = Fastify(
    hardenedFastifyOptions({ log, bodyLimit: opts.bodyLimit ?? 64 * 1024, clientCerts: 'require', ...(opts.tls ? { tls: opts.tls } : {}) }),
  ).withTypeProvider<TypeBoxTypeProvider>()

  listening = app
  app.decorate('injector', injector)
  app.decorate('link', link)
  app.addHook('onClose', async () => {
    // Recover first, with the link still up, so the server hears about it; then hang up.
    await injector.close()
    await link?.stop()
    journal.close()
    lock.release()
  })

  await app.register(errorsPlugin)
  await app.register(swagger, {
    openapi: {
      info: { title: 'Faultline agent API', version: FAULTLINE_VERSION, description: 'Inject faults on this host and take them back out.' },
      components: opts.token ? { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } } : {},
      ...(opts.token ? { security: [{ bearer: [] }] } : {}),
    },
  })
  await app.register(docsRoutes)
  const auth: AuthOptions = { ...(opts.token ? { token: opts.token } : {}), clientCerts: Boolean(opts.tls?.ca) }
  await app.register(authPlugin, auth)
  await app.register(healthRoutes, { registry: metrics.registry })
  await app.register(injectionRoutes, { injector })
  await app.register(capabilitiesRoutes, { capabilities })
  await app.register(targetRoutes, { targets })
  return app as unknown as FastifyInstance
}

/** The TCP port a built app listens on; undefined before listen or on a Unix socket. */
function tcpPortOf(app: Pick<FastifyInstance, 'server'> | undefined): number | undefined {
  const address = app?.server.address()
  return address && typeof address === 'object' ? address.port : undefined
}
